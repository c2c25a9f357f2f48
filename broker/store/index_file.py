"""IndexFile: a hash index from message keys to physical offsets and store times.

RocketMQ's IndexFile: hash slots plus entries linked newest-first, files
rolled by entry count. Applying a ``produce`` entry adds one index entry per
message key (callers may add message ids the same way); a query by key walks
the chain of each file whose time span overlaps the range asked for.

Keys are reduced to a 32-bit hash (``zlib.crc32`` of the UTF-8 key), so two
keys can share a chain and an entry: **a query returns candidates, and the
caller must read each message and check that it really carries the key.**

Files live in ``<data>/index/``, each named by the number of index entries
added before its first one (its global entry number), zero-padded to 20
decimal digits: ``00000000000000000000``, ``00000000000002000000``, ... so
:meth:`IndexStore.marker` (the total number of entries ever added) says which
file and which entry a checkpoint stopped at. Every file is created at its
full size (sparse zeros) and kept mmapped. Layout (big-endian, unsigned)::

    header, 40 bytes
    offset  size  field
    0       8     begin_ts     smallest store_ts_ms of the file's entries (0 if none)
    8       8     end_ts       largest store_ts_ms (0 if none)
    16      8     begin_phys   smallest phys_offset (0 if none)
    24      8     end_phys     largest phys_offset (0 if none)
    32      4     slot_count   number of hash slots (S)
    36      4     entry_count  entries in use (N); entries past N are zero

    hash slots, S x 4 bytes from offset 40
    slot i  u32   1-based number of the newest entry whose key_hash % S == i; 0 = empty

    entries, 28 bytes each from offset 40 + 4*S; entry number e (1-based)
    is at 40 + 4*S + 28*(e - 1)
    +0      4     key_hash     crc32 of the UTF-8 key
    +4      8     phys_offset  CommitLog physical offset of the message
    +12     4     size         bytes of the message record
    +16     8     store_ts_ms  the message's store time (leader-stamped)
    +24     4     prev_entry   previous entry in the same slot's chain; 0 ends it

A file's capacity is ``(file size - 40 - 4*S) / 28`` entries; when it is full
the next entry rolls to a new file. Nothing here reads a clock: the same
sequence of :meth:`IndexStore.add_batch` calls with the same ``slots`` and
``max_entries`` gives byte-identical files on every replica.

Checksums: the broker checkpoint records, per file, its name, ``slot_count``,
capacity, ``entry_count``, the four header bounds, the CRC32 of its entries
region up to ``entry_count`` (bytes ``40 + 4*S`` to ``40 + 4*S + 28*N``) and
the CRC32 of its slots region (:meth:`IndexStore.checkpoint_record`).
Entries are append-only, so their CRC is carried forward with each batch
(``zlib.crc32(data, crc)``); the slots change anywhere, so their CRC (about
0.6 ms for 500,000 slots) is taken at a checkpoint only when the file took
entries since the last one, and never again once the file is full. On start
:meth:`IndexStore.restore_checkpoint` undoes the entries added after the
checkpoint, then compares: damaged entries mean the index is rebuilt from
the log; damaged slots alone are rebuilt from the entries; the header is
rewritten from the checkpoint.

Crash safety: within a batch, each entry is written before the slot that
points at it, and the header's ``entry_count`` after the batch. On open (and
on :meth:`IndexStore.truncate_to`), entries past ``entry_count`` are undone
and zeroed and the slots are checked (rebuilt from the entries if any points
past the end), so a torn batch leaves no trace. Not thread-safe: the state
machine owns the store.
"""

from __future__ import annotations

import logging
import mmap
import os
import struct
import sys
import zlib
from array import array
from collections.abc import Sequence
from pathlib import Path
from typing import Final

from raftmq.broker.store import CorruptStore
from raftmq.dledger import fsync_dir

log = logging.getLogger(__name__)

__all__ = ["DEFAULT_MAX_ENTRIES", "DEFAULT_SLOTS", "IndexStore", "key_hash"]

DEFAULT_SLOTS: Final = 500_000
DEFAULT_MAX_ENTRIES: Final = 2_000_000
HEADER_BYTES: Final = 40
SLOT_BYTES: Final = 4
ENTRY_BYTES: Final = 28
_HEADER = struct.Struct(">QQQQII")
_SLOT = struct.Struct(">I")
_ENTRY = struct.Struct(">IQIQI")
_MAX_U32: Final = 0xFFFF_FFFF
_MAX_U64: Final = 0xFFFF_FFFF_FFFF_FFFF
_NAME_DIGITS: Final = 20
_ZERO_CHUNK: Final = bytes(1 << 20)

IndexItem = tuple[str, int, int, int]  # (key, phys_offset, size, store_ts_ms)
IndexHit = tuple[int, int, int]  # (phys_offset, size, store_ts_ms)


def key_hash(key: str) -> int:
    """The 32-bit hash of a key stored in index entries (crc32 of its UTF-8)."""
    return zlib.crc32(key.encode("utf-8"))


class _IndexFile:
    """One index file, mmapped; header fields mirrored in attributes and
    written back by :meth:`write_header`."""

    def __init__(self, path: Path, first: int, mm: mmap.mmap) -> None:
        self.path = path
        self.first = first  # global number (0-based) of its first entry
        self.mm = mm
        header = _HEADER.unpack_from(mm, 0)
        self.begin_ts: int = header[0]
        self.end_ts: int = header[1]
        self.begin_phys: int = header[2]
        self.end_phys: int = header[3]
        self.slots: int = header[4]
        self.count: int = header[5]
        if self.slots < 1:
            raise CorruptStore(f"{path}: slot_count is 0")
        self.entries_at: int = HEADER_BYTES + SLOT_BYTES * self.slots
        room = len(mm) - self.entries_at
        if room < ENTRY_BYTES or room % ENTRY_BYTES:
            raise CorruptStore(f"{path}: size {len(mm)} does not fit {self.slots} slots and whole entries")
        self.capacity = room // ENTRY_BYTES
        if self.count > self.capacity:
            raise CorruptStore(f"{path}: entry_count {self.count} exceeds the capacity {self.capacity}")
        self.entries_crc: int | None = None  # CRC32 of entries 1..count, None until known
        self.slots_crc: int | None = None  # CRC32 of the slots region, None when changed since taken

    @classmethod
    def open(cls, path: Path, first: int) -> _IndexFile:
        with open(path, "r+b") as f:
            mm = mmap.mmap(f.fileno(), 0, access=mmap.ACCESS_WRITE)
        try:
            return cls(path, first, mm)
        except BaseException:
            mm.close()
            raise

    @classmethod
    def create(cls, path: Path, first: int, slots: int, capacity: int) -> _IndexFile:
        size = HEADER_BYTES + SLOT_BYTES * slots + ENTRY_BYTES * capacity
        with open(path, "x+b") as f:
            f.truncate(size)  # sparse: zeros cost no disk until written
            f.write(_HEADER.pack(0, 0, 0, 0, slots, 0))
            f.flush()
            mm = mmap.mmap(f.fileno(), 0, access=mmap.ACCESS_WRITE)
        return cls(path, first, mm)

    @property
    def end(self) -> int:
        """Global number one past this file's last entry."""
        return self.first + self.count

    def write_header(self) -> None:
        _HEADER.pack_into(self.mm, 0, self.begin_ts, self.end_ts, self.begin_phys, self.end_phys,
                          self.slots, self.count)

    def entry(self, e: int) -> tuple[int, int, int, int, int]:
        """Entry number ``e`` (1-based): key_hash, phys, size, store_ts, prev."""
        h, phys, size, ts, prev = _ENTRY.unpack_from(self.mm, self.entries_at + ENTRY_BYTES * (e - 1))
        return h, phys, size, ts, prev

    def crc_of_entries(self, n: int, first: int = 0, crc: int = 0) -> int:
        """CRC32 of entries ``first + 1 .. n`` continuing ``crc``."""
        base = self.entries_at
        with memoryview(self.mm) as whole:
            return zlib.crc32(whole[base + ENTRY_BYTES * first:base + ENTRY_BYTES * n], crc)

    def crc_of_slots(self) -> int:
        with memoryview(self.mm) as whole:
            return zlib.crc32(whole[HEADER_BYTES:self.entries_at])

    # ------------------------------------------------------------------
    # repair and truncation
    # ------------------------------------------------------------------
    def cut(self, n: int, bounds: tuple[int, int, int, int] | None = None) -> None:
        """Keep entries 1..n: undo the later ones (newest first, each slot gets
        back the entry's ``prev``), zero them, check the slots, recompute the
        header from what is left (or take ``bounds``, the header's
        ``(begin_ts, end_ts, begin_phys, end_phys)`` for n entries, as
        recorded in a checkpoint, instead of reading every entry)."""
        self.slots_crc = None
        if n != self.count:
            self.entries_crc = None
        mm, slots, base = self.mm, self.slots, self.entries_at
        top = self._last_nonzero_entry()
        for e in range(top, n, -1):
            h, _, _, _, prev = self.entry(e)
            pos = HEADER_BYTES + SLOT_BYTES * (h % slots)
            if _SLOT.unpack_from(mm, pos)[0] == e:
                _SLOT.pack_into(mm, pos, prev)
        if top > n:
            self._zero(base + ENTRY_BYTES * n, base + ENTRY_BYTES * top)
        slot_values = array("I", mm[HEADER_BYTES:base])
        if slot_values.itemsize != SLOT_BYTES:  # pragma: no cover - every supported platform has 4-byte "I"
            raise RuntimeError("array('I') is not 4 bytes here")
        if sys.byteorder == "little":
            slot_values.byteswap()
        if max(slot_values) > n:  # only after a power loss tore the slots: rebuild them
            log.warning("index file %s: slots point past entry %d; rebuilding them", self.path, n)
            self._rebuild_slots(n)
        if bounds is not None:
            self.count = n
            self.begin_ts, self.end_ts, self.begin_phys, self.end_phys = bounds
            self.write_header()
        elif top > n or n != self.count:
            self.count = n
            self._recompute_bounds()
            self.write_header()

    def _last_nonzero_entry(self) -> int:
        """The highest entry number with any non-zero byte, at least ``count``
        (entries past ``count`` exist only after a torn batch)."""
        mm, base = self.mm, self.entries_at
        lo = base + ENTRY_BYTES * self.count
        end = len(mm)
        last = -1
        pos = lo
        while pos < end:  # find the last non-zero byte, a chunk at a time
            stop = min(pos + len(_ZERO_CHUNK), end)
            if mm[pos:stop] != _ZERO_CHUNK[:stop - pos]:
                chunk: bytes = mm[pos:stop]
                last = pos + len(chunk.rstrip(b"\0")) - 1
            pos = stop
        if last < 0:
            return self.count
        return (last - base) // ENTRY_BYTES + 1

    def _zero(self, start: int, end: int) -> None:
        mm = self.mm
        pos = start
        while pos < end:
            stop = min(pos + len(_ZERO_CHUNK), end)
            if mm[pos:stop] != _ZERO_CHUNK[:stop - pos]:
                mm[pos:stop] = _ZERO_CHUNK[:stop - pos]
            pos = stop

    def _rebuild_slots(self, n: int) -> None:
        mm, slots = self.mm, self.slots
        self._zero(HEADER_BYTES, self.entries_at)
        for e in range(1, n + 1):
            _SLOT.pack_into(mm, HEADER_BYTES + SLOT_BYTES * (self.entry(e)[0] % slots), e)

    def _recompute_bounds(self) -> None:
        if self.count == 0:
            self.begin_ts = self.end_ts = self.begin_phys = self.end_phys = 0
            return
        _, bph, _, bts, _ = self.entry(1)
        eph, ets = bph, bts
        with memoryview(self.mm) as whole, whole[self.entries_at:self.entries_at + ENTRY_BYTES * self.count] as view:
            for _, phys, _, ts, _ in _ENTRY.iter_unpack(view):
                if ts < bts:
                    bts = ts
                elif ts > ets:
                    ets = ts
                if phys < bph:
                    bph = phys
                elif phys > eph:
                    eph = phys
        self.begin_ts, self.end_ts, self.begin_phys, self.end_phys = bts, ets, bph, eph

    def close(self) -> None:
        self.mm.close()


class IndexStore:
    """The index files under ``dir``: the last one takes new entries.

    ``slots`` and ``max_entries`` apply to files created from now on (an
    existing file keeps the layout in its header); replicas must use the same
    values to keep byte-identical files. Suggested: 500,000 slots and
    2,000,000 entries per file (about 58 MB, sparse until used).
    """

    def __init__(self, dir: Path | str, slots: int = DEFAULT_SLOTS,
                 max_entries: int = DEFAULT_MAX_ENTRIES) -> None:
        if not 1 <= slots <= _MAX_U32:
            raise ValueError(f"slots must be from 1 to {_MAX_U32}, not {slots}")
        if not 1 <= max_entries < _MAX_U32:
            raise ValueError(f"max_entries must be from 1 to {_MAX_U32 - 1}, not {max_entries}")
        self.dir = Path(dir)
        self.dir.mkdir(parents=True, exist_ok=True)
        self._slots = slots
        self._max_entries = max_entries
        self._files: list[_IndexFile] = []
        self._dirty: set[_IndexFile] = set()  # files written since the last flush
        self._dir_dirty = False
        names = sorted(n for n in os.listdir(self.dir) if len(n) == _NAME_DIGITS and n.isdigit())
        torn_first: int | None = None
        if names and self._torn_creation(self.dir / names[-1]):
            log.warning("index file %s: creation was interrupted (no header); removed", names[-1])
            torn_first = int(names[-1])
            os.unlink(self.dir / names.pop())
            self._dir_dirty = True
        try:
            for name in names:
                self._files.append(_IndexFile.open(self.dir / name, int(name)))
            for a, b in zip(self._files, self._files[1:]):
                if a.end != b.first:
                    raise CorruptStore(f"index files {a.path.name} and {b.path.name} are not contiguous "
                                       f"({a.end} entries before the second, which says {b.first})")
        except BaseException:
            self._close_files()
            raise
        if self._files:
            active = self._files[-1]
            active.cut(active.count)  # undo a torn batch, if any
        else:
            self._new_file(torn_first or 0)  # numbering goes on from the torn file
        log.info("index opened dir=%s files=%d entries=%d", self.dir, len(self._files), self.marker())

    @staticmethod
    def _torn_creation(path: Path) -> bool:
        """A file cut short while being created: shorter than a header, or a
        header still all zeros (slot_count 0). It holds no entries."""
        with open(path, "rb") as f:
            head = f.read(HEADER_BYTES)
        return len(head) < HEADER_BYTES or _HEADER.unpack(head)[4] == 0

    # ------------------------------------------------------------------
    # markers
    # ------------------------------------------------------------------
    @property
    def entry_count_total(self) -> int:
        """Entries ever added (minus those truncated): the global number of the next one."""
        return self._files[-1].end

    def marker(self) -> int:
        """A position to record in a checkpoint and give back to :meth:`truncate_to`."""
        return self._files[-1].end

    @staticmethod
    def empty_marker() -> int:
        """The marker of an index holding nothing."""
        return 0

    # ------------------------------------------------------------------
    # writing
    # ------------------------------------------------------------------
    def add_batch(self, items: Sequence[IndexItem]) -> None:
        """Index ``(key, phys_offset, size, store_ts_ms)`` items, in order.

        Writes go straight into the mmapped active file: each entry, then its
        slot, then the header once per batch (per file when it rolls).
        """
        f = self._files[-1]
        mm, slots, base = f.mm, f.slots, f.entries_at
        count, cap = f.count, f.capacity
        bts, ets, bph, eph = f.begin_ts, f.end_ts, f.begin_phys, f.end_phys
        crc32 = zlib.crc32
        unpack_slot, pack_slot, pack_entry = _SLOT.unpack_from, _SLOT.pack_into, _ENTRY.pack_into
        touched = False
        first = count  # entries of ``f`` before this batch: the CRC goes on from there
        try:
            for key, phys, size, ts in items:
                if count >= cap:
                    f.count, f.begin_ts, f.end_ts, f.begin_phys, f.end_phys = count, bts, ets, bph, eph
                    f.write_header()
                    self._entries_added(f, first)
                    f = self._new_file(f.end)
                    mm, slots, base = f.mm, f.slots, f.entries_at
                    count, cap, first = 0, f.capacity, 0
                    bts = ets = bph = eph = 0
                h = crc32(key.encode("utf-8"))
                slot_pos = HEADER_BYTES + SLOT_BYTES * (h % slots)
                prev = unpack_slot(mm, slot_pos)[0]
                pack_entry(mm, base + ENTRY_BYTES * count, h, phys, size, ts, prev)
                count += 1
                pack_slot(mm, slot_pos, count)
                touched = True
                if count == 1:
                    bts = ets = ts
                    bph = eph = phys
                else:
                    if ts < bts:
                        bts = ts
                    elif ts > ets:
                        ets = ts
                    if phys < bph:
                        bph = phys
                    elif phys > eph:
                        eph = phys
        except struct.error as exc:
            raise ValueError(f"index item out of range (u64 phys, u32 size, u64 store_ts): {exc}") from exc
        finally:
            if touched:
                f.count, f.begin_ts, f.end_ts, f.begin_phys, f.end_phys = count, bts, ets, bph, eph
                f.write_header()
                self._entries_added(f, first)
                self._dirty.add(f)

    @staticmethod
    def _entries_added(f: _IndexFile, first: int) -> None:
        """Carry ``f``'s entries CRC over the entries after ``first`` (module docstring)."""
        if f.entries_crc is not None and f.count > first:
            f.entries_crc = f.crc_of_entries(f.count, first, f.entries_crc)
        f.slots_crc = None

    def _new_file(self, first: int) -> _IndexFile:
        if self._files:
            self._dirty.add(self._files[-1])
        f = _IndexFile.create(self.dir / f"{first:0{_NAME_DIGITS}d}", first, self._slots, self._max_entries)
        f.entries_crc = 0  # no entries yet
        self._files.append(f)
        self._dirty.add(f)
        self._dir_dirty = True
        log.info("index file created name=%s slots=%d entries=%d", f.path.name, f.slots, f.capacity)
        return f

    # ------------------------------------------------------------------
    # queries
    # ------------------------------------------------------------------
    def query(self, key: str, begin_ts: int = 0, end_ts: int = _MAX_U64,
              max_results: int = 32) -> list[IndexHit]:
        """Up to ``max_results`` ``(phys_offset, size, store_ts_ms)`` for ``key``
        with ``begin_ts <= store_ts_ms <= end_ts``, newest first.

        Candidates only: another key with the same 32-bit hash matches too,
        so the caller reads each message and checks its keys.
        """
        out: list[IndexHit] = []
        if max_results <= 0:
            return out
        h = zlib.crc32(key.encode("utf-8"))
        for f in reversed(self._files):
            if f.count == 0 or f.end_ts < begin_ts or f.begin_ts > end_ts:
                continue
            mm, base = f.mm, f.entries_at
            e = _SLOT.unpack_from(mm, HEADER_BYTES + SLOT_BYTES * (h % f.slots))[0]
            while e:
                if e > f.count:
                    log.error("index file %s: chain reaches entry %d past the end (%d)", f.path, e, f.count)
                    break
                eh, phys, size, ts, prev = _ENTRY.unpack_from(mm, base + ENTRY_BYTES * (e - 1))
                if eh == h and begin_ts <= ts <= end_ts:
                    out.append((phys, size, ts))
                    if len(out) >= max_results:
                        return out
                if prev >= e:
                    log.error("index file %s: entry %d links forward to %d", f.path, e, prev)
                    break
                e = prev
        return out

    # ------------------------------------------------------------------
    # restart and retention
    # ------------------------------------------------------------------
    def truncate_to(self, marker: int) -> None:
        """Drop every entry numbered ``marker`` or later (restart: they are
        added again when the log is re-applied). A marker before the oldest
        file left by retention leaves an empty index that numbers on from it;
        one beyond what is on disk raises :class:`CorruptStore`."""
        if marker < 0:
            raise ValueError(f"marker must not be negative, not {marker}")
        if marker > self.marker():
            raise CorruptStore(f"index {self.dir}: cannot truncate to {marker}: only {self.marker()} entries on disk")
        if marker == self.marker():
            return
        while self._files and self._files[-1].first >= marker:
            self._delete(self._files[-1])  # holds only entries at or after the marker
        if not self._files:
            self._new_file(marker)
        else:
            f = self._files[-1]
            f.cut(marker - f.first)
            self._dirty.add(f)
        log.info("index truncated to marker=%d files=%d", marker, len(self._files))

    def delete_before(self, phys_offset: int) -> int:
        """Retention: delete whole files whose entries all point before
        ``phys_offset`` (``end_phys < phys_offset``). If that includes the
        active file, a fresh empty one takes over, numbered on. Returns the
        number of files deleted."""
        next_first = self.marker()
        deleted = 0
        # Oldest first, stopping at the first file kept: the files left stay
        # contiguous in entry numbers.
        while self._files and self._files[0].count > 0 and self._files[0].end_phys < phys_offset:
            self._delete(self._files[0])
            deleted += 1
        if not self._files:
            self._new_file(next_first)
        if deleted:
            log.info("index retention before phys=%d: %d files deleted", phys_offset, deleted)
        return deleted

    # ------------------------------------------------------------------
    # checksums (module docstring)
    # ------------------------------------------------------------------
    def checkpoint_record(self) -> list[list[int]]:
        """Per file ``[first, slot_count, capacity, entry_count, entries_crc,
        slots_crc, begin_ts, end_ts, begin_phys, end_phys]``: what a
        checkpoint keeps to verify the index on start. Reads only the slots
        of a file that took entries since the last call (and, once after a
        restart from an old checkpoint, whatever CRC is not known)."""
        out = []
        for f in self._files:
            if f.entries_crc is None:
                f.entries_crc = f.crc_of_entries(f.count)
            if f.slots_crc is None:
                f.slots_crc = f.crc_of_slots()
            out.append([f.first, f.slots, f.capacity, f.count, f.entries_crc, f.slots_crc,
                        f.begin_ts, f.end_ts, f.begin_phys, f.end_phys])
        return out

    def restore_checkpoint(self, records: Sequence[Sequence[int]]) -> str | None:
        """Check the files against a checkpoint's records and undo the entries
        added after it (files created after it are deleted). Returns what is
        wrong, or None once the index is as recorded. Damaged slots alone are
        not wrong: they are rebuilt from the entries (logged)."""
        if not records:
            return "the checkpoint records no index file"
        names = [f.first for f in self._files]
        recorded = [int(r[0]) for r in records]
        if names[:len(recorded)] != recorded:
            return f"index {self.dir}: files {names} on disk, {recorded} recorded"
        for f, r in zip(self._files, records):
            first, slots, capacity, count, entries_crc = r[:5]
            if (f.slots, f.capacity) != (slots, capacity):
                return (f"index file {f.path}: {f.slots} slots and room for {f.capacity} entries, "
                        f"the checkpoint says {slots} and {capacity}")
            if not 0 <= count <= f.capacity or (f is not self._files[len(records) - 1] and count != f.capacity):
                return f"index file {f.path}: the checkpoint records {count} entries"
            actual = f.crc_of_entries(count)
            if actual != entries_crc:
                return (f"index file {f.path}: CRC of its first {count} entries is {actual:#010x}, "
                        f"the checkpoint says {entries_crc:#010x}")
        for f in self._files[len(records):][::-1]:
            self._delete(f)
        for f, r in zip(self._files, records):
            count, entries_crc, slots_crc = r[3], r[4], r[5]
            f.cut(count, (r[6], r[7], r[8], r[9]))
            if f.crc_of_slots() != slots_crc:
                log.warning("index file %s: hash slots damaged; rebuilt from its %d entries", f.path, count)
                f._rebuild_slots(count)
                if f.crc_of_slots() != slots_crc:
                    return f"index file {f.path}: slots rebuilt from its entries still differ from the checkpoint"
            f.entries_crc, f.slots_crc = entries_crc, slots_crc
            self._dirty.add(f)
        return None

    def _delete(self, f: _IndexFile) -> None:
        self._files.remove(f)
        self._dirty.discard(f)
        f.close()
        os.unlink(f.path)
        self._dir_dirty = True

    # ------------------------------------------------------------------
    # durability
    # ------------------------------------------------------------------
    def flush(self) -> None:
        """msync the files written since the last flush, and the directory if
        files were created or deleted."""
        for f in self._files:
            if f in self._dirty:
                f.mm.flush()
        self._dirty.clear()
        if self._dir_dirty:
            fsync_dir(self.dir)
            self._dir_dirty = False

    def close(self) -> None:
        """Flush and unmap every file."""
        if not self._files:
            return
        self.flush()
        self._close_files()

    def _close_files(self) -> None:
        for f in self._files:
            f.close()
        self._files = []

    @property
    def file_names(self) -> list[str]:
        """Names of the index files, oldest first (for tests and tools)."""
        return [f.path.name for f in self._files]
