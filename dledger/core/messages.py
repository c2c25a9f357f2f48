"""Values that flow through the consensus core: log entries, hard state and
the peer messages of the Raft protocol, named as in the paper.

Everything here is an immutable slotted dataclass. ``dledger.codec`` turns
messages into msgpack frames for the wire; the core never sees bytes on the
wire, only these objects.
"""

from __future__ import annotations

import enum
from dataclasses import dataclass
from typing import NewType, Union

NodeId = NewType("NodeId", str)

MAX_TERM = (1 << 62) - 1
"""The largest term a node accepts or adopts. Far below msgpack's 2**64-1, so
that ``term + 1`` (a campaign) always encodes; ``codec.decode`` refuses a frame
beyond it and the core refuses to adopt it (a ``PeerViolation``)."""
MAX_INDEX = (1 << 62) - 1
"""The largest log index (or commit / match index) a frame may carry, for the same reason."""


class EntryKind(enum.IntEnum):
    """What a log entry carries. Only ``NORMAL`` entries reach the state machine."""

    NORMAL = 0
    NOOP = 1  # appended by every new leader at the start of its term (Raft §8)


@dataclass(slots=True, frozen=True)
class Entry:
    """One entry of the replicated log: ``data`` is opaque to dledger."""

    term: int
    index: int
    data: bytes = b""
    kind: EntryKind = EntryKind.NORMAL


@dataclass(slots=True, frozen=True)
class HardState:
    """What must be durable before a node votes or asks for votes (Raft §5.1, Figure 2).

    ``voted_for`` is None when the node has not voted in ``term``.
    """

    term: int = 0
    voted_for: NodeId | None = None


@dataclass(slots=True, frozen=True)
class SnapshotMeta:
    """The log prefix a snapshot replaces: everything up to ``index`` (of ``term``).

    ``next_position`` is the byte position in the commitlog at which the entry
    ``index + 1`` starts, so that a follower that installs the snapshot writes
    later entries at the same positions as the leader (message ids are
    positions and must be identical on every replica).
    """

    index: int
    term: int
    next_position: int = 0


@dataclass(slots=True, frozen=True)
class Snapshot:
    meta: SnapshotMeta
    data: bytes


# --- peer messages ---------------------------------------------------------
# Every message carries the sender's term, the sender and the destination.


@dataclass(slots=True, frozen=True)
class AppendEntries:
    """Leader -> follower: replicate ``entries`` after (prev_log_index, prev_log_term) (§5.3).

    An empty ``entries`` is a heartbeat. ``leader_commit`` lets the follower
    advance its commit index.
    """

    term: int
    src: NodeId
    dst: NodeId
    prev_log_index: int
    prev_log_term: int
    entries: tuple[Entry, ...]
    leader_commit: int


@dataclass(slots=True, frozen=True)
class AppendEntriesReply:
    """Follower -> leader.

    On success ``match_index`` is the last index the follower now holds
    durably that matches the leader's log (prev_log_index + len(entries)).
    On rejection ``reject_index`` is the prev_log_index that did not match
    and (``hint_index``, ``hint_term``) let the leader skip a whole
    conflicting term at once (fast backtracking, §5.3 final paragraphs):
    ``hint_term`` is the follower's term at ``hint_index`` (0 if the
    follower's log is shorter than ``reject_index``; then ``hint_index`` is
    its last index).
    """

    term: int
    src: NodeId
    dst: NodeId
    success: bool
    match_index: int = 0
    reject_index: int = 0
    hint_index: int = 0
    hint_term: int = 0


@dataclass(slots=True, frozen=True)
class RequestVote:
    """Candidate -> voter (§5.2). ``pre_vote`` asks "would you vote for me" without
    anyone changing term (thesis §9.6). ``transfer`` marks an election started by
    TimeoutNow, which voters grant even while they hear from a leader (thesis §3.10).
    For a pre-vote ``term`` is the term the candidate would campaign in.
    """

    term: int
    src: NodeId
    dst: NodeId
    last_log_index: int
    last_log_term: int
    pre_vote: bool = False
    transfer: bool = False


@dataclass(slots=True, frozen=True)
class RequestVoteReply:
    term: int
    src: NodeId
    dst: NodeId
    granted: bool
    pre_vote: bool = False


@dataclass(slots=True, frozen=True)
class TimeoutNow:
    """Leader -> transfer target: start an election now (thesis §3.10)."""

    term: int
    src: NodeId
    dst: NodeId


@dataclass(slots=True, frozen=True)
class InstallSnapshot:
    """Leader -> follower that is behind the leader's oldest retained entry (§7)."""

    term: int
    src: NodeId
    dst: NodeId
    snapshot: Snapshot


@dataclass(slots=True, frozen=True)
class InstallSnapshotReply:
    term: int
    src: NodeId
    dst: NodeId
    match_index: int


@dataclass(slots=True, frozen=True)
class FetchEntry:
    """Any node -> a peer: send me your copy of entry ``index`` of term
    ``term`` (``term`` is the entry's, not the sender's current term). Sent by a
    node that found that entry damaged on its disk, to repair it in place
    (protocol-aware recovery, Alagappan et al., FAST 2018). Not part of Raft:
    the runtime answers it from its store and never hands it to the core."""

    term: int
    src: NodeId
    dst: NodeId
    index: int


@dataclass(slots=True, frozen=True)
class FetchEntryReply:
    """A peer's intact copy of the entry a ``FetchEntry`` asked for (same index
    and term: by Raft's log matching property, the same entry)."""

    term: int
    src: NodeId
    dst: NodeId
    entry: Entry


Message = Union[
    AppendEntries,
    AppendEntriesReply,
    RequestVote,
    RequestVoteReply,
    TimeoutNow,
    InstallSnapshot,
    InstallSnapshotReply,
    FetchEntry,
    FetchEntryReply,
]

MESSAGE_TYPES: tuple[type, ...] = (
    AppendEntries,
    AppendEntriesReply,
    RequestVote,
    RequestVoteReply,
    TimeoutNow,
    InstallSnapshot,
    InstallSnapshotReply,
    FetchEntry,
    FetchEntryReply,
)
