"""The broker as a plain object: everything the HTTP API offers, with no HTTP in it.

``Broker`` owns the dledger node and the applied ``BrokerState``. Writes
(produce, topic changes, offset commits) are validated (a produce request by
``broker.produce``, before it gets here), stamped by the leader (store time,
queue choice, tag hashes) and proposed to the log; they
return once the entry is committed on a majority and applied here. Reads
serve applied (hence committed) data from the ConsumeQueue and the CommitLog,
on any node, and check what they serve: a message read through a
ConsumeQueue entry must pass its CRC and carry that entry's topic, queue and
tag hash, and the entries must be in log order; otherwise the answer is a
503 ``storage_damaged`` (other nodes hold good copies), never a neighbour's
message, and the damage is recorded so the next start rebuilds the derived
files from the log.
"""

from __future__ import annotations

import asyncio
import itertools
import logging
import time
from pathlib import Path
from typing import Any

from raftmq.broker import commands
from raftmq.broker.commands import CommitOffset, CreateTopic, Produce
from raftmq.broker.config import BrokerConfig
from raftmq.broker.consumer_groups import ConsumerGroups
from raftmq.broker.produce import OutMessage, Part, ProduceRequest, plan_produce
from raftmq.broker.errors import (
    EntryTooLarge,
    InvalidArgument,
    MessageNotFound,
    NameTooLong,
    NoLeader,
    NotLeaderError,
    OffsetOutOfRange,
    OutcomeUnknown,
    QueueNotFound,
    TopicConflict,
    TopicNotFound,
    StorageDamaged,
    StorageFailed,
    TooManyGroups,
    TooManyTopics,
    Unavailable,
)
from raftmq.broker.message import (
    MAGIC,
    Message,
    RecordError,
    decode_record,
    encode_batch,
    format_msg_id,
    format_msg_ids,
    parse_msg_id,
    record_view,
    tag_hash,
)
from raftmq.broker.statemachine import BrokerState, expand
from raftmq.broker.store import CorruptStore
from raftmq.broker.store.consume_queue import ConsumeQueue, CqRead
from raftmq.dledger import (
    DLedger,
    DLedgerError,
    LeadershipLost,
    NodeConfig,
    NodeStopped,
    NotLeader,
    ProposalDropped,
    StateAheadOfLog,
    StorageFailure,
)

log = logging.getLogger(__name__)

TOPIC_CHARS = frozenset("abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ0123456789-_.%|")
RECORD_PEEK_BYTES = 4096
# What an AppendEntries frame holds besides its entries' data: the message's
# fields (ids of at most 128 characters, integers) and each entry's term,
# index and kind. Well under 1 KiB; 4 KiB leaves room.
FRAME_OVERHEAD_BYTES = 4096
SEGMENT_ENTRY_HEADER_BYTES = 32  # a log segment holds entries of at most segment_bytes - 32 bytes
READ_SPAN_BYTES = 1 << 20  # one positional read covers nearby records up to this span


def validate_topic_name(name: Any) -> str:
    if not isinstance(name, str) or not 1 <= len(name) <= 127 or not set(name) <= TOPIC_CHARS or name in (".", ".."):
        raise InvalidArgument(f"invalid topic name {name!r}: 1-127 characters of letters, digits and -_.%|")
    return name


def max_entry_bytes(cfg: NodeConfig) -> int:
    """The largest log entry body every node can take: a follower refuses a
    frame over its transport's ``max_frame_bytes`` (the group would then lose
    its leader, unable to replicate), and a log segment holds entries of
    ``segment_bytes - 32`` bytes. An entry larger than ``max_batch_bytes``
    travels alone in its AppendEntries (dledger's log reads stop before an
    entry that would take a batch past it), so its frame is the entry plus
    ``FRAME_OVERHEAD_BYTES`` at most."""
    return min(cfg.transport.max_frame_bytes - FRAME_OVERHEAD_BYTES, cfg.segment_bytes - SEGMENT_ENTRY_HEADER_BYTES)


class _QueueWaiters:
    """Long-poll wake-ups: one future per waiting pull, woken when its queue grows."""

    def __init__(self) -> None:
        self._waiting: dict[tuple[str, int], list[asyncio.Future[None]]] = {}

    def on_messages(self, topic: str, queue_id: int, max_offset: int) -> None:
        for fut in self._waiting.pop((topic, queue_id), ()):
            if not fut.done():
                fut.set_result(None)

    async def wait(self, topic: str, queue_id: int, timeout_s: float) -> None:
        fut: asyncio.Future[None] = asyncio.get_running_loop().create_future()
        self._waiting.setdefault((topic, queue_id), []).append(fut)
        try:
            await asyncio.wait_for(fut, timeout_s)
        except asyncio.TimeoutError:
            pass
        finally:
            lst = self._waiting.get((topic, queue_id))
            if lst is not None and fut in lst:
                lst.remove(fut)


class Broker:
    def __init__(self, config: BrokerConfig) -> None:
        self.config = config
        self.limits = config.limits
        self.state = BrokerState(config.data_dir, config.group)
        # Retention works in time marks: a few hundred per retention period.
        self.state.mark_interval_ms = max(1, min(60_000, int(config.retention_hours * 3600 * 1000 / 100)))
        self._loading_started = time.monotonic()
        applied = self.state.load_checkpoint()  # 0 when the derived state must be rebuilt from the log
        self._waiters = _QueueWaiters()
        self.state.listener = self._waiters
        node_cfg = NodeConfig.build(
            config.log,
            node_id=config.node_id,
            group=config.group,
            peers={m.id: m.raft_addr for m in config.members.values()},
            data_dir=str(Path(config.data_dir) / "dledger"),
        )
        self.max_entry_bytes = max_entry_bytes(node_cfg)
        try:
            self.log = DLedger(node_cfg, self.state, applied_index=applied)
        except StateAheadOfLog as exc:
            # The log lost its tail (torn write, power loss with async flush) below
            # our checkpoint: re-applying would dispatch those entries twice.
            # Rebuild the state from the log (and the peers) instead.
            self.state.rebuild(f"node={config.node_id} {exc}")
            self.log = DLedger(node_cfg, self.state, applied_index=0)
        self._rr = itertools.count()
        self.groups = ConsumerGroups(session_timeout_ms=config.consumer_session_timeout_ms,
                                     max_groups=config.limits.max_groups)
        self._groups_term: int | None = None
        self._tasks: list[asyncio.Task[None]] = []
        self.started_at = time.time()

    async def start(self) -> None:
        await self.log.start()
        self._tasks.append(asyncio.create_task(self._checkpointer(), name="broker-checkpoint"))
        self._tasks.append(asyncio.create_task(self._retention(), name="broker-retention"))
        if self.state.rebuild_reason is not None:
            self._tasks.append(asyncio.create_task(self._report_rebuild(self.log.last_index()),
                                                   name="broker-rebuild-report"))

    async def _report_rebuild(self, last_index: int) -> None:
        """Log how long re-applying the log took after the derived state was wiped."""
        await self.log.wait_applied(last_index)
        log.warning("node=%s event=rebuild_derived_done entries=%d elapsed_ms=%.0f reason=%r", self.config.node_id,
                    self.log.applied_index, (time.monotonic() - self._loading_started) * 1000,
                    self.state.rebuild_reason)

    async def stop(self) -> None:
        for t in self._tasks:
            t.cancel()
        for t in self._tasks:
            try:
                await t
            except asyncio.CancelledError:
                pass
        await self.log.stop()
        try:
            self.state.checkpoint()
        finally:
            self.state.close()

    async def _retention(self) -> None:
        """Delete CommitLog segments whose messages are all older than the
        retention time (RocketMQ's fileReservedTime), on every node."""
        retention_ms = int(self.config.retention_hours * 3600 * 1000)
        while True:
            await asyncio.sleep(self.config.retention_check_interval_ms / 1000)
            upto = self.state.retention_index(int(time.time() * 1000) - retention_ms)
            if upto < self.log.first_index():
                continue
            self.state.checkpoint()  # the ConsumeQueues must be durable before the log they index goes
            first = self.log.compact(upto)
            if first > 1:
                self.state.expire_before(first - 1, self.log.first_position())
                # At once: the last checkpoint names the files just deleted (a
                # crash before the next one would rebuild the derived state).
                self.state.checkpoint()
                log.info("node=%s retention: log now starts at index %d", self.config.node_id, first)

    async def _checkpointer(self) -> None:
        """Checkpoint every ``checkpoint_interval_ms`` if anything changed, and
        no faster than ``checkpoint_max_bytes_per_s``: after a checkpoint of
        ``n`` bytes the next waits ``n / checkpoint_max_bytes_per_s`` seconds
        if that is longer (a state of many groups is not rewritten every
        second). Between checkpoints the log holds what changed: a restart
        re-applies it. A failed checkpoint is logged and retried: the last
        good one stays, and the log holds the rest."""
        interval = self.config.checkpoint_interval_ms / 1000
        period = interval
        while True:
            await asyncio.sleep(period)
            try:
                written = self.state.checkpoint()
            except (StorageFailure, OSError) as exc:
                log.error("node=%s event=checkpoint_failed error=%r", self.config.node_id, exc)
                continue
            period = max(interval, written / self.config.checkpoint_max_bytes_per_s)

    # ------------------------------------------------------------------
    # leadership
    # ------------------------------------------------------------------
    def leader_url(self) -> str | None:
        lid = self.log.leader_id
        return self.config.members[lid].http_url if lid in self.config.members else None

    def require_leader(self) -> None:
        """Writes are decided by the leader: followers redirect before looking at the request."""
        if self.log.failed is not None:
            raise Unavailable(f"this node stopped after a storage failure: {self.log.failed!r}")
        if not self.log.is_leader():
            self._raise_not_leader(self.log.leader_id)

    def _raise_not_leader(self, leader_id: str | None) -> None:
        if leader_id is not None and leader_id != self.config.node_id and leader_id in self.config.members:
            raise NotLeaderError(leader_id, self.config.members[leader_id].http_url)
        raise NoLeader()

    async def _propose(self, cmd: commands.Command | bytes) -> Any:
        """The broker's one way into the log: propose ``cmd`` (or its
        encoding), wait until it is applied here, return the state machine's
        result; dledger's errors become the broker's (redirect, 503, outcome unknown)."""
        try:
            _, result = await self.log.propose_future(cmd if isinstance(cmd, bytes) else commands.encode(cmd))
            return result
        except NotLeader as exc:
            self._raise_not_leader(exc.leader_id)
        except LeadershipLost as exc:
            raise OutcomeUnknown(f"leadership changed while the write was in flight; it may or may not be stored ({exc})")
        except ProposalDropped as exc:
            raise Unavailable(f"the write was not stored, retry: {exc}")
        except NodeStopped as exc:
            raise Unavailable(f"this node is shutting down: {exc}")
        except StorageFailure as exc:
            raise StorageFailed(f"this node's log could not be written and the node stops; the write may or may "
                                f"not be stored on the others (retry with the same producer id and sequence): {exc}")

    async def propose(self, cmd: commands.Command) -> Any:
        """``_propose`` for the broker's other parts (the ACL routes of ``broker.http.auth``)."""
        return await self._propose(cmd)

    # ------------------------------------------------------------------
    # topics
    # ------------------------------------------------------------------
    def topic_queues(self, topic: str) -> int:
        n = self.state.topics.get(topic)
        if n is None:
            raise TopicNotFound(f"topic {topic!r} does not exist", topic=topic)
        return n

    def _check_queue(self, topic: str, queue_id: Any) -> int:
        n = self.topic_queues(topic)
        if not isinstance(queue_id, int) or isinstance(queue_id, bool):
            raise InvalidArgument(f"queue id must be an integer, not {queue_id!r}")
        if not 0 <= queue_id < n:
            raise QueueNotFound(f"topic {topic!r} has queues 0..{n - 1}; there is no queue {queue_id}",
                                topic=topic, queue_id=queue_id)
        return queue_id

    async def create_topic(self, name: Any, queues: Any) -> dict[str, Any]:
        self.require_leader()
        name = validate_topic_name(name)
        if not isinstance(queues, int) or isinstance(queues, bool) or not 1 <= queues <= self.limits.max_topic_queues:
            raise InvalidArgument(f"queues must be an integer from 1 to {self.limits.max_topic_queues}")
        current = self.state.topics.get(name)
        if current == queues:
            return self.describe_topic(name)
        if current is not None:
            raise TopicConflict(f"topic {name!r} exists with {current} queues; use PUT to change it",
                                topic=name, queues=current)
        # Checked here, and again as the topic is applied (a race may let two new topics past).
        limit = self.limits.max_topics
        full = len(self.state.topics) >= limit
        if full or await self._propose(CreateTopic(name, queues, limit)) is None:
            raise TooManyTopics(f"the group holds {len(self.state.topics)} topics; the limit is {limit}",
                                max_topics=limit)
        return self.describe_topic(name)

    async def update_topic(self, name: str, queues: Any) -> dict[str, Any]:
        self.require_leader()
        current = self.topic_queues(name)
        if not isinstance(queues, int) or isinstance(queues, bool) or not current <= queues <= self.limits.max_topic_queues:
            raise InvalidArgument(f"queues can only grow: from {current} up to {self.limits.max_topic_queues}")
        if queues != current:
            await self._propose(commands.UpdateTopic(name, queues))
        return self.describe_topic(name)

    def list_topics(self) -> list[dict[str, Any]]:
        return [{"name": t, "queues": n} for t, n in sorted(self.state.topics.items())]

    def describe_topic(self, name: str) -> dict[str, Any]:
        n = self.topic_queues(name)
        qs = []
        for q in range(n):
            lo, hi = self.state.queue_range(name, q)
            qs.append({"queue_id": q, "min_offset": lo, "max_offset": hi})
        return {"name": name, "queues": n, "queue_offsets": qs}

    # ------------------------------------------------------------------
    # produce
    # ------------------------------------------------------------------
    def writable_topic(self, topic: str) -> int:
        """The queue count of ``topic`` if this node can take a write to it:
        the leadership and topic check of a produce, done once, before its
        body is read (followers redirect, an unknown topic is a 404)."""
        self.require_leader()
        return self.topic_queues(topic)

    async def produce(self, topic: str, queues: int, request: ProduceRequest) -> list[dict[str, Any]]:
        """Store ``request`` (validated by ``parse_produce``) in ``topic`` of
        ``queues`` queues (from ``writable_topic``): one log entry per part
        (``plan_produce``), stamped here with the store time. Leadership is
        not checked again: a leader deposed meanwhile refuses the proposal.
        Every entry is encoded and its size checked before any is proposed:
        an entry over ``max_entry_bytes`` is a 413 ``entry_too_large``, and
        nothing of the request is stored."""
        parts = plan_produce(topic, request, queues, next(self._rr))
        msgs = request.messages
        producer_id, sequence = request.producer_id, request.sequence
        now = int(time.time() * 1000)
        entries: list[Any] = []  # an entry to propose (bytes), or the remembered result of a retry
        for p in parts:
            if producer_id is not None and sequence is not None:
                prior = self.state.dedup_lookup(producer_id, sequence, p.part)
                if prior is not None:
                    entries.append(prior)
                    continue
            entry = commands.encode(self._produce_command(topic, p, now, producer_id, sequence,
                                                          [msgs[i] for i in p.indexes]))
            if len(entry) > self.max_entry_bytes:
                raise EntryTooLarge(f"the {len(p.indexes)} messages to queue {p.queue_id} make a log entry of "
                                    f"{len(entry)} bytes; a follower takes entries of at most {self.max_entry_bytes} "
                                    f"bytes: send fewer or smaller messages per request",
                                    entry_bytes=len(entry), max_entry_bytes=self.max_entry_bytes)
            entries.append(entry)
        coros = [self._propose(e) if isinstance(e, bytes) else _done(e) for e in entries]
        if len(coros) == 1:  # the common case: no task per request, two event loop iterations less
            results = [await coros[0]]
        else:
            results = await asyncio.gather(*coros, return_exceptions=True)
        out: list[dict[str, Any] | None] = [None] * len(msgs)
        group = self.config.group
        for p, res in zip(parts, results):
            if isinstance(res, BaseException):
                raise res
            if not res:
                raise Unavailable("the topic or queue vanished while the write was in flight")
            for i, (msg_id, queue_id, qoff) in zip(p.indexes, expand(group, res)):
                out[i] = {"msg_id": msg_id, "queue_id": queue_id, "queue_offset": qoff}
        return out  # type: ignore[return-value]

    @staticmethod
    def _produce_command(topic: str, p: Part, now: int, producer_id: str | None, sequence: int | None,
                         msgs: list[OutMessage]) -> Produce:
        # The producer's id and sequence are the command's, once per entry: the
        # records carry nil (an id copied into every record multiplied the entry).
        records = encode_batch(topic, p.queue_id, now, None, None,
                               [(m.body, m.tags, m.keys, m.properties, m.born_ts_ms or now) for m in msgs])
        return Produce(topic, p.queue_id, now, producer_id, sequence, p.part,
                       [tag_hash(m.tags) if m.tags else 0 for m in msgs],
                       [m.keys for m in msgs], records)

    # ------------------------------------------------------------------
    # consume
    # ------------------------------------------------------------------
    async def pull(self, topic: str, queue_id: int, offset: int, max_messages: int, wait_ms: int,
                   tags: str | None) -> dict[str, Any]:
        self._check_queue(topic, queue_id)
        if offset < 0:
            raise OffsetOutOfRange("offset must not be negative")
        if not 1 <= max_messages <= self.limits.max_pull_messages:
            raise InvalidArgument(f"max must be from 1 to {self.limits.max_pull_messages}")
        if not 0 <= wait_ms <= self.limits.max_wait_ms:
            raise InvalidArgument(f"wait_ms must be from 0 to {self.limits.max_wait_ms}")
        want = names = None
        if tags and tags != "*":
            names = {t.strip() for t in tags.split("||") if t.strip()}
            want = {tag_hash(t) for t in names}
        deadline = time.monotonic() + wait_ms / 1000
        cq = self.state.cq.queue(topic, queue_id)
        hi = cq.max_offset
        if offset > hi:
            raise OffsetOutOfRange(f"offset {offset} is beyond the end of the queue ({hi})", max_offset=hi)
        while True:
            start = max(offset, cq.min_offset)
            picked: list[CqRead] = []
            next_offset = start
            scanned = 0
            while len(picked) < max_messages and next_offset < cq.max_offset and scanned < 16 * max_messages:
                batch = self._read_queue(cq, topic, queue_id, next_offset,
                                         max_messages if want is None else max_messages * 4)
                if not batch:
                    break
                for entry in batch:
                    next_offset = entry[0] + 1
                    scanned += 1
                    if want is not None and entry[3] not in want:
                        continue
                    picked.append(entry)
                    if len(picked) >= max_messages:
                        break
            out = self._read_messages(topic, queue_id, picked)
            if names is not None:
                out = [m for m in out if m["tags"] in names]  # drop tag hash collisions
            remaining = deadline - time.monotonic()
            if out or remaining <= 0 or next_offset < cq.max_offset:
                return {"messages": out, "next_offset": next_offset, "max_offset": cq.max_offset,
                        "min_offset": cq.min_offset}
            offset = next_offset
            await self._waiters.wait(topic, queue_id, remaining)

    def _read_queue(self, cq: ConsumeQueue, topic: str, queue_id: int, offset: int, n: int) -> list[CqRead]:
        """``cq.read``, with damaged entries reported (see ``_damaged``)."""
        try:
            return cq.read(offset, n)
        except CorruptStore as exc:
            raise self._damaged(f"consume queue {topic}/{queue_id} near offset {offset}: {exc}", derived=True)

    def _damaged(self, what: str, derived: bool, position: int | None = None) -> StorageDamaged:
        """Log damage found while serving, loudly, and the error to answer
        with. ``derived``: the damage is in a derived file (a ConsumeQueue or
        IndexFile), which the next start then rebuilds from the log; damage
        in the log itself (at ``position``) is reported to dledger, which
        repairs the entry from a peer."""
        log.error("node=%s event=storage_damaged derived=%s %s", self.config.node_id, derived, what)
        if derived:
            self.state.note_damage(what)
        elif position is not None:
            self.log.report_damage(position)
        return StorageDamaged(f"this node holds damaged data and will not serve it; read from another node "
                              f"(it rebuilds on restart): {what}")

    def _read_messages(self, topic: str, queue_id: int, picked: list[CqRead]) -> list[dict[str, Any]]:
        """Read records with as few positional reads as possible: records of one
        produce batch sit next to each other, so nearby ones (same segment,
        within READ_SPAN_BYTES) come from a single read. Each record must pass
        its CRC and carry its entry's topic, queue and tag hash: else the
        entry (or the record) is damaged, and nothing of the batch is served."""
        out: list[dict[str, Any]] = []
        sb = self.config.log.segment_bytes
        ids = format_msg_ids(self.config.group, [e[1] for e in picked])
        i, n = 0, len(picked)
        while i < n:
            lo = picked[i][1]
            hi = lo + picked[i][2]
            j = i + 1
            while j < n:
                p, sz = picked[j][1], picked[j][2]
                if p < lo or p + sz - lo > READ_SPAN_BYTES or p // sb != lo // sb:
                    break
                hi = max(hi, p + sz)
                j += 1
            try:
                if hi - lo > READ_SPAN_BYTES and not _framed(self.log.read_at(lo, 8), picked[i][2]):
                    # A large size is checked against the record's header before it
                    # is read: a damaged size must not make us read a whole segment.
                    raise self._damaged(f"{topic}/{queue_id} offset {picked[i][0]}: no record of {picked[i][2]} "
                                        f"bytes at position {lo}", derived=True)
                buf = memoryview(self.log.read_at(lo, hi - lo))
            except (DLedgerError, IndexError) as exc:
                raise self._damaged(f"log bytes {lo}..{hi} of {topic}/{queue_id} offsets "
                                    f"{picked[i][0]}..{picked[j - 1][0]} unreadable: {exc!r}",
                                    derived=isinstance(exc, IndexError))
            for k in range(i, j):
                qoff, phys, size, th = picked[k]
                raw = buf[phys - lo : phys - lo + size]
                try:
                    m = record_view(raw, ids[k], qoff)
                except RecordError as exc:
                    # A record whose framing holds but whose CRC fails is damaged in
                    # the log; a framing that does not fit the entry means the entry
                    # points at the wrong place.
                    raise self._damaged(f"{topic}/{queue_id} offset {qoff} at position {phys} size {size}: {exc}",
                                        derived=not _framed(raw), position=phys)
                if m["topic"] != topic or m["queue_id"] != queue_id or th != (tag_hash(m["tags"]) if m["tags"] else 0):
                    raise self._damaged(f"{topic}/{queue_id} offset {qoff} points at position {phys}, a message of "
                                        f"{m['topic']}/{m['queue_id']} with tags {m['tags']!r} "
                                        f"(the entry's tag hash is {th})", derived=True)
                out.append(m)
            i = j
        return out

    def get_message(self, msg_id: str) -> dict[str, Any]:
        try:
            group, phys = parse_msg_id(msg_id)
        except ValueError as exc:
            raise InvalidArgument(str(exc))
        if group != self.config.group:
            raise MessageNotFound(f"message {msg_id!r} belongs to broker group {group!r}, not {self.config.group!r}")
        msg, size = self._read_record(phys, msg_id)
        qoff = self._queue_offset_of(msg.topic, msg.queue_id, phys)
        if qoff is None:
            raise MessageNotFound(f"no message with id {msg_id!r}")
        return _message_view(self.config.group, phys, qoff, msg)

    def _read_record(self, phys: int, msg_id: str) -> tuple[Message, int]:
        """The record at ``phys``: 404 if there is none (an id made up or
        expired), 503 if one is there but damaged."""
        try:
            head = self.log.read_at(phys, RECORD_PEEK_BYTES)
            size = int.from_bytes(head[:4], "big")
            raw = head[:size] if size <= len(head) else self.log.read_at(phys, size)
        except (IndexError, ValueError) as exc:
            raise MessageNotFound(f"no message with id {msg_id!r}") from exc
        except DLedgerError as exc:
            raise self._damaged(f"message {msg_id}: the log cannot serve it: {exc}", derived=False)
        try:
            return decode_record(raw), size
        except RecordError as exc:
            if _framed(raw):
                raise self._damaged(f"message {msg_id}: {exc}", derived=False, position=phys)
            raise MessageNotFound(f"no message with id {msg_id!r}") from exc

    def _queue_offset_of(self, topic: str, queue_id: int, phys: int) -> int | None:
        """The queue offset of the message at ``phys``, by binary search of its
        ConsumeQueue (physical offsets grow with queue offsets); every entry
        read is checked against its neighbours (``ConsumeQueue.read``)."""
        if topic not in self.state.topics or not 0 <= queue_id < self.state.topics[topic]:
            return None
        cq = self.state.cq.queue(topic, queue_id)
        lo, hi = cq.min_offset, cq.max_offset - 1
        while lo <= hi:
            mid = (lo + hi) // 2
            entry = self._read_queue(cq, topic, queue_id, mid, 1)
            if not entry:
                return None
            p = entry[0][1]
            if p == phys:
                return mid
            if p < phys:
                lo = mid + 1
            else:
                hi = mid - 1
        return None

    def query_by_key(self, key: str, begin_ms: int, end_ms: int, max_results: int) -> list[dict[str, Any]]:
        if not key:
            raise InvalidArgument("key must not be empty")
        out = []
        first = self.log.first_position()
        for phys, size, _ts in self.state.index.query(key, begin_ms, end_ms, max_results * 2):
            if phys < first:
                continue  # deleted by retention
            raw = b""
            try:
                if size > READ_SPAN_BYTES and not _framed(self.log.read_at(phys, 8), size):
                    raise RecordError(f"no record of {size} bytes there")  # do not read a damaged size's worth
                raw = self.log.read_at(phys, size)
                msg = decode_record(raw)
            except (RecordError, IndexError, ValueError, DLedgerError) as exc:
                # Not served: the index entry points at no record of its size
                # (a damaged entry), or the log's record is damaged.
                framed = _framed(raw)
                self._damaged(f"index entry for key {key!r} at position {phys} size {size}: {exc!r}",
                              derived=not isinstance(exc, DLedgerError) and not framed,
                              position=phys if framed else None)
                continue
            if key not in msg.keys:
                continue  # a hash collision (or a damaged entry pointing at another record)
            qoff = self._queue_offset_of(msg.topic, msg.queue_id, phys)
            if qoff is not None:
                out.append(_message_view(self.config.group, phys, qoff, msg))
            if len(out) >= max_results:
                break
        return out

    # ------------------------------------------------------------------
    # consumer offsets
    # ------------------------------------------------------------------
    def group_offsets(self, group: str, topic: str) -> dict[str, Any]:
        n = self.topic_queues(topic)
        committed = self.state.offsets_of(group, topic)
        return {"group": group, "topic": topic,
                "offsets": [{"queue_id": q, "offset": committed.get(q)} for q in range(n)]}

    async def commit_offset(self, group: str, topic: str, queue_id: int, offset: int,
                            reset: bool = False) -> dict[str, Any]:
        self.require_leader()
        self._check_names(group)
        self._check_queue(topic, queue_id)
        if not isinstance(offset, int) or isinstance(offset, bool) or offset < 0:
            raise OffsetOutOfRange("offset must be a non-negative integer")
        _, hi = self.state.queue_range(topic, queue_id)
        if offset > hi:
            raise OffsetOutOfRange(f"offset {offset} is beyond the end of queue {queue_id} ({hi})", max_offset=hi)
        # Checked here, and again as the commit is applied (a race may let two new groups past).
        limit = self.limits.max_groups
        full = group not in self.state.group_keys and len(self.state.group_keys) >= limit
        stored = None if full else await self._propose(CommitOffset(group, topic, queue_id, offset, reset, limit))
        if stored is None:
            raise TooManyGroups(f"{len(self.state.group_keys)} consumer groups have committed offsets; the limit "
                                f"is {limit}", max_groups=limit)
        return {"group": group, "topic": topic, "queue_id": queue_id, "offset": stored}

    def _check_names(self, group: str, client_id: str = "") -> None:
        """A group name and a client id stored here are bounded (NameTooLong)."""
        limit = self.limits.max_group_name_chars
        for what, name in (("group name", group), ("client_id", client_id)):
            if len(name) > limit:
                raise NameTooLong(f"a {what} of {len(name)} characters exceeds the limit of {limit}")

    def group_lag(self, group: str, topic: str) -> dict[str, Any]:
        n = self.topic_queues(topic)
        committed = self.state.offsets_of(group, topic)
        queues = []
        total = 0
        for q in range(n):
            lo, hi = self.state.queue_range(topic, q)
            c = committed.get(q)
            lag = hi - (c if c is not None else lo)
            total += lag
            queues.append({"queue_id": q, "committed_offset": c, "max_offset": hi, "lag": lag})
        return {"group": group, "topic": topic, "lag": total, "queues": queues}

    # ------------------------------------------------------------------
    # consumer groups: leader-local membership and queue locks
    # ------------------------------------------------------------------
    def _leader_groups(self) -> tuple[ConsumerGroups, int]:
        """The leader-local groups (callers checked leadership first, before validating)."""
        now = int(time.time() * 1000)
        term = self.log.term
        if self._groups_term != term:
            self._groups_term = term
            self.groups.became_leader(now)
        return self.groups, now

    def heartbeat(self, group: str, topic: str, client_id: str) -> dict[str, Any]:
        self.require_leader()
        self.topic_queues(topic)
        if not client_id:
            raise InvalidArgument("client_id must not be empty")
        self._check_names(group, client_id)
        groups, now = self._leader_groups()
        return {"members": groups.heartbeat(group, topic, client_id, now),
                "session_timeout_ms": groups.session_timeout_ms}

    def members(self, group: str, topic: str) -> dict[str, Any]:
        self.require_leader()
        self.topic_queues(topic)
        groups, now = self._leader_groups()
        return {"group": group, "topic": topic, "members": groups.members(group, topic, now)}

    def lock_queues(self, group: str, topic: str, client_id: str, queue_ids: list[Any],
                    lease_ms: int | None = None) -> dict[str, Any]:
        """Lock ``queue_ids`` for ``lease_ms`` (default: the longest lease allowed)."""
        self.require_leader()
        for q in queue_ids:
            self._check_queue(topic, q)
        if lease_ms is None:
            lease_ms = self.groups.max_lease_ms
        if lease_ms < 1:
            raise InvalidArgument("lease_ms must be positive")
        self._check_names(group, client_id)
        groups, now = self._leader_groups()
        locked = groups.lock(group, topic, client_id, queue_ids, lease_ms, now)
        return {"locked": locked, "lease_ms": min(lease_ms, groups.max_lease_ms)}

    def unlock_queues(self, group: str, topic: str, client_id: str, queue_ids: list[Any]) -> dict[str, Any]:
        self.require_leader()
        for q in queue_ids:
            self._check_queue(topic, q)
        groups, _ = self._leader_groups()
        return {"unlocked": groups.unlock(group, topic, client_id, queue_ids)}

    # ------------------------------------------------------------------
    # cluster
    # ------------------------------------------------------------------
    def health(self) -> dict[str, Any]:
        st = self.log.status()
        return {
            "node_id": self.config.node_id,
            "group": self.config.group,
            "role": _public_role(st.role),
            "term": st.term,
            "leader_id": st.leader_id,
            "leader_url": self.leader_url(),
            "commit_index": st.commit_index,
            "applied_index": st.applied_index,
            "healthy": self.log.failed is None,
        }

    def cluster(self) -> dict[str, Any]:
        st = self.log.status()
        last = st.last_index
        members = []
        for m in self.config.members.values():
            match: int | None
            if m.id == self.config.node_id:
                role, match = _public_role(st.role), last
            else:
                role = "leader" if m.id == st.leader_id else "follower"
                peer = st.peers.get(m.id)
                match = peer.match_index if peer is not None else None
            members.append({
                "id": m.id, "http_url": m.http_url, "raft_addr": m.raft_addr, "role": role,
                # Known on the leader only (it tracks its followers' progress).
                "match_index": match, "lag": (last - match) if (match is not None and st.peers) else None,
            })
        return {"group": self.config.group, "leader_id": st.leader_id, "leader_url": self.leader_url(),
                "term": st.term, "members": members}


def _public_role(role: str) -> str:
    """The API names no pre-candidate: it is a candidate that has not yet raised its term."""
    return "candidate" if role == "pre_candidate" else role


async def _done(value: Any) -> Any:
    return value


def _framed(raw: bytes | memoryview, size: int | None = None) -> bool:
    """Whether ``raw`` starts with a record header (magic) whose size is
    ``size`` (default: ``len(raw)``): a record then sits there, even if its
    CRC fails."""
    want = len(raw) if size is None else size
    return len(raw) >= 8 and int.from_bytes(raw[:4], "big") == want and int.from_bytes(raw[4:8], "big") == MAGIC


def _message_view(group: str, phys: int, queue_offset: int, msg: Message) -> dict[str, Any]:
    return {
        "queue_offset": queue_offset,
        "msg_id": format_msg_id(group, phys),
        "topic": msg.topic,
        "queue_id": msg.queue_id,
        "body": msg.body,
        "tags": msg.tags,
        "keys": list(msg.keys),
        "properties": dict(msg.properties),
        "born_ts": msg.born_ts_ms,
        "store_ts": msg.store_ts_ms,
    }
