"""``TailCache``: the most recently appended entries, kept in memory up to a
byte budget, so that replication and reads of the log tail (the common case: a
follower a few batches behind, a consumer at the head) never touch the disk.

It holds a contiguous run of entries ending at the log's last index, with the
frame position of each. Appends add at the end and evict from the front once
the budget is exceeded; a conflict truncation cuts the end. Entries are held by
reference (the ``bytes`` the caller appended), never copied.
"""

from __future__ import annotations

from bisect import bisect_right
from typing import Sequence

from raftmq.dledger.core.messages import Entry
from raftmq.dledger.store.entry_format import HEADER_BYTES


class TailCache:
    """Entries ``base .. base + len - 1`` with their frame positions."""

    __slots__ = ("_limit", "_entries", "_positions", "_head", "_base", "_bytes")

    def __init__(self, limit_bytes: int) -> None:
        self._limit = limit_bytes
        self._entries: list[Entry] = []
        self._positions: list[int] = []
        self._head = 0  # list slot of the oldest cached entry (evicted slots are reclaimed in bulk)
        self._base = 0  # log index of the oldest cached entry
        self._bytes = 0

    def __len__(self) -> int:
        return len(self._entries) - self._head

    def first_index(self) -> int | None:
        """Index of the oldest cached entry, or None if the cache is empty."""
        return self._base if len(self) else None

    def append(self, entries: Sequence[Entry], positions: Sequence[int]) -> None:
        """Cache ``entries`` (which follow the cached ones) and evict the oldest
        beyond the budget."""
        if not len(self):
            self.clear()
            self._base = entries[0].index
        self._entries.extend(entries)
        self._positions.extend(positions)
        self._bytes += sum(len(e.data) for e in entries) + HEADER_BYTES * len(entries)
        self._evict()

    def _evict(self) -> None:
        head, ents = self._head, self._entries
        while self._bytes > self._limit and head < len(ents):
            self._bytes -= len(ents[head].data) + HEADER_BYTES
            head += 1
        self._base += head - self._head
        self._head = head
        if head > 1024 and head * 2 > len(ents):
            del ents[:head]
            del self._positions[:head]
            self._head = 0

    def get(self, index: int) -> tuple[Entry, int] | None:
        """The cached entry ``index`` and its frame position, or None."""
        off = index - self._base
        if off < 0 or off >= len(self):
            return None
        i = self._head + off
        return self._entries[i], self._positions[i]

    def positions(self, lo: int, hi: int) -> list[int] | None:
        """Frame positions of entries ``lo .. hi`` (inclusive), or None unless all are cached."""
        off = lo - self._base
        if off < 0 or hi < lo or hi - self._base >= len(self):
            return None
        i = self._head + off
        return self._positions[i : i + hi - lo + 1]

    def collect(self, lo: int, hi: int, max_bytes: int, out: list[Entry], size: int) -> int:
        """Append the cached entries ``lo .. hi - 1`` to ``out`` while the data
        size (starting at ``size``) stays within ``max_bytes`` (``out`` always
        gets at least one entry). The caller checked ``lo`` is cached."""
        ents = self._entries
        start = self._head + lo - self._base
        for i in range(start, min(start + hi - lo, len(ents))):  # no slice: hi may be far ahead
            e = ents[i]
            size += len(e.data)
            if out and size > max_bytes:
                break
            out.append(e)
        return size

    def read_at(self, position: int, size: int) -> bytes | None:
        """``size`` bytes at ``position`` if they lie within one cached entry body."""
        k = bisect_right(self._positions, position, lo=self._head) - 1
        if k < self._head:
            return None
        data = self._entries[k].data
        off = position - self._positions[k] - HEADER_BYTES
        if off < 0 or off + size > len(data):
            return None
        return bytes(data[off : off + size])

    def truncate_after(self, index: int) -> None:
        """Forget the entries after ``index`` (a conflict truncation)."""
        keep = index - self._base + 1
        if keep >= len(self):
            return
        if keep <= 0:
            self.clear()
            return
        cut = self._head + keep
        self._bytes -= sum(len(e.data) for e in self._entries[cut:]) + HEADER_BYTES * (len(self._entries) - cut)
        del self._entries[cut:]
        del self._positions[cut:]

    def drop_through(self, index: int) -> None:
        """Forget the entries up to ``index`` (prefix deletion)."""
        n = min(index - self._base + 1, len(self))
        if n <= 0:
            return
        stop = self._head + n
        self._bytes -= sum(len(e.data) for e in self._entries[self._head : stop]) + HEADER_BYTES * n
        self._head = stop
        self._base += n

    def clear(self) -> None:
        self._entries.clear()
        self._positions.clear()
        self._head = 0
        self._bytes = 0
