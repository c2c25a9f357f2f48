"""The request-signing contract (raftmq.signing) and the broker's check of it
(broker.http.auth.authenticate), without a network."""

from __future__ import annotations

import pytest
from multidict import CIMultiDict

from raftmq import signing
from raftmq.broker.acl.permissions import User
from raftmq.broker.config import AclSettings
from raftmq.broker.errors import Unauthenticated
from raftmq.broker.http.auth import authenticate

NOW = 1_700_000_000_000
USERS = {"alice": User("alice", "alice-secret-0123456789")}
SETTINGS = AclSettings()  # off: no bootstrap admin; authenticate is called directly


def signed(method: str, path: str, query: list[tuple[str, str]], body: bytes, *, secret: str = "alice-secret-0123456789",
           key: str = "alice", date_ms: int = NOW) -> CIMultiDict[str]:
    target = signing.canonical_target(path, query)
    return CIMultiDict(signing.sign_headers(key, secret, method, target, body, date_ms))


def check(headers: CIMultiDict[str], method: str = "POST", path: str = "/v1/topics/t/messages",
          query: list[tuple[str, str]] | None = None, body: bytes = b"{}", now_ms: int = NOW) -> User:
    return authenticate(USERS, SETTINGS, method, path, query or [], headers, body, now_ms)


def test_canonical_target_is_the_same_whatever_the_escaping_and_order() -> None:
    a = signing.canonical_target("/v1/topics/a%20b", [("topic", "x y"), ("max", "3")])
    b = signing.canonical_target("/v1/topics/a b", [("max", "3"), ("topic", "x y")])
    assert a == b == "/v1/topics/a%20b?max=3&topic=x%20y"


def test_a_good_signature_names_its_user() -> None:
    assert check(signed("POST", "/v1/topics/t/messages", [], b"{}")).access_key == "alice"


@pytest.mark.parametrize("change", ["method", "path", "query", "body", "secret", "key", "date"])
def test_any_change_to_a_signed_request_is_refused(change: str) -> None:
    headers = signed("POST", "/v1/topics/t/messages", [("a", "1")], b"{}",
                     secret="bob-secret-0123456789" if change == "secret" else "alice-secret-0123456789",
                     key="bob" if change == "key" else "alice")
    if change == "date":
        headers[signing.DATE_HEADER] = str(NOW + 1)
    with pytest.raises(Unauthenticated):
        check(headers, method="PUT" if change == "method" else "POST",
              path="/v1/topics/u/messages" if change == "path" else "/v1/topics/t/messages",
              query=[("a", "2")] if change == "query" else [("a", "1")],
              body=b"{ }" if change == "body" else b"{}")


@pytest.mark.parametrize("skew_ms, ok", [(0, True), (300_000, True), (300_001, False), (-300_001, False)])
def test_the_date_must_be_within_max_skew(skew_ms: int, ok: bool) -> None:
    headers = signed("GET", "/v1/topics", [], b"", date_ms=NOW + skew_ms)
    if ok:
        check(headers, method="GET", path="/v1/topics", body=b"")
    else:
        with pytest.raises(Unauthenticated, match="max_skew_ms"):
            check(headers, method="GET", path="/v1/topics", body=b"")


@pytest.mark.parametrize("date", ["", "abc", "-5", "1" * 40])
def test_a_malformed_date_is_refused(date: str) -> None:
    headers = signed("GET", "/v1/topics", [], b"")
    headers[signing.DATE_HEADER] = date
    with pytest.raises(Unauthenticated):
        check(headers, method="GET", path="/v1/topics", body=b"")


def test_missing_headers_are_refused_without_echoing_anything_secret() -> None:
    with pytest.raises(Unauthenticated) as err:
        check(CIMultiDict())
    assert "alice-secret" not in str(err.value.message)


def test_bearer_tokens_are_checked_against_the_users_secret() -> None:
    good = signing.bearer_token("alice", "alice-secret-0123456789")
    assert check(CIMultiDict({"Authorization": f"Bearer {good}"})).access_key == "alice"
    forged = signing.bearer_token("alice", "guessed-secret-0123456")
    for value in (f"Bearer {forged}", "Bearer rmq1.bob.00", "Bearer garbage", f"Basic {good}"):
        with pytest.raises(Unauthenticated):
            check(CIMultiDict({"Authorization": value}))


def test_the_bootstrap_admin_comes_from_the_settings(tmp_path) -> None:  # type: ignore[no-untyped-def]
    (tmp_path / "s").write_text("root-secret-0123456789\n")
    settings = AclSettings(enabled=True, admin_access_key="root", admin_secret_file=str(tmp_path / "s"))
    headers = signed("GET", "/v1/topics", [], b"", key="root", secret="root-secret-0123456789")
    user = authenticate(USERS, settings, "GET", "/v1/topics", [], headers, b"", NOW)
    assert user.admin and "root-secret" not in repr(settings) and "secret" not in repr(user).replace("secret_key", "")


@pytest.mark.parametrize("table, error", [
    ({"enabled": True}, "acl.admin_access_key"),
    ({"enabled": True, "admin_access_key": "root"}, "acl.admin_secret_file"),
    ({"enabled": True, "admin_access_key": "root", "admin_secret_file": "/nonexistent/x"}, "cannot read"),
    ({"max_skew_ms": 0}, "acl.max_skew_ms"),
    ({"enabled": "yes"}, "acl.enabled"),
])
def test_bad_acl_settings_are_one_clear_error(table: dict, error: str) -> None:  # type: ignore[type-arg]
    with pytest.raises(ValueError, match=error):
        AclSettings(**table)


def test_a_short_admin_secret_is_refused(tmp_path) -> None:  # type: ignore[no-untyped-def]
    (tmp_path / "s").write_text("short\n")
    with pytest.raises(ValueError, match="16 to 128"):
        AclSettings(enabled=True, admin_access_key="root", admin_secret_file=str(tmp_path / "s"))
