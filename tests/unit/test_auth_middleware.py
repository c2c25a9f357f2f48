"""The auth middleware in the app (broker/http/auth.py) with a stand-in
broker: what is open, what needs a user, and that unknown routes and methods
keep their 404/405 (no route is guessed at) while every answer stays in the
JSON error model."""

from __future__ import annotations

import asyncio
import time
from pathlib import Path
from types import SimpleNamespace
from typing import Any

from aiohttp.test_utils import TestClient, TestServer

from raftmq import signing
from raftmq.broker.acl.permissions import AclState
from raftmq.broker.config import AclSettings, Limits
from raftmq.broker.http.app import make_app

SECRET = "root-secret-0123456789"


class FakeBroker:
    def __init__(self) -> None:
        self.limits = Limits()
        self.state = SimpleNamespace(acl=AclState())
        self.config = SimpleNamespace(consumer_session_timeout_ms=6000)
        self.groups = SimpleNamespace(max_lease_ms=10_000)

    def health(self) -> dict[str, Any]:
        return {"role": "leader"}

    def list_topics(self) -> list[dict[str, Any]]:
        return [{"name": "t", "queues": 1}]


def settings(tmp: Path) -> AclSettings:
    (tmp / "s").write_text(SECRET)
    return AclSettings(enabled=True, admin_access_key="root", admin_secret_file=str(tmp / "s"))


async def ask(tmp: Path, method: str, path: str, sign: bool) -> tuple[int, dict[str, Any]]:
    headers = {}
    if sign:
        headers = signing.sign_headers("root", SECRET, method, signing.canonical_target(path, []), b"",
                                       int(time.time() * 1000))
    async with TestClient(TestServer(make_app(FakeBroker(), acl=settings(tmp)))) as client:  # type: ignore[arg-type]
        resp = await client.request(method, path, headers=headers)
        return resp.status, await resp.json()


def test_health_is_open_and_the_rest_needs_a_signature(tmp_path: Path) -> None:
    assert asyncio.run(ask(tmp_path, "GET", "/v1/health", sign=False))[0] == 200
    status, body = asyncio.run(ask(tmp_path, "GET", "/v1/topics", sign=False))
    assert status == 401 and body["error"] == "unauthenticated"
    status, body = asyncio.run(ask(tmp_path, "GET", "/v1/topics", sign=True))
    assert status == 200 and body["topics"][0]["name"] == "t"


def test_unknown_routes_and_methods_keep_their_answers(tmp_path: Path) -> None:
    status, body = asyncio.run(ask(tmp_path, "GET", "/v1/nope", sign=False))
    assert status == 404 and body["error"] == "not_found"
    status, body = asyncio.run(ask(tmp_path, "DELETE", "/v1/topics", sign=False))
    assert status == 405 and body["error"] == "method_not_allowed"


def test_acl_routes_are_refused_while_acl_is_off() -> None:
    async def go() -> tuple[int, dict[str, Any]]:
        async with TestClient(TestServer(make_app(FakeBroker()))) as client:  # type: ignore[arg-type]
            resp = await client.post("/v1/acl/users", json={"access_key": "a", "secret_key": SECRET})
            return resp.status, await resp.json()

    status, body = asyncio.run(go())
    assert status == 409 and body["error"] == "acl_disabled"


def node_config(host: str, acl: bool, tmp: Path) -> Any:
    from raftmq.broker.config import from_mapping

    raw: dict[str, Any] = {"node_id": "n1", "group": "g", "data_dir": "d",
                           "members": {"n1": {"http_url": f"http://{host}:8001", "raft_addr": "127.0.0.1:9001"}}}
    if acl:
        (tmp / "s").write_text(SECRET)
        raw["acl"] = {"enabled": True, "admin_access_key": "root", "admin_secret_file": str(tmp / "s")}
    return from_mapping(raw)


def test_a_node_open_beyond_loopback_warns_at_start(tmp_path: Path, caplog: Any) -> None:
    from raftmq.broker.http.auth import warn_if_open

    for host, acl, warns in (("0.0.0.0", False, True), ("10.1.2.3", False, True), ("127.0.0.1", False, False),
                             ("localhost", False, False), ("0.0.0.0", True, False)):
        caplog.clear()
        warn_if_open(node_config(host, acl, tmp_path))
        assert any("event=acl_disabled" in r.message and r.levelname == "WARNING" for r in caplog.records) is warns, host
