"""The Raft consensus algorithm as a pure, deterministic object.

``RaftCore`` does no I/O, reads no clock and owns no global randomness: time
comes in as ``tick()``, peer messages through ``step()``, client data through
``propose()``; what to do comes out of ``ready()``. Randomness (the election
timeout) comes from a ``random.Random`` seeded from the config, so the same
inputs always give the same outputs, which makes the simulation tests in
``tests/sim`` replayable.

The caller's loop (see ``dledger.runtime``) is, for each ``Ready``::

    rd = core.ready()
    install rd.snapshot (if any)          # reset the store, restore the state machine
    persist rd.hard_state (if any)        # durable before any vote message leaves
    persist rd.entries, flush             # durable before any reply counts them
    send rd.messages
    apply rd.committed (in index order)
    core.advance(rd)

Because messages are sent only after the Ready's state is durable, a vote is
never granted or requested before (term, voted_for) is on disk, and a
follower's success reply (and the leader's own count, taken in ``advance``)
only ever counts entries that are durable on that node.

Implemented: elections with pre-vote (thesis §9.6) and check-quorum (thesis
§6.2); a no-op entry at the start of every term, committing only current-term
entries by counting (§5.4.2); pipelined, byte-batched replication with
per-follower flow control (``progress.py``); truncation only at the first
conflicting entry; fast backtracking with a conflict hint; leadership transfer
with TimeoutNow (thesis §3.10) and an optional preferred leader.
"""

from __future__ import annotations

import enum
import logging
import random
from dataclasses import dataclass, field
from typing import Callable

from raftmq.dledger.core import quorum
from raftmq.dledger.core.log import RaftLog
from raftmq.dledger.core.messages import (
    MAX_TERM,
    AppendEntries,
    AppendEntriesReply,
    Entry,
    EntryKind,
    HardState,
    InstallSnapshot,
    InstallSnapshotReply,
    Message,
    NodeId,
    RequestVote,
    RequestVoteReply,
    Snapshot,
    TimeoutNow,
)
from raftmq.dledger.core.progress import Progress, ProgressState
from raftmq.dledger.core.sanity import malformed
from raftmq.dledger.errors import NotLeader, PeerViolation
from raftmq.dledger.store.base import LogStorage

log = logging.getLogger(__name__)

LEGACY_TERM_CLAMP = 1 << 61
"""The term a node restarts at when its saved term is beyond ``MAX_TERM``
(written by a version that adopted any term a peer named). No correct node can
have reached such a term, so nothing was decided in it; restarting at 2**61
with no vote leaves the group 2**61 terms to elect leaders in (see ``RaftCore``)."""


class Role(enum.Enum):
    FOLLOWER = "follower"
    PRE_CANDIDATE = "pre_candidate"
    CANDIDATE = "candidate"
    LEADER = "leader"


@dataclass(slots=True, frozen=True)
class CoreConfig:
    """Settings of one node's consensus core. Times are in ticks.

    - ``election_timeout_ticks``: a follower that hears nothing from a leader for
      a random time in [T, 2T) ticks campaigns; a leader that has not heard from
      a majority for T ticks steps down (check-quorum). Must be greater than
      ``heartbeat_ticks``; 10x the heartbeat is typical.
    - ``heartbeat_ticks``: a leader sends a heartbeat to every follower this often.
    - ``max_inflight_msgs``: unanswered AppendEntries per follower (pipelining).
    - ``max_batch_bytes``: data bytes per AppendEntries (at least one entry).
    - ``max_apply_bytes``: committed data handed to the caller per Ready.
    - ``preferred_leader``: if set, a leader hands leadership to this node as
      soon as it is caught up (DLedger's preferred leader).
    - ``seed``: seeds the core's own ``random.Random`` (election timeouts).
    """

    node_id: NodeId
    voters: tuple[NodeId, ...]
    election_timeout_ticks: int = 10
    heartbeat_ticks: int = 1
    max_inflight_msgs: int = 64
    max_batch_bytes: int = 1 << 20
    max_apply_bytes: int = 16 << 20
    pre_vote: bool = True
    check_quorum: bool = True
    preferred_leader: NodeId | None = None
    seed: int = 0

    def __post_init__(self) -> None:
        if self.node_id not in self.voters:
            raise ValueError(f"node_id: {self.node_id!r} is not one of voters {self.voters}")
        if len(set(self.voters)) != len(self.voters):
            raise ValueError(f"voters: duplicate ids in {self.voters}")
        if self.heartbeat_ticks < 1:
            raise ValueError("heartbeat_ticks: must be at least 1")
        if self.election_timeout_ticks <= self.heartbeat_ticks:
            raise ValueError("election_timeout_ticks: must be greater than heartbeat_ticks")
        if self.max_inflight_msgs < 1:
            raise ValueError("max_inflight_msgs: must be at least 1")
        if self.max_batch_bytes < 1:
            raise ValueError("max_batch_bytes: must be at least 1")
        if self.max_apply_bytes < 1:
            raise ValueError("max_apply_bytes: must be at least 1")
        if self.preferred_leader is not None and self.preferred_leader not in self.voters:
            raise ValueError(f"preferred_leader: {self.preferred_leader!r} is not one of voters")


@dataclass(slots=True, frozen=True)
class Ready:
    """What the caller must do, in this order: install ``snapshot``, persist
    ``hard_state`` and ``entries``, send ``messages``, apply ``committed``."""

    hard_state: HardState | None = None
    entries: tuple[Entry, ...] = ()
    messages: tuple[Message, ...] = ()
    committed: tuple[Entry, ...] = ()
    snapshot: Snapshot | None = None

    def is_empty(self) -> bool:
        return not (self.hard_state or self.entries or self.messages or self.committed or self.snapshot)


@dataclass(slots=True)
class _Votes:
    granted: dict[str, bool] = field(default_factory=dict)


class RaftCore:
    """One node's Raft state machine. See the module docstring for the calling protocol."""

    def __init__(self, config: CoreConfig, storage: LogStorage, hard_state: HardState, applied_index: int = 0,
                 recovering: bool = False) -> None:
        """``recovering``: this node lost its data (its disk was wiped) and is
        rejoining a group with history. It may have voted, and acknowledged
        entries, that it no longer remembers, so until it holds everything a
        leader says is committed it neither votes nor campaigns: otherwise it
        could form a majority with a lagging node that lacks committed entries
        (the rule behind etcd's ``--initial-cluster-state existing``)."""
        self.config = config
        self.recovering = recovering
        # Entries of this log are damaged on disk (see ``set_damaged``).
        self.damaged = False
        self._apply_blocked = False  # the next committed entry could not be read
        self.id: NodeId = config.node_id
        self.voters: tuple[NodeId, ...] = config.voters
        self.peers: tuple[NodeId, ...] = tuple(v for v in config.voters if v != config.node_id)
        self.log = RaftLog(storage, applied_index)
        self.term: int = hard_state.term
        self.voted_for: NodeId | None = hard_state.voted_for
        if self.term > MAX_TERM:
            # Saved by an older version that adopted a forged term: clamp, and
            # persist the clamped state with the first Ready (see LEGACY_TERM_CLAMP).
            log.warning("node=%s saved term %d is beyond the largest term %d: restarting at term %d with no vote",
                        self.id, self.term, MAX_TERM, LEGACY_TERM_CLAMP)
            self.term, self.voted_for = LEGACY_TERM_CLAMP, None
        self.leader_id: NodeId | None = None
        # The leader this node has heard from in ``term`` (kept when leader_id is
        # cleared because its connection dropped): Raft allows one leader per
        # term, so AppendEntries, InstallSnapshot or TimeoutNow of this term
        # from anyone else is a PeerViolation.
        self._term_leader: NodeId | None = None
        self.role = Role.FOLLOWER
        self.progress: dict[NodeId, Progress] = {}
        self.votes: dict[NodeId, bool] = {}
        self.lead_transferee: NodeId | None = None
        self.election_elapsed = 0
        self.heartbeat_elapsed = 0
        self._ticks = 0  # logical clock, for noticing lost messages
        self._rng = random.Random(config.seed)
        self._randomized_timeout = config.election_timeout_ticks
        self._msgs: list[Message] = []
        self._prev_hard_state = HardState(hard_state.term, hard_state.voted_for)
        self._broadcast_pending = False
        self._snapshot: Snapshot | None = None  # latest local snapshot, sent to followers that lag behind it
        self._step: Callable[[Message], None] = self._step_follower
        self._tick: Callable[[], None] = self._tick_election
        self._become_follower(self.term, None)

    # ------------------------------------------------------------------
    # Inputs
    # ------------------------------------------------------------------
    def tick(self) -> None:
        """One unit of logical time."""
        self._ticks += 1
        self._tick()

    def propose(self, data: bytes) -> int:
        """Append ``data`` as a new entry; returns its index. Leader only."""
        if self.role is not Role.LEADER:
            raise NotLeader(self.leader_id)
        if self.lead_transferee is not None:
            raise NotLeader(self.lead_transferee)
        index = self.log.last_index() + 1
        self.log.append((Entry(self.term, index, data),))
        self._broadcast_pending = True  # sent in ready(), so proposals batch up
        return index

    def set_damaged(self, damaged: bool) -> None:
        """The runtime found entries of this node's log damaged on disk (or has
        repaired them all). A node that cannot read entries it acknowledged must
        neither lead nor count toward an election until it has them back
        (protocol-aware recovery, Alagappan et al., FAST 2018): a leader steps
        down, and the node neither votes nor campaigns. It keeps following,
        acknowledging and committing; applying waits at a damaged entry."""
        if damaged and not self.damaged and self.role is not Role.FOLLOWER:
            log.warning("node=%s term=%d stepping down: entries of its log are damaged on disk", self.id, self.term)
            self._become_follower(self.term, None)
        if damaged != self.damaged:
            log.info("node=%s term=%d damaged=%s", self.id, self.term, damaged)
        self.damaged = damaged
        self._apply_blocked = False  # a repair may have unblocked applying: try again

    def _abstains(self) -> bool:
        """Neither votes nor campaigns: lost data (``recovering``) or damaged entries."""
        return self.recovering or self.damaged

    def campaign(self) -> None:
        """Start an election now (with pre-vote if enabled), as if the timer fired.
        Used by the runtime when the leader's connection drops."""
        if self.role is Role.LEADER or self._abstains():
            return
        self.election_elapsed = 0
        self._campaign(transfer=False)

    def lost_data(self) -> None:
        """The runtime learned that this node's data directory is not the one its
        peers knew (a wiped or replaced disk, ``dledger.store.identity``). It may
        have acknowledged entries and granted votes it no longer remembers, so it
        becomes ``recovering``: a follower that neither votes nor campaigns until
        it holds what a leader has committed (see ``__init__``)."""
        if not self.recovering:
            log.info("node=%s term=%d lost its data: recovering", self.id, self.term)
        self.recovering = True
        if self.role is not Role.FOLLOWER:
            self._become_follower(self.term, None)

    def leader_unreachable(self) -> None:
        """The runtime saw the leader's connection close (its process likely died).

        Instead of waiting out a whole election timeout, let the timer run out
        within the next 1 to 3 ticks (a random pick, so that followers rarely
        split the vote). Safe because the election still starts with a
        pre-vote: if the leader is in fact alive for the others, nobody grants it.
        """
        if self.role is not Role.FOLLOWER or self.leader_id is None:
            return
        self.leader_id = None
        soon = self._randomized_timeout - 1 - self._rng.randrange(3)
        self.election_elapsed = max(self.election_elapsed, soon)

    def follower_restarted(self, peer: NodeId) -> None:
        """The runtime saw ``peer``'s connection close: its process may have
        restarted and lost the tail of its log (a torn write, or power loss under
        the async flush policy). Forget what it acknowledged and find its match
        point afresh, as a new leader would; otherwise heartbeats below the old
        match index would be rejected forever as stale. Lowering a match index
        only delays commits, never commits anything early.
        """
        pr = self.progress.get(peer)
        if self.role is not Role.LEADER or pr is None:
            return
        pr.become_probe()
        pr.match_index = 0
        pr.next_index = self.log.last_index() + 1

    def transfer_leadership(self, target: NodeId) -> None:
        """Hand leadership to ``target`` (thesis §3.10): bring it up to date, then
        tell it to campaign at once. Proposals are refused meanwhile."""
        if self.role is not Role.LEADER:
            raise NotLeader(self.leader_id)
        if target not in self.voters:
            raise ValueError(f"unknown node {target!r}")
        if target == self.id or target == self.lead_transferee:
            return
        self.lead_transferee = target
        self.election_elapsed = 0  # the transfer must finish within an election timeout
        pr = self.progress[target]
        if pr.match_index == self.log.last_index():
            self._send(TimeoutNow(self.term, self.id, target))
        else:
            self._send_append(target)
        log.info("node=%s term=%d transfer_leadership to=%s", self.id, self.term, target)

    def set_snapshot(self, snapshot: Snapshot) -> None:
        """The caller took a state machine snapshot (and may now compact the
        store up to ``snapshot.meta.index``); it is sent to lagging followers."""
        if self._snapshot is None or snapshot.meta.index >= self._snapshot.meta.index:
            self._snapshot = snapshot

    def step(self, m: Message) -> None:
        """Handle one message from a peer.

        Raises ``PeerViolation`` (and changes nothing) for a message no correct
        peer can send (see ``_impossible``): the caller drops it and closes the
        connection it came on."""
        if m.dst != self.id or m.src == self.id or m.src not in self.voters:
            return
        problem = self._impossible(m)
        if problem is not None:
            raise PeerViolation(m.src, problem)
        if m.term > self.term:
            if isinstance(m, RequestVote):
                # A voter that hears from a live leader ignores candidates, unless
                # the leader itself asked for the election (thesis §4.2.3, §3.10).
                in_lease = (
                    (self.config.check_quorum or self.config.pre_vote)
                    and self.leader_id is not None
                    and self.election_elapsed < self.config.election_timeout_ticks
                )
                if in_lease and not m.transfer:
                    return
                if not m.pre_vote:
                    self._become_follower(m.term, None)
            elif isinstance(m, RequestVoteReply) and m.pre_vote and m.granted:
                pass  # granted pre-votes carry the term we would campaign in
            else:
                lead = m.src if isinstance(m, (AppendEntries, InstallSnapshot)) else None
                self._become_follower(m.term, lead)
        elif m.term < self.term:
            if isinstance(m, AppendEntries):
                # Tell a stale leader about the newer term so it steps down.
                self._send(AppendEntriesReply(self.term, self.id, m.src, success=False, reject_index=m.prev_log_index))
            elif isinstance(m, RequestVote) and m.pre_vote:
                self._send(RequestVoteReply(self.term, self.id, m.src, granted=False, pre_vote=True))
            return

        if isinstance(m, RequestVote):
            self._handle_vote_request(m)
            return
        self._step(m)

    def _impossible(self, m: Message) -> str | None:
        """Why no correct peer could have sent ``m`` to this node now, or None.

        Raft allows one leader per term, so a leader never receives
        AppendEntries, InstallSnapshot or TimeoutNow of its own term, and a
        follower receives them only from the leader it follows in that term.
        A follower acknowledges only what it was sent, so a success reply names
        nothing beyond the last index the leader sent it. A successful reply and
        a TimeoutNow always carry the receiver's term or an older one. What no
        node can send whatever its state is ``sanity.malformed``'s.
        """
        problem = malformed(m)
        if problem is not None:
            return problem
        same_term = m.term == self.term
        if isinstance(m, (AppendEntries, InstallSnapshot)):
            if same_term and self.role is Role.LEADER:
                return f"{type(m).__name__} of term {m.term}, in which this node is the leader"
            if same_term and self._term_leader not in (None, m.src):
                return f"{type(m).__name__} of term {m.term}, whose leader is {self._term_leader}"
        elif isinstance(m, (AppendEntriesReply, InstallSnapshotReply)):
            success = isinstance(m, InstallSnapshotReply) or m.success
            if success and m.term > self.term:
                return f"a successful {type(m).__name__} of term {m.term}, above this node's term {self.term}"
            pr = self.progress.get(m.src)
            if success and same_term and pr is not None:
                limit = min(pr.sent_index, self.log.last_index())
                if m.match_index > limit:
                    return (f"{type(m).__name__} with match_index {m.match_index}, beyond index {limit}, "
                            "the last this leader sent that follower")
        elif isinstance(m, TimeoutNow):
            if m.term > self.term:
                return f"TimeoutNow of term {m.term}, above this node's term {self.term}"
            if same_term and (self.role is Role.LEADER or self._term_leader not in (None, m.src)):
                leader = self.id if self.role is Role.LEADER else self._term_leader
                return f"TimeoutNow of term {m.term} from a node that is not its leader ({leader})"
        elif isinstance(m, RequestVoteReply):
            if m.granted and not m.pre_vote and m.term > self.term:
                return f"a vote granted in term {m.term}, which this node never campaigned in"
        return None

    # ------------------------------------------------------------------
    # Outputs
    # ------------------------------------------------------------------
    def has_ready(self) -> bool:
        lg = self.log
        return bool(
            self._msgs
            or self._broadcast_pending
            or lg.unstable
            or lg.snapshot is not None
            or (lg.committed > lg.applied and not self._apply_blocked)
            or self._hard_state() != self._prev_hard_state
        )

    def ready(self) -> Ready:
        if self._broadcast_pending:
            self._broadcast_pending = False
            self._broadcast_append()
        hs = self._hard_state()
        hard_state = hs if hs != self._prev_hard_state else None
        self._prev_hard_state = hs
        msgs = tuple(self._msgs)
        self._msgs.clear()
        lg = self.log
        committed: tuple[Entry, ...] = ()
        if lg.committed > lg.applied and lg.snapshot is None and not self._apply_blocked:
            committed = tuple(lg.next_committed(self.config.max_apply_bytes))
            # Nothing readable: the next entry is damaged on disk. Wait for its
            # repair (set_damaged) instead of reporting the same work forever.
            self._apply_blocked = not committed
        return Ready(hard_state, tuple(lg.unstable), msgs, committed, lg.snapshot)

    def advance(self, rd: Ready) -> None:
        """The caller finished with ``rd``: its state is durable, its messages
        sent, its committed entries applied."""
        lg = self.log
        if rd.snapshot is not None:
            lg.stable_snapshot_to(rd.snapshot.meta.index)
            lg.applied = max(lg.applied, rd.snapshot.meta.index)
            self._apply_blocked = False
        if rd.entries:
            last = rd.entries[-1]
            lg.stable_to(last.index, last.term)
        if rd.committed:
            lg.applied_to(rd.committed[-1].index)
        if self.role is Role.LEADER and rd.entries:
            # The leader's own ack counts only entries now durable here.
            if self._maybe_commit():
                self._broadcast_pending = True

    # ------------------------------------------------------------------
    # Queries
    # ------------------------------------------------------------------
    @property
    def commit_index(self) -> int:
        return self.log.committed

    @property
    def applied_index(self) -> int:
        return self.log.applied

    @property
    def last_index(self) -> int:
        return self.log.last_index()

    def status(self) -> dict[str, object]:
        st: dict[str, object] = {
            "id": self.id,
            "role": self.role.value,
            "term": self.term,
            "leader_id": self.leader_id,
            "commit_index": self.log.committed,
            "applied_index": self.log.applied,
            "last_index": self.log.last_index(),
            "recovering": self.recovering,
            "damaged": self.damaged,
        }
        if self.role is Role.LEADER:
            st["progress"] = {p: pr.describe() for p, pr in self.progress.items()}
            st["lead_transferee"] = self.lead_transferee
        return st

    # ------------------------------------------------------------------
    # Role changes: the only places that set self.role
    # ------------------------------------------------------------------
    def _reset(self, term: int) -> None:
        if term != self.term:
            self.term = term
            self.voted_for = None
            self._term_leader = None
        self.leader_id = None
        self.election_elapsed = 0
        self.heartbeat_elapsed = 0
        self._randomized_timeout = self.config.election_timeout_ticks + self._rng.randrange(
            self.config.election_timeout_ticks
        )
        self.votes = {}
        self.lead_transferee = None
        self._broadcast_pending = False

    def _become_follower(self, term: int, lead: NodeId | None) -> None:
        was = self.role
        self._reset(term)
        self.leader_id = lead
        if lead is not None:
            self._term_leader = lead
        self.role = Role.FOLLOWER
        self._step = self._step_follower
        self._tick = self._tick_election
        self.progress = {}
        if was is not Role.FOLLOWER:
            log.info("node=%s term=%d role=follower leader=%s", self.id, self.term, lead)

    def _become_pre_candidate(self) -> None:
        assert self.role is not Role.LEADER, "a leader never becomes pre-candidate"
        # Pre-vote changes neither term nor vote (thesis §9.6).
        self.votes = {}
        self.leader_id = None
        self.role = Role.PRE_CANDIDATE
        self._step = self._step_candidate
        self._tick = self._tick_election
        log.info("node=%s term=%d role=pre_candidate", self.id, self.term)

    def _become_candidate(self) -> None:
        assert self.role is not Role.LEADER, "a leader never becomes candidate"
        self._reset(self.term + 1)
        self.voted_for = self.id
        self.role = Role.CANDIDATE
        self._step = self._step_candidate
        self._tick = self._tick_election
        log.info("node=%s term=%d role=candidate", self.id, self.term)

    def _become_leader(self) -> None:
        assert self.role is Role.CANDIDATE, f"only a candidate becomes leader, not a {self.role}"
        self._reset(self.term)
        self.leader_id = self._term_leader = self.id
        self.role = Role.LEADER
        self._step = self._step_leader
        self._tick = self._tick_heartbeat
        last = self.log.last_index()
        self.progress = {p: Progress(last + 1, self.config.max_inflight_msgs) for p in self.peers}
        for pr in self.progress.values():
            pr.recent_active = True
        # A no-op of the new term lets earlier entries commit (§5.4.2, §8).
        self.log.append((Entry(self.term, last + 1, b"", EntryKind.NOOP),))
        self._broadcast_pending = True
        log.info("node=%s term=%d role=leader last_index=%d", self.id, self.term, last + 1)

    # ------------------------------------------------------------------
    # Ticks
    # ------------------------------------------------------------------
    def _tick_election(self) -> None:
        self.election_elapsed += 1
        if self.election_elapsed >= self._randomized_timeout:
            self.election_elapsed = 0
            if not self._abstains():
                self._campaign(transfer=False)

    def _tick_heartbeat(self) -> None:
        self.heartbeat_elapsed += 1
        self.election_elapsed += 1
        if self.election_elapsed >= self.config.election_timeout_ticks:
            self.election_elapsed = 0
            if self.config.check_quorum and not self._quorum_active():
                log.warning("node=%s term=%d stepping down: no quorum heard within an election timeout", self.id, self.term)
                self._become_follower(self.term, None)
                return
            for pr in self.progress.values():
                pr.recent_active = False
            if self.lead_transferee is not None:
                log.info("node=%s term=%d transfer to %s timed out", self.id, self.term, self.lead_transferee)
                self.lead_transferee = None
            self._maybe_transfer_to_preferred()
        if self.heartbeat_elapsed >= self.config.heartbeat_ticks:
            self.heartbeat_elapsed = 0
            self._broadcast_heartbeat()

    def _quorum_active(self) -> bool:
        active = 1 + sum(1 for pr in self.progress.values() if pr.recent_active)
        return active >= quorum.quorum_size(len(self.voters))

    def _maybe_transfer_to_preferred(self) -> None:
        pref = self.config.preferred_leader
        if pref is None or pref == self.id or self.lead_transferee is not None:
            return
        pr = self.progress.get(pref)
        if pr is not None and pr.state is ProgressState.REPLICATE and pr.match_index == self.log.last_index():
            self.transfer_leadership(pref)

    # ------------------------------------------------------------------
    # Elections
    # ------------------------------------------------------------------
    def _campaign(self, transfer: bool) -> None:
        """Pre-vote first (thesis §9.6) unless the leader asked us to run (§3.10)."""
        if self.term >= MAX_TERM:
            log.error("node=%s term=%d cannot campaign: the next term is beyond the largest term %d",
                      self.id, self.term, MAX_TERM)
            return
        if self.config.pre_vote and not transfer:
            self._become_pre_candidate()
            self._request_votes(self.term + 1, pre_vote=True, transfer=False)
        else:
            self._start_election(transfer)

    def _start_election(self, transfer: bool) -> None:
        self._become_candidate()
        self._request_votes(self.term, pre_vote=False, transfer=transfer)

    def _request_votes(self, term: int, pre_vote: bool, transfer: bool) -> None:
        self.votes[self.id] = True
        if quorum.vote_result(self.votes, self.voters) is True:
            self._on_won()
            return
        last_index = self.log.last_index()
        last_term = self.log.last_term()
        for p in self.peers:
            self._send(RequestVote(term, self.id, p, last_index, last_term, pre_vote=pre_vote, transfer=transfer))

    def _on_won(self) -> None:
        if self.role is Role.PRE_CANDIDATE:
            self._start_election(transfer=False)
        else:
            self._become_leader()

    def _handle_vote_request(self, m: RequestVote) -> None:
        # We can vote for m.src if we already did in this term, or have voted for
        # nobody and know no leader; a pre-vote for a future term is always
        # considered (it changes nothing here).
        if self._abstains():
            self._send(RequestVoteReply(self.term, self.id, m.src, granted=False, pre_vote=m.pre_vote))
            return
        can_vote = (
            self.voted_for == m.src
            or (self.voted_for is None and self.leader_id is None)
            or (m.pre_vote and m.term > self.term)
        )
        if can_vote and self.log.is_up_to_date(m.last_log_index, m.last_log_term):
            if m.pre_vote:
                self._send(RequestVoteReply(m.term, self.id, m.src, granted=True, pre_vote=True))
            else:
                self.election_elapsed = 0
                self.voted_for = m.src  # persisted before this reply leaves (Ready order)
                self._send(RequestVoteReply(self.term, self.id, m.src, granted=True))
        else:
            self._send(RequestVoteReply(self.term, self.id, m.src, granted=False, pre_vote=m.pre_vote))

    # ------------------------------------------------------------------
    # Per-role message handling
    # ------------------------------------------------------------------
    def _step_follower(self, m: Message) -> None:
        if isinstance(m, AppendEntries):
            self.election_elapsed = 0
            self.leader_id = self._term_leader = m.src
            self._handle_append(m)
        elif isinstance(m, InstallSnapshot):
            self.election_elapsed = 0
            self.leader_id = self._term_leader = m.src
            self._handle_snapshot(m)
        elif isinstance(m, TimeoutNow) and self._term_leader == m.src and not self._abstains():
            # Only the leader of this term may ask for an election (thesis §3.10);
            # one we have not heard from in this term (we restarted) is ignored.
            log.info("node=%s term=%d TimeoutNow from=%s: campaigning", self.id, self.term, m.src)
            self._campaign(transfer=True)
        # Vote replies of an old candidacy, replies meant for a leader: ignored.

    def _step_candidate(self, m: Message) -> None:
        if isinstance(m, AppendEntries):
            self._become_follower(m.term, m.src)  # a leader of this term exists
            self._handle_append(m)
        elif isinstance(m, InstallSnapshot):
            self._become_follower(m.term, m.src)
            self._handle_snapshot(m)
        elif isinstance(m, RequestVoteReply):
            if m.pre_vote != (self.role is Role.PRE_CANDIDATE):
                return  # a reply to the other kind of election
            self.votes.setdefault(m.src, m.granted)
            result = quorum.vote_result(self.votes, self.voters)
            if result is True:
                self._on_won()
            elif result is False:
                self._become_follower(self.term, None)

    def _step_leader(self, m: Message) -> None:
        if isinstance(m, AppendEntriesReply):
            self._handle_append_reply(m)
        elif isinstance(m, InstallSnapshotReply):
            pr = self.progress.get(m.src)
            if pr is None:
                return
            pr.recent_active = True
            pr.maybe_update(m.match_index)
            if pr.state is ProgressState.SNAPSHOT:
                pr.become_probe()
            self._send_append(m.src)

    # -- follower side of replication ------------------------------------
    def _handle_append(self, m: AppendEntries) -> None:
        lg = self.log
        prev_index, prev_term, entries = m.prev_log_index, m.prev_log_term, m.entries
        if prev_index < lg.committed:
            # Everything up to our commit index matches the leader's log (§5.4,
            # leader completeness); look only at what lies beyond it.
            skip = lg.committed - prev_index
            if skip >= len(entries):
                # Acknowledge what was sent (all of it is below our commit
                # index, so we hold it), never more: the leader refuses a
                # match index beyond what it sent (``_impossible``).
                self._send(AppendEntriesReply(self.term, self.id, m.src, success=True,
                                              match_index=m.prev_log_index + len(m.entries)))
                self._maybe_end_recovery(m.leader_commit)
                return
            prev_index, prev_term = lg.committed, entries[skip - 1].term
            entries = entries[skip:]
        last_new = lg.maybe_append(prev_index, prev_term, m.leader_commit, entries)
        if last_new is not None:
            self._send(AppendEntriesReply(self.term, self.id, m.src, success=True, match_index=last_new))
            self._maybe_end_recovery(m.leader_commit)
            return
        # Reject with a hint: the last index whose term is <= the leader's
        # prev_log_term lets the leader skip a whole term at once.
        hint_index = lg.find_conflict_by_term(min(prev_index, lg.last_index()), prev_term)
        hint_term = lg.term(hint_index) or 0
        self._send(
            AppendEntriesReply(
                self.term, self.id, m.src, success=False,
                reject_index=m.prev_log_index,
                hint_index=hint_index, hint_term=hint_term,
            )
        )

    def _maybe_end_recovery(self, leader_commit: int) -> None:
        # Caught up only with a commit index that covers an entry of the
        # leader's own term: until its first commit, a new leader's commit index
        # can lie below entries committed in earlier terms (§5.4.2, the no-op of
        # §8), which this node would still lack when it votes again.
        lg = self.log
        if self.recovering and lg.committed >= leader_commit and lg.term(leader_commit) == self.term:
            self.recovering = False
            log.info("node=%s term=%d caught up to the leader's commit index %d: voting again",
                     self.id, self.term, leader_commit)

    def _handle_snapshot(self, m: InstallSnapshot) -> None:
        lg = self.log
        meta = m.snapshot.meta
        if meta.index <= lg.committed:
            # Already covered: change nothing, acknowledge the snapshot's index.
            self._send(InstallSnapshotReply(self.term, self.id, m.src, match_index=meta.index))
            return
        if lg.match_term(meta.index, meta.term):
            # We already hold the snapshot's last entry: keep the log, move commit.
            lg.commit_to(meta.index)
        else:
            log.info("node=%s term=%d installing snapshot index=%d term=%d", self.id, self.term, meta.index, meta.term)
            lg.restore(m.snapshot)
        self._send(InstallSnapshotReply(self.term, self.id, m.src, match_index=meta.index))

    # -- leader side of replication --------------------------------------
    def _handle_append_reply(self, m: AppendEntriesReply) -> None:
        pr = self.progress.get(m.src)
        if pr is None:
            return
        pr.recent_active = True
        if not m.success:
            if 0 < pr.match_index == m.reject_index and m.hint_index < pr.match_index:
                # A heartbeat at the match point refused, with a hint below it:
                # the follower no longer holds what it acknowledged (a wiped disk,
                # a torn tail). Find its match point afresh.
                self.follower_restarted(m.src)
                self._send_append(m.src)
                return
            probe = m.hint_index
            if m.hint_term > 0:
                probe = self.log.find_conflict_by_term(m.hint_index, m.hint_term)
            if pr.maybe_decrease_to(m.reject_index, probe):
                if pr.state is ProgressState.REPLICATE:
                    pr.become_probe()
                self._send_append(m.src)
            return
        was_paused = pr.is_paused()
        # In PROBE, a success at exactly the probed point confirms where the
        # logs match, even if it moves nothing: start streaming from there.
        confirmed = pr.state is ProgressState.PROBE and m.match_index == pr.next_index - 1
        if pr.maybe_update(m.match_index) or confirmed:
            pr.progress_tick = self._ticks
            if pr.state is ProgressState.PROBE:
                pr.become_replicate()
            elif pr.state is ProgressState.SNAPSHOT and pr.match_index >= pr.pending_snapshot:
                pr.become_probe()
            elif pr.state is ProgressState.REPLICATE:
                pr.inflights.free_le(m.match_index)
            if self._maybe_commit():
                self._broadcast_pending = True
            if m.src == self.lead_transferee and pr.match_index == self.log.last_index():
                self._send(TimeoutNow(self.term, self.id, m.src))
        else:
            # A reply that tells nothing new (a heartbeat's, a duplicate, or one
            # overtaken by a lost message): unblock the follower so a lost
            # AppendEntries cannot stall it for good.
            if pr.state is ProgressState.PROBE:
                pr.paused = False
            elif pr.state is ProgressState.REPLICATE and pr.inflights.full():
                pr.inflights.free_first()
            elif pr.state is ProgressState.SNAPSHOT:
                pr.become_probe()
        if was_paused or pr.match_index < self.log.last_index():
            while self._send_append(m.src):
                pass

    def _maybe_commit(self) -> bool:
        match = {p: pr.match_index for p, pr in self.progress.items()}
        match[self.id] = self.log.persisted_index()
        return self.log.maybe_commit(quorum.committed_index(match), self.term)

    def _broadcast_append(self) -> None:
        for p in self.peers:
            while self._send_append(p):
                pass

    def _broadcast_heartbeat(self) -> None:
        """Heartbeats assert leadership and also retransmit what may have been
        lost (§5.3: the leader retries AppendEntries indefinitely):

        - PROBE: the probe is resent every heartbeat (it doubles as one);
        - REPLICATE: entries outstanding with no progress for a few ticks fall
          back to probing from the match point (messages were lost);
        - SNAPSHOT: an unanswered snapshot is resent after an election timeout.
        """
        commit = self.log.committed
        stall_ticks = max(2 * self.config.heartbeat_ticks + 1, self.config.election_timeout_ticks // 3)
        for p, pr in self.progress.items():
            if pr.state is ProgressState.SNAPSHOT:
                if self._ticks - pr.snapshot_tick >= self.config.election_timeout_ticks:
                    pr.become_probe()
                    self._send_append(p)
                    continue
                prev = pr.pending_snapshot
            elif pr.state is ProgressState.PROBE:
                pr.paused = False
                self._send_append(p)
                continue
            else:
                outstanding = pr.next_index > pr.match_index + 1
                if outstanding and self._ticks - pr.progress_tick >= stall_ticks:
                    pr.become_probe()
                    self._send_append(p)
                    continue
                if not outstanding:
                    pr.progress_tick = self._ticks
                prev = pr.match_index
            # A heartbeat names a point the follower is known to hold, so it can
            # never be mistaken for a gap while entries are in flight.
            prev_term = self.log.term(prev)
            if prev_term is None:  # compacted away: only a probe (or snapshot) can reach it
                pr.become_probe()
                self._send_append(p)
                continue
            # The full commit index: a follower commits only up to what it holds
            # (§5.3), and a recovering follower learns what it must catch up to.
            self._send(AppendEntries(self.term, self.id, p, prev, prev_term, (), commit))

    def _send_append(self, to: NodeId) -> bool:
        """Send the next AppendEntries (or snapshot) to ``to`` if flow control
        allows. Returns True if something with entries was sent and more could
        follow."""
        pr = self.progress[to]
        if pr.is_paused():
            return False
        lg = self.log
        prev = pr.next_index - 1
        prev_term = lg.term(prev)
        entries: list[Entry] = []
        if prev_term is not None:
            try:
                entries = lg.entries(pr.next_index, lg.last_index() + 1, self.config.max_batch_bytes)
            except IndexError:
                prev_term = None
        if prev_term is None:
            return self._send_snapshot(to, pr)
        if pr.state is ProgressState.REPLICATE and not entries:
            return False
        self._send(AppendEntries(self.term, self.id, to, prev, prev_term, tuple(entries), lg.committed))
        pr.note_sent(entries[-1].index if entries else prev)
        if pr.state is ProgressState.REPLICATE:
            last = entries[-1].index
            pr.optimistic_update(last)
            pr.inflights.add(last)
            return pr.next_index <= lg.last_index()
        pr.paused = True  # PROBE: one at a time
        return False

    def _send_snapshot(self, to: NodeId, pr: Progress) -> bool:
        snap = self._snapshot
        if snap is None:
            log.error("node=%s term=%d follower=%s needs entries before %d but no snapshot is set",
                      self.id, self.term, to, self.log.first_index())
            return False
        pr.become_snapshot(snap.meta.index)
        pr.note_sent(snap.meta.index)
        pr.snapshot_tick = self._ticks
        self._send(InstallSnapshot(self.term, self.id, to, snap))
        return False

    # ------------------------------------------------------------------
    def _send(self, m: Message) -> None:
        self._msgs.append(m)

    def _hard_state(self) -> HardState:
        return HardState(self.term, self.voted_for)
