"""Access control at the HTTP edge: who sent a request (authentication) and
whether that user may do what the route does (authorization), checked in
one middleware from one table, ``RULES``, before any handler runs.

With ``[acl] enabled = false`` (the default) the middleware lets everything
through. With it on:

- ``GET /v1/health`` and ``GET /v1/openapi.json`` stay open (liveness probes,
  the public API description; neither shows data).
- Every other request must be signed, or carry a bearer token
  (``raftmq.signing``): else ``401 unauthenticated``. The signature covers the
  method, the path and query, a SHA-256 of the body and the date, which must
  be within ``max_skew_ms`` of the node's clock.
- The route's permission (``RULES``; the grants are ``broker.acl.permissions``)
  must be held: else ``403 forbidden``. ``GET /v1/cluster`` and
  ``GET /v1/topics`` need only a known user. A route missing from ``RULES``
  needs ``admin`` (a new route is closed until someone decides).
- Heartbeat, lock and unlock also claim their ``client_id`` for the user
  (``broker.acl.claims``): ``403 client_id_taken`` for another user's id.

Users come from the replicated ACL state, applied from the log (so every
node, leader or follower, judges a request the same at the same log
position), plus the bootstrap admin of the node's own ``[acl]`` settings.
Secrets, signatures and tokens are never logged nor echoed; refusals are
logged at INFO with the access key and the reason.

This module also serves the ACL routes (``/v1/acl/...``, admin only), which
propose ACL commands through the log.
"""

from __future__ import annotations

import ipaddress
import logging
import time
from dataclasses import dataclass
from typing import Any, Awaitable, Callable, Mapping

from aiohttp import web

from raftmq import signing
from raftmq.broker.acl.claims import ClientClaims
from raftmq.broker.acl.permissions import (
    AclError,
    User,
    validate_access_key,
    validate_grant,
    validate_secret,
)
from raftmq.broker.commands import AclAddUser, AclCommand, AclGrant, AclRemoveUser, AclRevoke
from raftmq.broker.config import AclSettings, BrokerConfig, HttpSettings
from raftmq.broker.errors import (
    AclDisabled,
    BrokerError,
    ClientIdTaken,
    Forbidden,
    InvalidArgument,
    Unauthenticated,
    UserExists,
    UserNotFound,
)
from raftmq.broker.http.app import BROKER, read_body, read_raw_body, respond
from raftmq.broker.http.decoding import decode_json, decode_msgpack
from raftmq.broker.service import Broker

log = logging.getLogger(__name__)

Handler = Callable[[web.Request], Awaitable[web.StreamResponse]]
CLAIMS: web.AppKey[ClientClaims] = web.AppKey("client_claims", ClientClaims)
USER: web.RequestKey[str] = web.RequestKey("user", str)  # the authenticated access key
ADMIN = ("admin", "", "")  # a need only admin meets

# A need: alternatives (resource, name, action), any one of which suffices;
# a route's rule gives the needs it has for a request, all of which must be met.
Need = tuple[tuple[str, str, str], ...]


@dataclass(slots=True, frozen=True)
class Ask:
    """What a rule looks at: the path's names, the query and the body's fields."""

    match: dict[str, str]
    query: dict[str, str]
    body: dict[str, Any]


Rule = Callable[[Ask], list[Need]] | None  # None: open, no authentication


def _admin(_: Ask) -> list[Need]:
    return [(ADMIN,)]


def _known_user(_: Ask) -> list[Need]:
    return []


def _topic(*actions: str) -> Callable[[Ask], list[Need]]:
    def rule(ask: Ask) -> list[Need]:
        return [tuple(("topic", ask.match["topic"], a) for a in actions)]
    return rule


def _group(claim: bool = False) -> Callable[[Ask], list[Need]]:
    """``sub`` on the path's group and on its topic (query or body ``topic``; a
    missing one is the handler's 400). Offset resets need admin."""
    def rule(ask: Ask) -> list[Need]:
        needs: list[Need] = [(("group", ask.match["group"], "sub"),)]
        topic = ask.query.get("topic", ask.body.get("topic"))
        if isinstance(topic, str):
            needs.append((("topic", topic, "sub"),))
        if ask.body.get("reset") is True:
            needs.append((ADMIN,))
        return needs
    return rule


RULES: dict[tuple[str, str], Rule] = {
    ("GET", "/v1/health"): None,
    ("GET", "/v1/openapi.json"): None,
    ("GET", "/v1/cluster"): _known_user,
    ("GET", "/v1/topics"): _known_user,
    ("POST", "/v1/topics"): _admin,
    ("GET", "/v1/topics/{topic}"): _topic("pub", "sub"),
    ("PUT", "/v1/topics/{topic}"): _admin,
    ("POST", "/v1/topics/{topic}/messages"): _topic("pub"),
    ("GET", "/v1/topics/{topic}/queues/{queue}/messages"): _topic("sub"),
    ("GET", "/v1/messages"): _admin,  # by key, over every topic
    ("GET", "/v1/messages/{msg_id}"): _admin,  # any topic's message
    ("GET", "/v1/groups/{group}/offsets"): _group(),
    ("POST", "/v1/groups/{group}/offsets"): _group(),
    ("GET", "/v1/groups/{group}/lag"): _group(),
    ("POST", "/v1/groups/{group}/heartbeat"): _group(claim=True),
    ("GET", "/v1/groups/{group}/members"): _group(),
    ("POST", "/v1/groups/{group}/locks"): _group(claim=True),
    ("POST", "/v1/groups/{group}/unlock"): _group(claim=True),
}
CLAIMING = {"/v1/groups/{group}/heartbeat", "/v1/groups/{group}/locks", "/v1/groups/{group}/unlock"}
NEEDS_BODY_FIELDS = {"/v1/groups/{group}/offsets"} | CLAIMING


# ----------------------------------------------------------------------
# authentication
# ----------------------------------------------------------------------
def find_user(users: Mapping[str, User], settings: AclSettings, access_key: str) -> User | None:
    """The user with ``access_key``: the bootstrap admin or one of the replicated ``users``."""
    if access_key == settings.admin_access_key:
        return User(access_key, settings.admin_secret, admin=True)
    return users.get(access_key)


def authenticate(users: Mapping[str, User], settings: AclSettings, method: str, path: str, query: list[tuple[str, str]],
                 headers: Any, body: bytes, now_ms: int) -> User:
    """The user who sent the request; ``Unauthenticated`` saying why not."""
    auth = headers.get("Authorization")
    if auth is not None:
        scheme, _, token = auth.partition(" ")
        key = signing.token_access_key(token.strip()) if scheme.lower() == "bearer" else None
        if key is None:
            raise Unauthenticated("the Authorization header must be 'Bearer <token>' with a RaftMQ token")
        user = find_user(users, settings, key)
        if user is None or not signing.equal(token.strip(), signing.bearer_token(key, user.secret_key)):
            raise Unauthenticated("the bearer token is not valid", access_key=key)
        return user
    key = headers.get(signing.ACCESS_KEY_HEADER)
    date = headers.get(signing.DATE_HEADER)
    sig = headers.get(signing.SIGNATURE_HEADER)
    if key is None or date is None or sig is None:
        raise Unauthenticated(f"this node requires signed requests ({signing.ACCESS_KEY_HEADER}, "
                              f"{signing.DATE_HEADER}, {signing.SIGNATURE_HEADER}) or a bearer token")
    if not date.isdigit() or len(date) > 16:
        raise Unauthenticated(f"{signing.DATE_HEADER} must be milliseconds since the epoch")
    skew = abs(now_ms - int(date))
    if skew > settings.max_skew_ms:
        raise Unauthenticated(f"{signing.DATE_HEADER} is {skew} ms from this node's clock (max_skew_ms "
                              f"{settings.max_skew_ms}); check the clocks", access_key=key)
    user = find_user(users, settings, key)
    if user is None:
        raise Unauthenticated("unknown access key", access_key=key)
    want = signing.signature(user.secret_key, method, signing.canonical_target(path, query),
                             signing.body_digest(body), int(date))
    if not signing.equal(sig, want):
        raise Unauthenticated("the signature does not match the request (wrong secret key, or the request "
                              "was changed)", access_key=key)
    return user


def check_needs(user: User, needs: list[Need]) -> None:
    """Raise ``Forbidden`` naming the first need ``user`` does not meet."""
    for need in needs:
        if not any(user.admin if res == "admin" else user.allows(res, name, act) for res, name, act in need):
            if need[0] == ADMIN:
                raise Forbidden(f"user {user.access_key!r} is not an admin", access_key=user.access_key)
            res, name, _ = need[0]
            acts = " or ".join(a for _, _, a in need)
            raise Forbidden(f"user {user.access_key!r} lacks {acts} on {res} {name!r}",
                            access_key=user.access_key, resource=res, name=name)


# ----------------------------------------------------------------------
# the middleware
# ----------------------------------------------------------------------
async def _raw_body(request: web.Request, timeout_ms: int) -> bytes:
    """The request body's bytes (aiohttp keeps them: the handler reads them again)."""
    if not request.body_exists:
        return b""
    return await read_raw_body(request, timeout_ms)


def _body_fields(request: web.Request, raw: bytes, max_depth: int) -> dict[str, Any]:
    """The body's object for a rule to look at; {} when there is none or it is
    not one (the handler then answers the 400 for it)."""
    if not raw:
        return {}
    try:
        obj = decode_msgpack(raw, max_depth) if request.content_type == "application/msgpack" \
            else decode_json(raw, max_depth)
    except (ValueError, BrokerError):
        return {}
    return obj if isinstance(obj, dict) else {}


def make_middleware(settings: AclSettings, body_timeout_ms: int, max_depth: int) -> Any:
    @web.middleware
    async def auth_middleware(request: web.Request, handler: Handler) -> web.StreamResponse:
        resource = request.match_info.route.resource
        if resource is None:  # no such route: the handler answers 404/405
            return await handler(request)
        route = (request.method, resource.canonical)
        rule = RULES.get(route, _admin)
        if rule is None or (route not in RULES and request.method not in _methods(resource)):
            return await handler(request)
        broker = request.app[BROKER]
        raw = await _raw_body(request, body_timeout_ms)
        try:
            user = authenticate(broker.state.acl.users, settings, request.method, request.path, list(request.query.items()),
                                request.headers, raw, int(time.time() * 1000))
            body = _body_fields(request, raw, max_depth) if resource.canonical in NEEDS_BODY_FIELDS else {}
            check_needs(user, rule(Ask(dict(request.match_info), dict(request.query), body)))
            if resource.canonical in CLAIMING and isinstance(body.get("client_id"), str):
                group, client_id = request.match_info["group"], body["client_id"]
                holder = request.app[CLAIMS].claim(group, client_id, user.access_key, int(time.time() * 1000))
                if holder is not None:
                    raise ClientIdTaken(f"client_id {client_id!r} is in use by another user in group {group!r}",
                                        access_key=user.access_key)
        except (Unauthenticated, Forbidden) as exc:
            log.info("event=auth_refused status=%d code=%s method=%s path=%s access_key=%s: %s", exc.http_status,
                     exc.code, request.method, request.path, exc.details.get("access_key"), exc.message)
            raise
        request[USER] = user.access_key
        return await handler(request)

    return auth_middleware


def _methods(resource: Any) -> set[str]:
    return {r.method for r in resource}


# ----------------------------------------------------------------------
# the ACL routes (admin only: they are not in RULES)
# ----------------------------------------------------------------------
ACL_SETTINGS: web.AppKey[AclSettings] = web.AppKey("acl_settings", AclSettings)


async def _change(request: web.Request, cmd: AclCommand) -> web.Response:
    """Check ``cmd`` against the state, propose it, answer the user's public view."""
    broker = request.app[BROKER]
    try:
        broker.state.acl.check(cmd)
    except AclError as exc:
        raise (UserExists if isinstance(cmd, AclAddUser) else UserNotFound)(str(exc)) from None
    result = await broker.propose(cmd)
    if isinstance(result, str):  # another admin's change got there first
        raise (UserExists if isinstance(cmd, AclAddUser) else UserNotFound)(result)
    return respond(request, result)


def _acl_checks(request: web.Request) -> None:
    """ACL changes: only with ACL on, and on the leader (followers redirect)."""
    if not request.app[ACL_SETTINGS].enabled:
        raise AclDisabled("access control is off on this node ([acl] enabled = false): nothing to change")
    request.app[BROKER].require_leader()


async def _acl_body(request: web.Request) -> dict[str, Any]:
    _acl_checks(request)
    return await read_body(request)


async def list_users(request: web.Request) -> web.Response:
    settings = request.app[ACL_SETTINGS]
    users = request.app[BROKER].state.acl.list_users()
    boot = [{"access_key": settings.admin_access_key, "admin": True, "grants": [], "bootstrap": True}] \
        if settings.enabled else []
    return respond(request, {"enabled": settings.enabled, "users": boot + users})


async def add_user(request: web.Request) -> web.Response:
    body = await _acl_body(request)
    try:
        key = validate_access_key(body.get("access_key"))
        secret = validate_secret(body.get("secret_key"))
    except ValueError as exc:
        raise InvalidArgument(str(exc)) from None
    admin = body.get("admin", False)
    if not isinstance(admin, bool):
        raise InvalidArgument("admin must be true or false")
    if key == request.app[ACL_SETTINGS].admin_access_key:
        raise UserExists(f"{key!r} is the bootstrap admin of the nodes' [acl] settings")
    log.info("event=acl_add_user access_key=%s admin=%s by=%s", key, admin, request.get(USER))
    return await _change(request, AclAddUser(key, secret, admin))


async def remove_user(request: web.Request) -> web.Response:
    _acl_checks(request)
    key = request.match_info["access_key"]
    log.info("event=acl_remove_user access_key=%s by=%s", key, request.get(USER))
    return await _change(request, AclRemoveUser(key))


async def _grant_or_revoke(request: web.Request, kind: type[AclGrant] | type[AclRevoke]) -> web.Response:
    body = await _acl_body(request)
    try:
        resource, pattern, actions = validate_grant(body.get("resource"), body.get("pattern"), body.get("actions"))
    except ValueError as exc:
        raise InvalidArgument(str(exc)) from None
    key = request.match_info["access_key"]
    log.info("event=acl_%s access_key=%s resource=%s pattern=%s actions=%s by=%s", kind.__name__[3:].lower(), key,
             resource, pattern, ",".join(actions), request.get(USER))
    return await _change(request, kind(key, resource, pattern, actions))


async def grant(request: web.Request) -> web.Response:
    return await _grant_or_revoke(request, AclGrant)


async def revoke(request: web.Request) -> web.Response:
    return await _grant_or_revoke(request, AclRevoke)


ACL_ROUTES: list[tuple[str, str, Handler]] = [
    ("GET", "/v1/acl/users", list_users),
    ("POST", "/v1/acl/users", add_user),
    ("DELETE", "/v1/acl/users/{access_key}", remove_user),
    ("POST", "/v1/acl/users/{access_key}/grants", grant),
    ("POST", "/v1/acl/users/{access_key}/revoke", revoke),
]


def is_loopback(host: str) -> bool:
    if host == "localhost":
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False


def install(app: web.Application, broker: Broker, http: HttpSettings, settings: AclSettings) -> None:
    """Add the auth middleware (inside the error middleware) and the ACL routes to ``app``.
    Imported by ``make_app`` when it runs (this module imports ``app``'s helpers)."""
    app[ACL_SETTINGS] = settings
    if settings.enabled:
        app[CLAIMS] = ClientClaims(broker.config.consumer_session_timeout_ms + broker.groups.max_lease_ms)
        app.middlewares.append(make_middleware(settings, http.body_timeout_ms, http.max_json_depth))
    for method, path, handler in ACL_ROUTES:
        app.router.add_route(method, path, handler)


def warn_if_open(config: BrokerConfig) -> None:
    """One WARNING at start for a node serving beyond loopback with ACL off."""
    host = config.http_host_port[0]
    if not config.acl.enabled and not is_loopback(host):
        log.warning("node=%s event=acl_disabled http=%s: access control is off on a non-loopback address: any "
                    "client can produce, consume, rewind groups and change topics; set [acl] enabled = true",
                    config.node_id, config.me.http_url)
