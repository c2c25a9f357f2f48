"""The HTTP server under the app: connections, the HTTP/1.1 parser, and its bounds.

aiohttp's ``Server`` makes one ``RequestHandler`` (an asyncio protocol) per
connection; ``GuardedServer`` makes a ``GuardedRequestHandler`` instead, which
adds what aiohttp leaves out (settings in ``[http]``, see ``HttpSettings``):

- **Errors before any handler runs, in the JSON error model.** A request line
  or header over its limit, a bad method, version or header, a broken chunked
  body: aiohttp's parser answers these through ``handle_error`` with a plain
  text body. Here they are ``{"error": code, "message": text}``:
  414 ``uri_too_long``, 431 ``header_too_large``, 400 ``malformed_request``,
  and, for an exception no middleware saw, 500 ``internal_error`` (traceback
  logged once, never sent). Always JSON: no request was parsed to ask for
  msgpack.
- **Header timeout (slowloris).** A new connection whose first request line
  and headers are not complete within ``header_timeout_ms`` is closed (one
  log line). Later requests on a kept-alive connection are bounded by
  ``keepalive_idle_ms``: aiohttp closes a connection that has not sent a
  complete request that long after its last answer.
- **Connection cap.** At most ``connection_cap(...)`` connections are open.
  When a new one arrives at the cap, the connection idle the longest
  between requests (kept alive, nothing sent since its last answer) is
  closed to make room; with none idle, the new connection gets a
  ``503 too_many_connections`` answer at once and is closed after a short
  linger (its request is read and dropped, so the client sees the answer,
  not a reset).
"""

from __future__ import annotations

import asyncio
import json
import logging
from typing import Any, cast

from aiohttp import http_exceptions, web
from aiohttp.web_protocol import RequestHandler

from raftmq.broker.errors import TooManyConnections

log = logging.getLogger(__name__)

LINGER_S = 1.0  # how long a refused connection is read (and dropped) before it is closed


def connection_cap(max_connections: int, nofile_soft: int) -> int:
    """The connections a node accepts: ``max_connections``, but never more than
    3/4 of its open-file limit (the rest is for the log, its segment and index
    files, peers and the HTTP listener itself). At least 1."""
    return max(1, min(max_connections, nofile_soft * 3 // 4))


def error_body(code: str, message: str) -> bytes:
    """The JSON error model, for answers made before (or without) the app."""
    return json.dumps({"error": code, "message": message}).encode()


def parser_error(status: int, exc: BaseException | None, message: str | None) -> tuple[int, str, str]:
    """(status, code, message) for what aiohttp's parser or protocol reports."""
    if isinstance(exc, http_exceptions.LineTooLong):
        # aiohttp raises LineTooLong for the URL and for a header alike, with
        # the start of the line: a URL starts with "/" (origin form), a scheme
        # (absolute form) or is "*"; a header's name or value does not.
        line, limit = bytes(exc.args[0]), exc.args[1]
        if line.startswith((b"/", b"http://", b"https://", b"*")):
            return 414, "uri_too_long", f"the request's URL is too long (max_request_line_bytes: {limit})"
        return 431, "header_too_large", f"a request header is too long (max_header_bytes: {limit})"
    if status >= 500:
        return 500, "internal_error", "internal error; the node logged it"
    text = exc.message if isinstance(exc, http_exceptions.HttpProcessingError) else (message or "")
    return status, "malformed_request", f"not a valid HTTP/1.1 request: {text.splitlines()[0] if text else status}"


class GuardedRequestHandler(RequestHandler):
    """aiohttp's per-connection protocol, with the bounds of the module docstring."""

    def __init__(self, server: GuardedServer, **kwargs: Any) -> None:
        super().__init__(server, **kwargs)
        self._guard = server
        self._refused_transport: asyncio.Transport | None = None
        self._header_timer: asyncio.TimerHandle | None = None
        self.idle_since: float | None = None  # loop time of its last answer while nothing new arrived

    # -- connection ------------------------------------------------------
    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        if not self._guard.admit(self):
            self._refuse(cast(asyncio.Transport, transport))  # uvloop's transports are not subclasses
            return
        super().connection_made(transport)
        self._header_timer = self._loop.call_later(self._guard.header_timeout_s, self._header_timeout)

    def connection_lost(self, exc: BaseException | None) -> None:
        if self._refused_transport is not None:
            self._refused_transport = None
            return
        self._guard.release(self)
        self._cancel_header_timer()
        super().connection_lost(exc)

    def data_received(self, data: bytes) -> None:
        if self._refused_transport is not None:
            return  # the refused connection's request: read and dropped
        self.idle_since = None
        super().data_received(data)

    def _refuse(self, transport: asyncio.Transport) -> None:
        err = TooManyConnections(f"this node has {self._guard.cap} connections open (max_connections); "
                                 f"retry shortly")
        body = error_body(err.code, err.message)
        transport.write(b"HTTP/1.1 503 Service Unavailable\r\nContent-Type: application/json; charset=utf-8\r\n"
                        b"Retry-After: %d\r\nConnection: close\r\nContent-Length: %d\r\n\r\n%s"
                        % (err.retry_after_s, len(body), body))
        self._refused_transport = transport
        self._loop.call_later(LINGER_S, transport.close)

    # -- request life ----------------------------------------------------
    def headers_complete(self) -> None:
        """Called by the server's request factory: a request line and headers arrived."""
        self._cancel_header_timer()

    def _cancel_header_timer(self) -> None:
        if self._header_timer is not None:
            self._header_timer.cancel()
            self._header_timer = None

    def _header_timeout(self) -> None:
        self._header_timer = None
        peer = self.transport.get_extra_info("peername") if self.transport else None
        log.warning("event=http_header_timeout peer=%s header_timeout_ms=%d: closing a connection that sent no "
                    "complete request line and headers in time", peer, self._guard.header_timeout_s * 1000)
        self.force_close()
        if self.transport is not None:
            self.transport.close()

    def log_access(self, request: Any, response: Any, time: float | None) -> None:
        super().log_access(request, response, time)
        self.idle_since = self._loop.time()  # answered; idle until its next byte

    def close_idle(self) -> None:
        """Close this kept-alive connection that waits for its next request (to make room)."""
        self.force_close()
        if self.transport is not None:
            self.transport.close()

    # -- errors before the app ---------------------------------------------
    def handle_error(self, request: Any, status: int = 500, exc: BaseException | None = None,
                     message: str | None = None) -> web.StreamResponse:
        status, code, text = parser_error(status, exc, message)
        if status >= 500:
            log.error("event=http_internal_error %s %s", getattr(request, "method", "?"),
                      getattr(request, "path", "?"), exc_info=exc)
        else:
            log.info("event=http_bad_request status=%d code=%s peer=%s: %s", status, code,
                     getattr(request, "remote", None), text[:200])
        if request.writer.output_size > 0:  # an answer is half sent: the connection is broken
            raise ConnectionError("response already started; cannot send the error")
        resp = web.Response(status=status, body=error_body(code, text), content_type="application/json")
        resp.force_close()
        return resp


class GuardedServer(web.Server):
    """aiohttp's ``Server`` making ``GuardedRequestHandler``s, counting the open ones."""

    def __init__(self, handler: Any, *, request_factory: Any, cap: int, header_timeout_s: float,
                 **kwargs: Any) -> None:
        self._inner_factory = request_factory
        super().__init__(handler, request_factory=self._make_guarded_request, **kwargs)
        self._handler_kwargs = {k: v for k, v in kwargs.items() if k != "loop"}
        self.cap = cap
        self.header_timeout_s = header_timeout_s
        self.open: set[GuardedRequestHandler] = set()
        self.refused = 0  # connections answered 503 at the cap, since start

    def __call__(self) -> GuardedRequestHandler:
        return GuardedRequestHandler(self, loop=self._loop, **self._handler_kwargs)

    def _make_guarded_request(self, message: Any, payload: Any, protocol: Any, writer: Any, task: Any) -> Any:
        if isinstance(protocol, GuardedRequestHandler):
            protocol.headers_complete()
        return self._inner_factory(message, payload, protocol, writer, task)

    def admit(self, handler: GuardedRequestHandler) -> bool:
        """Whether a new connection may be served: under the cap, or after the
        longest-idle kept-alive connection was closed to make room."""
        if len(self.open) >= self.cap:
            idle = [h for h in self.open if h.idle_since is not None]
            if not idle:
                if self.refused % 100 == 0:
                    log.warning("event=http_connection_cap_reached max_connections=%d refused=%d: new connections "
                                "get 503 too_many_connections", self.cap, self.refused + 1)
                self.refused += 1
                return False
            oldest = min(idle, key=lambda h: h.idle_since or 0.0)
            self.open.discard(oldest)
            oldest.close_idle()
        self.open.add(handler)
        return True

    def release(self, handler: GuardedRequestHandler) -> None:
        self.open.discard(handler)


class GuardedAppRunner(web.AppRunner):
    """``web.AppRunner`` whose server is a ``GuardedServer``: the app's startup
    and request handling are aiohttp's own, the connections are guarded."""

    def __init__(self, app: web.Application, *, cap: int, header_timeout_s: float, **kwargs: Any) -> None:
        super().__init__(app, **kwargs)
        self._guard_args = {"cap": cap, "header_timeout_s": header_timeout_s}
        self._handler_kwargs = kwargs

    async def _make_server(self) -> web.Server:
        plain = await super()._make_server()  # runs the app's startup, freezes it
        return GuardedServer(plain.request_handler, request_factory=plain.request_factory,
                             loop=asyncio.get_running_loop(), **self._guard_args, **self._handler_kwargs)
