"""Consumers: ``PullConsumer`` (you choose queues and offsets) and
``PushConsumer`` (queues are assigned, messages are handed to your handler).

Reads (pulls, committed offsets) may be served by any node, since every node
serves only committed data; the transport prefers the leader and falls back to
the others while it is down. Offset commits are writes and go to the leader.

PushConsumer, clustering mode (RocketMQ's CLUSTERING). Every consumer of a
group heartbeats ``POST /v1/groups/{group}/heartbeat`` every
``heartbeat_interval_ms`` and gets back the sorted list of live members; the
topic's queues are then divided with ``allocate_averagely`` (below), so each
queue has exactly one owner. When the answer changes, a consumer stops
fetching the queues it lost (letting running handlers finish, then committing
their progress) and starts the queues it gained from their committed offset
(or, with none, from the queue's start or end: ``from_where``).

A new leader knows no members until they heartbeat to it, so right after a
leader change a member list that *shrank* is not trusted for
``2 * heartbeat_interval_ms``: in that grace the consumer keeps the union of
the old and new lists (taking a queue too late delays it; taking one too
early processes it twice).

Broadcasting mode: every consumer reads every queue; its offsets are stored on
the broker under the offset group ``<group>.<client_id>`` (pass a stable
``client_id`` to resume after a restart).

Delivery is at least once. A message's offset is committed only after its
handler returned; a handler that raises gets the same message again after a
backoff, forever, until it succeeds or the queue is given away (the next owner
then starts from the committed offset, which is still before that message).
Non-orderly: up to ``max_concurrency`` handlers run at once (also within a
queue), and a queue's committed offset is the lowest offset not yet handled
(``OffsetTracker``). Orderly (``orderly=True``): each queue is processed
strictly in offset order, one message at a time, and only while this
consumer holds the queue's broker-side lock (``POST /v1/groups/{g}/locks``,
renewed every ``lock_renew_interval_ms``; processing pauses when the lease
runs out unrenewed, and a released queue is unlocked only after its running
handler has finished), so two consumers never process one queue at once.
"""

from __future__ import annotations

import asyncio
import inspect
import logging
import os
import socket
import time
import uuid
from collections import OrderedDict
from dataclasses import dataclass, field
from typing import Any, Callable, Iterable, Mapping, Sequence
from urllib.parse import quote

from raftmq.client.errors import OffsetOutOfRange, RaftMQError, Timeout
from raftmq.client.http import Transport, TransportConfig, split_options
from raftmq.client.sync import SyncClient

log = logging.getLogger(__name__)

Handler = Callable[["ReceivedMessage"], Any]


# ----------------------------------------------------------------------
# messages
# ----------------------------------------------------------------------
@dataclass(slots=True, frozen=True)
class ReceivedMessage:
    """One stored message as a consumer sees it. Timestamps are ms since the epoch."""

    msg_id: str
    topic: str
    queue_id: int
    queue_offset: int
    body: bytes
    tags: str = ""
    keys: tuple[str, ...] = ()
    properties: Mapping[str, str] = field(default_factory=dict)
    born_ts: int = 0
    store_ts: int = 0

    @classmethod
    def from_wire(cls, d: Mapping[str, Any], topic: str | None = None, queue_id: int | None = None) -> "ReceivedMessage":
        body = d.get("body", b"")
        if isinstance(body, str):  # a JSON answer; the client asks for msgpack, where bodies are bytes
            body = body.encode("utf-8")
        return cls(
            msg_id=d["msg_id"],
            topic=d.get("topic", topic or ""),
            queue_id=d.get("queue_id", queue_id if queue_id is not None else -1),
            queue_offset=d["queue_offset"],
            body=body,
            tags=d.get("tags") or "",
            keys=tuple(d.get("keys") or ()),
            properties=d.get("properties") or {},
            born_ts=d.get("born_ts") or 0,
            store_ts=d.get("store_ts") or 0,
        )

    def text(self, encoding: str = "utf-8") -> str:
        return self.body.decode(encoding)


@dataclass(slots=True, frozen=True)
class PullResult:
    """One pull: the messages, where to continue (``next_offset``; past any
    messages the tag filter skipped) and the queue's bounds at that moment."""

    messages: list[ReceivedMessage]
    next_offset: int
    max_offset: int
    min_offset: int = 0


def topic_path(topic: str) -> str:
    return f"/v1/topics/{quote(topic, safe='')}"


def group_path(group: str) -> str:
    return f"/v1/groups/{quote(group, safe='')}"


async def fetch(transport: Transport, topic: str, queue_id: int, offset: int, max_messages: int = 32,
                wait_ms: int = 0, tags: str | None = None) -> PullResult:
    """``GET .../queues/{q}/messages``: committed messages from ``offset``, long-polling up to ``wait_ms``."""
    params: dict[str, Any] = {"offset": offset, "max": max_messages, "wait_ms": wait_ms}
    if tags and tags != "*":
        params["tags"] = tags
    res = await transport.call("GET", f"{topic_path(topic)}/queues/{queue_id}/messages", params=params,
                               extra_timeout_s=wait_ms / 1000,
                               deadline_s=(transport.config.deadline_ms + wait_ms) / 1000)
    msgs = [ReceivedMessage.from_wire(m, topic, queue_id) for m in res.get("messages") or []]
    return PullResult(msgs, res.get("next_offset", offset), res.get("max_offset", 0), res.get("min_offset", 0))


async def queue_bounds(transport: Transport, topic: str) -> dict[int, tuple[int, int]]:
    """``{queue_id: (min_offset, max_offset)}`` of a topic (raises ``TopicNotFound``)."""
    t = await transport.call("GET", topic_path(topic))
    return {q["queue_id"]: (q["min_offset"], q["max_offset"]) for q in t.get("queue_offsets") or []}


async def committed_offsets(transport: Transport, group: str, topic: str) -> dict[int, int | None]:
    res = await transport.call("GET", f"{group_path(group)}/offsets", params={"topic": topic})
    return {o["queue_id"]: o.get("offset") for o in res.get("offsets") or []}


async def commit_offset(transport: Transport, group: str, topic: str, queue_id: int, offset: int,
                        deadline_s: float | None = None, reset: bool = False) -> int:
    """Commit ``offset``; the broker keeps the higher of it and the stored one
    unless ``reset`` (a seek back). Returns the offset now stored."""
    body: dict[str, Any] = {"topic": topic, "queue_id": queue_id, "offset": offset}
    if reset:
        body["reset"] = True
    res = await transport.call("POST", f"{group_path(group)}/offsets", body, write=True, deadline_s=deadline_s)
    return int(res["offset"]) if isinstance(res, dict) and "offset" in res else offset


# ----------------------------------------------------------------------
# pure pieces: allocation and offset tracking
# ----------------------------------------------------------------------
def allocate_averagely(queue_ids: Iterable[int], consumer_ids: Iterable[str], me: str) -> list[int]:
    """The queues ``me`` owns, as RocketMQ's AllocateMessageQueueAveragely.

    Queue ids and consumer ids are sorted (so every consumer computes the same
    answer from the same member list, whatever order it arrived in). With Q
    queues and N consumers, consumer i (its index in the sorted ids) gets a
    contiguous range of Q // N queues, and the first Q % N consumers one more:
    Q=8, N=3 gives [0,1,2], [3,4,5], [6,7]. With N > Q the consumers after the
    first Q get nothing. A consumer not in the list gets nothing."""
    queues = sorted(set(queue_ids))
    cids = sorted(set(consumer_ids))
    if me not in cids or not queues:
        return []
    index, n, q = cids.index(me), len(cids), len(queues)
    mod = q % n
    if q <= n:
        average = 1
    else:
        average = q // n + 1 if mod > 0 and index < mod else q // n
    start = index * average if mod > 0 and index < mod else index * average + mod
    count = min(average, q - start)
    return [queues[start + i] for i in range(max(0, count))]


class OffsetTracker:
    """Which fetched offsets of one queue are still being handled (RocketMQ's
    ProcessQueue): the committable offset is the lowest unhandled one, or the
    fetch position when all are handled. Offsets are added in increasing order."""

    def __init__(self, start: int) -> None:
        self.fetched = start  # next offset to fetch
        self._pending: OrderedDict[int, bool] = OrderedDict()  # offset -> handled, oldest first
        self._room = asyncio.Event()
        self._room.set()
        self.limit: int | None = None

    def __len__(self) -> int:
        return len(self._pending)

    def add(self, offset: int) -> None:
        self._pending[offset] = False
        if self.limit is not None and len(self._pending) >= self.limit:
            self._room.clear()

    def fetched_to(self, next_offset: int) -> None:
        if next_offset > self.fetched:
            self.fetched = next_offset

    def done(self, offset: int) -> None:
        if offset not in self._pending:
            return
        self._pending[offset] = True
        while self._pending:
            first = next(iter(self._pending))
            if not self._pending[first]:
                break
            self._pending.popitem(last=False)
        if self.limit is None or len(self._pending) < self.limit:
            self._room.set()

    def commit_offset(self) -> int:
        """Every offset below this one has been handled."""
        return next(iter(self._pending)) if self._pending else self.fetched

    async def wait_room(self) -> None:
        await self._room.wait()


# ----------------------------------------------------------------------
# pull consumer
# ----------------------------------------------------------------------
@dataclass(slots=True, frozen=True)
class PullConsumerConfig:
    from_where: str = "beginning"  # where a queue with no committed offset starts: "beginning" or "end"

    def __post_init__(self) -> None:
        if self.from_where not in ("beginning", "end"):
            raise ValueError("from_where: must be 'beginning' or 'end'")


class PullConsumer:
    """Reads one topic for one consumer group, queue by queue, at offsets you
    control. Keeps a local position per queue (``seek``; advanced by ``pull``);
    ``commit`` stores a position on the broker for the group."""

    def __init__(self, urls: Iterable[str] | str, group: str, topic: str, config: PullConsumerConfig | None = None,
                 *, transport_config: TransportConfig | None = None, transport: Transport | None = None,
                 **options: Any) -> None:
        self.config, tcfg = split_options(config or PullConsumerConfig(), transport_config, options)
        self.transport = transport if transport is not None else Transport(urls, tcfg)
        self._own_transport = transport is None
        self.group = group
        self.topic = topic
        self._positions: dict[int, int] = {}

    async def start(self) -> None:
        await self.transport.start()

    async def close(self) -> None:
        if self._own_transport:
            await self.transport.close()

    async def __aenter__(self) -> "PullConsumer":
        await self.start()
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self.close()

    async def queues(self) -> list[int]:
        """The topic's queue ids."""
        return sorted(await queue_bounds(self.transport, self.topic))

    async def bounds(self) -> dict[int, tuple[int, int]]:
        """``{queue_id: (min_offset, max_offset)}``."""
        return await queue_bounds(self.transport, self.topic)

    def seek(self, queue_id: int, offset: int) -> None:
        """Set the local position: the next ``pull`` of this queue reads from ``offset``."""
        if offset < 0:
            raise ValueError("offset must not be negative")
        self._positions[queue_id] = offset

    def position(self, queue_id: int) -> int | None:
        return self._positions.get(queue_id)

    async def _start_position(self, queue_id: int) -> int:
        pos = self._positions.get(queue_id)
        if pos is not None:
            return pos
        committed = (await committed_offsets(self.transport, self.group, self.topic)).get(queue_id)
        if committed is None:
            lo, hi = (await queue_bounds(self.transport, self.topic)).get(queue_id, (0, 0))
            committed = lo if self.config.from_where == "beginning" else hi
        self._positions[queue_id] = committed
        return committed

    async def fetch(self, queue_id: int, offset: int | None = None, max_messages: int = 32, wait_ms: int = 0,
                    tags: str | None = None) -> PullResult:
        """Like ``pull`` but returns the whole ``PullResult``."""
        if offset is None:
            offset = await self._start_position(queue_id)
        res = await fetch(self.transport, self.topic, queue_id, offset, max_messages, wait_ms, tags)
        self._positions[queue_id] = res.next_offset
        return res

    async def pull(self, queue_id: int, offset: int | None = None, max_messages: int = 32, wait_ms: int = 0,
                   tags: str | None = None) -> list[ReceivedMessage]:
        """Up to ``max_messages`` committed messages of ``queue_id`` from ``offset``
        (default: the local position, else the group's committed offset, else
        ``from_where``), waiting up to ``wait_ms`` for the first one; ``tags``
        like ``"a||b"`` filters. Advances the local position past them."""
        return (await self.fetch(queue_id, offset, max_messages, wait_ms, tags)).messages

    async def commit(self, queue_id: int, offset: int | None = None, reset: bool = False) -> int:
        """Store ``offset`` (default: the local position) as the group's committed
        offset of ``queue_id``: the next message to consume. Committed offsets
        only move forward; ``reset=True`` moves one back (after a seek).
        Returns the offset now stored."""
        if offset is None:
            offset = self._positions.get(queue_id)
            if offset is None:
                raise ValueError(f"no local position for queue {queue_id}: pull or seek first, or pass offset")
        return await commit_offset(self.transport, self.group, self.topic, queue_id, offset, reset=reset)

    async def committed(self) -> dict[int, int | None]:
        """``{queue_id: committed offset or None}`` of this group on this topic."""
        return await committed_offsets(self.transport, self.group, self.topic)


# ----------------------------------------------------------------------
# push consumer
# ----------------------------------------------------------------------
@dataclass(slots=True, frozen=True)
class PushConsumerConfig:
    mode: str = "clustering"  # "clustering": queues divided among the group; "broadcasting": all to everyone
    orderly: bool = False  # one message at a time per queue, in order, under the queue's broker lock
    client_id: str | None = None  # default: host-pid-random; set it for broadcasting that resumes after restarts
    from_where: str = "beginning"  # a queue with no committed offset starts at its "beginning" or "end"
    tags: str | None = None  # tag filter, like "a||b"
    pull_batch: int = 32  # messages per pull
    long_poll_ms: int = 1000  # how long one pull waits for new messages
    max_concurrency: int = 16  # handlers running at once (non-orderly)
    max_inflight_per_queue: int = 1000  # fetched but unhandled messages per queue before fetching pauses
    handler_in_thread: bool = True  # run a synchronous handler in a worker thread (keeps heartbeats going)
    heartbeat_interval_ms: int = 1000
    commit_interval_ms: int = 500  # how often handled offsets are committed
    topic_refresh_interval_ms: int = 5000  # how often the topic's queue count is re-read
    retry_backoff_initial_ms: int = 100  # first pause before redelivering a message whose handler raised
    retry_backoff_max_ms: int = 5000
    release_timeout_ms: int = 10_000  # how long a released queue waits for its running handlers
    lock_lease_ms: int = 10_000  # orderly: lease asked for each queue lock (the broker caps it)
    lock_renew_interval_ms: int = 3000  # orderly: how often locks are renewed (well under the lease)

    def __post_init__(self) -> None:
        if self.mode not in ("clustering", "broadcasting"):
            raise ValueError("mode: must be 'clustering' or 'broadcasting'")
        if self.from_where not in ("beginning", "end"):
            raise ValueError("from_where: must be 'beginning' or 'end'")
        for name in ("pull_batch", "max_concurrency", "max_inflight_per_queue", "heartbeat_interval_ms",
                     "commit_interval_ms", "topic_refresh_interval_ms", "retry_backoff_initial_ms",
                     "retry_backoff_max_ms", "lock_lease_ms", "lock_renew_interval_ms"):
            if getattr(self, name) < 1:
                raise ValueError(f"{name}: must be at least 1")
        if self.long_poll_ms < 0 or self.release_timeout_ms < 0:
            raise ValueError("long_poll_ms and release_timeout_ms: must not be negative")
        if self.lock_renew_interval_ms * 2 > self.lock_lease_ms:
            raise ValueError("lock_renew_interval_ms: must be at most half of lock_lease_ms")
        if self.client_id is not None and not self.client_id:
            raise ValueError("client_id: must not be empty")


def default_client_id() -> str:
    return f"{socket.gethostname()}-{os.getpid()}-{uuid.uuid4().hex[:6]}"


class _QueueWork:
    """One owned queue: its fetch loop, its running handlers, its progress."""

    def __init__(self, queue_id: int, start: int, limit: int) -> None:
        self.queue_id = queue_id
        self.tracker = OffsetTracker(start)
        self.tracker.limit = limit
        self.committed = start
        self.commit_lock = asyncio.Lock()
        self.task: asyncio.Task[None] | None = None
        self.handlers: set[asyncio.Task[None]] = set()
        self.stopping = False
        self.locked_until = 0.0  # orderly: monotonic time our lease surely ends
        self.lock_changed = asyncio.Event()
        self.idle = asyncio.Event()  # orderly: no handler running
        self.idle.set()
        self.stopped = asyncio.Event()  # set when the queue is released

    def locked(self) -> bool:
        return time.monotonic() < self.locked_until


class PushConsumer:
    """Calls ``handler(message)`` (sync or async) for every message of ``topic``
    the group assigns to it; see the module docstring for the guarantees."""

    def __init__(self, urls: Iterable[str] | str, group: str, topic: str, handler: Handler,
                 config: PushConsumerConfig | None = None, *, transport_config: TransportConfig | None = None,
                 transport: Transport | None = None, **options: Any) -> None:
        self.config, tcfg = split_options(config or PushConsumerConfig(), transport_config, options)
        self.transport = transport if transport is not None else Transport(urls, tcfg)
        self._own_transport = transport is None
        self.group = group
        self.topic = topic
        self.handler = handler
        self.client_id = self.config.client_id or default_client_id()
        self.broadcasting = self.config.mode == "broadcasting"
        self.offset_group = f"{group}.{self.client_id}" if self.broadcasting else group
        self._is_async = inspect.iscoroutinefunction(handler) or inspect.iscoroutinefunction(
            getattr(handler, "__call__", None))
        self._work: dict[int, _QueueWork] = {}
        self._queue_ids: list[int] = []
        self._members: list[str] = []
        self._grace_until = 0.0
        self._seen_leader_changes = 0
        self._sem: asyncio.Semaphore | None = None
        self._tasks: list[asyncio.Task[None]] = []
        self._rebalance_lock: asyncio.Lock | None = None
        self._rebalance_needed: asyncio.Event | None = None
        self._desired: list[int] = []
        self._gain_at: dict[int, float] = {}  # queue -> when we may take it
        self._lock_now: asyncio.Event | None = None
        self._running = False
        self.stats = {"delivered": 0, "handler_errors": 0, "commits": 0, "rebalances": 0}

    # -- lifecycle ------------------------------------------------------------------
    async def start(self) -> None:
        """Join the group and start consuming. Raises if the topic does not exist,
        or (clustering) if the broker has no heartbeat endpoint (``Rejected``, code ``not_found``)."""
        self._sem = asyncio.Semaphore(self.config.max_concurrency)
        self._rebalance_lock = asyncio.Lock()
        self._rebalance_needed = asyncio.Event()
        self._lock_now = asyncio.Event()
        await self.transport.start()
        try:
            self._queue_ids = sorted(await queue_bounds(self.transport, self.topic))
            self._running = True
            if self.broadcasting:
                await self._assign(self._queue_ids)
            else:
                await self._assign(await self._heartbeat_once(), self._gain_delay_s())
                self._tasks.append(asyncio.create_task(self._heartbeat_loop(), name=f"raftmq-hb-{self.client_id}"))
                self._tasks.append(asyncio.create_task(self._rebalance_loop(), name="raftmq-rebalance"))
            self._tasks.append(asyncio.create_task(self._commit_loop(), name="raftmq-commit"))
            self._tasks.append(asyncio.create_task(self._topic_loop(), name="raftmq-topic"))
            if self.config.orderly:
                self._tasks.append(asyncio.create_task(self._lock_loop(), name="raftmq-locks"))
        except BaseException:
            await self.stop()
            raise

    async def stop(self) -> None:
        """Stop fetching, let running handlers finish (up to ``release_timeout_ms``),
        commit what was handled, release locks, close the connections."""
        if not self._running and not self._tasks and not self._work:
            if self._own_transport:
                await self.transport.close()
            return
        self._running = False
        for t in self._tasks:
            t.cancel()
        await asyncio.gather(*self._tasks, return_exceptions=True)
        self._tasks.clear()
        if self._work:
            await asyncio.gather(*(self._release(q) for q in list(self._work)), return_exceptions=True)
        if self._own_transport:
            await self.transport.close()

    async def __aenter__(self) -> "PushConsumer":
        await self.start()
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self.stop()

    def assigned(self) -> list[int]:
        """The queues this consumer owns now (orderly: including those whose lock it is still waiting for)."""
        return sorted(self._work)

    def processing(self) -> list[int]:
        """The queues being consumed now (orderly: only those whose lock is held)."""
        if not self.config.orderly:
            return self.assigned()
        return sorted(q for q, w in self._work.items() if w.locked())

    # -- membership and assignment ----------------------------------------------------
    async def _heartbeat_once(self) -> list[int]:
        """One heartbeat; returns the queues this consumer should own now."""
        interval_s = self.config.heartbeat_interval_ms / 1000
        res = await self.transport.call("POST", f"{group_path(self.group)}/heartbeat",
                                        {"client_id": self.client_id, "topic": self.topic}, write=True,
                                        deadline_s=max(3 * interval_s, 1.0))
        members = [m for m in res.get("members") or [] if isinstance(m, str)]
        if self.client_id not in members:
            members.append(self.client_id)
        now = time.monotonic()
        if self.transport.leader_changes != self._seen_leader_changes:
            if self._seen_leader_changes:
                self._grace_until = now + 2 * interval_s  # a new leader is still learning the members
            self._seen_leader_changes = self.transport.leader_changes
        if now < self._grace_until:
            members = sorted(set(members) | set(self._members))
        else:
            members = sorted(set(members))
        if members != self._members:
            log.info("consumer=%s group=%s topic=%s members=%s", self.client_id, self.group, self.topic, members)
        self._members = members
        self._desired = allocate_averagely(self._queue_ids, members, self.client_id)
        return self._desired

    async def _heartbeat_loop(self) -> None:
        interval_s = self.config.heartbeat_interval_ms / 1000
        while True:
            await asyncio.sleep(interval_s)
            try:
                await self._heartbeat_once()
            except asyncio.CancelledError:
                raise
            except RaftMQError as exc:
                # Keep consuming what we own; the next heartbeat tries again.
                log.warning("consumer=%s heartbeat failed: %s", self.client_id, exc)
                continue
            assert self._rebalance_needed is not None
            self._rebalance_needed.set()

    async def _rebalance_loop(self) -> None:
        """Applies the latest allocation; apart from the heartbeats, since releasing
        a queue waits for its handlers and heartbeats must not wait for that."""
        assert self._rebalance_needed is not None
        while True:
            await self._rebalance_needed.wait()
            self._rebalance_needed.clear()
            await self._assign(self._desired, self._gain_delay_s())

    def _gain_delay_s(self) -> float:
        """How long a queue that changed owner waits before we take it: long enough for
        its previous owner to see the same member list, release it and commit (one
        heartbeat and a half). Alone in the group, nobody else can hold a queue."""
        if self.broadcasting or len(self._members) <= 1:
            return 0.0
        return 1.5 * self.config.heartbeat_interval_ms / 1000

    async def _assign(self, queues: Sequence[int], gain_delay_s: float = 0.0) -> None:
        """Release the queues not in ``queues`` at once; start the new ones once they
        have been ours for ``gain_delay_s`` (checked again on every heartbeat)."""
        assert self._rebalance_lock is not None
        async with self._rebalance_lock:
            if not self._running:
                return
            want = set(queues)
            lost = [q for q in self._work if q not in want]
            now = time.monotonic()
            for q in [q for q in self._gain_at if q not in want or q in self._work]:
                del self._gain_at[q]
            gained = [q for q in sorted(want) if q not in self._work
                      and now >= self._gain_at.setdefault(q, now + gain_delay_s)]
            if not lost and not gained:
                return
            self.stats["rebalances"] += 1
            log.info("consumer=%s topic=%s rebalance: release %s, take %s", self.client_id, self.topic, lost, gained)
            if lost:
                await asyncio.gather(*(self._release(q) for q in lost))
            if gained:
                starts = await self._start_offsets(gained)
                for q in gained:
                    if q in starts:
                        self._gain_at.pop(q, None)
                        self._take(q, starts[q])
                if self.config.orderly and self._lock_now is not None:
                    self._lock_now.set()

    async def _start_offsets(self, queues: list[int]) -> dict[int, int]:
        """Committed offsets for ``queues``, or the queue's start/end when none.
        A queue whose offset cannot be read now is left for the next rebalance."""
        try:
            committed = await committed_offsets(self.transport, self.offset_group, self.topic)
            bounds = await queue_bounds(self.transport, self.topic)
        except RaftMQError as exc:
            log.warning("consumer=%s cannot read offsets (%s); queues %s wait", self.client_id, exc, queues)
            return {}
        out = {}
        for q in queues:
            c = committed.get(q)
            if c is None:
                lo, hi = bounds.get(q, (0, 0))
                c = lo if self.config.from_where == "beginning" else hi
            out[q] = c
        return out

    def _take(self, queue_id: int, start: int) -> None:
        work = _QueueWork(queue_id, start, self.config.max_inflight_per_queue)
        self._work[queue_id] = work
        run = self._run_orderly if self.config.orderly else self._run_concurrently
        work.task = asyncio.create_task(run(work), name=f"raftmq-queue-{queue_id}")

    async def _release(self, queue_id: int) -> None:
        work = self._work.get(queue_id)
        if work is None:
            return
        work.stopping = True
        work.stopped.set()
        if self.config.orderly and not work.idle.is_set():
            # Never cancel a running handler of an ordered queue: the lock must outlive it.
            try:
                await asyncio.wait_for(work.idle.wait(), self.config.release_timeout_ms / 1000)
            except asyncio.TimeoutError:
                log.warning("consumer=%s queue=%d handler still running after release_timeout_ms",
                            self.client_id, queue_id)
        if work.task is not None:
            work.task.cancel()
            await asyncio.gather(work.task, return_exceptions=True)
        if work.handlers:
            # Let running handlers finish; those waiting to retry stop at once (not handled, not committed).
            _, pending = await asyncio.wait(set(work.handlers), timeout=self.config.release_timeout_ms / 1000)
            for t in pending:
                t.cancel()
            await asyncio.gather(*pending, return_exceptions=True)
        try:
            await self._commit(work, deadline_s=5.0)
        except RaftMQError as exc:
            log.warning("consumer=%s queue=%d final commit failed: %s", self.client_id, queue_id, exc)
        finally:
            self._work.pop(queue_id, None)
        if self.config.orderly and work.locked_until > 0:
            try:
                await self.transport.call("POST", f"{group_path(self.offset_group)}/unlock",
                                          {"client_id": self.client_id, "topic": self.topic,
                                           "queue_ids": [queue_id]}, write=True, deadline_s=3.0)
            except RaftMQError as exc:  # the lease runs out by itself
                log.warning("consumer=%s queue=%d unlock failed: %s", self.client_id, queue_id, exc)

    async def _topic_loop(self) -> None:
        while True:
            await asyncio.sleep(self.config.topic_refresh_interval_ms / 1000)
            try:
                ids = sorted(await queue_bounds(self.transport, self.topic))
            except asyncio.CancelledError:
                raise
            except RaftMQError as exc:
                log.debug("consumer=%s topic refresh failed: %s", self.client_id, exc)
                continue
            if ids != self._queue_ids:
                log.info("consumer=%s topic=%s queues now %s", self.client_id, self.topic, ids)
                self._queue_ids = ids
                if self.broadcasting:
                    await self._assign(ids)
                elif self._rebalance_needed is not None:
                    self._desired = allocate_averagely(ids, self._members, self.client_id)
                    self._rebalance_needed.set()

    # -- offsets ------------------------------------------------------------------------
    async def _commit(self, work: _QueueWork, deadline_s: float | None = None) -> None:
        """Commit the queue's handled offset if it moved forward. One commit per queue
        at a time, so an older offset can never land after a newer one."""
        async with work.commit_lock:
            off = work.tracker.commit_offset()
            if off <= work.committed:
                return
            await commit_offset(self.transport, self.offset_group, self.topic, work.queue_id, off, deadline_s)
            work.committed = off
            self.stats["commits"] += 1

    async def _commit_loop(self) -> None:
        interval_s = self.config.commit_interval_ms / 1000
        while True:
            await asyncio.sleep(interval_s)
            for work in list(self._work.values()):
                try:
                    await self._commit(work, deadline_s=max(interval_s * 4, 2.0))
                except asyncio.CancelledError:
                    raise
                except RaftMQError as exc:
                    log.warning("consumer=%s queue=%d commit failed: %s", self.client_id, work.queue_id, exc)

    async def commit_now(self) -> None:
        """Commit every owned queue's handled offset now (also done every ``commit_interval_ms``)."""
        await asyncio.gather(*(self._commit(w) for w in list(self._work.values())))

    # -- fetching and handling ----------------------------------------------------------------
    async def _pull(self, work: _QueueWork, offset: int) -> PullResult | None:
        """One long poll; None after a failure (already waited a little)."""
        cfg = self.config
        try:
            return await fetch(self.transport, self.topic, work.queue_id, offset, cfg.pull_batch, cfg.long_poll_ms,
                               cfg.tags)
        except OffsetOutOfRange as exc:
            # A lagging node, or an offset past the end (a queue recreated?): wait, then retry from
            # where that node says the queue ends, which can only move us back (duplicates, never loss).
            log.warning("consumer=%s queue=%d offset %d out of range: %s", self.client_id, work.queue_id, offset, exc)
            await asyncio.sleep(cfg.retry_backoff_initial_ms / 1000)
            return PullResult([], exc.max_offset, exc.max_offset) if exc.max_offset is not None else None
        except (Timeout, RaftMQError) as exc:
            log.warning("consumer=%s queue=%d pull failed: %s", self.client_id, work.queue_id, exc)
            await asyncio.sleep(cfg.retry_backoff_initial_ms / 1000)
            return None

    async def _run_concurrently(self, work: _QueueWork) -> None:
        pos = work.tracker.fetched
        while True:
            await work.tracker.wait_room()
            res = await self._pull(work, pos)
            if res is None:
                continue
            if not res.messages and res.next_offset < pos:
                work.tracker.fetched = pos = res.next_offset  # moved back (see _pull)
                continue
            for m in res.messages:
                work.tracker.add(m.queue_offset)
                t = asyncio.create_task(self._handle(work, m))
                work.handlers.add(t)
                t.add_done_callback(work.handlers.discard)
            pos = res.next_offset
            work.tracker.fetched_to(pos)

    async def _handle(self, work: _QueueWork, m: ReceivedMessage) -> None:
        attempt = 0
        while True:
            if await self._deliver(m):
                work.tracker.done(m.queue_offset)
                return
            attempt += 1
            await self._pause(work, self._retry_delay_s(attempt))
            if work.stopping:
                return  # the queue was given away: its next owner redelivers the message

    async def _deliver(self, m: ReceivedMessage) -> bool:
        """Run the handler once; True if it returned, False if it raised."""
        assert self._sem is not None
        async with self._sem:
            try:
                if self._is_async:
                    await self.handler(m)
                elif self.config.handler_in_thread:
                    r = await asyncio.to_thread(self.handler, m)
                    if inspect.isawaitable(r):
                        await r
                else:
                    r = self.handler(m)
                    if inspect.isawaitable(r):
                        await r
            except asyncio.CancelledError:
                raise
            except Exception:  # noqa: BLE001 - the handler's failure: redeliver later
                self.stats["handler_errors"] += 1
                log.warning("consumer=%s handler failed on %s (queue %d offset %d); will redeliver",
                            self.client_id, m.msg_id, m.queue_id, m.queue_offset, exc_info=True)
                return False
            self.stats["delivered"] += 1
            return True

    @staticmethod
    async def _pause(work: _QueueWork, delay_s: float) -> None:
        """Sleep before a redelivery, cut short when the queue is released."""
        try:
            await asyncio.wait_for(work.stopped.wait(), delay_s)
        except asyncio.TimeoutError:
            pass

    def _retry_delay_s(self, attempt: int) -> float:
        cfg = self.config
        delay_ms: int = min(cfg.retry_backoff_max_ms, cfg.retry_backoff_initial_ms * 2 ** min(attempt - 1, 16))
        return delay_ms / 1000

    # -- orderly ------------------------------------------------------------------------------
    async def _wait_locked(self, work: _QueueWork) -> None:
        while not work.locked():
            work.lock_changed.clear()
            if work.locked():
                return
            await work.lock_changed.wait()

    async def _run_orderly(self, work: _QueueWork) -> None:
        pos = work.tracker.fetched
        while not work.stopping:
            await self._wait_locked(work)
            res = await self._pull(work, pos)
            if res is None:
                continue
            interrupted = False
            for m in res.messages:
                attempt = 0
                while True:
                    if work.stopping or not work.locked():
                        interrupted = True  # stop before this message; it is next once we hold the lock again
                        break
                    work.idle.clear()
                    try:
                        ok = await self._deliver(m)
                    finally:
                        work.idle.set()
                    if ok:
                        pos = work.tracker.fetched = m.queue_offset + 1
                        break
                    attempt += 1
                    await self._pause(work, self._retry_delay_s(attempt))
                if interrupted:
                    break
            if not interrupted:
                pos = work.tracker.fetched = res.next_offset  # also past messages the tag filter skipped

    async def _lock_loop(self) -> None:
        """Lock (and keep locked) every owned queue; a worker processes only while its lease lasts."""
        assert self._lock_now is not None
        interval_s = self.config.lock_renew_interval_ms / 1000
        retry_s = min(interval_s, 0.5)
        while True:
            waiting = any(not w.locked() for w in self._work.values())
            try:
                await asyncio.wait_for(self._lock_now.wait(), retry_s if waiting else interval_s)
            except asyncio.TimeoutError:
                pass
            self._lock_now.clear()
            queues = sorted(q for q, w in self._work.items() if not w.stopping)
            if not queues:
                continue
            sent = time.monotonic()
            try:
                res = await self.transport.call(
                    "POST", f"{group_path(self.offset_group)}/locks",
                    {"client_id": self.client_id, "topic": self.topic, "queue_ids": queues,
                     "lease_ms": self.config.lock_lease_ms}, write=True, deadline_s=interval_s)
            except asyncio.CancelledError:
                raise
            except RaftMQError as exc:
                log.warning("consumer=%s lock renewal failed: %s", self.client_id, exc)
                continue
            lease_s = (res.get("lease_ms") or self.config.lock_lease_ms) / 1000
            # The broker started the lease when it got the request, after ``sent``; keep a margin as well.
            until = sent + lease_s - min(1.0, lease_s / 10)
            for q in res.get("locked") or []:
                work = self._work.get(q)
                if work is not None:
                    work.locked_until = max(work.locked_until, until)
                    work.lock_changed.set()
            # A queue not granted keeps whatever lease it still has: the broker grants it to
            # nobody else before that lease ends (and a new leader grants none for a whole lease).


class SyncPullConsumer(SyncClient[PullConsumer]):
    """A blocking ``PullConsumer`` for scripts (its own event loop in a thread: ``client.sync``)."""

    def __init__(self, urls: Iterable[str] | str, group: str, topic: str, **options: Any) -> None:
        super().__init__("raftmq-pull-consumer", lambda: PullConsumer(urls, group, topic, **options))

    def pull(self, queue_id: int, offset: int | None = None, max_messages: int = 32, wait_ms: int = 0,
             tags: str | None = None) -> list[ReceivedMessage]:
        return self._run(self._client.pull(queue_id, offset, max_messages, wait_ms, tags))

    def fetch(self, queue_id: int, offset: int | None = None, max_messages: int = 32, wait_ms: int = 0,
              tags: str | None = None) -> PullResult:
        return self._run(self._client.fetch(queue_id, offset, max_messages, wait_ms, tags))

    def seek(self, queue_id: int, offset: int) -> None:
        self._client.seek(queue_id, offset)

    def position(self, queue_id: int) -> int | None:
        return self._client.position(queue_id)

    def commit(self, queue_id: int, offset: int | None = None, reset: bool = False) -> int:
        return self._run(self._client.commit(queue_id, offset, reset))

    def committed(self) -> dict[int, int | None]:
        return self._run(self._client.committed())

    def queues(self) -> list[int]:
        return self._run(self._client.queues())
