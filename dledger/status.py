"""What a node reports about its log and its role: ``DLedger.status()``.

A typed, frozen snapshot taken at one moment, so a caller (the broker's
health and cluster answers, the demo KV node's status request) reads fields
instead of parsing a dict. ``to_dict()`` gives the plain form sent over the
wire by tools (the same keys ``status()`` returned as a dict before).
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, Mapping


@dataclass(slots=True, frozen=True)
class PeerStatus:
    """A follower's replication progress, as its leader sees it."""

    match_index: int  # highest index known to be stored on the peer
    next_index: int  # next index the leader sends it
    state: str  # "probe", "replicate" or "snapshot" (dledger.core.progress)
    inflight: int  # append messages sent and not yet answered
    lag: int  # the leader's last index minus match_index


@dataclass(slots=True, frozen=True)
class LogStatus:
    """One node's view of its group. ``role`` is the core's role value
    (``leader``, ``follower``, ``candidate``, ``pre_candidate``); ``peers`` is
    filled on the leader only (empty elsewhere)."""

    node_id: str
    group: str
    role: str
    term: int
    leader_id: str | None
    leader_addr: str | None  # the leader's Raft address, from the configured peers
    commit_index: int
    applied_index: int
    first_index: int  # first entry still in the log (retention moves it)
    last_index: int
    recovering: bool
    damaged: bool
    peers: Mapping[str, PeerStatus] = field(default_factory=dict)
    lead_transferee: str | None = None

    @property
    def is_leader(self) -> bool:
        return self.role == "leader"

    def to_dict(self) -> dict[str, Any]:
        """The plain form: what ``DLedger.status()`` returned before it was
        typed (``id`` repeats ``node_id``; ``peers`` and ``lead_transferee``
        only on a leader), for wire protocols that carry a map."""
        out: dict[str, Any] = {
            "id": self.node_id, "role": self.role, "term": self.term, "leader_id": self.leader_id,
            "commit_index": self.commit_index, "applied_index": self.applied_index,
            "last_index": self.last_index, "recovering": self.recovering, "damaged": self.damaged,
            "group": self.group, "leader_addr": self.leader_addr, "node_id": self.node_id,
            "first_index": self.first_index,
        }
        if self.is_leader:
            out["lead_transferee"] = self.lead_transferee
            out["peers"] = {p: {"match_index": s.match_index, "lag": s.lag, "state": s.state,
                                "next_index": s.next_index, "inflight": s.inflight}
                            for p, s in self.peers.items()}
        return out
