"""The asyncio runtime of one dledger node: the pure core, the durable store,
the timers and the peer transport, wired together.

One task (the *ready loop*) owns the core's output: for each ``Ready`` it
has ``dledger.driver`` persist the hard state and the entries (one write and,
with the ``sync`` flush policy, one fdatasync for the whole batch: group
commit), send the messages (a leader's new entries before its own write),
apply the committed entries to the state machine and resolve the proposals
waiting on them. Peer messages, ticks and proposals are fed to the
core synchronously as they arrive and just wake the loop, so whatever arrives
while a batch is being made durable is gathered into the next batch.

Blocking calls on the loop: store writes are one ``os.write`` per batch
(handed to the OS, no waiting on the disk), and the ``sync`` policy's one
fdatasync per batch runs on the loop too: about 0.25 ms on this machine's
disk, less than handing it to a thread costs, since the thread must win the
GIL back from a busy loop (measured: batched produce 46.7k -> 65.6k msg/s).
The rare hard-state save (term or vote changed: about 0.7 ms) runs on the
loop too.
"""

from __future__ import annotations

import asyncio
import logging
import os
import time
from dataclasses import dataclass, field, fields, replace
from typing import Any, Callable, Mapping, Protocol

from raftmq.dledger.core.messages import (EntryKind, FetchEntry, FetchEntryReply, InstallSnapshot, Message, NodeId,
                                          Snapshot, SnapshotMeta)
from raftmq.dledger.core.raft import CoreConfig, RaftCore, Role
from raftmq.dledger.driver import ReadyDriver, ReadyIO
from raftmq.dledger.errors import (CorruptLog, LeadershipLost, NodeStopped, PeerViolation, ProposalDropped,
                                    StateAheadOfLog, StorageFailure)
from raftmq.dledger.status import LogStatus, PeerStatus
from raftmq.dledger.storage import NodeStorage
from raftmq.dledger.store.identity import DataDirIdentity, fmt_id
from raftmq.dledger.store.entry_format import HEADER_BYTES as ENTRY_HEADER_BYTES
from raftmq.dledger.peer_security import peer_security
from raftmq.dledger.settings import LogSettings
from raftmq.dledger.store.snapshots import SnapshotStore
from raftmq.dledger.transport import PeerTransport, Transport, TransportConfig, TransportFactory, TransportHooks

log = logging.getLogger(__name__)

# Repair of damaged entries: ask the peers for this many at a time, every so many ticks.
REPAIR_BATCH = 16
REPAIR_EVERY_TICKS = 4
# A peer that keeps sending impossible messages is logged at most once per this
# many seconds (with the count of those not logged in between).
VIOLATION_LOG_EVERY_S = 10.0


class StateMachine(Protocol):
    """What the replicated log is applied to. Contract:

    - ``apply(index, payload, position)`` is called in index order, exactly
      once per committed entry per node lifetime (after a restart, from the
      index after the one ``restore`` or the checkpoint reflects), and must be
      deterministic: every replica that applies the same log ends in the same
      state. ``position`` is the byte position of the entry's body
      (``payload``) in the log, the same on every replica that stores the
      entry, so the state machine can index bytes inside it (``read_at``)
      without calling back into the log. Its return value resolves the
      leader's ``propose``.
    - ``snapshot()`` returns the whole state as bytes (for compaction and for a
      follower that lags behind the oldest retained entry); ``restore(data)``
      replaces the state with it.
    - optional ``check_snapshot(data) -> str | None``: why ``data`` (a
      snapshot received from a peer) cannot be restored, or None if it can.
      Called before the log or the state is touched; a snapshot it refuses is
      dropped as a ``PeerViolation`` and changes nothing. Without it, every
      snapshot is accepted.
    """

    def apply(self, index: int, payload: bytes, position: int) -> Any: ...

    def snapshot(self) -> bytes: ...

    def restore(self, data: bytes) -> None: ...


def parse_addr(addr: str) -> tuple[str, int]:
    """``"host:port"`` to a tuple; ValueError with the offending text otherwise."""
    host, sep, port = addr.rpartition(":")
    if not sep or not host or not port.isdigit() or not 0 < int(port) < 65536:
        raise ValueError(f"bad address {addr!r}: expected host:port")
    return host, int(port)


@dataclass(slots=True, frozen=True)
class NodeConfig(LogSettings):
    """One dledger node: its identity and peers, the log's settings
    (:class:`~raftmq.dledger.settings.LogSettings`: flush, segment size, tick
    and timeouts, rejoin and bootstrap; keyword-only), and what only programs
    and tests set. ``peers`` maps every member's id (this node's too) to its
    Raft address ``host:port``. Every field's type is checked on construction.
    """

    node_id: str
    group: str
    peers: Mapping[str, str]
    data_dir: str
    max_inflight_msgs: int = 256
    max_batch_bytes: int = 256 << 10
    transport: TransportConfig = field(default_factory=TransportConfig)
    seed: int | None = None

    @classmethod
    def build(cls, settings: LogSettings, **identity: Any) -> NodeConfig:
        """A node config from the log's ``settings`` and the remaining fields
        (``node_id``, ``group``, ``peers``, ``data_dir``, ...) as keywords."""
        return cls(**{f.name: getattr(settings, f.name) for f in fields(LogSettings)}, **identity)

    def __post_init__(self) -> None:
        LogSettings.__post_init__(self)  # the type check of every field, and the log settings' own checks
        if self.node_id not in self.peers:
            raise ValueError(f"node_id: {self.node_id!r} is not in peers {sorted(self.peers)}")
        for nid, addr in self.peers.items():
            parse_addr(addr)

    def core_config(self) -> CoreConfig:
        seed = self.seed if self.seed is not None else int.from_bytes(os.urandom(8), "big")
        return CoreConfig(
            node_id=NodeId(self.node_id),
            voters=tuple(NodeId(p) for p in sorted(self.peers)),
            election_timeout_ticks=self.election_timeout_ticks,
            heartbeat_ticks=self.heartbeat_ticks,
            max_inflight_msgs=self.max_inflight_msgs,
            max_batch_bytes=self.max_batch_bytes,
            preferred_leader=NodeId(self.preferred_leader) if self.preferred_leader else None,
            seed=seed,
        )


# The record (a file ``<data>/recovering``) that keeps "recovering" across restarts.
RECOVERING_MARKER = "recovering"


def tcp_transport(config: NodeConfig) -> TransportFactory:
    """The default transport: ``PeerTransport`` over TCP between the addresses
    of ``config.peers``, with ``config.transport``'s settings."""
    peers = {p: parse_addr(a) for p, a in config.peers.items() if p != config.node_id}
    security = peer_security(config.cluster_secret_file, config.peer_tls_cert, config.peer_tls_key,
                             config.peer_tls_ca)
    transport_config = replace(config.transport, max_buffered_bytes=config.peer_max_buffered_bytes,
                               max_handshakes=config.peer_max_handshakes)

    def make(hooks: TransportHooks) -> Transport:
        return PeerTransport(
            config.node_id,
            config.group,
            parse_addr(config.peers[config.node_id]),
            peers,
            hooks.on_message,
            transport_config,
            on_peer_down=hooks.on_peer_down,
            identity=hooks.identity,
            on_lost_data=hooks.on_lost_data,
            security=security,
        )

    return make


class _Waiter(Protocol):
    """What a pending proposal is resolved through: an asyncio future or a
    ``_CallbackWaiter``."""

    def done(self) -> bool: ...

    def set_result(self, result: tuple[int, Any]) -> None: ...

    def set_exception(self, exc: BaseException) -> None: ...


class _CallbackWaiter:
    """Resolves a proposal by calling a function at once (see ``propose_with_callback``)."""

    __slots__ = ("_callback", "_done")

    def __init__(self, callback: Callable[[tuple[int, Any] | None, BaseException | None], None]) -> None:
        self._callback = callback
        self._done = False

    def done(self) -> bool:
        return self._done

    def set_result(self, result: tuple[int, Any]) -> None:
        self._resolve(result, None)

    def set_exception(self, exc: BaseException) -> None:
        self._resolve(None, exc)

    def _resolve(self, result: tuple[int, Any] | None, exc: BaseException | None) -> None:
        self._done = True
        try:
            self._callback(result, exc)
        except Exception:  # the caller's bug must not stop the ready loop
            log.exception("proposal callback failed")


class DLedger:
    """A replicated log node. The broker uses only this class (see ``dledger.__all__``)."""

    def __init__(self, config: NodeConfig, state_machine: StateMachine, applied_index: int = 0, *,
                 storage: NodeStorage | None = None, transport: TransportFactory | None = None) -> None:
        """``applied_index``: the index the state machine's own checkpoint already
        reflects (it is re-applied from the next one); 0 to apply from the start.

        ``storage``: where the node keeps its log, term and vote, snapshots and
        identity; by default the files under ``config.data_dir``
        (``NodeStorage.files``), which is then not used otherwise.
        ``transport``: makes the node's transport from its hooks; by default TCP
        between the addresses in ``config.peers`` (``tcp_transport``). With
        ``NodeStorage.in_memory()`` and a ``MemoryNetwork``
        (``dledger.memory_transport``) a node uses neither disk nor sockets.
        """
        self.config = config
        self._sm = state_machine
        if storage is None:
            storage = NodeStorage.files(config.data_dir, segment_bytes=config.segment_bytes, flush=config.flush)
        self.storage = storage
        self.store = storage.log
        if applied_index > self.store.last_index():
            last = self.store.last_index()
            self.store.close()
            raise StateAheadOfLog(applied_index, last)
        self._hs_store = storage.hard_state
        self._meta = storage.meta
        self._snapshots = SnapshotStore(storage.meta)
        applied = applied_index
        snaps = self._snapshot_indexes()
        start = self.store.first_index() - 1
        if applied_index < start:
            # The log no longer holds the entries after the state machine's
            # checkpoint (a snapshot was installed from a leader, or retention
            # deleted them): start from the snapshot the log starts after. A
            # newer snapshot (this node's own, taken at a segment boundary) is
            # never restored while the log can still rebuild the state by
            # replay: restoring it would drop every derived entry before it.
            base = self._load_snapshot(start)
            self._sm.restore(base.data)
            applied = start
            log.info("node=%s state restored from the snapshot at index=%d (state machine was at %d)",
                     config.node_id, start, applied_index)
        hard_state = self._hs_store.load()
        # A marker record keeps "recovering" across restarts until caught up.
        marked = self._meta.read(RECOVERING_MARKER) is not None
        empty = self.store.last_index() == 0 and self.store.first_index() == 1 and hard_state.term == 0
        # An empty data directory votes only at the first start of a new group
        # (``bootstrap``): anywhere else it may be a wiped disk that forgot what
        # it acknowledged and voted (issue 9, case 8). A scrub that had to cut
        # durable entries (damage it could not bound) leaves the node as if its
        # disk were wiped beyond that point.
        recovering = (marked or (empty and (config.rejoin or not config.bootstrap))
                      or self.store.lost_entries_on_open)
        self.identity = DataDirIdentity.open(self._meta, has_data=not empty, node_id=config.node_id)
        if recovering and not marked:
            self._meta.write(RECOVERING_MARKER, b"")
        self._marker_present = recovering  # known in memory: no stat per Ready
        if recovering:
            log.warning("node=%s rejoining with lost data: no votes until caught up with a leader", config.node_id)
        self.core = RaftCore(config.core_config(), self.store, hard_state, applied_index=applied,
                             recovering=recovering)
        if start > 0 and start in snaps:
            self.core.set_snapshot(self._load_snapshot(start))
        self.core.set_damaged(self.store.has_damage)
        self._applied_segment: int | None = None
        make_transport = transport if transport is not None else tcp_transport(config)
        self._transport = make_transport(TransportHooks(config.node_id, self._on_message, self._on_peer_down,
                                                        self.identity, self._on_lost_data))
        self._pending: dict[int, tuple[int, _Waiter]] = {}
        self._wake = asyncio.Event()
        self._loop: asyncio.AbstractEventLoop  # set by start()
        self._tasks: list[asyncio.Task[None]] = []
        self._running = False
        self._failed: BaseException | None = None
        self.fatal = asyncio.Event()  # set when the node stopped on a fatal error
        self._was_leader = False
        # peer -> (monotonic time of the last violation logged, violations not logged since)
        self._violations: dict[str, tuple[float, int]] = {}
        self._applied_waiters: list[tuple[int, asyncio.Future[None]]] = []
        self._role_listeners: list[asyncio.Event] = []

    # ------------------------------------------------------------------
    async def start(self) -> None:
        # Kept for propose_future: asyncio.get_running_loop() costs a getpid()
        # system call on every call in CPython 3.11.
        self._loop = asyncio.get_running_loop()
        await self._transport.start()
        self._running = True
        self._tasks = [
            asyncio.create_task(self._ready_loop(), name=f"dledger-ready-{self.config.node_id}"),
            asyncio.create_task(self._ticker(), name=f"dledger-tick-{self.config.node_id}"),
        ]
        log.info("node=%s group=%s started term=%d last_index=%d", self.config.node_id, self.config.group,
                 self.core.term, self.core.last_index)

    async def stop(self) -> None:
        self._running = False
        for t in self._tasks:
            t.cancel()
        for t in self._tasks:
            try:
                await t
            except asyncio.CancelledError:
                pass
            except Exception:  # already logged by the task itself
                pass
        self._tasks = []
        await self._transport.stop()
        self._fail_pending(NodeStopped("node stopped"))
        self.store.close()

    @property
    def failed(self) -> BaseException | None:
        """The fatal error that stopped this node, if any (a storage failure)."""
        return self._failed

    # ------------------------------------------------------------------
    async def propose(self, payload: bytes) -> tuple[int, Any]:
        """Replicate ``payload``; resolves with (index, apply result) once it is
        committed (durable on a majority) and applied here.

        Raises NotLeader (with the leader we know of), LeadershipLost (outcome
        unknown: we stopped leading while it was in flight) or ProposalDropped.
        """
        return await self.propose_future(payload)

    def propose_future(self, payload: bytes) -> asyncio.Future[tuple[int, Any]]:
        """``propose`` without a coroutine: appends now (raising NotLeader or
        NodeStopped at once) and returns the future that ``propose`` awaits.
        For callers that handle many proposals per second (a task per proposal
        costs more than the rest of the leader's work on it)."""
        fut: asyncio.Future[tuple[int, Any]] = self._loop.create_future()
        self._append(payload, fut)
        return fut

    def propose_with_callback(self, payload: bytes,
                              callback: Callable[[tuple[int, Any] | None, BaseException | None], None]) -> None:
        """``propose`` for the hottest callers: appends now (raising NotLeader or
        NodeStopped at once), then calls ``callback((index, result), None)`` or
        ``callback(None, exc)`` synchronously from the ready loop, exactly once.
        No future, no scheduled callback: one event loop iteration less before
        the caller can answer its client. ``callback`` must be quick and must
        not raise (an exception is logged and ignored)."""
        self._append(payload, _CallbackWaiter(callback))

    def _append(self, payload: bytes, waiter: _Waiter) -> None:
        if not self._running:
            raise NodeStopped("node is not running")
        index = self.core.propose(payload)  # raises NotLeader
        self._pending[index] = (self.core.term, waiter)
        self._wake.set()

    async def transfer_leadership(self, node_id: str) -> None:
        self.core.transfer_leadership(NodeId(node_id))
        self._wake.set()

    def is_leader(self) -> bool:
        return self.core.role is Role.LEADER

    @property
    def leader_id(self) -> str | None:
        return self.core.leader_id

    @property
    def term(self) -> int:
        return self.core.term

    @property
    def applied_index(self) -> int:
        return self.core.applied_index

    def status(self) -> LogStatus:
        """This node's role, indexes and (on the leader) its peers' progress."""
        core = self.core
        leader = core.leader_id
        peers: dict[str, PeerStatus] = {}
        transferee = None
        if core.role is Role.LEADER:
            last = core.last_index
            peers = {p: PeerStatus(pr.match_index, pr.next_index, pr.state.value, len(pr.inflights),
                                   last - pr.match_index)
                     for p, pr in core.progress.items()}
            transferee = core.lead_transferee
        return LogStatus(
            node_id=self.config.node_id, group=self.config.group, role=core.role.value, term=core.term,
            leader_id=leader, leader_addr=self.config.peers.get(leader) if leader else None,
            commit_index=core.commit_index, applied_index=core.applied_index,
            first_index=self.store.first_index(), last_index=core.last_index,
            recovering=core.recovering, damaged=core.damaged, peers=peers, lead_transferee=transferee)

    def first_index(self) -> int:
        """First index still in the log (retention moves it forward)."""
        return self.store.first_index()

    def last_index(self) -> int:
        """Last index in this node's log (stored, not necessarily committed)."""
        return self.store.last_index()

    async def wait_applied(self, index: int, timeout_s: float | None = None) -> None:
        """Wait until this node applied ``index``."""
        if self.core.applied_index >= index:
            return
        fut: asyncio.Future[None] = asyncio.get_running_loop().create_future()
        self._applied_waiters.append((index, fut))
        await asyncio.wait_for(fut, timeout_s)

    def read_at(self, position: int, size: int) -> bytes:
        return self.store.read_at(position, size)

    def report_damage(self, position: int) -> None:
        """A reader (the state machine's) found bytes at ``position`` that fail
        their own check: verify the entry there, and if it is damaged on disk,
        stop serving it, abstain from elections and repair it from a peer."""
        index = self.store.check_at(position)
        if self.store.has_damage and not self.core.damaged:
            log.error("node=%s entry %s at position %d damaged: repairing from peers", self.config.node_id,
                      index, position)
            self.core.set_damaged(True)
            self._wake.set()

    def compact(self, upto: int) -> int:
        """Retention: delete the log prefix up to ``upto``, whole segments at a
        time. The log is cut only where a segment ends and the state machine was
        snapshotted as it crossed that point (see ``_apply``), so a follower
        that installs the snapshot receives every entry the leader retains and
        ends with the same content. Returns the new first index."""
        limit = min(upto, self.core.applied_index)
        points = [i for i in self._snapshot_indexes() if self.store.first_index() - 1 < i <= limit]
        if not points:
            return self.store.first_index()
        point = points[-1]
        snap = self._load_snapshot(point)
        self.store.compact(point)
        if self.store.first_index() != point + 1:
            log.warning("node=%s compacted to first_index=%d, expected %d", self.config.node_id,
                        self.store.first_index(), point + 1)
        self.core.set_snapshot(snap)
        self._prune_snapshots(point)
        return self.store.first_index()

    # -- snapshots: records snapshots/<20-digit index> (dledger.store.snapshots)
    def _snapshot_indexes(self) -> list[int]:
        return self._snapshots.indexes()

    def _load_snapshot(self, index: int) -> Snapshot:
        return self._snapshots.load(index)

    def _prune_snapshots(self, keep_from: int) -> None:
        self._snapshots.prune(keep_from)

    def _segment_of(self, index: int) -> int:
        return (self.store.body_position(index) - ENTRY_HEADER_BYTES) // self.config.segment_bytes

    def _boundary_snapshot(self, index: int, next_position: int) -> None:
        """The state machine is at ``index``, the last entry of a segment."""
        term = self.store.term(index)
        snap = Snapshot(SnapshotMeta(index, term, next_position), self._sm.snapshot())
        self._snapshots.save(snap)
        log.info("node=%s snapshot at segment boundary index=%d bytes=%d", self.config.node_id, index, len(snap.data))

    def first_position(self) -> int:
        """Byte position where the retained log starts (what retention cut before)."""
        first = self.store.first_index()
        if first <= self.store.last_index():
            return self.store.body_position(first) - ENTRY_HEADER_BYTES
        return self.store.snapshot_meta().next_position

    # ------------------------------------------------------------------
    def _on_message(self, m: Message) -> None:
        if self._failed is not None:
            return
        if isinstance(m, (FetchEntry, FetchEntryReply)):
            self._on_repair_message(m)
            return
        try:
            if isinstance(m, InstallSnapshot):
                self._check_snapshot(m)
            self.core.step(m)
        except PeerViolation as exc:  # dropped; the transport closes the connection it came on
            self._log_violation(exc)
            raise
        except AssertionError as exc:  # a Raft invariant broke
            self._fail(exc)
            return
        self._wake.set()

    def _check_snapshot(self, m: InstallSnapshot) -> None:
        """Refuse a snapshot the state machine cannot restore, before anything
        is deleted. One at or below our commit index changes nothing anyway."""
        check = getattr(self._sm, "check_snapshot", None)
        if check is None or m.snapshot.meta.index <= self.core.commit_index:
            return
        problem = check(m.snapshot.data)
        if problem is not None:
            raise PeerViolation(m.src, f"snapshot at index {m.snapshot.meta.index} cannot be restored: {problem}")

    def _log_violation(self, exc: PeerViolation) -> None:
        now = time.monotonic()
        last, quiet = self._violations.get(exc.peer, (float("-inf"), 0))
        if now - last < VIOLATION_LOG_EVERY_S:
            self._violations[exc.peer] = (last, quiet + 1)
            return
        self._violations[exc.peer] = (now, 0)
        log.error("node=%s peer=%s event=peer_violation problem=%r action=drop_message_close_connection "
                  "not_logged_since=%d", self.config.node_id, exc.peer, exc.problem, quiet)

    # -- repair of entries damaged on disk (FileLogStore.damaged) --------------
    def _request_repairs(self) -> None:
        """Ask every peer for an intact copy of (some of) our damaged entries."""
        wanted = self.store.damaged()[:REPAIR_BATCH]
        me = NodeId(self.config.node_id)
        for peer in self.config.peers:
            if peer != me:
                for index, term in wanted:
                    self._transport.send(FetchEntry(term, me, NodeId(peer), index))
        self._transport.flush()

    def _on_repair_message(self, m: FetchEntry | FetchEntryReply) -> None:
        if isinstance(m, FetchEntry):
            try:
                got = self.store.entries(m.index, m.index + 1, 1 << 62)
            except (IndexError, CorruptLog):
                return  # compacted, beyond our log, or damaged here too: another peer may have it
            if got and got[0].term == m.term:
                self._transport.send(FetchEntryReply(m.term, NodeId(self.config.node_id), m.src, got[0]))
                self._transport.flush()
            return
        try:
            repaired = self.store.repair(m.entry)
        except StorageFailure as exc:
            self._fail(exc)
            return
        if repaired:
            log.warning("node=%s entry %d repaired from %s", self.config.node_id, m.entry.index, m.src)
            self.core.set_damaged(self.store.has_damage)
            self._wake.set()

    def _fail(self, exc: BaseException) -> None:
        """Stop taking part: a node whose state broke an invariant or could not
        be persisted must not carry on (STYLE: never log-and-continue)."""
        if self._failed is not None:
            return
        self._failed = exc
        self._running = False
        log.critical("node=%s fatal error, node stops: %r", self.config.node_id, exc)
        self._fail_pending(StorageFailure(f"node stopped after a fatal error: {exc!r}"))
        for t in self._tasks:
            if t is not asyncio.current_task():
                t.cancel()
        self.fatal.set()

    def _on_lost_data(self, peer: str, known_as: int) -> None:
        """The transport: ``peer``'s hello knows this node by another data-directory
        id (``dledger.store.identity``), so this node lost its data. It recovers,
        durably (the marker), before the transport delivers anything more."""
        if not self._marker_present:
            try:
                self._meta.write(RECOVERING_MARKER, b"")
            except StorageFailure as exc:  # cannot persist: stop (STYLE: never log-and-continue)
                self._fail(exc)
                raise
            self._marker_present = True
        log.warning("node=%s peer=%s knows this node's data directory as id=%s, it is id=%s: data lost; "
                    "no votes until caught up with a leader", self.config.node_id, peer, fmt_id(known_as),
                    fmt_id(self.identity.id))
        self.core.lost_data()
        self._wake.set()

    def _on_peer_down(self, peer: str) -> None:
        core = self.core
        if core.role is Role.LEADER:
            log.info("node=%s term=%d follower=%s connection closed: finding its match point again",
                     self.config.node_id, core.term, peer)
            core.follower_restarted(NodeId(peer))
            self._wake.set()
            return
        if peer == core.leader_id:
            # The transport reports the close of any incoming connection that
            # said hello as the leader: a stale one closing after a reconnect,
            # or a stranger's (the hello proves nothing). Electing at once on
            # such a close deposes a live leader (seen in the integration test
            # that throws garbage at the Raft ports), so first wait a heartbeat
            # and a tick: a live leader is never that quiet, a dead one is.
            quiet_ticks = self.config.heartbeat_ticks + 1
            self._loop.call_later(quiet_ticks * self.config.tick_ms / 1000, self._leader_maybe_gone, peer, quiet_ticks)

    def _leader_maybe_gone(self, peer: str, quiet_ticks: int) -> None:
        core = self.core
        if self._running and core.leader_id == peer and core.election_elapsed >= quiet_ticks:
            log.info("node=%s term=%d leader=%s connection closed and silent for %d ticks: electing soon",
                     self.config.node_id, core.term, peer, core.election_elapsed)
            core.leader_unreachable()
            self._wake.set()

    async def _ticker(self) -> None:
        period = self.config.tick_ms / 1000
        loop = asyncio.get_running_loop()
        next_at = loop.time()
        ticks = 0
        while True:
            next_at += period
            await asyncio.sleep(max(0.0, next_at - loop.time()))
            if loop.time() - next_at > period * 4:
                next_at = loop.time()  # the loop was blocked; do not fire a burst of ticks
            self.core.tick()
            if self.store.has_damage:
                ticks += 1
                if ticks % REPAIR_EVERY_TICKS == 1:
                    self._request_repairs()
            self._wake.set()

    async def _ready_loop(self) -> None:
        core = self.core
        store = self.store
        # The one Ready order (dledger.driver), on this node's storage and
        # transport. The hard state is saved on the loop: it changes only with
        # the term or the vote, and a save takes about 0.7 ms (driver docstring).
        driver = ReadyDriver(ReadyIO(
            is_leader=lambda: core.role is Role.LEADER,
            install_snapshot=self._install_snapshot,
            save_hard_state=self._hs_store.save,
            append=store.append,
            flush=store.flush,  # sync policy: one fdatasync, on the loop (module docstring)
            send=self._transport.send,
            flush_transport=self._transport.flush,
            apply=self._apply,
            advance=core.advance,
        ))
        handle = driver.handle
        try:
            while True:
                await self._wake.wait()
                self._wake.clear()
                while core.has_ready():
                    handle(core.ready())
                    if store.has_damage != core.damaged:  # found while reading for this Ready
                        core.set_damaged(store.has_damage)
                    self._after_advance()
                    await asyncio.sleep(0)  # let the network and proposers in
                self._after_advance()  # a tick may have deposed us without any Ready (check-quorum)
        except asyncio.CancelledError:
            raise
        except BaseException as exc:  # a node that cannot persist must stop (STYLE: never log-and-continue)
            self._fail(exc)
            raise

    def _install_snapshot(self, snap: Snapshot) -> None:
        self._snapshots.save(snap)
        self.store.reset(snap.meta)
        self._sm.restore(snap.data)
        self.core.set_snapshot(snap)
        self._prune_snapshots(snap.meta.index)
        self._applied_segment = None
        for idx in [i for i in self._pending if i <= snap.meta.index]:
            _, fut = self._pending.pop(idx)
            if not fut.done():
                fut.set_exception(LeadershipLost("replaced by a snapshot; outcome unknown"))

    def _apply(self, entries: tuple[Any, ...]) -> None:
        sm_apply = self._sm.apply
        pending = self._pending
        # The entries' body positions in one call (committed entries are
        # consecutive, and usually still in the store's cache of recent ones).
        positions = self.store.body_positions(entries[0].index, entries[-1].index)
        if len(positions) != len(entries) or entries[-1].index - entries[0].index + 1 != len(entries):
            raise CorruptLog(f"committed entries {entries[0].index}..{entries[-1].index} are not consecutive")
        # Snapshot the state machine whenever applying crosses into a new
        # segment: the state just before the segment's first entry is what a
        # follower needs once retention deletes the segments before it.
        seg = self._applied_segment
        check = seg is None or self._segment_of(entries[-1].index) != seg
        for e, position in zip(entries, positions):
            if check:
                s = self._segment_of(e.index)
                if seg is not None and s != seg and e.index > 1:
                    self._boundary_snapshot(e.index - 1, self.store.body_position(e.index) - ENTRY_HEADER_BYTES)
                seg = self._applied_segment = s
            result = sm_apply(e.index, e.data, position) if e.kind == EntryKind.NORMAL else None
            if pending:
                waiting = pending.pop(e.index, None)
                if waiting is not None:
                    term, fut = waiting
                    if fut.done():
                        continue
                    if term == e.term and e.kind == EntryKind.NORMAL:
                        fut.set_result((e.index, result))
                    else:
                        fut.set_exception(ProposalDropped(f"entry {e.index} was overwritten by term {e.term}"))

    def _after_advance(self) -> None:
        if self._marker_present and not self.core.recovering:
            self._meta.delete(RECOVERING_MARKER)
            self._marker_present = False
        is_leader = self.core.role is Role.LEADER
        if self._was_leader and not is_leader:
            self._fail_pending(LeadershipLost("leadership lost while the proposal was in flight; outcome unknown"))
        self._was_leader = is_leader
        if self._applied_waiters:
            applied = self.core.applied_index
            keep = []
            for idx, fut in self._applied_waiters:
                if fut.done():
                    continue
                if idx <= applied:
                    fut.set_result(None)
                else:
                    keep.append((idx, fut))
            self._applied_waiters = keep

    def _fail_pending(self, exc: Exception) -> None:
        pending, self._pending = self._pending, {}
        for _, fut in pending.values():
            if not fut.done():
                fut.set_exception(exc)
