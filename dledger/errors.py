"""The errors dledger raises to its callers.

``DLedgerError`` is the root. The broker maps ``NotLeader`` to a redirect,
``NoLeader`` to 503 and ``LeadershipLost`` to "outcome unknown".
"""

from __future__ import annotations


class DLedgerError(Exception):
    """Root of dledger's errors."""


class NotLeader(DLedgerError):
    """This node is not the leader; ``leader_id``/``leader_url`` name the one it
    believes is, or are None when it knows of none."""

    def __init__(self, leader_id: str | None = None, leader_url: str | None = None) -> None:
        self.leader_id = leader_id
        self.leader_url = leader_url
        where = f"leader is {leader_id}" if leader_id is not None else "no leader known"
        super().__init__(f"not the leader ({where})")


class LeadershipLost(DLedgerError):
    """This node stopped being leader while a proposal was in flight: the entry may
    or may not commit later (outcome unknown)."""


class ProposalDropped(DLedgerError):
    """The proposal was not appended, or its entry was overwritten by another
    leader's entry: it will never commit."""


class StorageFailure(DLedgerError):
    """A write or fsync to the log or the hard state failed. Fatal: the node stops
    rather than carry on with a state it could not make durable."""


class CorruptLog(DLedgerError):
    """The stored log is damaged somewhere other than a repairable tail."""


class EntryDamaged(CorruptLog):
    """A stored entry failed its check (magic, size, term, index, kind or body
    CRC) when read. It is reported, never served, and repaired from a peer that
    holds the same (index, term) (see ``FileLogStore.repair``); reads of it fail
    until then. ``index`` names the entry."""

    def __init__(self, index: int, problem: str) -> None:
        self.index = index
        super().__init__(f"entry {index} is damaged on disk ({problem}); it is being repaired from a peer")


class CodecError(DLedgerError):
    """A peer frame could not be decoded or is not a valid message."""


class NodeStopped(DLedgerError):
    """The node is shutting down or has stopped."""


class StateAheadOfLog(DLedgerError):
    """The state machine says it applied ``applied_index`` but the log ends at
    ``last_index`` (its tail was cut after a torn write or power loss). The
    caller must rebuild its state from the log (or a snapshot) instead of
    applying the missing entries a second time."""

    def __init__(self, applied_index: int, last_index: int) -> None:
        self.applied_index = applied_index
        self.last_index = last_index
        super().__init__(f"state machine applied up to {applied_index} but the log ends at {last_index}")


class PeerViolation(DLedgerError):
    """A peer sent something no correct peer can send (a second leader in one
    term, a reply beyond our log, a term or index out of bounds). The message
    is dropped and the connection it came on is closed; the node carries on."""

    def __init__(self, peer: str, problem: str) -> None:
        self.peer = peer
        self.problem = problem
        super().__init__(f"impossible message from {peer}: {problem}")
