"""In-memory implementations of the storage seams (``dledger.store.base``), for
the simulation, unit tests and a runtime without a disk
(``DLedger(..., storage=NodeStorage.in_memory())``). Whatever they hold is
what "durable" means in a simulated crash; keep the objects to "restart" a
node with its state, drop them to wipe it."""

from __future__ import annotations

from typing import Sequence

from raftmq.dledger.core.messages import Entry, HardState, SnapshotMeta
from raftmq.dledger.errors import StorageFailure
from raftmq.dledger.store.meta import check_name

ENTRY_HEADER_BYTES = 32  # keep positions comparable with the file store's framing


class MemoryLogStore:
    """A ``LogStore`` kept in a Python list. Memory is never damaged: nothing is
    lost on open, no entry is ever damaged, a repair is never needed."""

    lost_entries_on_open = False

    def __init__(self) -> None:
        self._snap = SnapshotMeta(0, 0, 0)
        self._entries: list[Entry] = []
        self._positions: list[int] = []  # body position of each entry

    # -- LogStorage -----------------------------------------------------
    def first_index(self) -> int:
        return self._snap.index + 1

    def last_index(self) -> int:
        return self._snap.index + len(self._entries)

    def term(self, index: int) -> int:
        if index == self._snap.index:
            return self._snap.term
        off = index - self._snap.index - 1
        if off < 0 or off >= len(self._entries):
            raise IndexError(f"term of index {index} outside [{self._snap.index}, {self.last_index()}]")
        return self._entries[off].term

    def entries(self, lo: int, hi: int, max_bytes: int) -> list[Entry]:
        if lo < self.first_index() or hi - 1 > self.last_index():
            raise IndexError(f"entries [{lo}, {hi}) outside [{self.first_index()}, {self.last_index()}]")
        base = self._snap.index + 1
        out: list[Entry] = []
        size = 0
        for e in self._entries[lo - base : hi - base]:
            size += len(e.data)
            if out and size > max_bytes:
                break
            out.append(e)
        return out

    def snapshot_meta(self) -> SnapshotMeta:
        return self._snap

    # -- LogStore ---------------------------------------------------------
    def append(self, entries: Sequence[Entry]) -> None:
        if not entries:
            return
        first = entries[0].index
        if first > self.last_index() + 1 or first <= self._snap.index:
            raise ValueError(f"append at {first} leaves a gap or rewrites the snapshot (log {self.first_index()}..{self.last_index()})")
        keep = first - self._snap.index - 1
        del self._entries[keep:]
        del self._positions[keep:]
        pos = self._next_position()
        for e in entries:
            self._entries.append(e)
            self._positions.append(pos + ENTRY_HEADER_BYTES)
            pos += ENTRY_HEADER_BYTES + len(e.data)

    def _next_position(self) -> int:
        if not self._entries:
            return self._snap.next_position
        return self._positions[-1] + len(self._entries[-1].data)

    def flush(self) -> None:
        return None

    def body_position(self, index: int) -> int:
        return self._positions[index - self._snap.index - 1]

    def body_positions(self, lo: int, hi: int) -> list[int]:
        return [self.body_position(i) for i in range(lo, hi + 1)]

    def read_at(self, position: int, size: int) -> bytes:
        for p, e in zip(self._positions, self._entries):
            if p <= position < p + len(e.data):
                return e.data[position - p : position - p + size]
        raise IndexError(f"no entry body at position {position}")

    def compact(self, index: int) -> None:
        index = min(index, self.last_index())
        if index <= self._snap.index:
            return
        n = index - self._snap.index
        next_pos = self._positions[n] - ENTRY_HEADER_BYTES if n < len(self._positions) else self._next_position()
        self._snap = SnapshotMeta(index, self.term(index), next_pos)
        del self._entries[:n]
        del self._positions[:n]

    def reset(self, meta: SnapshotMeta) -> None:
        self._snap = meta
        self._entries.clear()
        self._positions.clear()

    def close(self) -> None:
        return None

    # -- damage (never, in memory) ----------------------------------------
    @property
    def has_damage(self) -> bool:
        return False

    def damaged(self) -> list[tuple[int, int]]:
        return []

    def repair(self, entry: Entry) -> bool:
        return False  # no entry here is damaged, so no copy is taken

    def check_at(self, position: int) -> int | None:
        """The index of the entry whose frame (header or body) holds ``position``."""
        for i, (p, e) in enumerate(zip(self._positions, self._entries)):
            if p - ENTRY_HEADER_BYTES <= position < p + len(e.data):
                return self._snap.index + 1 + i
        return None


class MemoryHardStateStore:
    """A ``HardStateStore`` in one attribute."""

    def __init__(self) -> None:
        self._state = HardState()

    def load(self) -> HardState:
        return self._state

    def save(self, state: HardState) -> None:
        self._state = state


class MemoryMetaStore:
    """A ``MetaStore`` kept in a dict (snapshots, the recovering marker, the
    identity of a node that has no disk). Names are checked as the file one
    checks them, so a name that works here works on disk."""

    def __init__(self) -> None:
        self._records: dict[str, bytes] = {}

    def read(self, name: str) -> bytes | None:
        check_name(name)
        return self._records.get(name)

    def write(self, name: str, data: bytes) -> None:
        check_name(name)
        self._records[name] = bytes(data)

    def delete(self, name: str) -> None:
        check_name(name)
        self._records.pop(name, None)

    def rename(self, name: str, new_name: str) -> None:
        check_name(new_name)
        if name not in self._records:
            raise StorageFailure(f"cannot rename {name!r}: no such record")
        self._records[new_name] = self._records.pop(name)

    def names(self, folder: str) -> list[str]:
        check_name(folder)
        prefix = folder + "/"
        return [n[len(prefix):] for n in self._records if n.startswith(prefix)]
