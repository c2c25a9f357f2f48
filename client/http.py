"""The client's one way to talk to a broker group: msgpack over HTTP, following
the leader, retrying through elections until a deadline.

Every producer, consumer and admin object owns one ``Transport``: one aiohttp
``ClientSession`` (keep-alive connections, many requests in flight at once)
over the URLs of one broker group. Given any subset of the group's URLs it
learns the rest from ``GET /v1/cluster``.

How a call finds a node that can answer it (``Transport.call``):

1. Try the leader if one is known and was not seen failing in the last
   ``down_ms``; else the next node round robin.
2. ``307 not_leader`` (a follower asked to write): remember the leader it
   names (body ``leader``, else the ``Location`` header) and go there at once.
3. ``503 no_leader`` / ``outcome_unknown`` / ``unavailable`` (an election or
   a failover): forget the leader, back off exponentially with jitter (never
   longer than the node's ``Retry-After``, which is an upper bound here, not a
   minimum: elections take well under its one-second granularity) and try the
   next node.
4. A connection failure or an attempt timeout: mark the node down for a
   moment and move on to the next node.
5. Anything else that is not 2xx is the caller's problem and raised at once
   (``client.errors.from_response``).

Retries resend the very same bytes: a produce request carries its producer id
and sequence, so a retry of a write that was in fact stored is answered by
the broker with the original result instead of being stored again. When the
deadline passes, ``Timeout`` says whether a write may have been stored
(``outcome_unknown``).

``LoopThread`` at the end runs an event loop in a daemon thread for the
synchronous wrappers (``SyncProducer``, ...).
"""

from __future__ import annotations

import asyncio
import json
import logging
import random
import ssl
import threading
import time
from dataclasses import dataclass, field
from typing import Any, Coroutine, Iterable, Mapping, TypeVar
from urllib.parse import parse_qsl, urlsplit

import aiohttp
import msgpack

from raftmq import signing
from raftmq.client.errors import (
    CannotConnect,
    CertificateError,
    NotLeader,
    OutcomeUnknown,
    RaftMQError,
    Retryable,
    ServerError,
    Timeout,
    Unavailable,
    from_response,
)
from raftmq.client.loop import new_event_loop

log = logging.getLogger(__name__)

MSGPACK = "application/msgpack"
_HEADERS = {"Content-Type": MSGPACK, "Accept": MSGPACK}
_GET_HEADERS = {"Accept": MSGPACK}
T = TypeVar("T")


@dataclass(slots=True, frozen=True)
class TransportConfig:
    """How hard a call tries. Every duration is in milliseconds."""

    deadline_ms: int = 30_000  # a call keeps retrying through elections this long, then raises Timeout
    request_timeout_ms: int = 5_000  # one attempt at one node (long polls add their wait_ms)
    connect_timeout_ms: int = 1_000  # TCP connect to one node
    backoff_initial_ms: int = 20  # first pause after a 503; doubles per retry, with jitter
    backoff_max_ms: int = 500  # longest pause between attempts
    down_ms: int = 1_000  # a node that refused a connection is skipped this long (unless all are down)
    max_connections: int = 64  # pooled keep-alive connections over all nodes
    discover: bool = True  # learn the group's other nodes from GET /v1/cluster
    max_server_errors: int = 3  # unexpected 5xx answers tolerated (on other nodes) before raising
    # Credentials: every request is signed (raftmq.signing) when both are given.
    access_key: str | None = None
    secret_key: str | None = field(default=None, repr=False)
    # HTTPS: verify the nodes' certificates against this CA bundle (PEM) instead
    # of the system's CAs. An https:// node whose certificate does not verify is refused.
    ca_file: str | None = None

    def __post_init__(self) -> None:
        if (self.access_key is None) != (self.secret_key is None):
            raise ValueError("access_key and secret_key: give both or neither")
        for name in ("deadline_ms", "request_timeout_ms", "connect_timeout_ms", "backoff_initial_ms",
                     "backoff_max_ms", "max_connections"):
            if getattr(self, name) < 1:
                raise ValueError(f"{name}: must be at least 1")
        if self.backoff_max_ms < self.backoff_initial_ms:
            raise ValueError("backoff_max_ms: must be at least backoff_initial_ms")
        if self.down_ms < 0 or self.max_server_errors < 0:
            raise ValueError("down_ms and max_server_errors: must not be negative")


C = TypeVar("C")
MIN_ATTEMPT_S = 0.05  # loopback and LAN connects take far less; a doomed attempt is not worth starting


def split_options(component: C, transport: TransportConfig | None, options: Mapping[str, Any]) -> tuple[C, TransportConfig]:
    """Apply keyword ``options`` to a component's config dataclass and to its
    ``TransportConfig`` (each option goes to whichever declares the field)."""
    from dataclasses import fields, replace

    own = {f.name for f in fields(component)}  # type: ignore[arg-type]
    tr = {f.name for f in fields(TransportConfig)}
    unknown = set(options) - own - tr
    if unknown:
        raise TypeError(f"unknown option(s): {', '.join(sorted(unknown))}")
    component = replace(component, **{k: v for k, v in options.items() if k in own})  # type: ignore[type-var]
    transport = replace(transport or TransportConfig(), **{k: v for k, v in options.items() if k in tr and k not in own})
    return component, transport


def normalize_url(url: str) -> str:
    """``http://host:port`` (no path, no trailing slash); ValueError for anything else."""
    u = urlsplit(url.strip() if "://" in url else "http://" + url.strip())
    if u.scheme not in ("http", "https") or not u.hostname:
        raise ValueError(f"not a broker URL: {url!r} (expected http://HOST:PORT)")
    return f"{u.scheme}://{u.netloc}"


def client_ssl_context(ca_file: str | None) -> ssl.SSLContext:
    """The context https:// nodes are verified with: ``ca_file``'s CAs, else
    the system's; hostname checked. ``CertificateError`` for a CA file that does not load."""
    try:
        return ssl.create_default_context(cafile=ca_file)
    except (OSError, ssl.SSLError) as exc:
        raise CertificateError(f"ca_file {ca_file}: cannot load CA certificates: {exc}") from None


def cfg_signs(cfg: TransportConfig) -> bool:
    """Whether requests made with ``cfg`` are signed."""
    return cfg.access_key is not None and cfg.secret_key is not None


def certificate_error(url: str, exc: BaseException) -> CertificateError:
    return CertificateError(f"{url}: the node's TLS certificate does not verify ({exc}); give the CA that signed "
                            f"it with --ca-file / RAFTMQ_CA_FILE (ca_file=...)")


def _decode(content_type: str, payload: bytes) -> Any:
    if not payload:
        return None
    if content_type == MSGPACK:
        return msgpack.unpackb(payload, raw=False, strict_map_key=False)
    if content_type == "application/json":
        return json.loads(payload)
    return payload


class Transport:
    """Calls on one broker group (see the module docstring). Create it anywhere;
    the session is opened inside the running loop on first use."""

    def __init__(self, urls: Iterable[str] | str, config: TransportConfig | None = None) -> None:
        if isinstance(urls, str):
            urls = [u for u in urls.split(",") if u.strip()]
        self.urls: list[str] = []
        for u in urls:
            n = normalize_url(u)
            if n not in self.urls:
                self.urls.append(n)
        if not self.urls:
            raise ValueError("at least one broker URL is required")
        self.config = config or TransportConfig()
        self.leader: str | None = None
        self.group: str | None = None
        self.leader_changes = 0  # bumped whenever the leader we follow changes (consumers watch it)
        self.stats = {"requests": 0, "retries": 0, "redirects": 0}
        self._session: aiohttp.ClientSession | None = None
        self._down_until: dict[str, float] = {}
        self._rr = 0
        self._rng = random.Random()
        self._discovered_at = -1e9
        self._discovering: asyncio.Task[None] | None = None
        self._closed = False
        self._ssl = client_ssl_context(self.config.ca_file)

    # -- lifecycle -------------------------------------------------------------
    async def start(self) -> None:
        """Open the session and learn the group's nodes and leader (best effort:
        an unreachable group is not an error here, calls retry until their deadline)."""
        self._ensure_session()
        if self.config.discover:
            await self.discover()

    def _ensure_session(self) -> aiohttp.ClientSession:
        if self._closed:
            raise RuntimeError("this client is closed")
        if self._session is None:
            conn = aiohttp.TCPConnector(limit=self.config.max_connections, limit_per_host=0,
                                        enable_cleanup_closed=False, force_close=False, ssl=self._ssl)
            self._session = aiohttp.ClientSession(connector=conn, auto_decompress=False,
                                                  skip_auto_headers=("User-Agent",))
        return self._session

    async def close(self) -> None:
        self._closed = True
        if self._discovering is not None:
            self._discovering.cancel()
            try:
                await self._discovering
            except (asyncio.CancelledError, Exception):
                pass
        if self._session is not None:
            await self._session.close()
            self._session = None

    async def __aenter__(self) -> "Transport":
        await self.start()
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self.close()

    # -- discovery ---------------------------------------------------------------
    async def discover(self) -> None:
        """Ask the nodes, in turn, for ``GET /v1/cluster``: learn every member's URL and the leader."""
        self._discovered_at = time.monotonic()
        timeout = aiohttp.ClientTimeout(total=self.config.connect_timeout_ms / 1000 * 2,
                                        connect=self.config.connect_timeout_ms / 1000)
        session = self._ensure_session()
        for url in list(self._candidates()):
            try:
                headers = {**_GET_HEADERS, **self.auth_headers("GET", "/v1/cluster", None, b"")}
                async with session.get(url + "/v1/cluster", headers=headers, timeout=timeout,
                                       allow_redirects=False) as resp:
                    if resp.status != 200:
                        continue
                    body = _decode(resp.content_type, await resp.read())
            except asyncio.CancelledError:
                raise
            except (aiohttp.ClientError, asyncio.TimeoutError, OSError, ValueError):
                self._mark_down(url)  # a certificate that does not verify too: the call itself says so
                continue
            if not isinstance(body, dict):
                continue
            self.group = body.get("group") or self.group
            for m in body.get("members") or []:
                try:
                    u = normalize_url(m["http_url"])
                except (KeyError, TypeError, ValueError):
                    continue
                if u not in self.urls:
                    self.urls.append(u)
            leader = body.get("leader_url")
            if isinstance(leader, str) and leader:
                self._set_leader(normalize_url(leader))
                return
            for m in body.get("members") or []:
                if m.get("role") == "leader" and m.get("http_url"):
                    self._set_leader(normalize_url(m["http_url"]))
                    return
            return

    def _discover_soon(self) -> None:
        """Refresh the cluster view in the background, at most every half second."""
        if not self.config.discover or self._closed:
            return
        if self._discovering is not None and not self._discovering.done():
            return
        if time.monotonic() - self._discovered_at < 0.5:
            return
        self._discovering = asyncio.get_running_loop().create_task(self.discover(), name="raftmq-discover")

    # -- node choice ----------------------------------------------------------------
    def _set_leader(self, url: str | None) -> None:
        if url is not None and url not in self.urls:
            self.urls.append(url)
        if url != self.leader:
            if url is not None:
                log.debug("leader=%s (was %s)", url, self.leader)
                self.leader_changes += 1
            self.leader = url

    def _mark_down(self, url: str) -> None:
        self._down_until[url] = time.monotonic() + self.config.down_ms / 1000
        if url == self.leader:
            self.leader = None

    def _is_down(self, url: str) -> bool:
        return self._down_until.get(url, 0.0) > time.monotonic()

    def _candidates(self) -> list[str]:
        up = [u for u in self.urls if not self._is_down(u)]
        return up or list(self.urls)

    def _pick(self, avoid: str | None = None) -> str:
        if self.leader is not None and not self._is_down(self.leader) and self.leader != avoid:
            return self.leader
        cands = self._candidates()
        if avoid is not None and len(cands) > 1 and avoid in cands:
            cands = [u for u in cands if u != avoid]
        self._rr += 1
        return cands[self._rr % len(cands)]

    def _backoff_s(self, n: int, retry_after_s: float | None) -> float:
        cfg = self.config
        d: float = min(cfg.backoff_max_ms, cfg.backoff_initial_ms * (2 ** min(n, 16))) / 1000
        if retry_after_s is not None:
            d = min(d, retry_after_s)
        return d * (0.5 + self._rng.random() / 2)

    # -- calls ------------------------------------------------------------------------
    async def call(self, method: str, path: str, body: Any = None, *, params: Mapping[str, Any] | None = None,
                   write: bool = False, deadline_s: float | None = None, extra_timeout_s: float = 0.0,
                   url: str | None = None) -> Any:
        """One request, retried as the module docstring says; returns the decoded 2xx body.

        ``body`` is msgpack-encoded once (``bytes`` are sent as they are) so every
        retry sends identical bytes. ``write`` marks requests that change state:
        their ``Timeout`` reports whether one of them may have been applied.
        ``extra_timeout_s`` lengthens each attempt (a long poll's wait).
        ``url`` pins the call to one node (no leader following, no retry)."""
        data = None
        if body is not None:
            data = body if isinstance(body, (bytes, bytearray, memoryview)) else msgpack.packb(body, use_bin_type=True)
        base_headers = _HEADERS if data is not None else _GET_HEADERS
        # Hashed once for every attempt, and only when requests are signed (the produce hot path).
        digest = signing.body_digest(data if data is not None else b"") if cfg_signs(self.config) else None
        qs = None if not params else {k: str(v) for k, v in params.items() if v is not None}
        session = self._ensure_session()
        cfg = self.config
        deadline = time.monotonic() + (deadline_s if deadline_s is not None else cfg.deadline_ms / 1000)
        outcome_unknown = False
        last_error: BaseException | None = None
        failures = 0  # consecutive attempts that did not get an answer we could use
        server_errors = 0
        hops = 0
        target: str | None = url
        avoid: str | None = None
        while True:
            remaining = deadline - time.monotonic()
            # An attempt with only a sliver of time left would be cut short
            # mid-connect, and then nobody could tell whether it was sent: give
            # up instead of making a doomed attempt look like an unknown outcome.
            if remaining <= MIN_ATTEMPT_S:
                what = "write" if write else "request"
                raise Timeout(f"{method} {path}: no node answered the {what} within the deadline "
                              f"(last error: {last_error})", outcome_unknown=outcome_unknown and write,
                              last_error=last_error)
            node = target or self._pick(avoid)
            target = None
            attempt_s = min(remaining, cfg.request_timeout_ms / 1000 + extra_timeout_s)
            timeout = aiohttp.ClientTimeout(total=attempt_s, connect=min(attempt_s, cfg.connect_timeout_ms / 1000))
            self.stats["requests"] += 1
            headers = {**base_headers, **self.auth_headers(method, path, qs, digest=digest)}
            try:
                async with session.request(method, node + path, data=data, params=qs, headers=headers,
                                           timeout=timeout, allow_redirects=False) as resp:
                    payload = await resp.read()
                    status = resp.status
                    ctype = resp.content_type
                    retry_after = resp.headers.get("Retry-After")
                    location = resp.headers.get("Location")
            except asyncio.CancelledError:
                raise
            except aiohttp.ClientConnectorCertificateError as exc:
                raise certificate_error(node, exc) from exc  # retrying cannot help, and nothing was sent
            except (aiohttp.ClientConnectorError, aiohttp.ConnectionTimeoutError, ConnectionRefusedError) as exc:
                # Never reached the node (refused, or the connect timed out): nothing was applied.
                last_error = CannotConnect(f"{node}: cannot connect ({exc})")
                self._mark_down(node)
                if url is not None:
                    raise last_error from exc
                failures += 1
                self._discover_soon()
                await self._pause(failures, None, deadline, all_tried=failures % max(1, len(self.urls)) == 0)
                continue
            except (aiohttp.ClientError, asyncio.TimeoutError, OSError) as exc:
                # Sent, or maybe sent: the node may have applied it before failing.
                outcome_unknown = outcome_unknown or write
                last_error = Unavailable(f"{node}: no answer ({type(exc).__name__}: {exc})")
                self._mark_down(node)
                if url is not None:
                    raise last_error from exc
                failures += 1
                self.stats["retries"] += 1
                self._discover_soon()
                await self._pause(failures, None, deadline, all_tried=failures % max(1, len(self.urls)) == 0)
                continue
            if 200 <= status < 300:
                if write and url is None:
                    self._set_leader(node)  # only the leader accepts writes
                self._down_until.pop(node, None)
                try:
                    return _decode(ctype, payload)
                except ValueError as exc:
                    raise ServerError(f"{node}: undecodable answer: {exc}") from exc
            try:
                decoded = _decode(ctype, payload)
            except ValueError:
                decoded = payload
            err = from_response(status, decoded, retry_after, location)
            if url is not None or not isinstance(err, (Retryable, ServerError)):
                raise err
            last_error = err
            self.stats["retries"] += 1
            if isinstance(err, NotLeader):
                self.stats["redirects"] += 1
                hops += 1
                leader = normalize_url(err.leader_url) if err.leader_url else None
                if leader is not None and leader != node and not self._is_down(leader):
                    self._set_leader(leader)
                    target = leader
                    if hops <= 3:
                        continue  # go straight there
                else:
                    # A follower still naming a leader we just saw die: wait for the election.
                    self._set_leader(None)
                    avoid = node
                failures += 1
                await self._pause(failures, None, deadline, all_tried=True)
                continue
            if isinstance(err, ServerError):
                server_errors += 1
                if server_errors > cfg.max_server_errors:
                    raise err
                outcome_unknown = outcome_unknown or write
                self._mark_down(node)
            else:
                if isinstance(err, OutcomeUnknown):
                    outcome_unknown = outcome_unknown or write
                if node == self.leader:
                    self.leader = None
                avoid = node
                self._discover_soon()
            failures += 1
            hops = 0
            await self._pause(failures, getattr(err, "retry_after_s", None), deadline, all_tried=True)

    def auth_headers(self, method: str, path: str, params: Mapping[str, str] | None,
                     body: bytes | bytearray | memoryview = b"", *, digest: str | None = None) -> dict[str, str]:
        """The signing headers of a request (none without credentials); ``path``
        may carry a query of its own, ``params`` are the rest of it."""
        cfg = self.config
        if cfg.access_key is None or cfg.secret_key is None:
            return {}
        bare, _, query = path.partition("?")
        pairs = parse_qsl(query, keep_blank_values=True) + list((params or {}).items())
        target = signing.canonical_target(bare, pairs)
        date_ms = int(time.time() * 1000)
        sig = signing.signature(cfg.secret_key, method, target, digest or signing.body_digest(body), date_ms)
        return {signing.ACCESS_KEY_HEADER: cfg.access_key, signing.DATE_HEADER: str(date_ms),
                signing.SIGNATURE_HEADER: sig}

    async def _pause(self, failures: int, retry_after_s: float | None, deadline: float, all_tried: bool) -> None:
        if not all_tried:
            return  # another node may answer at once
        delay = min(self._backoff_s(failures, retry_after_s), max(0.0, deadline - time.monotonic()))
        if delay > 0:
            await asyncio.sleep(delay)


class LoopThread:
    """An asyncio event loop running in a daemon thread, so that synchronous
    code (scripts, the CLI) can drive the async client: ``run(coro)`` blocks the
    calling thread until the coroutine finishes on that loop. All objects the
    coroutines create live on that one loop, so they may be reused across calls."""

    def __init__(self, name: str = "raftmq-client") -> None:
        self.loop = new_event_loop()
        self._ready = threading.Event()
        self._thread = threading.Thread(target=self._main, name=name, daemon=True)
        self._thread.start()
        self._ready.wait()

    def _main(self) -> None:
        asyncio.set_event_loop(self.loop)
        self.loop.call_soon(self._ready.set)
        self.loop.run_forever()

    def run(self, coro: Coroutine[Any, Any, T], timeout_s: float | None = None) -> T:
        if threading.current_thread() is self._thread:
            raise RuntimeError("LoopThread.run called from its own loop (would deadlock)")
        fut = asyncio.run_coroutine_threadsafe(coro, self.loop)
        try:
            return fut.result(timeout_s)
        except BaseException:
            fut.cancel()
            raise

    def stop(self) -> None:
        if not self.loop.is_running():
            return

        async def _cancel_all() -> None:
            tasks = [t for t in asyncio.all_tasks() if t is not asyncio.current_task()]
            for t in tasks:
                t.cancel()
            await asyncio.gather(*tasks, return_exceptions=True)

        try:
            asyncio.run_coroutine_threadsafe(_cancel_all(), self.loop).result(5)
        except Exception:  # noqa: BLE001 - best effort at shutdown
            pass
        self.loop.call_soon_threadsafe(self.loop.stop)
        self._thread.join(5)
        if not self._thread.is_alive():
            self.loop.close()


__all__ = ["Transport", "TransportConfig", "LoopThread", "normalize_url", "RaftMQError"]
