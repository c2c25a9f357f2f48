"""Raft's safety properties (Figure 3 of the paper), checked incrementally.

The cluster calls a hook on every change that can break a property: a hard
state saved, entries persisted, a message leaving a node, an entry applied,
a snapshot installed, a node observed after an event. Each hook checks only
what changed, so checking after every step stays cheap; together they cover:

- election safety (§5.2): at most one leader per term, over the whole run;
- log matching (§5.3): every persisted entry is recorded under its
  (index, term) with its data and the term of the entry before it; a second
  entry with the same (index, term) anywhere, at any time, must agree on all
  three, which by induction makes the logs identical up to that point;
- leader append-only (§5.3): a leader never overwrites or drops its own
  entries while it leads;
- leader completeness (§5.4): every committed entry is in the log of every
  leader of a later term: checked in full when a leader is first seen, and
  against the current leaders each time the known-committed prefix grows;
- state machine safety (§5.4.3): all nodes apply the same entry at the same
  index; applied sequences, across restarts and snapshot installs, are
  prefixes of one committed log;
- an acknowledged proposal is never lost: it stays in the committed log at
  the index it was acknowledged with;
- durability before effect (§5.1, Figure 2): a vote is requested or granted
  only with (term, voted_for) saved, a success reply names only persisted
  entries, no message carries a term that is not yet durable, a node votes
  at most once per term and its term never goes back;
- a leader commits only by counting entries of its own term (§5.4.2): its
  commit index moves only onto such an entry (checked in ``Cluster._observe``);
- commit needs a majority: when an index is first seen committed, a majority
  of the nodes durably hold that entry (or a snapshot past it);
- no log shortening without a conflict (stale or duplicated AppendEntries),
  and never a truncation of an entry the node already applied.

A violation raises ``Violation`` (an AssertionError) naming the invariant.
"""

from __future__ import annotations

import zlib
from typing import TYPE_CHECKING, Any

from raftmq.dledger.core.messages import (
    AppendEntriesReply,
    Entry,
    HardState,
    RequestVote,
    RequestVoteReply,
    Snapshot,
)
from raftmq.dledger.core.raft import Role

if TYPE_CHECKING:
    from .cluster import SimNode


class Violation(AssertionError):
    def __init__(self, invariant: str, detail: str) -> None:
        self.invariant = invariant
        self.detail = detail
        super().__init__(f"{invariant}: {detail}")


def chain_hash(prev: int, e: Entry) -> int:
    """Running digest of an applied sequence; equal digests at an index mean
    equal applied prefixes (used to check snapshots)."""
    return zlib.crc32(b"%d:%d:%d:" % (e.index, e.term, e.kind) + e.data, prev)


def encode_snapshot_data(index: int, chain: int) -> bytes:
    return b"sm:%d:%d" % (index, chain)


def decode_snapshot_data(data: bytes) -> tuple[int, int]:
    _, idx, chain = data.split(b":")
    return int(idx), int(chain)


class Checker:
    """Global history of the run, and the checks over it."""

    def __init__(self, nodes: dict[str, "SimNode"]) -> None:
        self.nodes = nodes
        self.majority = len(nodes) // 2 + 1
        self.leaders: dict[int, str] = {}  # term -> the one leader seen in it
        # (index, term) -> (data, kind, term of index-1), for every entry ever persisted anywhere
        self.entries: dict[tuple[int, int], tuple[bytes, int, int]] = {}
        # the committed log as observed through applies: [index] -> (term, kind, data); [0] unused
        self.committed: list[tuple[int, int, bytes]] = [(0, 0, b"")]
        self.commit_chain: list[int] = [0]  # chain hash of the committed prefix, per index
        self.commit_term_ub: list[int] = [0]  # upper bound of the term in which each index committed
        self.acked: dict[int, tuple[int, bytes]] = {}  # index -> (term, data) of acknowledged proposals

    @property
    def commit_frontier(self) -> int:
        return len(self.committed) - 1

    # -- hard state -----------------------------------------------------------
    def on_hard_state(self, node: "SimNode", old: HardState, new: HardState) -> None:
        if new.term < old.term:
            raise Violation("term-monotonic", f"{node.id} saved term {new.term} after {old.term}")
        if (
            new.term == old.term
            and old.voted_for is not None
            and new.voted_for != old.voted_for
        ):
            raise Violation(
                "one-vote-per-term",
                f"{node.id} in term {new.term} changed its vote {old.voted_for} -> {new.voted_for}",
            )

    # -- persisted entries -------------------------------------------------------
    def before_append(self, node: "SimNode", entries: tuple[Entry, ...], was_leader_term: int | None) -> None:
        """Checks on a batch about to be written over ``node.storage``."""
        st = node.storage
        first = entries[0].index
        old_last = st.last_index()
        prev_e = None
        for e in entries:
            if prev_e is not None and e.index != prev_e.index + 1:
                raise Violation("entries-consecutive", f"{node.id} persists {prev_e.index} then {e.index}")
            prev_e = e
        if first > old_last:
            return
        # Overwrites part of the stored log: find the first real conflict.
        conflict = None
        top = min(old_last, entries[-1].index)
        for i in range(max(first, st.first_index()), top + 1):
            if st.term(i) != entries[i - first].term:
                conflict = i
                break
        new_last = entries[-1].index
        if conflict is None:
            if new_last < old_last:
                raise Violation(
                    "no-shortening-without-conflict",
                    f"{node.id} rewrote {first}..{new_last} with identical entries and dropped "
                    f"{new_last + 1}..{old_last} (log {old_last} -> {new_last}) without any conflict",
                )
            return
        if conflict <= node.sm_index:
            raise Violation(
                "no-truncating-applied",
                f"{node.id} replaces entry {conflict} (term {st.term(conflict)} -> "
                f"{entries[conflict - first].term}) but already applied up to {node.sm_index}",
            )
        if was_leader_term is not None:
            raise Violation(
                "leader-append-only",
                f"{node.id}, leader of term {was_leader_term}, overwrites its entry {conflict} "
                f"(term {st.term(conflict)} -> {entries[conflict - first].term})",
            )

    def after_append(self, node: "SimNode", entries: tuple[Entry, ...]) -> None:
        """Log matching: record/compare every newly persisted entry."""
        st = node.storage
        table = self.entries
        first = entries[0].index
        prev_term = st.term(first - 1) if first - 1 >= st.first_index() - 1 else -1
        for e in entries:
            key = (e.index, e.term)
            val = (e.data, int(e.kind), prev_term)
            seen = table.get(key)
            if seen is None:
                table[key] = val
            elif seen != val:
                what = "data/kind" if seen[:2] != val[:2] else "previous entry's term"
                raise Violation(
                    "log-matching",
                    f"{node.id} persists ({e.index}, term {e.term}) with {what} {val!r}, "
                    f"another log had {seen!r} at the same (index, term)",
                )
            prev_term = e.term

    def on_storage_reset(self, node: "SimNode", snap: Snapshot) -> None:
        meta = snap.meta
        idx, chain = decode_snapshot_data(snap.data)
        if idx != meta.index:
            raise Violation("snapshot", f"{node.id} got a snapshot of index {meta.index} whose state is at {idx}")
        if meta.index > self.commit_frontier:
            raise Violation(
                "snapshot-committed",
                f"{node.id} installs a snapshot up to {meta.index}, beyond anything ever applied "
                f"({self.commit_frontier})",
            )
        if self.commit_chain[meta.index] != chain or self.committed[meta.index][0] != meta.term:
            raise Violation(
                "state-machine-safety",
                f"{node.id} installs a snapshot at {meta.index}/{meta.term} whose state differs "
                f"from the committed prefix",
            )
        if meta.index < node.sm_index:
            raise Violation(
                "snapshot-regress",
                f"{node.id} installs a snapshot at {meta.index} behind its applied index {node.sm_index}",
            )

    # -- messages ------------------------------------------------------------------
    def on_send(self, node: "SimNode", m: Any) -> None:
        hs = node.hs_store.load()
        t = type(m)
        if t is RequestVote:
            if m.pre_vote:
                return
            if hs.term != m.term or hs.voted_for != node.id:
                raise Violation(
                    "vote-durable",
                    f"{node.id} asks votes for term {m.term} with durable hard state {hs}",
                )
        elif t is RequestVoteReply:
            if m.pre_vote:
                return
            if m.granted and (hs.term != m.term or hs.voted_for != m.dst):
                raise Violation(
                    "vote-durable",
                    f"{node.id} grants its vote to {m.dst} in term {m.term} with durable hard state {hs}",
                )
        elif t is AppendEntriesReply and m.success:
            last = node.storage.last_index()
            if m.match_index > last:
                raise Violation(
                    "ack-durable",
                    f"{node.id} acks up to {m.match_index} but has persisted only up to {last}",
                )
        if m.term > hs.term:
            raise Violation("term-durable", f"{node.id} sends term {m.term} with durable term {hs.term}")

    # -- applying -------------------------------------------------------------------
    def on_apply(self, node: "SimNode", e: Entry, term_now: int) -> None:
        idx = e.index
        if idx != node.sm_index + 1:
            raise Violation(
                "apply-in-order",
                f"{node.id} applies {idx} after {node.sm_index}",
            )
        st = node.storage
        if idx >= st.first_index() and idx <= st.last_index():
            if st.term(idx) != e.term:
                raise Violation(
                    "apply-from-log",
                    f"{node.id} applies ({idx}, term {e.term}) but its log has term {st.term(idx)} there",
                )
        else:
            raise Violation("apply-durable", f"{node.id} applies {idx} which is not in its durable log")
        committed = self.committed
        if idx < len(committed):
            want = committed[idx]
            if want[0] != e.term or want[1] != e.kind or want[2] != e.data:
                raise Violation(
                    "state-machine-safety",
                    f"{node.id} applies ({idx}, term {e.term}, {e.data!r}); another node applied "
                    f"(term {want[0]}, {want[2]!r}) at that index",
                )
            return
        # First time anyone applies idx: it joins the committed log.
        assert idx == len(committed), "applies are contiguous so the frontier grows by one"
        committed.append((e.term, int(e.kind), e.data))
        self.commit_chain.append(chain_hash(self.commit_chain[-1], e))
        self.commit_term_ub.append(term_now)
        holders = 0
        for n in self.nodes.values():
            s = n.storage
            if s.first_index() > idx:
                holders += 1  # compacted into a snapshot: it was applied there
            elif idx <= s.last_index() and s.term(idx) == e.term:
                holders += 1
        if holders < self.majority:
            raise Violation(
                "commit-needs-majority",
                f"({idx}, term {e.term}) is applied by {node.id} but only {holders} of "
                f"{len(self.nodes)} nodes hold it",
            )
        # Leader completeness against the leaders of later terms that exist now.
        for n in self.nodes.values():
            core = n.core
            if core is not None and core.role is Role.LEADER and core.term > term_now:
                self._leader_has(n, core.term, idx)

    def on_ack(self, index: int, term: int, data: bytes) -> None:
        c = self.committed[index]
        if c[0] != term or c[2] != data:
            raise Violation("acked-not-lost", f"ack of ({index}, term {term}) but committed log has {c!r}")
        self.acked[index] = (term, data)

    # -- leaders ------------------------------------------------------------------------
    def on_leader(self, node: "SimNode", term: int) -> bool:
        """Election safety; on a leader first seen, full leader-completeness check.
        Returns True if the leader is new."""
        cur = self.leaders.get(term)
        if cur == node.id:
            return False
        if cur is not None:
            raise Violation("election-safety", f"two leaders in term {term}: {cur} and {node.id}")
        self.leaders[term] = node.id
        ub = self.commit_term_ub
        for idx in range(1, len(self.committed)):
            if ub[idx] < term:
                self._leader_has(node, term, idx)
        return True

    def _leader_has(self, node: "SimNode", term: int, idx: int) -> None:
        st = node.storage
        if idx < st.first_index():
            return  # compacted: covered by the snapshot checks
        want = self.committed[idx]
        have = st.term(idx) if idx <= st.last_index() else None
        if have != want[0]:
            raise Violation(
                "leader-completeness",
                f"{node.id}, leader of term {term}, has term {have} at {idx} where "
                f"(term {want[0]}, {want[2]!r}) was committed (in term <= {self.commit_term_ub[idx]})",
            )
        if have is not None:
            got = st.entries(idx, idx + 1, 1 << 30)[0]
            if got.data != want[2]:
                raise Violation(
                    "leader-completeness",
                    f"{node.id}, leader of term {term}, holds {got.data!r} at {idx}, committed was {want[2]!r}",
                )

    # -- end of run ----------------------------------------------------------------------
    def final_check(self) -> None:
        """Every acknowledged proposal is in the committed log and held by every node."""
        for idx, (term, data) in sorted(self.acked.items()):
            c = self.committed[idx]
            if c[0] != term or c[2] != data:
                raise Violation("acked-not-lost", f"acked ({idx}, term {term}, {data!r}) but committed {c!r}")
            for n in self.nodes.values():
                st = n.storage
                if idx < st.first_index():
                    continue
                if idx > st.last_index() or st.term(idx) != term:
                    raise Violation(
                        "acked-not-lost",
                        f"acked ({idx}, term {term}, {data!r}) is missing from {n.id}'s log at the end",
                    )
