"""``raftmq bench produce`` and ``raftmq bench consume``: HTTP API throughput and
latency against a broker group, with msgpack on the wire as the client uses.
``produce`` drives the API with a minimal HTTP/1.1 load generator
(``RawConnection``, as wrk does), so that it measures the broker;
``produce --per-message`` measures the Python client's ``Producer``.

Without ``--server`` a local 3-node group is started in a temporary
directory (``raftmq cluster up --detach``) with the given ``--flush`` policy,
and stopped at the end. Each measurement prints one line (or one JSON object
with ``--json``): messages/s, MB/s and request latency p50/p99. Figures only:
nothing here asserts a speed.

``--security off,acl,tls`` measures local groups with access control (every
request signed, ``raftmq.signing``) and/or HTTPS on (``client.local.security``),
one group per mode, so the cost of each shows beside the plain figure.
"""

from __future__ import annotations

import asyncio
import json
import os
import shutil
import socket
import ssl
import tempfile
import time
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any, Callable
from urllib.parse import quote, urlsplit

import aiohttp
import msgpack

from raftmq import signing
from raftmq.client.local import cluster as cluster_mod
from raftmq.client.local.security import Security, prepare
from raftmq.client.admin import Admin
from raftmq.client.errors import TopicExists

MSGPACK = "application/msgpack"


@dataclass(slots=True)
class Result:
    bench: str
    flush: str
    batch: int
    producers: int
    messages: int
    seconds: float
    messages_per_s: float
    mb_per_s: float
    p50_ms: float | None
    p99_ms: float | None
    security: str = "off"  # off, acl, tls or acl+tls (client.local.security)


def _pct(samples: list[float], q: float) -> float | None:
    if not samples:
        return None
    s = sorted(samples)
    return round(s[min(len(s) - 1, int(q * len(s)))] * 1000, 3)


async def ensure_topic(urls: list[str], topic: str, queues: int, security: Security | None = None) -> str:
    """Create ``topic`` (an existing one is fine), retrying through an election;
    returns the URL of the leader that answered."""
    async with Admin(urls, **(security or Security()).client_options()) as admin:
        try:
            await admin.create_topic(topic, queues)
        except TopicExists:
            pass
        assert admin.transport.leader is not None  # set by the write's answer
        return admin.transport.leader


async def _post(session: aiohttp.ClientSession, url: str, body: dict[str, Any]) -> Any:
    async with session.post(url, data=msgpack.packb(body, use_bin_type=True),
                            headers={"Content-Type": MSGPACK, "Accept": MSGPACK}) as r:
        payload = msgpack.unpackb(await r.read(), raw=False)
        if r.status != 200:
            raise RuntimeError(f"{url}: {r.status} {payload}")
        return payload


class RawConnection:
    """A minimal HTTP/1.1 keep-alive client for the load generator, as wrk is:
    one request at a time on one connection, ``Content-Length`` bodies only.
    The figures then measure the broker rather than an HTTP client library
    (aiohttp's client adds about 0.1 ms per request here); ``--per-message``
    measures the client library itself."""

    def __init__(self, url: str, ssl_context: ssl.SSLContext | None = None) -> None:
        u = urlsplit(url)
        if u.scheme not in ("http", "https") or not u.hostname or (u.scheme == "https") != (ssl_context is not None):
            raise ValueError(f"{url}: the load generator speaks http://host:port, or https:// with an SSL context")
        self.host, self.port = u.hostname, u.port or 80
        self._ssl = ssl_context
        self._reader: asyncio.StreamReader | None = None
        self._writer: asyncio.StreamWriter | None = None

    async def __aenter__(self) -> "RawConnection":
        self._reader, self._writer = await asyncio.open_connection(self.host, self.port, ssl=self._ssl)
        sock = self._writer.get_extra_info("socket")
        if sock is not None:
            sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        return self

    async def __aexit__(self, *exc: object) -> None:
        if self._writer is not None:
            self._writer.close()

    @staticmethod
    def request(method: str, path: str, body: bytes, headers: dict[str, str] | None = None) -> bytes:
        """The bytes of one msgpack request (build once, send many times)."""
        extra = "".join(f"{k}: {v}\r\n" for k, v in (headers or {}).items())
        return (f"{method} {path} HTTP/1.1\r\nHost: bench\r\nContent-Type: {MSGPACK}\r\nAccept: {MSGPACK}\r\n"
                f"{extra}Content-Length: {len(body)}\r\n\r\n").encode("ascii") + body

    @staticmethod
    def request_maker(method: str, path: str, body: bytes, security: Security) -> Callable[[], bytes]:
        """A function giving the bytes of the request to send next: always the
        same ones, or, with ACL, signed afresh (the date moves on)."""
        if security.access_key is None or security.secret_key is None:
            req = RawConnection.request(method, path, body)
            return lambda: req
        key, secret = security.access_key, security.secret_key
        digest, target = signing.body_digest(body), signing.canonical_target(path, [])

        def make() -> bytes:
            date_ms = int(time.time() * 1000)
            return RawConnection.request(method, path, body, {
                signing.ACCESS_KEY_HEADER: key, signing.DATE_HEADER: str(date_ms),
                signing.SIGNATURE_HEADER: signing.signature(secret, method, target, digest, date_ms)})

        return make

    async def send(self, request: bytes) -> tuple[int, bytes]:
        """Send one prepared request; (status, body) of its response."""
        assert self._reader is not None and self._writer is not None, "use 'async with'"
        self._writer.write(request)
        head = await self._reader.readuntil(b"\r\n\r\n")
        lines = head.split(b"\r\n")
        status = int(lines[0].split(b" ", 2)[1])
        length = None
        for line in lines[1:]:
            name, _, value = line.partition(b":")
            if name.strip().lower() == b"content-length":
                length = int(value)
            elif name.strip().lower() == b"transfer-encoding":
                raise RuntimeError("the load generator reads Content-Length responses only")
        if length is None:
            raise RuntimeError(f"response without Content-Length: {lines[0]!r}")
        return status, await self._reader.readexactly(length)


async def produce(urls: list[str], topic: str, queues: int, batch: int, producers: int, duration_s: float,
                  message_bytes: int, flush: str, keyed: bool = False, security: Security | None = None) -> Result:
    """``keyed``: every message carries a key (``k<n>``, ``n`` its place in the
    request), so that the IndexFile gets an entry per message. ``security``:
    sign every request and/or speak TLS (a group from ``with_local_group``)."""
    security = security or Security()
    leader = await ensure_topic(urls, topic, queues, security)
    body = os.urandom(message_bytes // 2).hex().encode()[:message_bytes]
    messages = [{"body": body, **({"keys": [f"k{i}"]} if keyed else {})} for i in range(batch)]
    next_request = RawConnection.request_maker("POST", f"/v1/topics/{quote(topic, safe='')}/messages",
                                               msgpack.packb({"messages": messages}), security)
    lat: list[float] = []
    count = 0
    stop_at = time.monotonic() + duration_s
    warm_until = time.monotonic() + min(1.0, duration_s / 5)

    async def worker() -> None:
        nonlocal count
        async with RawConnection(leader, security.ssl_context()) as conn:
            while True:
                t0 = time.monotonic()
                if t0 >= stop_at:
                    return
                status, answer = await conn.send(next_request())
                t1 = time.monotonic()
                if status != 200:
                    raise RuntimeError(f"{leader}: {status} {msgpack.unpackb(answer, raw=False)}")
                if t0 >= warm_until:
                    lat.append(t1 - t0)
                    count += batch

    await asyncio.gather(*(worker() for _ in range(producers)))
    seconds = duration_s - (warm_until - (stop_at - duration_s))
    rate = count / seconds
    return Result("produce", flush, batch, producers, count, round(seconds, 2), round(rate),
                  round(rate * message_bytes / 1e6, 1), _pct(lat, 0.5), _pct(lat, 0.99), security.mode)


async def consume(urls: list[str], topic: str, queues: int, messages: int, message_bytes: int, flush: str,
                  readers: int) -> Result:
    """Fill the topic with ``messages`` messages (batched), then read them all
    back with one reader per queue (``max=1024``, msgpack) and time the reads."""
    topic = f"{topic}-c{int(time.time())}"
    leader = await ensure_topic(urls, topic, queues)
    async with aiohttp.ClientSession(connector=aiohttp.TCPConnector(limit=queues + 8)) as session:
        body = b"c" * message_bytes
        per_req = 256
        sem = asyncio.Semaphore(8)

        async def fill(q: int, n: int) -> None:
            while n > 0:
                k = min(per_req, n)
                async with sem:
                    await _post(session, f"{leader}/v1/topics/{topic}/messages",
                                {"messages": [{"body": body, "queue_id": q}] * k})
                n -= k

        share = messages // queues
        await asyncio.gather(*(fill(q, share) for q in range(queues)))
        lat: list[float] = []
        got = 0

        async def read(q: int) -> None:
            nonlocal got
            offset = 0
            while offset < share:
                t0 = time.monotonic()
                async with session.get(f"{leader}/v1/topics/{topic}/queues/{q}/messages",
                                       params={"offset": offset, "max": 1024}, headers={"Accept": MSGPACK}) as r:
                    page = msgpack.unpackb(await r.read(), raw=False)
                lat.append(time.monotonic() - t0)
                got += len(page["messages"])
                offset = page["next_offset"]

        t0 = time.monotonic()
        await asyncio.gather(*(read(q) for q in range(queues)))
        seconds = time.monotonic() - t0
    rate = got / seconds
    return Result("consume", flush, 1024, queues, got, round(seconds, 2), round(rate),
                  round(rate * message_bytes / 1e6, 1), _pct(lat, 0.5), _pct(lat, 0.99))


def with_local_group(flush: str, fn: Callable[[list[str]], Any]) -> Any:
    """Run ``fn(urls)`` against a fresh local 3-node group with ``flush``."""
    return with_secured_group(flush, "off", lambda urls, _: fn(urls))


def with_secured_group(flush: str, security_mode: str, fn: Callable[[list[str], Security], Any]) -> Any:
    """Run ``fn(urls, security)`` against a fresh local 3-node group with
    ``flush``, secured as ``security_mode`` (``client.local.security``)."""
    base = Path(tempfile.mkdtemp(prefix="raftmq-bench-"))
    try:
        security = prepare(security_mode, base)
        cluster_mod.up(base, 3, None, None, flush, "bench", detach=True, echo=lambda *_: None,
                       extra=security.node_settings, scheme=security.scheme, ssl_context=security.ssl_context())
        _, _, specs = cluster_mod.load_state(base)
        return fn([n.http_url for n in specs], security)
    finally:
        try:
            cluster_mod.down(base, echo=lambda *_: None)
        finally:
            shutil.rmtree(base, ignore_errors=True)


def emit(r: Result, as_json: bool) -> None:
    if as_json:
        print(json.dumps(asdict(r)), flush=True)
    else:
        p50 = "-" if r.p50_ms is None else f"{r.p50_ms:.2f}"
        p99 = "-" if r.p99_ms is None else f"{r.p99_ms:.2f}"
        print(f"{r.bench:8} flush={r.flush:5} security={r.security:7} batch={r.batch:<5} clients={r.producers:<3} "
              f"{r.messages_per_s:>9,.0f} msg/s {r.mb_per_s:>7.1f} MB/s  p50 {p50} ms  p99 {p99} ms", flush=True)


async def produce_per_message(urls: list[str], topic: str, queues: int, outstanding: int, duration_s: float,
                              message_bytes: int, flush: str) -> Result:
    """One ``Producer.send`` call per message, ``outstanding`` calls in flight:
    what the client's automatic batching (linger, per-queue requests) makes of
    it. Latency is per message, from the call to its acknowledgement."""
    from raftmq.client.producer import Producer

    await ensure_topic(urls, topic, queues)
    body = os.urandom(message_bytes // 2).hex().encode()[:message_bytes]
    lat: list[float] = []
    count = 0
    start = time.monotonic()
    stop_at = start + duration_s
    warm_until = start + min(1.0, duration_s / 5)
    async with Producer(urls) as p:
        async def caller() -> None:
            nonlocal count
            while True:
                t0 = time.monotonic()
                if t0 >= stop_at:
                    return
                await p.send(topic, body)
                if t0 >= warm_until:
                    lat.append(time.monotonic() - t0)
                    count += 1

        await asyncio.gather(*(caller() for _ in range(outstanding)))
    seconds = stop_at - warm_until
    rate = count / seconds
    return Result("produce-per-message", flush, 1, outstanding, count, round(seconds, 2), round(rate),
                  round(rate * message_bytes / 1e6, 1), _pct(lat, 0.5), _pct(lat, 0.99))
