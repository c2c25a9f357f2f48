"""The core's view of the log: the durable part in a ``LogStorage`` plus the
entries appended in memory and not yet persisted (``unstable``), as in
etcd/raft's ``raftLog``.

Indexes below ``offset`` are read from storage; from ``offset`` on, from
``unstable``. A pending snapshot (received from a leader, not yet installed)
replaces everything up to its index. ``committed`` and ``applied`` are the
commit index and last applied index of Figure 2.
"""

from __future__ import annotations

from typing import Sequence

from raftmq.dledger.core.messages import Entry, Snapshot
from raftmq.dledger.errors import EntryDamaged
from raftmq.dledger.store.base import LogStorage


class RaftLog:
    __slots__ = ("storage", "unstable", "offset", "snapshot", "committed", "applied")

    def __init__(self, storage: LogStorage, applied: int = 0) -> None:
        self.storage = storage
        self.unstable: list[Entry] = []
        self.offset = storage.last_index() + 1
        self.snapshot: Snapshot | None = None  # received, not yet installed
        start = storage.first_index() - 1
        # Everything up to the snapshot point, and whatever the state machine
        # says it already applied, was committed.
        self.committed = max(start, min(applied, storage.last_index()))
        self.applied = self.committed

    # -- reading ---------------------------------------------------------
    def first_index(self) -> int:
        if self.snapshot is not None:
            return self.snapshot.meta.index + 1
        return self.storage.first_index()

    def last_index(self) -> int:
        if self.unstable:
            return self.unstable[-1].index
        if self.snapshot is not None:
            return self.snapshot.meta.index
        return self.offset - 1

    def persisted_index(self) -> int:
        """Last index known durable and still part of this log."""
        return self.offset - 1

    def term(self, index: int) -> int | None:
        """Term of ``index``, or None if it is compacted away or beyond the end."""
        if index >= self.offset:
            off = index - self.offset
            if off < len(self.unstable):
                return self.unstable[off].term
            return None
        snap = self.snapshot
        if snap is not None:
            return snap.meta.term if index == snap.meta.index else None
        try:
            return self.storage.term(index)
        except IndexError:
            return None

    def last_term(self) -> int:
        t = self.term(self.last_index())
        return 0 if t is None else t

    def match_term(self, index: int, term: int) -> bool:
        return self.term(index) == term

    def is_up_to_date(self, last_index: int, last_term: int) -> bool:
        """§5.4.1: a candidate's log is at least as up to date as ours."""
        my_term = self.last_term()
        return last_term > my_term or (last_term == my_term and last_index >= self.last_index())

    def entries(self, lo: int, hi: int, max_bytes: int) -> list[Entry]:
        """Entries lo..hi-1, at most about ``max_bytes`` of data (at least one
        unless the storage holds ``lo`` damaged: then none, and fewer than asked
        when a damaged entry lies further on). Raises IndexError if ``lo`` is
        compacted away."""
        if lo >= hi:
            return []
        if lo < self.first_index():
            raise IndexError(f"index {lo} is compacted (log starts at {self.first_index()})")
        out: list[Entry] = []
        if lo < self.offset:
            try:
                out = self.storage.entries(lo, min(hi, self.offset), max_bytes)
            except EntryDamaged:
                return out  # reported by the store and repaired from a peer; until then nothing from here
            if len(out) < min(hi, self.offset) - lo:
                return out  # the byte limit (or a damaged entry) stopped the storage read
            lo = self.offset
        if lo < hi:
            size = sum(len(e.data) for e in out)
            base = self.offset
            for e in self.unstable[lo - base : hi - base]:
                size += len(e.data)
                if out and size > max_bytes:
                    break
                out.append(e)
        return out

    def find_conflict_by_term(self, index: int, term: int) -> int:
        """The largest index <= ``index`` whose term is <= ``term`` (or the first
        index we cannot look at). Used both by a follower to build its rejection
        hint and by the leader to pick its next probe."""
        first = self.first_index() - 1
        while index > first:
            t = self.term(index)
            if t is None or t <= term:
                break
            index -= 1
        return index

    # -- writing ---------------------------------------------------------
    def append(self, entries: Sequence[Entry]) -> None:
        """Put ``entries`` at their indexes, dropping everything from the first one on."""
        if not entries:
            return
        first = entries[0].index
        assert first > self.committed, f"truncating committed entry {first} (committed={self.committed})"
        end = self.offset + len(self.unstable)
        if first == end:
            self.unstable.extend(entries)
        elif first <= self.offset:
            # Replaces durable entries too; the store truncates them when it
            # persists this batch (LogStore.append's contract).
            self.offset = first
            self.unstable = list(entries)
        else:
            del self.unstable[first - self.offset :]
            self.unstable.extend(entries)

    def maybe_append(self, prev_index: int, prev_term: int, leader_commit: int, entries: Sequence[Entry]) -> int | None:
        """Follower side of AppendEntries (§5.3). Returns the last index known to
        match the leader, or None if (prev_index, prev_term) does not match.

        Only the first conflicting entry and what follows it are replaced; a
        stale or duplicated message whose entries we already hold changes
        nothing, so it can never shorten the log.
        """
        if not self.match_term(prev_index, prev_term):
            return None
        last_new = prev_index + len(entries)
        for i, e in enumerate(entries):
            if self.term(e.index) != e.term:
                self.append(entries[i:])
                break
        self.commit_to(min(leader_commit, last_new))
        return last_new

    def commit_to(self, index: int) -> None:
        if index > self.committed:
            assert index <= self.last_index(), f"commit {index} beyond last index {self.last_index()}"
            self.committed = index

    def maybe_commit(self, index: int, term: int) -> bool:
        """Commit ``index`` only if it is of the leader's current ``term`` (§5.4.2)."""
        if index > self.committed and self.term(index) == term:
            self.committed = index
            return True
        return False

    def restore(self, snapshot: Snapshot) -> None:
        """Replace the whole log with a snapshot received from the leader (§7)."""
        self.snapshot = snapshot
        self.unstable = []
        self.offset = snapshot.meta.index + 1
        self.committed = snapshot.meta.index

    # -- after the caller persisted or applied -----------------------------
    def stable_to(self, index: int, term: int) -> None:
        """Entries up to ``index`` are durable, if (index, term) is still ours."""
        if index < self.offset or self.term(index) != term:
            return
        del self.unstable[: index + 1 - self.offset]
        self.offset = index + 1

    def stable_snapshot_to(self, index: int) -> None:
        if self.snapshot is not None and self.snapshot.meta.index == index:
            self.snapshot = None

    def applied_to(self, index: int) -> None:
        if index > self.applied:
            assert index <= self.committed, f"applied {index} beyond commit {self.committed}"
            self.applied = index

    def next_committed(self, max_bytes: int) -> list[Entry]:
        """Committed entries not yet applied (and not behind a pending snapshot)."""
        lo = max(self.applied + 1, self.first_index())
        if lo > self.committed:
            return []
        return self.entries(lo, self.committed + 1, max_bytes)
