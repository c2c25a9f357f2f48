"""HTTP API v1 (see ../shared/design/ARCHITECTURE.md, "The HTTP API"): requests in, calls on the
``Broker``, results out. JSON by default; msgpack when the request's
``Content-Type`` or ``Accept`` is ``application/msgpack``. Errors are
``{"error": code, "message": text}``; ``BrokerError`` subclasses carry their
status, mapped here once (follower writes: 307 to the leader's same URL;
no leader: 503 with Retry-After); any other exception a handler raises (a
storage failure mid-request, an I/O error, a bug) is turned into one by
``broker.errors.as_broker_error`` in the same middleware, so no answer is
ever aiohttp's plain-text 500.
"""

from __future__ import annotations

import asyncio
import base64
import json
import logging
from typing import Any, Awaitable, Callable

import msgpack
from aiohttp import web
from aiohttp.http_exceptions import HttpProcessingError

from raftmq.broker.config import AclSettings, HttpSettings
from raftmq.broker.errors import (
    BrokerError,
    InvalidArgument,
    MalformedBody,
    NotLeaderError,
    RequestTimeout,
    RequestTooLarge,
    UnsupportedMediaType,
    as_broker_error,
)
from raftmq.broker.http.decoding import decode_json, decode_msgpack, parse_int
from raftmq.broker.http.long_polls import LongPolls
from raftmq.broker.http.openapi import openapi_document
from raftmq.broker.produce import parse_produce
from raftmq.broker.service import Broker

log = logging.getLogger(__name__)

MSGPACK = "application/msgpack"
JSON = "application/json"
# curl -d sends form-urlencoded unless told otherwise; its body is still our JSON.
JSON_TYPES = frozenset({JSON, "application/x-www-form-urlencoded"})
BROKER: web.AppKey[Broker] = web.AppKey("broker", Broker)
HTTP: web.AppKey[HttpSettings] = web.AppKey("http", HttpSettings)
LONG_POLLS: web.AppKey[LongPolls] = web.AppKey("long_polls", LongPolls)

Handler = Callable[[web.Request], Awaitable[web.StreamResponse]]


# ----------------------------------------------------------------------
# encoding
# ----------------------------------------------------------------------
def _wants_msgpack(request: web.Request) -> bool:
    return MSGPACK in request.headers.get("Accept", "") or request.content_type == MSGPACK


def _json_default(o: Any) -> Any:
    raise TypeError(f"not JSON serialisable: {type(o).__name__}")


def _jsonable(obj: Any) -> Any:
    """Message bodies are bytes: UTF-8 text goes in ``body``, anything else base64 in ``body_b64``."""
    if isinstance(obj, dict):
        if "body" in obj and isinstance(obj["body"], bytes):
            out = {k: _jsonable(v) for k, v in obj.items() if k != "body"}
            try:
                out["body"] = obj["body"].decode("utf-8")
            except UnicodeDecodeError:
                out["body_b64"] = base64.b64encode(obj["body"]).decode("ascii")
            return out
        return {k: _jsonable(v) for k, v in obj.items()}
    if isinstance(obj, (list, tuple)):
        return [_jsonable(v) for v in obj]
    return obj


def respond(request: web.Request, data: Any, status: int = 200, headers: dict[str, str] | None = None) -> web.Response:
    if _wants_msgpack(request):
        return web.Response(body=msgpack.packb(data, use_bin_type=True), status=status,
                            content_type=MSGPACK, headers=headers)
    return web.Response(text=json.dumps(_jsonable(data), default=_json_default), status=status,
                        content_type=JSON, headers=headers)


async def read_raw_body(request: web.Request, timeout_ms: int) -> bytes:
    """The request body's bytes (aiohttp keeps them: a second read gets the same),
    arriving within ``timeout_ms``; every failure in the error model."""
    try:
        async with asyncio.timeout(timeout_ms / 1000):
            return await request.read()
    except TimeoutError:
        raise RequestTimeout(f"the request body did not arrive within {timeout_ms} ms (body_timeout_ms)") from None
    except web.HTTPRequestEntityTooLarge as exc:
        raise RequestTooLarge(f"{exc.text} (max_request_bytes)") from None
    except (ConnectionError, HttpProcessingError) as exc:
        # A chunked body that breaks off or does not parse: aiohttp's parser
        # ends the body with this while the handler reads it.
        raise MalformedBody(f"request body could not be read: {type(exc).__name__}: {exc}") from None


async def read_body(request: web.Request) -> dict[str, Any]:
    """The request's JSON or msgpack object; 4xx for anything else."""
    ctype = request.content_type
    limit = request.app[BROKER].limits.max_request_bytes
    if request.content_length is not None and request.content_length > limit:
        # refused before it is read: the client need not send it all to hear so
        raise RequestTooLarge(f"a request body of {request.content_length} bytes is over the limit of {limit} "
                              f"(max_request_bytes)")
    raw = await read_raw_body(request, request.app[HTTP].body_timeout_ms)
    max_depth = request.app[HTTP].max_json_depth
    if ctype == MSGPACK:
        obj = decode_msgpack(raw, max_depth)
    elif ctype in JSON_TYPES or "Content-Type" not in request.headers:
        obj = decode_json(raw, max_depth)
    else:
        raise UnsupportedMediaType(f"Content-Type must be {JSON} or {MSGPACK}, not {ctype}")
    if not isinstance(obj, dict):
        raise MalformedBody("request body must be an object")
    return obj


# ----------------------------------------------------------------------
# argument helpers
# ----------------------------------------------------------------------
def _int_arg(request: web.Request, name: str, default: int | None = None) -> int:
    raw = request.query.get(name)
    if raw is None:
        if default is None:
            raise InvalidArgument(f"query parameter {name!r} is required")
        return default
    return parse_int(raw, f"query parameter {name!r}")


def _path_int(request: web.Request, name: str) -> int:
    return parse_int(request.match_info[name], name)


def _field(obj: dict[str, Any], name: str, kind: type | tuple[type, ...], required: bool = True) -> Any:
    if name not in obj or obj[name] is None:
        if required:
            raise InvalidArgument(f"field {name!r} is required")
        return None
    v = obj[name]
    if not isinstance(v, kind) or (kind is int and isinstance(v, bool)):
        names = kind.__name__ if isinstance(kind, type) else " or ".join(k.__name__ for k in kind)
        raise InvalidArgument(f"field {name!r} must be {names}")
    return v


# ----------------------------------------------------------------------
# handlers
# ----------------------------------------------------------------------
async def health(request: web.Request) -> web.Response:
    return respond(request, request.app[BROKER].health())


async def cluster(request: web.Request) -> web.Response:
    return respond(request, request.app[BROKER].cluster())


async def create_topic(request: web.Request) -> web.Response:
    request.app[BROKER].require_leader()
    body = await read_body(request)
    queues = body.get("queues", 4)
    return respond(request, await request.app[BROKER].create_topic(body.get("name"), queues))


async def list_topics(request: web.Request) -> web.Response:
    return respond(request, {"topics": request.app[BROKER].list_topics()})


async def get_topic(request: web.Request) -> web.Response:
    return respond(request, request.app[BROKER].describe_topic(request.match_info["topic"]))


async def update_topic(request: web.Request) -> web.Response:
    request.app[BROKER].require_leader()
    body = await read_body(request)
    return respond(request, await request.app[BROKER].update_topic(request.match_info["topic"], body.get("queues")))


async def produce(request: web.Request) -> web.Response:
    broker = request.app[BROKER]
    topic = request.match_info["topic"]
    queues = broker.writable_topic(topic)  # followers redirect, 404 for no topic, before a large body is read
    req = parse_produce(await read_body(request), broker.limits)
    return respond(request, {"results": await broker.produce(topic, queues, req)})


async def pull(request: web.Request) -> web.Response:
    """A long poll (``wait_ms`` > 0) takes one of ``[http] max_long_polls``
    slots while it runs; with none free it is answered at once, as if
    ``wait_ms`` were 0 (the answer is the same, only sooner)."""
    broker = request.app[BROKER]
    args = (request.match_info["topic"], _path_int(request, "queue"), _int_arg(request, "offset", 0),
            _int_arg(request, "max", 32))
    wait_ms, tags = _int_arg(request, "wait_ms", 0), request.query.get("tags")
    if wait_ms == 0:
        return respond(request, await broker.pull(*args, 0, tags))
    with request.app[LONG_POLLS].slot() as granted:
        return respond(request, await broker.pull(*args, wait_ms if granted else 0, tags))


async def get_message(request: web.Request) -> web.Response:
    return respond(request, request.app[BROKER].get_message(request.match_info["msg_id"]))


async def query_messages(request: web.Request) -> web.Response:
    key = request.query.get("key")
    if not key:
        raise InvalidArgument("query parameter 'key' is required")
    res = request.app[BROKER].query_by_key(
        key, _int_arg(request, "begin_ts", 0), _int_arg(request, "end_ts", 2**63 - 1), _int_arg(request, "max", 32)
    )
    return respond(request, {"messages": res})


def _topic_query(request: web.Request) -> str:
    topic = request.query.get("topic")
    if not topic:
        raise InvalidArgument("query parameter 'topic' is required")
    return topic


async def group_offsets(request: web.Request) -> web.Response:
    return respond(request, request.app[BROKER].group_offsets(request.match_info["group"], _topic_query(request)))


async def commit_offset(request: web.Request) -> web.Response:
    request.app[BROKER].require_leader()
    body = await read_body(request)
    res = await request.app[BROKER].commit_offset(
        request.match_info["group"], _field(body, "topic", str), _field(body, "queue_id", int), _field(body, "offset", int),
        bool(_field(body, "reset", bool, required=False)),
    )
    return respond(request, res)


async def group_lag(request: web.Request) -> web.Response:
    return respond(request, request.app[BROKER].group_lag(request.match_info["group"], _topic_query(request)))


async def heartbeat(request: web.Request) -> web.Response:
    request.app[BROKER].require_leader()
    body = await read_body(request)
    return respond(request, request.app[BROKER].heartbeat(
        request.match_info["group"], _field(body, "topic", str), _field(body, "client_id", str)))


async def members(request: web.Request) -> web.Response:
    return respond(request, request.app[BROKER].members(request.match_info["group"], _topic_query(request)))


async def lock_queues(request: web.Request) -> web.Response:
    request.app[BROKER].require_leader()
    body = await read_body(request)
    return respond(request, request.app[BROKER].lock_queues(
        request.match_info["group"], _field(body, "topic", str), _field(body, "client_id", str),
        _field(body, "queue_ids", list), _field(body, "lease_ms", int, required=False)))


async def unlock_queues(request: web.Request) -> web.Response:
    request.app[BROKER].require_leader()
    body = await read_body(request)
    return respond(request, request.app[BROKER].unlock_queues(
        request.match_info["group"], _field(body, "topic", str), _field(body, "client_id", str),
        _field(body, "queue_ids", list)))


async def openapi(request: web.Request) -> web.Response:
    return web.json_response(openapi_document())


# ----------------------------------------------------------------------
@web.middleware
async def errors_middleware(request: web.Request, handler: Handler) -> web.StreamResponse:
    try:
        return await handler(request)
    except NotLeaderError as exc:
        location = exc.leader_url.rstrip("/") + str(request.rel_url)
        return respond(request, {"error": exc.code, "message": exc.message, "leader": exc.leader_url},
                       status=307, headers={"Location": location})
    except BrokerError as exc:
        return error_response(request, exc)
    except web.HTTPRequestEntityTooLarge as exc:
        return respond(request, {"error": RequestTooLarge.code, "message": f"request body over the limit ({exc.text})"},
                       status=413)
    except web.HTTPNotFound:
        return respond(request, {"error": "not_found", "message": f"no route {request.method} {request.path}"},
                       status=404)
    except web.HTTPMethodNotAllowed as exc:
        return respond(request, {"error": "method_not_allowed",
                                 "message": f"{request.method} is not allowed on {request.path}; "
                                            f"allowed: {', '.join(sorted(exc.allowed_methods))}"}, status=405)
    except web.HTTPException as exc:  # any other status aiohttp raises itself
        return respond(request, {"error": (exc.reason or "http_error").lower().replace(" ", "_"),
                                 "message": exc.text or exc.reason}, status=exc.status)
    except Exception as exc:  # CancelledError is a BaseException: it passes through
        err = as_broker_error(exc)
        if err.http_status >= 500 and err.code == BrokerError.code:
            log.exception("%s %s failed: internal error", request.method, request.path)
        else:
            log.error("%s %s failed: %s: %s", request.method, request.path, err.code, err.message)
        return error_response(request, err)


def error_response(request: web.Request, exc: BrokerError) -> web.Response:
    """The JSON (or msgpack) error model for ``exc``: ``{"error": code,
    "message": text, ...details}`` with its status and Retry-After."""
    headers = {}
    retry = getattr(exc, "retry_after_s", None)
    if retry is not None:
        headers["Retry-After"] = str(retry)
    resp = respond(request, {"error": exc.code, "message": exc.message, **exc.details},
                   status=exc.http_status, headers=headers)
    if isinstance(exc, RequestTimeout):
        resp.force_close()  # the rest of its body is never read: the connection cannot carry another request
    return resp


ROUTES: list[tuple[str, str, Handler]] = [
    ("GET", "/v1/health", health),
    ("GET", "/v1/cluster", cluster),
    ("POST", "/v1/topics", create_topic),
    ("GET", "/v1/topics", list_topics),
    ("GET", "/v1/topics/{topic}", get_topic),
    ("PUT", "/v1/topics/{topic}", update_topic),
    ("POST", "/v1/topics/{topic}/messages", produce),
    ("GET", "/v1/topics/{topic}/queues/{queue}/messages", pull),
    ("GET", "/v1/messages", query_messages),
    ("GET", "/v1/messages/{msg_id}", get_message),
    ("GET", "/v1/groups/{group}/offsets", group_offsets),
    ("POST", "/v1/groups/{group}/offsets", commit_offset),
    ("GET", "/v1/groups/{group}/lag", group_lag),
    ("POST", "/v1/groups/{group}/heartbeat", heartbeat),
    ("GET", "/v1/groups/{group}/members", members),
    ("POST", "/v1/groups/{group}/locks", lock_queues),
    ("POST", "/v1/groups/{group}/unlock", unlock_queues),
    ("GET", "/v1/openapi.json", openapi),
]


def make_app(broker: Broker, http: HttpSettings | None = None, acl: AclSettings | None = None) -> web.Application:
    http = http or HttpSettings()
    app = web.Application(middlewares=[errors_middleware], client_max_size=broker.limits.max_request_bytes)
    app[BROKER] = broker
    app[HTTP] = http
    app[LONG_POLLS] = LongPolls(http.max_long_polls)
    for method, path, handler in ROUTES:
        app.router.add_route(method, path, handler)
    from raftmq.broker.http import auth  # imported here: it builds on this module's helpers
    auth.install(app, broker, http, acl or AclSettings())
    return app
