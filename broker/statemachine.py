"""The broker's state machine: what committed log entries are applied to.

Applying a ``produce`` command dispatches its messages, in RocketMQ's manner:
each message's physical offset (entry body position + record offset) goes
into the ConsumeQueue of its topic and queue, and its keys into the
IndexFile. Topics, consumer offsets and the producer dedup table are plain
applied state. Everything here is deterministic: replicas that apply the same
log hold byte-identical ConsumeQueues and equal offsets.

Restart. Everything here is derived from the log, so nothing here is
precious: the applied state is checkpointed every second (and on a clean
stop) in ``<data>/broker/checkpoint``, framed with a magic, a version and a
CRC32 (byte layout: :mod:`broker.store.checkpoint`), together with the log
index it reflects and what it takes to verify every derived file on start
without trusting it: per ConsumeQueue file and per IndexFile the length and
CRC32 at that index. Order of a checkpoint: ConsumeQueues and IndexFiles
flushed first, then the checkpoint naming them written atomically
(``dledger.write_atomically``). The files only grow between checkpoints, so
a crash at any instant leaves a checkpoint that describes a prefix of every
file; retention deletes files and is followed at once by a checkpoint.

On start (:meth:`BrokerState.load_checkpoint`) the checkpoint is read and
checked, every derived file is compared with it and cut back to it, and the
log is re-applied from the next index. Anything missing, short, torn or
damaged (the checkpoint, a ConsumeQueue file, a ``min_offset`` file, an
IndexFile, or damage noticed while serving and recorded in the checkpoint)
is never a refusal to start: the derived state is wiped and the log
re-applied from its first index (``applied_index`` 0; dledger restores the
snapshot its log starts after, if retention compacted it), with one log line
``event=rebuild_derived reason=...``. Damaged hash slots alone are rebuilt in
place from the index entries.

The checkpoint's body (version 2), a msgpack map::

    index        int   the log index the state reflects
    topics       map   topic -> number of queues
    offsets      list  [group, topic, queue_id, offset]
    dedup        list  [producer_id, [[sequence, part, [queue_id, first_offset, [phys, ...]]], ...]]
    time_marks   list  [store_ts_ms, index]: retention marks
    queues       list  [topic, queue_id, min_offset, max_offset, [[file_start, entries, crc32], ...]]
                       (ConsumeQueue.checkpoint_record)
    index_marker int   IndexFile entries added in all
    index_files  list  [first, slot_count, capacity, entry_count, entries_crc32, slots_crc32,
                        begin_ts, end_ts, begin_phys, end_phys] (IndexStore.checkpoint_record)
    damaged      list  (optional) damage found while serving: the next start rebuilds
    acl          list  (optional) users: [access_key, secret_key, admin, [[resource, pattern, [actions]]]]
                       (broker.acl.permissions.AclState.to_doc; in snapshots too)

Version 1 (before the framing) had ``queues`` as ``[topic, queue_id,
max_offset]`` and no ``index_files``: it still loads, its files are cut to
its lengths (nothing to verify them by) and checksummed once for the next
checkpoint. A snapshot (for a follower behind the log's start) is the
version-1 map without framing, as before.
"""

from __future__ import annotations

import logging
import shutil
import struct
import time
from collections import OrderedDict
from pathlib import Path
from typing import Any, Iterable, Protocol

import msgpack

from raftmq.broker import commands
from raftmq.broker.acl.permissions import AclState
from raftmq.broker.commands import AclAddUser, AclGrant, AclRemoveUser, AclRevoke  # kept apart: merges stay simple
from raftmq.broker.commands import CommitOffset, CreateTopic, Noop, Produce, UpdateTopic
from raftmq.broker.message import RecordError, format_msg_ids, parse_msg_id, record_sizes
from raftmq.broker.store import CorruptStore
from raftmq.broker.store import checkpoint as checkpoint_file
from raftmq.broker.store.consume_queue import ConsumeQueueStore
from raftmq.broker.store.index_file import IndexStore
from raftmq.dledger import fsync_dir, write_atomically

log = logging.getLogger(__name__)

DEDUP_PER_PRODUCER = 128  # recent requests remembered per producer id
DEDUP_PRODUCERS = 10_000  # producer ids remembered (least recently used evicted)
MAX_DAMAGE_NOTES = 16  # damage found while serving, kept for the next checkpoint

# What opening or checking derived files raises when they are damaged (a
# short file makes struct or mmap raise, not CorruptStore).
DERIVED_DAMAGE = (CorruptStore, ValueError, struct.error)

# What a stored produce command yields: (queue_id, queue offset of its first
# message, physical offset of each message). Compact on purpose: every replica
# computes it and remembers it for dedup (and checkpoints it every second), and
# only the leader turns it into message ids, once, for the answer (``expand``).
ProduceResult = tuple[int, int, list[int]]


def expand(group: str, result: ProduceResult) -> list[tuple[str, int, int]]:
    """(msg_id, queue_id, queue_offset) per message of a produce result."""
    q, first, positions = result
    return [(msg_id, q, first + i) for i, msg_id in enumerate(format_msg_ids(group, positions))]


def _load_result(r: Any) -> ProduceResult:
    """A remembered result from a checkpoint or snapshot; checkpoints written
    before results were compact hold [[msg_id, queue_id, queue_offset], ...]."""
    if r and isinstance(r[0], list):
        return (r[0][1], r[0][2], [parse_msg_id(m[0])[1] for m in r])
    q, first, positions = r
    return (q, first, positions)


class ApplyListener(Protocol):
    """Told (outside the deterministic part) when a queue grows, to wake long polls."""

    def on_messages(self, topic: str, queue_id: int, max_offset: int) -> None: ...


class BrokerState:
    def __init__(self, data_dir: str | Path, group: str, cq_entries_per_file: int = 300_000) -> None:
        self.group = group
        self._dir = Path(data_dir) / "broker"
        self._dir.mkdir(parents=True, exist_ok=True)
        self._data = Path(data_dir)
        self._cq_entries_per_file = cq_entries_per_file
        self._damage: list[str] = []  # found opening the derived files: load_checkpoint rebuilds
        self._runtime_damage: list[str] = []  # found while serving: the next start rebuilds
        # Why the last load_checkpoint rebuilt the derived state from the log (None: it did not).
        self.rebuild_reason: str | None = None
        self.cq, self.index = self._open_derived()
        self.topics: dict[str, int] = {}
        self.offsets: dict[tuple[str, str, int], int] = {}
        self.group_keys: dict[str, int] = {}  # group -> its keys in ``offsets``: the groups with offsets
        self.dedup: OrderedDict[str, OrderedDict[tuple[int, int], ProduceResult]] = OrderedDict()
        self.applied_index = 0
        # Retention marks: (store_ts_ms, index) of the first produce entry at least
        # ``mark_interval_ms`` after the previous mark. Entries before a mark's
        # index were stored before its time, so retention can map "older than T"
        # to a log index without reading the log.
        self.time_marks: list[tuple[int, int]] = []
        self.mark_interval_ms = 60_000
        self.listener: ApplyListener | None = None
        self._dirty = False
        self.acl = AclState()  # users and grants (broker.acl), applied from ACL commands

    # ------------------------------------------------------------------
    # apply
    # ------------------------------------------------------------------
    def apply(self, index: int, payload: bytes, position: int) -> Any:
        """Apply the committed entry ``index``; ``position`` is where its body
        (``payload``) sits in the log, so a produce's records are indexed by
        their own log positions.

        An entry that does not decode to a valid command (a bug, or a faulty
        peer that had it committed) is applied as a no-op with one ERROR line
        naming its index: deterministic, so every replica stays identical."""
        self.applied_index = index
        self._dirty = True
        try:
            cmd = commands.decode(payload)
        except ValueError as exc:
            log.error("index=%d event=invalid_command action=applied_as_noop problem=%r", index, str(exc))
            return None
        if isinstance(cmd, Produce):
            return self._apply_produce(index, payload, position, cmd)
        if isinstance(cmd, CommitOffset):
            # Offsets only move forward, so a consumer that lost its queue in a
            # rebalance cannot drag it back; an explicit reset (seek) can.
            key = (cmd.group, cmd.topic, cmd.queue_id)
            old = self.offsets.get(key)
            if old is None:
                if cmd.max_groups is not None and cmd.group not in self.group_keys \
                        and len(self.group_keys) >= cmd.max_groups:
                    return None  # one group too many (the leader checked; a race let two past)
                self.group_keys[cmd.group] = self.group_keys.get(cmd.group, 0) + 1
            if cmd.reset or old is None or cmd.offset > old:
                self.offsets[key] = cmd.offset
            return self.offsets[key]
        if isinstance(cmd, (AclAddUser, AclRemoveUser, AclGrant, AclRevoke)):
            return self.acl.apply(cmd)
        if isinstance(cmd, (CreateTopic, UpdateTopic)):
            current = self.topics.get(cmd.name)
            if current is None and isinstance(cmd, CreateTopic) and cmd.max_topics is not None \
                    and len(self.topics) >= cmd.max_topics:
                return None  # one topic too many (the leader checked; a race let two past)
            if current is None or cmd.queues > current:
                self.topics[cmd.name] = cmd.queues
            return self.topics[cmd.name]
        assert isinstance(cmd, Noop)
        return None

    def _apply_produce(self, index: int, payload: bytes, position: int, cmd: Produce) -> ProduceResult | None:
        if cmd.producer_id is not None and cmd.sequence is not None:
            prior = self.dedup_lookup(cmd.producer_id, cmd.sequence, cmd.part)
            if prior is not None:
                return prior  # a retry of a request already stored: answer as the first time
        if cmd.topic not in self.topics or not 0 <= cmd.queue_id < self.topics[cmd.topic]:
            # Checked by the leader before proposing; a topic cannot vanish, so
            # this is only reachable through a bug. Refuse deterministically.
            log.error("index=%d produce to unknown topic/queue %s/%d ignored", index, cmd.topic, cmd.queue_id)
            return None
        try:
            sizes = record_sizes(cmd.records)
            problem = None
            if len(cmd.tag_hashes) < len(sizes):
                problem = f"{len(sizes)} records but {len(cmd.tag_hashes)} tag hashes"
        except RecordError as exc:
            problem = str(exc)
        if problem is not None:
            # Framed and checked by the leader; only a bug or a faulty peer gets here.
            log.error("index=%d event=invalid_command action=applied_as_noop problem=%r", index, problem)
            return None
        base = position + len(payload) - len(cmd.records)  # the records close the payload
        if not self.time_marks or cmd.store_ts_ms >= self.time_marks[-1][0] + self.mark_interval_ms:
            self.time_marks.append((cmd.store_ts_ms, index))
        cq = self.cq.queue(cmd.topic, cmd.queue_id)
        hashes = cmd.tag_hashes
        positions = [base + off for off, _ in sizes]
        first = cq.append_batch([(pos, size, hashes[i]) for i, (pos, (_, size)) in enumerate(zip(positions, sizes))])
        results = (cmd.queue_id, first, positions)
        keyed = [
            (key, base + off, size, cmd.store_ts_ms)
            for (off, size), keys in zip(sizes, cmd.keys)
            for key in keys
        ]
        if keyed:
            self.index.add_batch(keyed)
        if cmd.producer_id is not None and cmd.sequence is not None:
            self._remember(cmd.producer_id, (cmd.sequence, cmd.part), results)
        if self.listener is not None:
            self.listener.on_messages(cmd.topic, cmd.queue_id, first + len(sizes))
        return results

    def _remember(self, producer_id: str, key: tuple[int, int], results: ProduceResult) -> None:
        seen = self.dedup.get(producer_id)
        if seen is None:
            seen = self.dedup[producer_id] = OrderedDict()
            if len(self.dedup) > DEDUP_PRODUCERS:
                self.dedup.popitem(last=False)
        else:
            self.dedup.move_to_end(producer_id)
        seen[key] = results
        if len(seen) > DEDUP_PER_PRODUCER:
            seen.popitem(last=False)

    def dedup_lookup(self, producer_id: str, sequence: int, part: int) -> ProduceResult | None:
        seen = self.dedup.get(producer_id)
        return None if seen is None else seen.get((sequence, part))

    # ------------------------------------------------------------------
    # checkpoint and snapshot
    # ------------------------------------------------------------------
    def _state_doc(self) -> dict[str, Any]:
        """The applied state, as a snapshot holds it (queues as [topic, queue_id, max_offset])."""
        return {
            "index": self.applied_index,
            "topics": self.topics,
            "offsets": [[g, t, q, o] for (g, t, q), o in self.offsets.items()],
            "dedup": [[p, [[s, part, r] for (s, part), r in seen.items()]] for p, seen in self.dedup.items()],
            "queues": [[t, q, self.cq.queue(t, q).max_offset] for t, n in self.topics.items() for q in range(n)],
            "index_marker": self.index.marker(),
            "time_marks": self.time_marks,
            "acl": self.acl.to_doc(),
        }

    def _load_doc(self, doc: dict[str, Any]) -> None:
        self.applied_index = doc["index"]
        self.time_marks = [tuple(m) for m in doc.get("time_marks", [])]  # type: ignore[misc]
        self.topics = dict(doc["topics"])
        self.acl = AclState.from_doc(doc.get("acl"))
        self.offsets = {(g, t, q): o for g, t, q, o in doc["offsets"]}
        self.group_keys = {}
        for g, _, _ in self.offsets:
            self.group_keys[g] = self.group_keys.get(g, 0) + 1
        self.dedup = OrderedDict(
            (p, OrderedDict(((s, part), _load_result(r)) for s, part, r in seen)) for p, seen in doc["dedup"]
        )

    @property
    def checkpoint_path(self) -> Path:
        return self._dir / "checkpoint"

    def checkpoint(self) -> int:
        """Make the ConsumeQueues and IndexFiles durable, then record the state,
        the index it reflects and the files' lengths and CRCs (module docstring).
        Reads no derived file: their CRCs are carried as they are written.
        Returns the bytes of checkpoint written: 0 when nothing changed."""
        if not self._dirty:
            return 0
        self.cq.flush()
        self.index.flush()
        doc = self._state_doc()
        doc["queues"] = self.cq.checkpoint_records()
        doc["index_files"] = self.index.checkpoint_record()
        if self._runtime_damage:
            doc["damaged"] = self._runtime_damage
        data = checkpoint_file.encode(doc)
        write_atomically(self.checkpoint_path, data)
        self._dirty = False
        return len(data)

    def load_checkpoint(self) -> int:
        """Load the last checkpoint, check the derived files against it and cut
        what was written after it. Returns the log index it reflects: the log
        is re-applied after it. 0 when there is none or anything is damaged:
        the derived state is then wiped and the whole log re-applied."""
        started = time.monotonic()
        problem = "; ".join(self._damage) or None
        version, doc = 0, None
        if problem is None:
            try:
                raw: bytes | None = self.checkpoint_path.read_bytes()
            except FileNotFoundError:
                raw = None
            if raw is not None:
                try:
                    version, doc = checkpoint_file.decode(raw)
                except checkpoint_file.DamagedCheckpoint as exc:
                    problem = f"checkpoint {self.checkpoint_path} damaged: {exc}"
        if problem is None and doc is None:
            if self.cq.queues() or self.index.marker() != self.index.empty_marker():
                problem = "no checkpoint, yet derived files exist (a crash before the first checkpoint?)"
            else:
                return 0  # a new node
        if problem is None:
            assert doc is not None
            try:
                problem = self._restore_checkpoint(version, doc)
            except (KeyError, TypeError, IndexError, *DERIVED_DAMAGE) as exc:
                problem = f"checkpoint {self.checkpoint_path} does not fit the files on disk: {exc!r}"
        if problem is not None:
            self.rebuild(problem)
            return 0
        log.info("event=checkpoint_loaded index=%d version=%d topics=%d queues=%d index_files=%d verified_ms=%.0f",
                 self.applied_index, version, len(self.topics), len(self.cq.queues()), len(self.index.file_names),
                 (time.monotonic() - started) * 1000)
        return self.applied_index

    def _restore_checkpoint(self, version: int, doc: dict[str, Any]) -> str | None:
        """Take the applied state from ``doc`` and bring the derived files back
        to it. Returns what does not match, or None."""
        self._load_doc(doc)
        if doc.get("damaged"):
            return f"damage found while serving: {'; '.join(map(str, doc['damaged']))}"
        if version == checkpoint_file.LEGACY_VERSION:
            self.cq.truncate_all({(t, q): m for t, q, m in doc["queues"]})
            self.index.truncate_to(doc["index_marker"])
            self.cq.checkpoint_records()  # checksum the files once, for the checkpoints to come
            self.index.checkpoint_record()
            return None
        return self.cq.restore_checkpoint(doc["queues"]) or self.index.restore_checkpoint(doc["index_files"])

    def rebuild(self, reason: str) -> None:
        """Wipe the derived state: the log is re-applied from its first index."""
        log.warning("event=rebuild_derived reason=%r action=wipe_derived_state_and_reapply_log", reason)
        self.wipe()
        self.rebuild_reason = reason

    def note_damage(self, what: str) -> None:
        """Damage found while serving (a read that failed its checks): recorded
        in the next checkpoint, so the next start rebuilds the derived state."""
        if len(self._runtime_damage) < MAX_DAMAGE_NOTES and what not in self._runtime_damage:
            self._runtime_damage.append(what)
            self._dirty = True

    def _open_derived(self) -> tuple[ConsumeQueueStore, IndexStore]:
        """Open the ConsumeQueues and IndexFiles; one too damaged to open is
        noted (``load_checkpoint`` then rebuilds) and every derived file wiped."""
        cq: ConsumeQueueStore | None = None
        try:
            cq = ConsumeQueueStore(self._data, entries_per_file=self._cq_entries_per_file)
            return cq, IndexStore(self._data / "index")
        except DERIVED_DAMAGE as exc:
            self._damage.append(f"derived files cannot be opened: {exc!r}")
            log.error("derived files cannot be opened: %r", exc)
            if cq is not None:
                cq.close()
        self._remove_derived_files()
        return (ConsumeQueueStore(self._data, entries_per_file=self._cq_entries_per_file),
                IndexStore(self._data / "index"))

    def _remove_derived_files(self) -> None:
        """The checkpoint first (durably), so that a crash halfway leaves no
        checkpoint naming files that are gone; then the files."""
        try:
            self.checkpoint_path.unlink()
            fsync_dir(self._dir)
        except FileNotFoundError:
            pass
        for sub in ("consumequeue", "index"):
            shutil.rmtree(self._data / sub, ignore_errors=True)

    def wipe(self) -> None:
        """Forget all applied state and its files: the log is re-applied from scratch."""
        self.cq.close()
        self.index.close()
        self._remove_derived_files()
        self.cq = ConsumeQueueStore(self._data, entries_per_file=self._cq_entries_per_file)
        self.index = IndexStore(self._data / "index")
        self.topics, self.offsets, self.dedup = {}, {}, OrderedDict()
        self.group_keys = {}
        self.time_marks = []
        self.acl = AclState()
        self.applied_index = 0
        self._damage, self._runtime_damage = [], []
        self._dirty = False

    def snapshot(self) -> bytes:
        return msgpack.packb(self._state_doc(), use_bin_type=True)

    @staticmethod
    def check_snapshot(data: bytes) -> str | None:
        """Why ``data`` (a snapshot a peer sent) cannot be restored, or None.
        Decodes it fully and checks every field ``restore`` uses, so that a
        snapshot refused here never gets as far as wiping anything."""
        try:
            doc = msgpack.unpackb(data, raw=False, strict_map_key=False)
            _check_snapshot_doc(doc)
        except (ValueError, TypeError, KeyError, IndexError, RecursionError, msgpack.UnpackException) as exc:
            return f"{type(exc).__name__}: {exc}"[:200]
        return None

    def restore(self, data: bytes) -> None:
        """Install a leader's snapshot: its state, and ConsumeQueues that resume
        at its offsets (messages before the snapshot point are not on this node)."""
        doc = msgpack.unpackb(data, raw=False, strict_map_key=False)
        self._load_doc(doc)
        self.cq.reset_all({(t, q): m for t, q, m in doc["queues"]})
        self.index.truncate_to(self.index.empty_marker())
        self._dirty = True

    def retention_index(self, cutoff_ms: int) -> int:
        """The highest log index whose messages were all stored before ``cutoff_ms``."""
        best = 0
        for ts, index in self.time_marks:
            if ts > cutoff_ms:
                break
            best = index - 1
        return best

    def expire_before(self, index: int, first_position: int) -> None:
        """The log now starts at ``first_position``: drop ConsumeQueue and
        IndexFile entries that point before it, and marks that are gone."""
        self.cq.delete_before(first_position)
        self.index.delete_before(first_position)
        self.time_marks = [m for m in self.time_marks if m[1] > index]
        self._dirty = True

    def close(self) -> None:
        self.cq.close()
        self.index.close()

    # ------------------------------------------------------------------
    # queries (local, committed data only: the ConsumeQueue holds applied entries)
    # ------------------------------------------------------------------
    def queue_range(self, topic: str, queue_id: int) -> tuple[int, int]:
        q = self.cq.queue(topic, queue_id)
        return q.min_offset, q.max_offset

    def offsets_of(self, group: str, topic: str) -> dict[int, int]:
        n = self.topics.get(topic, 0)
        return {q: self.offsets[(group, topic, q)] for q in range(n) if (group, topic, q) in self.offsets}

    def groups(self) -> Iterable[str]:
        return sorted(self.group_keys)


def _nat(v: Any) -> bool:
    return type(v) is int and v >= 0


def _check_snapshot_doc(doc: Any) -> None:
    """Raise ValueError unless ``doc`` has the shape of a snapshot (``_state_doc``)."""
    if type(doc) is not dict:
        raise ValueError(f"a snapshot is a map, not {type(doc).__name__}")
    if not _nat(doc["index"]):
        raise ValueError("index must be a non-negative integer")
    topics = doc["topics"]
    if type(topics) is not dict or not all(type(t) is str and _nat(n) for t, n in topics.items()):
        raise ValueError("topics must map names to queue counts")
    if not all(type(g) is str and type(t) is str and _nat(q) and _nat(o) for g, t, q, o in doc["offsets"]):
        raise ValueError("offsets must be [group, topic, queue_id, offset]")
    for producer, seen in doc["dedup"]:
        if type(producer) is not str or type(seen) is not list:
            raise ValueError("dedup must be [producer_id, [[sequence, part, result], ...]]")
        for _, _, r in seen:
            q, first, positions = _load_result(r)
            if not (_nat(q) and _nat(first) and type(positions) is list and all(map(_nat, positions))):
                raise ValueError("a dedup result must be [queue_id, first_offset, [position, ...]]")
    if not all(type(t) is str and _nat(q) and _nat(m) for t, q, m in doc["queues"]):
        raise ValueError("queues must be [topic, queue_id, max_offset]")
    if not all(type(ts) is int and _nat(i) for ts, i in doc.get("time_marks", [])):
        raise ValueError("time_marks must be [store_ts_ms, index]")
