"""Permission matching, the ACL state applied from log commands, the route
table of broker.http.auth, and client-id claims."""

from __future__ import annotations

import pytest

from raftmq.broker import commands
from raftmq.broker.acl.claims import ClientClaims
from raftmq.broker.acl.permissions import AclState, User, matches, validate_grant
from raftmq.broker.commands import AclAddUser, AclGrant, AclRemoveUser, AclRevoke
from raftmq.broker.errors import Forbidden
from raftmq.broker.http.app import ROUTES
from raftmq.broker.http.auth import RULES, Ask, check_needs


@pytest.mark.parametrize("pattern, name, ok", [
    ("orders", "orders", True), ("orders", "orders2", False), ("orders", "order", False),
    ("*", "anything", True), ("team-a.*", "team-a.orders", True), ("team-a.*", "team-b.orders", False),
    ("team-a*", "team-a", True),
])
def test_patterns_match_names_prefixes_and_star(pattern: str, name: str, ok: bool) -> None:
    assert matches(pattern, name) is ok


def test_grants_allow_only_their_actions_on_their_resources() -> None:
    u = User("u", "s" * 16, grants={("topic", "a-*"): {"pub"}, ("group", "g"): {"sub"}})
    assert u.allows("topic", "a-x", "pub")
    assert not u.allows("topic", "a-x", "sub")
    assert not u.allows("group", "a-x", "pub")
    assert u.allows("group", "g", "sub") and not u.allows("topic", "g", "sub")
    assert User("r", "s" * 16, admin=True).allows("topic", "any", "sub")


@pytest.mark.parametrize("resource, pattern, actions", [
    ("queue", "x", ["sub"]), ("topic", "a*b", ["pub"]), ("topic", "", ["pub"]), ("group", "g", ["pub"]),
    ("topic", "t", []), ("topic", "t", "pub"),
])
def test_bad_grants_are_refused(resource: str, pattern: str, actions: object) -> None:
    with pytest.raises(ValueError):
        validate_grant(resource, pattern, actions)


def test_acl_commands_round_trip_through_the_log_encoding_and_apply_in_order() -> None:
    cmds = [AclAddUser("a", "secret-a-0123456789", False), AclGrant("a", "topic", "t*", ("pub", "sub")),
            AclRevoke("a", "topic", "t*", ("pub",)), AclAddUser("b", "secret-b-0123456789", True),
            AclRemoveUser("b")]
    state = AclState()
    for c in cmds:
        decoded = commands.decode(commands.encode(c))
        assert decoded == c
        state.apply(decoded)  # type: ignore[arg-type]
    assert state.list_users() == [{"access_key": "a", "admin": False,
                                   "grants": [{"resource": "topic", "pattern": "t*", "actions": ["sub"]}]}]
    assert "secret" not in repr(cmds[0]).replace("secret_key", "")


def test_commands_that_do_not_fit_change_nothing() -> None:
    state = AclState()
    state.apply(AclAddUser("a", "secret-a-0123456789", False))
    assert isinstance(state.apply(AclAddUser("a", "other-secret-0123456789", True)), str)
    assert isinstance(state.apply(AclGrant("zz", "topic", "t", ("pub",))), str)
    assert state.users["a"].secret_key == "secret-a-0123456789" and not state.users["a"].admin


def test_the_state_survives_its_checkpoint_document() -> None:
    state = AclState()
    state.apply(AclAddUser("a", "secret-a-0123456789", False))
    state.apply(AclGrant("a", "group", "g", ("sub",)))
    back = AclState.from_doc(state.to_doc())
    assert back.to_doc() == state.to_doc() and back.users["a"].allows("group", "g", "sub")
    assert AclState.from_doc(None).users == {}  # a checkpoint written before ACL existed


def test_every_route_has_a_rule() -> None:
    assert {(m, p) for m, p, _ in ROUTES} <= set(RULES)


def needs(route: tuple[str, str], match: dict[str, str], query: dict[str, str] | None = None,
          body: dict[str, object] | None = None) -> list:  # type: ignore[type-arg]
    rule = RULES[route]
    assert rule is not None
    return rule(Ask(match, query or {}, body or {}))


def test_group_routes_need_sub_on_group_and_topic_and_resets_need_admin() -> None:
    u = User("u", "s" * 16, grants={("topic", "t"): {"sub"}, ("group", "g"): {"sub"}})
    route = ("POST", "/v1/groups/{group}/offsets")
    check_needs(u, needs(route, {"group": "g"}, body={"topic": "t", "queue_id": 0, "offset": 1}))
    for match, body in (({"group": "other"}, {"topic": "t"}), ({"group": "g"}, {"topic": "other"}),
                        ({"group": "g"}, {"topic": "t", "reset": True})):
        with pytest.raises(Forbidden):
            check_needs(u, needs(route, match, body=body))


def test_describing_a_topic_needs_pub_or_sub() -> None:
    route = ("GET", "/v1/topics/{topic}")
    check_needs(User("p", "s" * 16, grants={("topic", "t"): {"pub"}}), needs(route, {"topic": "t"}))
    check_needs(User("s", "s" * 16, grants={("topic", "t"): {"sub"}}), needs(route, {"topic": "t"}))
    with pytest.raises(Forbidden, match="lacks pub or sub"):
        check_needs(User("n", "s" * 16), needs(route, {"topic": "t"}))


def test_a_client_id_belongs_to_its_first_user_until_it_lapses() -> None:
    claims = ClientClaims(hold_ms=1000)
    assert claims.claim("g", "c1", "alice", 0) is None
    assert claims.claim("g", "c1", "bob", 500) == "alice"
    assert claims.claim("g", "c1", "alice", 900) is None  # use renews it
    assert claims.claim("g", "c1", "bob", 1800) == "alice"
    assert claims.claim("g", "c1", "bob", 1901) is None  # lapsed: alice's locks expired by now
    assert claims.claim("other", "c1", "alice", 1901) is None  # per group


def test_lapsed_claims_are_pruned() -> None:
    claims = ClientClaims(hold_ms=10)
    for i in range(5000):
        claims.claim("g", f"c{i}", "u", i * 100)
    assert len(claims) < 2100
