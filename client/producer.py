"""The producer: ``send`` one message, get its ``SendResult`` once a majority
of the group holds it.

Batching (as Kafka's producer does it). ``send`` only appends the message to
a *lane* and waits; a lane is one (topic, queue choice) and becomes one
request per flush:

- round robin (no ``queue_id``, no ``sharding_key``): the broker picks one
  queue per request. Up to ``max_in_flight`` requests of these lanes are in
  flight at once.
- an explicit ``queue_id``: one lane per queue; one request in flight per lane,
  so messages reach the queue in ``send`` call order.
- a ``sharding_key``: one lane per topic (the broker hashes each key to its
  queue); one request in flight, so messages with the same key are stored in
  call order (ordered messages).

A lane is flushed when it holds ``batch_max_messages`` messages or
``batch_max_bytes`` bytes, or ``linger_ms`` after its first message arrived.
While every request slot is busy the lane keeps filling, so under load batches
grow by themselves. A round-robin lane holding at least twice
``split_min_messages`` goes out as two requests rather than one, so that with
many sends outstanding two requests are in flight and the broker's stages
(parse, replicate, apply) overlap instead of taking turns with the client. Each caller gets its own ``SendResult``: results come back
in request order and are matched by position.

Idempotence (default). The producer has an id (a uuid) and numbers its
requests; a request is encoded once and every retry sends the same bytes with
the same ``producer_id`` and ``sequence``, so a retry after a failover is
answered with the original result instead of being stored twice. The broker
remembers the last 128 (sequence, part) pairs per producer; ``SequenceWindow``
keeps every request that may still be retried within that memory
(``dedup_window``, counted in parts: a sharding-key request is split by the
broker into one part per queue).

A request the broker rejects (4xx) stored nothing: a batch rejected because of
one bad message is resent message by message, so only that message's caller
gets the error; a batch over the broker's size limits is split in halves.
"""

from __future__ import annotations

import asyncio
import concurrent.futures
import logging
import time
import uuid
from collections import deque
from dataclasses import dataclass, field
from typing import Any, Iterable, Mapping, NamedTuple, Protocol, Sequence
from urllib.parse import quote

import msgpack

from raftmq.client.errors import MessageTooLarge, RaftMQError, Rejected, TopicNotFound
from raftmq.client.http import Transport, TransportConfig, split_options
from raftmq.client.sync import SyncClient

log = logging.getLogger(__name__)

Route = int | str | None  # None: round robin; int: explicit queue; "key": by sharding key
_BY_KEY = "key"
_OVERHEAD_BYTES = 48  # msgpack keys and the born timestamp of one message, roughly
_SPLIT_CODES = frozenset({"batch_too_large", "request_too_large"})


class SendResult(NamedTuple):
    """Where the broker stored one message. (A named tuple: built once per message on the hot path.)"""

    msg_id: str
    queue_id: int
    queue_offset: int


@dataclass(slots=True)
class Message:
    """One message for ``send_batch`` (``send`` takes the same fields as arguments)."""

    body: bytes | str
    tags: str | None = None
    keys: Sequence[str] | str | None = None
    properties: Mapping[str, str] | None = None
    queue_id: int | None = None
    sharding_key: str | None = None


@dataclass(slots=True, frozen=True)
class ProducerConfig:
    """Batching and idempotence. Transport options (``deadline_ms``,
    ``request_timeout_ms``, ...) are ``client.http.TransportConfig``'s."""

    linger_ms: float = 2.0  # how long a lane waits for more messages before its request goes
    batch_max_messages: int = 1024  # messages per request (the broker's default limit is 1024)
    batch_max_bytes: int = 4 << 20  # message bytes per request, roughly (the broker's request limit is 32 MiB)
    max_in_flight: int = 16  # round-robin requests in flight at once
    idempotent: bool = True  # send producer_id and sequence so retries are never stored twice
    producer_id: str | None = None  # default: a fresh uuid4 per Producer
    dedup_window: int = 96  # request parts that may be awaiting an answer at once; keep below the broker's 128
    max_sharding_keys_per_batch: int = 32  # distinct sharding keys per request (bounds its parts)
    split_min_messages: int = 256  # round robin: a lane of >= 2x this many goes as two requests (pipelining); 0: off

    def __post_init__(self) -> None:
        if self.linger_ms < 0:
            raise ValueError("linger_ms: must not be negative")
        for name in ("batch_max_messages", "batch_max_bytes", "max_in_flight", "dedup_window",
                     "max_sharding_keys_per_batch"):
            if getattr(self, name) < 1:
                raise ValueError(f"{name}: must be at least 1")
        if self.split_min_messages < 0:
            raise ValueError("split_min_messages: must not be negative")
        if self.max_sharding_keys_per_batch > self.dedup_window:
            raise ValueError("max_sharding_keys_per_batch: must not exceed dedup_window")
        if self.producer_id is not None and not self.producer_id:
            raise ValueError("producer_id: must not be empty")


class SequenceWindow:
    """Hands out request sequence numbers and keeps the requests that may still
    be retried within the broker's dedup memory.

    The broker remembers the last N stored (sequence, part) pairs of a producer.
    A request that is still unanswered may be retried (and must then be
    recognised), so every part stored after it must fit in that memory: the
    parts of all requests from the oldest unanswered one to the newest issued
    are kept at or below ``limit``. Pure bookkeeping plus a list of waiters."""

    def __init__(self, limit: int) -> None:
        self.limit = limit
        self._next = 0
        self._open: deque[list[int]] = deque()  # [sequence, weight, done], oldest first
        self._by_seq: dict[int, list[int]] = {}
        self._weight = 0
        self._waiters: list[asyncio.Future[None]] = []

    @property
    def weight(self) -> int:
        """Parts from the oldest unanswered request to the newest issued."""
        return self._weight

    def try_acquire(self, weight: int) -> int | None:
        weight = min(weight, self.limit)
        if self._open and self._weight + weight > self.limit:
            return None
        seq = self._next
        self._next += 1
        entry = [seq, weight, 0]
        self._open.append(entry)
        self._by_seq[seq] = entry
        self._weight += weight
        return seq

    async def acquire(self, weight: int) -> int:
        while (seq := self.try_acquire(weight)) is None:
            fut: asyncio.Future[None] = asyncio.get_running_loop().create_future()
            self._waiters.append(fut)
            try:
                await fut
            finally:
                if fut in self._waiters:
                    self._waiters.remove(fut)
        return seq

    def release(self, seq: int) -> None:
        """The request got its final answer (stored, refused, or given up on)."""
        entry = self._by_seq.pop(seq, None)
        if entry is None:
            return
        entry[2] = 1
        freed = False
        while self._open and self._open[0][2]:
            self._weight -= self._open.popleft()[1]
            freed = True
        if freed and self._waiters:
            waiters, self._waiters = self._waiters, []
            for w in waiters:
                if not w.done():
                    w.set_result(None)


class _Sender(Protocol):
    async def call(self, method: str, path: str, body: Any = None, **kw: Any) -> Any: ...
    async def start(self) -> None: ...
    async def close(self) -> None: ...


@dataclass(slots=True, eq=False)
class _Lane:
    """Messages waiting for a request: parallel lists, oldest first."""

    topic: str
    route: Route
    msgs: list[dict[str, Any]] = field(default_factory=list)
    futs: list[asyncio.Future[SendResult]] = field(default_factory=list)
    sizes: list[int] = field(default_factory=list)
    nbytes: int = 0
    keys: set[str] = field(default_factory=set)
    timer: asyncio.TimerHandle | None = None
    sender_waiting: bool = False
    lock: asyncio.Lock | None = None  # ordered lanes: one request in flight


class Producer:
    """Async producer for one broker group. Use ``async with Producer(urls) as p``
    or ``start()`` / ``close()``; ``send`` starts it on first use."""

    def __init__(self, urls: Iterable[str] | str, config: ProducerConfig | None = None, *,
                 transport_config: TransportConfig | None = None, transport: _Sender | None = None,
                 **options: Any) -> None:
        self.config, tcfg = split_options(config or ProducerConfig(), transport_config, options)
        self._transport: _Sender | Transport = transport if transport is not None else Transport(urls, tcfg)
        self.producer_id = self.config.producer_id or uuid.uuid4().hex
        self._window = SequenceWindow(self.config.dedup_window)
        self._slots: asyncio.Semaphore | None = None
        self._lanes: dict[tuple[str, Route], _Lane] = {}
        self._tasks: set[asyncio.Task[None]] = set()
        self._batch_limit = self.config.batch_max_messages  # lowered if the broker says batches are too large
        self._started: asyncio.Future[None] | None = None
        self._closed = False
        self._loop: asyncio.AbstractEventLoop | None = None
        self.stats = {"requests": 0, "splits": 0}

    @property
    def transport(self) -> _Sender | Transport:
        return self._transport

    # -- lifecycle ----------------------------------------------------------------
    async def start(self) -> None:
        if self._started is None:
            self._loop = asyncio.get_running_loop()
            self._slots = asyncio.Semaphore(self.config.max_in_flight)
            self._started = self._loop.create_future()
            try:
                await self._transport.start()
            finally:
                self._started.set_result(None)
        else:
            await self._started

    async def __aenter__(self) -> "Producer":
        await self.start()
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self.close()

    async def flush(self) -> None:
        """Send everything waiting in a lane and wait until every request is answered."""
        while True:
            for lane in self._lanes.values():
                if lane.msgs:
                    self._trigger(lane)
            if not self._tasks:
                return
            await asyncio.gather(*list(self._tasks), return_exceptions=True)

    async def close(self) -> None:
        """Flush, then close the connections. Sends after this raise RuntimeError."""
        if self._closed:
            return
        try:
            if self._started is not None:
                await self.flush()
        finally:
            self._closed = True
            for t in list(self._tasks):
                t.cancel()
            await asyncio.gather(*list(self._tasks), return_exceptions=True)
            await self._transport.close()

    # -- sending ----------------------------------------------------------------------
    async def send(self, topic: str, body: bytes | str, *, tags: str | None = None,
                   keys: Sequence[str] | str | None = None, properties: Mapping[str, str] | None = None,
                   queue_id: int | None = None, sharding_key: str | None = None) -> SendResult:
        """Send one message; returns once a majority of the group stored it.

        Queue choice: ``queue_id`` if given, else the queue ``sharding_key``
        hashes to (same key, same queue, in call order), else round robin.
        Raises ``Timeout`` (outcome unknown), ``TopicNotFound``,
        ``QueueNotFound``, ``MessageTooLarge`` or ``BadRequest``."""
        if self._started is None or not self._started.done():
            await self.start()
        return await self._enqueue(topic, body, tags, keys, properties, queue_id, sharding_key)

    async def send_batch(self, topic: str, messages: Iterable[Message | bytes | str | Mapping[str, Any]]
                         ) -> list[SendResult]:
        """Send many messages at once; one result per message, in order.
        They go out in as few requests as the limits allow (no linger).
        If any message fails, the first error is raised (after all finished)."""
        if self._started is None or not self._started.done():
            await self.start()
        futs = []
        for m in messages:
            if isinstance(m, (bytes, bytearray, memoryview, str)):
                futs.append(self._enqueue(topic, m, None, None, None, None, None, flush=False))
            elif isinstance(m, Message):
                futs.append(self._enqueue(topic, m.body, m.tags, m.keys, m.properties, m.queue_id, m.sharding_key,
                                          flush=False))
            else:
                futs.append(self._enqueue(topic, m["body"], m.get("tags"), m.get("keys"), m.get("properties"),
                                          m.get("queue_id"), m.get("sharding_key"), flush=False))
        for lane in self._lanes.values():
            if lane.msgs and lane.topic == topic:
                self._trigger(lane)
        results = await asyncio.gather(*futs, return_exceptions=True)
        for r in results:
            if isinstance(r, BaseException):
                raise r
        return results  # type: ignore[return-value]

    def _enqueue(self, topic: str, body: bytes | bytearray | memoryview | str, tags: str | None,
                 keys: Sequence[str] | str | None, properties: Mapping[str, str] | None,
                 queue_id: int | None, sharding_key: str | None, flush: bool = True) -> asyncio.Future[SendResult]:
        # The hot path of a per-message send: build one small dict, append it, no I/O.
        if self._closed:
            raise RuntimeError("the producer is closed")
        if type(body) is not bytes:
            body = body.encode("utf-8") if isinstance(body, str) else bytes(body)
        m: dict[str, Any] = {"body": body, "born_ts": int(time.time() * 1000)}
        size = len(body) + _OVERHEAD_BYTES
        route: Route = None
        if tags or keys or properties or queue_id is not None or sharding_key is not None:
            if tags:
                m["tags"] = tags
                size += len(tags)
            if keys:
                klist = [k for k in keys.split(" ") if k] if isinstance(keys, str) else list(keys)
                m["keys"] = klist
                size += sum(len(k) + 2 for k in klist)
            if properties:
                m["properties"] = dict(properties)
                size += sum(len(k) + len(v) + 4 for k, v in properties.items())
            if queue_id is not None:
                if not isinstance(queue_id, int) or isinstance(queue_id, bool) or queue_id < 0:
                    raise ValueError(f"queue_id must be a non-negative integer, not {queue_id!r}")
                m["queue_id"] = route = queue_id
            elif sharding_key is not None:
                m["sharding_key"] = sharding_key
                size += len(sharding_key)
                route = _BY_KEY
        lane = self._lanes.get((topic, route))
        if lane is None:
            lane = self._lanes[(topic, route)] = _Lane(topic, route)
            if route is not None:
                lane.lock = asyncio.Lock()
        assert self._loop is not None
        fut: asyncio.Future[SendResult] = self._loop.create_future()
        lane.msgs.append(m)
        lane.futs.append(fut)
        lane.sizes.append(size)
        lane.nbytes += size
        if route == _BY_KEY:
            lane.keys.add(sharding_key)  # type: ignore[arg-type]
        if self._lane_full(lane):  # lane.keys is empty but for sharding-key lanes
            self._trigger(lane)
        elif flush and lane.timer is None and not lane.sender_waiting:
            if self.config.linger_ms <= 0:
                self._trigger(lane)
            else:
                lane.timer = self._loop.call_later(self.config.linger_ms / 1000, self._trigger, lane)
        return fut

    def _lane_full(self, lane: _Lane) -> bool:
        return (len(lane.msgs) >= self._batch_limit or lane.nbytes >= self.config.batch_max_bytes
                or len(lane.keys) >= self.config.max_sharding_keys_per_batch)

    def _trigger(self, lane: _Lane) -> None:
        """Make sure one sender will take this lane's messages as soon as it may send."""
        if lane.timer is not None:
            lane.timer.cancel()
            lane.timer = None
        if lane.sender_waiting or not lane.msgs:
            return
        lane.sender_waiting = True
        assert self._loop is not None
        task = self._loop.create_task(self._drain(lane))
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)

    def _take(self, lane: _Lane) -> tuple[list[dict[str, Any]], list[asyncio.Future[SendResult]], int]:
        """The next batch from the front of the lane: (messages, futures, weight in dedup parts)."""
        max_n, max_bytes = self._batch_limit, self.config.batch_max_bytes
        n = len(lane.msgs)
        split = self.config.split_min_messages
        if split and lane.route is None and n >= 2 * split:
            max_n = min(max_n, max(split, (n + 1) // 2))
        if n <= max_n and lane.nbytes <= max_bytes and len(lane.keys) <= self.config.max_sharding_keys_per_batch:
            msgs, futs, keys = lane.msgs, lane.futs, lane.keys
            lane.msgs, lane.futs, lane.sizes, lane.nbytes, lane.keys = [], [], [], 0, set()
            return msgs, futs, max(1, len(keys))
        size, i = 0, 0
        keys = set()
        while i < n:
            if i > 0 and (i >= max_n or size + lane.sizes[i] > max_bytes):
                break
            if lane.route == _BY_KEY:
                k = lane.msgs[i]["sharding_key"]
                if k not in keys and len(keys) >= self.config.max_sharding_keys_per_batch:
                    break
                keys.add(k)
            size += lane.sizes[i]
            i += 1
        msgs, futs = lane.msgs[:i], lane.futs[:i]
        del lane.msgs[:i], lane.futs[:i], lane.sizes[:i]
        lane.nbytes -= size
        if lane.route == _BY_KEY:
            lane.keys = {m["sharding_key"] for m in lane.msgs}
        return msgs, futs, max(1, len(keys))

    async def _drain(self, lane: _Lane) -> None:
        gate = lane.lock if lane.lock is not None else self._slots
        assert gate is not None
        took = False
        try:
            async with gate:
                took = True
                lane.sender_waiting = False
                msgs, futs, weight = self._take(lane)
                if lane.msgs:
                    self._trigger(lane)  # the rest goes with the next free slot, growing meanwhile
                if msgs:
                    await self._send(lane.topic, msgs, futs, weight)
        finally:
            if not took:  # cancelled while waiting for a slot
                lane.sender_waiting = False

    async def _send(self, topic: str, msgs: list[dict[str, Any]], futs: list[asyncio.Future[SendResult]],
                    weight: int) -> None:
        """One request for ``msgs``; resolves ``futs`` by position (or with the error)."""
        try:
            results = await self._request(topic, msgs, weight)
        except asyncio.CancelledError:
            for f in futs:
                f.cancel()
            raise
        except Rejected as exc:
            if len(msgs) > 1 and not isinstance(exc, TopicNotFound):
                await self._resend_split(topic, msgs, futs, exc)
                return
            _fail(futs, exc)
            return
        except BaseException as exc:  # noqa: BLE001 - every caller must hear about it
            _fail(futs, exc)
            return
        if not isinstance(results, list) or len(results) != len(msgs):
            _fail(futs, RaftMQError(f"the broker answered {len(results) if isinstance(results, list) else '?'} "
                                    f"results for {len(msgs)} messages", code="bad_response"))
            return
        for f, r in zip(futs, results):
            if not f.done():
                f.set_result(SendResult(r["msg_id"], r["queue_id"], r["queue_offset"]))

    async def _resend_split(self, topic: str, msgs: list[dict[str, Any]], futs: list[asyncio.Future[SendResult]],
                            exc: Rejected) -> None:
        """A rejected request stored nothing: resend it in smaller pieces, in order."""
        self.stats["splits"] += 1
        if isinstance(exc, MessageTooLarge) and exc.code in _SPLIT_CODES:
            half = len(msgs) // 2
            self._batch_limit = max(1, min(self._batch_limit, half))
            log.info("producer=%s the broker refused a batch of %d (%s); batches now at most %d messages",
                     self.producer_id, len(msgs), exc.code, self._batch_limit)
            pieces = [(msgs[:half], futs[:half]), (msgs[half:], futs[half:])]
        else:
            pieces = [([m], [f]) for m, f in zip(msgs, futs)]  # only the bad message's caller gets the error
        for pm, pf in pieces:
            await self._send(topic, pm, pf, max(1, len({m.get("sharding_key") for m in pm})))

    async def _request(self, topic: str, msgs: list[dict[str, Any]], weight: int) -> Any:
        body: dict[str, Any] = {"messages": msgs}
        seq = None
        if self.config.idempotent:
            seq = await self._window.acquire(weight)
            body["producer_id"] = self.producer_id
            body["sequence"] = seq
        raw = msgpack.packb(body, use_bin_type=True)  # encoded once: every retry sends these bytes
        self.stats["requests"] += 1
        try:
            res = await self._transport.call("POST", f"/v1/topics/{quote(topic, safe='')}/messages", raw, write=True)
        finally:
            if seq is not None:
                self._window.release(seq)
        return res.get("results") if isinstance(res, dict) else None


def _fail(futs: list[asyncio.Future[SendResult]], exc: BaseException) -> None:
    for f in futs:
        if not f.done():
            f.set_exception(exc)


class SyncProducer(SyncClient[Producer]):
    """A blocking facade over ``Producer`` for scripts: the producer runs on its
    own event loop in a daemon thread (``client.sync``). ``send`` blocks until
    the message is stored; ``send_async`` returns a ``concurrent.futures.Future``
    so many sends can be outstanding (and batched) at once. Close it (or use ``with``)."""

    def __init__(self, urls: Iterable[str] | str, config: ProducerConfig | None = None, **options: Any) -> None:
        super().__init__("raftmq-producer", lambda: Producer(urls, config, **options))

    @property
    def producer(self) -> Producer:
        return self._client

    def send(self, topic: str, body: bytes | str, **kw: Any) -> SendResult:
        return self._run(self._client.send(topic, body, **kw))

    def send_async(self, topic: str, body: bytes | str, **kw: Any) -> concurrent.futures.Future[SendResult]:
        return self._submit(self._client.send(topic, body, **kw))

    def send_batch(self, topic: str, messages: Iterable[Message | bytes | str | Mapping[str, Any]]) -> list[SendResult]:
        return self._run(self._client.send_batch(topic, list(messages)))

    def flush(self) -> None:
        self._run(self._client.flush())
