"""``FileLogStore``: dledger's durable, segmented, append-only log (the
``LogStore`` of ``base.py``), and ``StoreConfig``.

Layout under the data directory::

    <data>/commitlog/<20-digit start position>   data segments (entry_format.py, segment.py)
    <data>/index/<20-digit first index>          fixed-width index records (index_file.py)
    <data>/meta/log_start                        snapshot point of the retained log (log_start.py)
    <data>/meta/hardstate                        term and vote (hard_state.py, FileHardStateStore)

Writes work on batches: an ``append`` frames the whole batch in memory and
hands it to the OS with one positional write per segment touched plus one per
index file touched; ``flush`` under the ``sync`` policy fdatasyncs each file
written since the last flush once (group commit). Whatever the policy, two rare
events are made durable at once, so that recovery only has to distrust the
newest two segments (``recovery.py``): creating a segment first syncs every
segment older than the previous one (once per segment, on data the OS has
mostly written back already), and a conflict truncation is synced before new
entries are written over it (once per leader change). Reads of the recent tail are
served from an in-memory ``TailCache``; older entries are found through the
index with ``os.pread`` on cached descriptors and checked against their CRC.

Damage: an entry found damaged (by the scrub on open, ``recovery.py``, or
when read) is recorded, never served (reads stop before it, ``read_at`` over it
raises ``EntryDamaged``) and listed by ``damaged``; the runtime fetches an
intact copy of the same (index, term) from a peer and ``repair`` writes it
back in place. A conflict truncation, a compaction or a reset forgets damage
in what it removes.

Threading: the runtime may run ``flush`` in a worker thread while the event
loop reads. Mutations and ``flush`` hold one lock; reads take none (they only
read state that a mutation replaces, and the runtime never appends while a
flush of the same store is in flight).
"""

from __future__ import annotations

import logging
import os
import threading
import zlib
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Final, Sequence

from raftmq.dledger.core.messages import Entry, EntryKind, SnapshotMeta
from raftmq.dledger.errors import CorruptLog, EntryDamaged, StorageFailure
from raftmq.dledger.store import log_start
from raftmq.dledger.store.durable import make_dirs
from raftmq.dledger.store.entry_format import (
    CHECK_AT,
    ENTRY_MAGIC,
    NO_CHECK,
    HEADER,
    HEADER_BYTES,
    check_frame,
    encode_batch,
    header_problem,
    segment_start,
)
from raftmq.dledger.store.file_names import parse_file_name
from raftmq.dledger.store.hard_state import FileHardStateStore
from raftmq.dledger.store.index_file import RECORD, RECORD_BYTES, IndexFiles, IndexRecord, encode_records
from raftmq.dledger.store.log_start import LogStart
from raftmq.dledger.store.recovery import recover
from raftmq.dledger.store.segment import SegmentFiles
from raftmq.dledger.store.tail_cache import TailCache

__all__ = ["FileHardStateStore", "FileLogStore", "StoreConfig"]

log = logging.getLogger(__name__)

MIN_SEGMENT_BYTES: Final = 64
MAX_SEGMENT_BYTES: Final = 0xFFFFFFFF  # frame sizes and end-of-segment markers are u32
RECORDS_PER_READ: Final = 4096


@dataclass(slots=True, frozen=True)
class StoreConfig:
    """Configuration of a ``FileLogStore``.

    - ``segment_bytes``: size of one data segment file, in bytes (64 .. 2**32-1;
      suggested 1 GiB). The largest entry is ``segment_bytes - 32`` bytes. Must
      not change for an existing log (positions, hence message ids, depend on it).
    - ``flush``: ``"async"`` (written to the OS before acking: survives a process
      crash, not a power loss) or ``"sync"`` (fdatasync before acking: survives a
      power loss).
    - ``index_file_entries``: records per index file (24 bytes each; suggested
      1,000,000, i.e. 24 MB files).
    - ``cache_bytes``: budget of the in-memory tail cache, in bytes of entry data
      plus headers (0 disables it; suggested 64 MiB: well over what followers
      lag behind in normal operation).
    """

    segment_bytes: int = 1 << 30
    flush: str = "async"
    index_file_entries: int = 1_000_000
    cache_bytes: int = 64 << 20

    def __post_init__(self) -> None:
        if not MIN_SEGMENT_BYTES <= self.segment_bytes <= MAX_SEGMENT_BYTES:
            raise ValueError(f"segment_bytes: must be between {MIN_SEGMENT_BYTES} and {MAX_SEGMENT_BYTES}, "
                             f"not {self.segment_bytes}")
        if self.flush not in ("async", "sync"):
            raise ValueError(f"flush: must be 'async' or 'sync', not {self.flush!r}")
        if self.index_file_entries < 1:
            raise ValueError(f"index_file_entries: must be at least 1, not {self.index_file_entries}")
        if self.cache_bytes < 0:
            raise ValueError(f"cache_bytes: must not be negative, not {self.cache_bytes}")


class FileLogStore:
    """A ``LogStore`` in segment files; see the module doc and ``base.LogStore``."""

    def __init__(self, data_dir: str | Path, config: StoreConfig = StoreConfig()) -> None:
        self.config = config
        self._sb = config.segment_bytes
        root = Path(data_dir)
        self._dir = root
        commitlog, index_dir, meta = root / "commitlog", root / "index", root / "meta"
        make_dirs(commitlog, index_dir, meta)
        self._start_path = meta / "log_start"
        start = log_start.load(self._start_path)
        if start is None:
            if any(parse_file_name(n) is not None for d in (commitlog, index_dir) for n in os.listdir(d)):
                # The checkpoint is written before any segment: without it, where
                # the log starts is unknown, and guessing could delete it all.
                raise CorruptLog(f"{self._start_path} is missing but {root} holds log files")
            start = LogStart(self._sb)
            log_start.save(self._start_path, start)
        elif start.segment_bytes != self._sb:
            raise ValueError(f"segment_bytes: the log in {root} was written with segment_bytes="
                             f"{start.segment_bytes}, not {self._sb}")
        self._lock = threading.Lock()
        self._closed = False
        self._failed: StorageFailure | None = None
        self._cache = TailCache(config.cache_bytes)
        self._segments = SegmentFiles(commitlog, self._sb)
        try:
            self._index = IndexFiles(index_dir, config.index_file_entries)
            try:
                if start.reset_pending:
                    log.warning("event=finish_interrupted_reset dir=%s snapshot_index=%d", root, start.index)
                    start = self._wipe(start)
                tail = recover(self._segments, self._index, start)
            except BaseException:
                self._index.close()
                raise
        except BaseException:
            self._segments.close()
            raise
        self._snap_index = start.index
        self._snap_term = start.term
        self._start_pos = start.next_position  # position of first_index()'s frame (or where it goes)
        self._last = tail.last_index
        self._last_term = tail.last_term
        self._end = tail.end  # end of the last frame: the next one is placed from here
        # Entries found damaged in place (at open, or when read): never served,
        # repaired from a peer (``repair``). Kept sorted by index.
        self._damaged: dict[int, IndexRecord] = {r.index: r for r in tail.damaged}
        self.lost_entries_on_open = tail.lost_entries
        log.info("event=open dir=%s first_index=%d last_index=%d end=%d flush=%s", root,
                 self._snap_index + 1, self._last, self._end, config.flush)

    # -- LogStorage --------------------------------------------------------
    def first_index(self) -> int:
        return self._snap_index + 1

    def last_index(self) -> int:
        return self._last

    def term(self, index: int) -> int:
        if index == self._last:
            return self._last_term
        if index == self._snap_index:
            return self._snap_term
        if index < self._snap_index or index > self._last:
            raise IndexError(f"term of index {index} outside [{self._snap_index}, {self._last}]")
        hit = self._cache.get(index)
        if hit is not None:
            return hit[0].term
        return self._record(index).term

    def entries(self, lo: int, hi: int, max_bytes: int) -> list[Entry]:
        if lo <= self._snap_index or hi - 1 > self._last:
            raise IndexError(f"entries [{lo}, {hi}) outside [{self._snap_index + 1}, {self._last}]")
        out: list[Entry] = []
        if lo >= hi:
            return out
        if self._damaged:
            hi = self._stop_before_damage(lo, hi)
        size = 0
        cached_from = self._cache.first_index()
        if cached_from is None:
            cached_from = self._last + 1
        if lo < cached_from:
            disk_hi = min(hi, cached_from)
            size = self._read_entries(lo, disk_hi, max_bytes, out)
            if len(out) < disk_hi - lo:
                return out  # the byte limit stopped the disk read
            lo = disk_hi
        if lo < hi:
            self._cache.collect(lo, hi, max_bytes, out, size)
        return out

    def _stop_before_damage(self, lo: int, hi: int) -> int:
        """``hi`` clipped at the first damaged entry in [lo, hi); EntryDamaged if it is ``lo``."""
        first = min((i for i in self._damaged if lo <= i < hi), default=None)
        if first is None:
            return hi
        if first == lo:
            raise EntryDamaged(lo, "found earlier, not yet repaired")
        return first

    # -- damage found on disk (see recovery.py) ------------------------------
    @property
    def has_damage(self) -> bool:
        return bool(self._damaged)

    def damaged(self) -> list[tuple[int, int]]:
        """(index, term) of every entry known to be damaged on disk, oldest first."""
        return sorted((i, r.term) for i, r in self._damaged.items())

    def repair(self, entry: Entry) -> bool:
        """Write a peer's intact copy of a damaged entry over the damaged frame,
        in place, and make it durable (whatever the flush policy). Accepted only
        if it is the same entry: same index and term (Raft's log matching
        property), same kind and frame size. Returns whether it was repaired."""
        with self._lock:
            self._check_writable()
            rec = self._damaged.get(entry.index)
            if rec is None or (rec.term, rec.size, rec.kind) != (entry.term, HEADER_BYTES + len(entry.data),
                                                                  int(entry.kind)):
                return False
            if not self._matches_damaged_header(rec, entry):
                log.warning("event=repair_refused dir=%s index=%d: the copy's body does not have the CRC our "
                            "frame's sound header records", self._dir, entry.index)
                return False
            batch = encode_batch([entry], rec.position, self._sb)
            if batch.positions != [rec.position] or len(batch.writes) != 1:
                return False  # cannot happen for a frame that fit there before
            seg, offset, data = batch.writes[0]
            try:
                self._segments.pwrite(seg, offset, data)
                self._segments.sync()  # the index record already says what this frame is
            except StorageFailure as exc:
                self._failed = exc
                raise
            del self._damaged[entry.index]
            log.warning("event=entry_repaired dir=%s index=%d term=%d position=%d", self._dir, entry.index,
                        entry.term, rec.position)
            return True

    def _matches_damaged_header(self, rec: IndexRecord, entry: Entry) -> bool:
        """When only the body of the damaged frame is damaged, its header still
        records the body's CRC: a copy must have it (a broken or hostile peer's
        copy of the right size is refused)."""
        seg = segment_start(rec.position, self._sb)
        head = self._segments.pread(seg, rec.position - seg, HEADER_BYTES)
        if len(head) < HEADER_BYTES or header_problem(head) is not None or bytes(head[CHECK_AT:CHECK_AT + 3]) == NO_CHECK:
            return True  # the header is damaged too (or unchecked): term, size and kind are all we can match
        magic, size, term, index, kind, body_crc = HEADER.unpack(head)
        if (magic, size, term, index, kind) != (ENTRY_MAGIC, rec.size, rec.term, rec.index, rec.kind):
            return True
        return zlib.crc32(entry.data) == body_crc

    def check_at(self, position: int) -> int | None:
        """Check the whole entry whose frame holds ``position`` (a reader found a
        record there that fails its own check): a damaged entry is recorded as
        when read. Returns the entry's index, or None if no retained entry holds
        ``position``. A binary search over the index, then one read."""
        lo, hi = self._snap_index + 1, self._last
        if lo > hi or position < self._start_pos or position >= self._end:
            return None
        while lo < hi:  # the last entry whose frame starts at or before position
            mid = (lo + hi + 1) // 2
            if self._frame_position(mid) <= position:
                lo = mid
            else:
                hi = mid - 1
        try:
            self._read_entries(lo, lo + 1, 1 << 62, [])
        except EntryDamaged:
            pass
        return lo

    def _damaged_at(self, index: int, rec: IndexRecord, problem: str) -> EntryDamaged:
        if index not in self._damaged:
            self._damaged[index] = rec
            log.error("event=damaged_entry dir=%s index=%d term=%d position=%d problem=%r: not served, to be "
                      "repaired from a peer", self._dir, index, rec.term, rec.position, problem)
        return EntryDamaged(index, problem)

    def snapshot_meta(self) -> SnapshotMeta:
        return SnapshotMeta(self._snap_index, self._snap_term, self._start_pos)

    # -- LogStore ------------------------------------------------------------
    def append(self, entries: Sequence[Entry]) -> None:
        """Write ``entries``, truncating any stored entry at or after the first
        (see ``base.LogStore``). ``ValueError`` for a gap, a rewrite of the
        snapshot, non-consecutive indexes or an entry larger than a segment, with
        nothing changed; ``StorageFailure`` if the write fails (the store then
        refuses further writes)."""
        if not entries:
            return
        first = entries[0].index
        with self._lock:
            self._check_writable()
            if first <= self._snap_index:
                raise ValueError(f"append at {first} rewrites the snapshot (log starts at {self._snap_index + 1})")
            if first > self._last + 1:
                raise ValueError(f"append at {first} leaves a gap after the last index {self._last}")
            batch = encode_batch(entries, self._end_of(first - 1), self._sb)
            records = encode_records(entries, batch.positions)
            try:
                if first <= self._last:
                    self._truncate_after(first - 1)
                for seg, offset, data in batch.writes:
                    if not self._segments.exists(seg):
                        self._seal_before(seg)
                    self._segments.pwrite(seg, offset, data)
                self._index.append(first, records)
            except StorageFailure as exc:
                self._failed = exc
                raise
            self._cache.append(entries, batch.positions)
            self._last = entries[-1].index
            self._last_term = entries[-1].term
            self._end = batch.end

    def flush(self) -> None:
        """``sync`` policy: fdatasync each data segment and index file written
        since the last flush (and their directory if files came or went), once.
        ``async`` policy: nothing (the data is already with the OS)."""
        with self._lock:
            self._check_writable()
            if self.config.flush == "async":
                return
            try:
                self._segments.sync()
                self._index.sync()
            except StorageFailure as exc:
                self._failed = exc  # after a failed fsync the page cache cannot be trusted: stop
                raise

    def body_position(self, index: int) -> int:
        if index <= self._snap_index or index > self._last:
            raise IndexError(f"body position of index {index} outside [{self._snap_index + 1}, {self._last}]")
        hit = self._cache.get(index)
        if hit is not None:
            return hit[1] + HEADER_BYTES
        return self._record(index).position + HEADER_BYTES

    def body_positions(self, lo: int, hi: int) -> list[int]:
        """``body_position`` of entries ``lo .. hi`` (inclusive), in one call:
        the entries just committed are usually all in the tail cache."""
        if lo <= self._snap_index or hi > self._last:
            raise IndexError(f"body positions of {lo}..{hi} outside [{self._snap_index + 1}, {self._last}]")
        frames = self._cache.positions(lo, hi)
        if frames is None:
            return [self.body_position(i) for i in range(lo, hi + 1)]
        return [p + HEADER_BYTES for p in frames]

    def read_at(self, position: int, size: int) -> bytes:
        """``size`` bytes of the commitlog at ``position``, with one positional
        read (none if they lie within a cached entry body). The caller asks for
        bytes within one entry body (a message inside a ``produce`` entry); the
        read is clipped at the end of the log and of the segment. No CRC check
        is possible for part of a body. ``IndexError`` outside the retained log."""
        if size < 0:
            raise ValueError(f"size: must not be negative, not {size}")
        if position < self._start_pos or position >= self._end:
            raise IndexError(f"position {position} outside the log [{self._start_pos}, {self._end})")
        if size == 0:
            return b""
        if self._damaged:
            for i, r in self._damaged.items():
                if r.position < position + size and position < r.end:
                    raise EntryDamaged(i, "found earlier, not yet repaired")
        hit = self._cache.read_at(position, size)
        if hit is not None:
            return hit
        self._check_open()
        seg = segment_start(position, self._sb)
        n = min(size, seg + self._sb - position, self._end - position)
        return self._segments.pread(seg, position - seg, n)

    def compact(self, index: int) -> None:
        """Prefix deletion: delete the data segments (and index files) whose
        entries are all ``<= index``. ``first_index()`` becomes the first entry of
        the oldest kept segment, so it may stay ``<= index`` (entries of a
        partially covered segment are kept). The segment holding ``last_index()``
        is never deleted. The new snapshot point is checkpointed before any file
        is deleted."""
        with self._lock:
            self._check_writable()
            index = min(index, self._last)
            if index <= self._snap_index:
                return
            keep = self._frame_position(index + 1 if index < self._last else self._last)
            keep_seg = segment_start(keep, self._sb)
            if keep_seg <= self._start_pos:
                return  # the oldest segment still holds entries after ``index``
            first = self._first_index_in(keep_seg)
            if first - 1 <= self._snap_index:
                return
            start = LogStart(self._sb, first - 1, self.term(first - 1), keep_seg)
            log_start.save(self._start_path, start)
            gone = self._segments.delete_before(keep_seg)
            index_files = self._index.drop_through(start.index)
            self._cache.drop_through(start.index)
            self._snap_index, self._snap_term, self._start_pos = start.index, start.term, start.next_position
            for i in [i for i in self._damaged if i <= start.index]:
                del self._damaged[i]
            log.info("event=compact dir=%s requested=%d first_index=%d segments_deleted=%d index_files_deleted=%d",
                     self._dir, index, first, len(gone), index_files)

    def reset(self, meta: SnapshotMeta) -> None:
        """Drop the whole log and restart it empty after the snapshot point
        ``meta``; the next entry is ``meta.index + 1``, placed from
        ``meta.next_position``. Crash-safe: the new point is checkpointed with a
        "reset in progress" flag first and an interrupted reset finishes on open."""
        if meta.index < 0 or meta.term < 0 or meta.next_position < 0:
            raise ValueError(f"reset to a negative snapshot point {meta}")
        with self._lock:
            self._check_writable()
            start = LogStart(self._sb, meta.index, meta.term, meta.next_position, reset_pending=True)
            log_start.save(self._start_path, start)
            start = self._wipe(start)
            self._cache.clear()
            self._damaged.clear()
            self._snap_index, self._snap_term, self._start_pos = start.index, start.term, start.next_position
            self._last, self._last_term, self._end = start.index, start.term, start.next_position
            log.info("event=reset dir=%s snapshot_index=%d snapshot_term=%d next_position=%d", self._dir,
                     meta.index, meta.term, meta.next_position)

    def close(self) -> None:
        with self._lock:
            if self._closed:
                return
            self._closed = True
            self._segments.close()
            self._index.close()
            self._cache.clear()

    # -- internals ---------------------------------------------------------
    def _check_open(self) -> None:
        if self._closed:
            raise ValueError(f"log store {self._dir} is closed")

    def _check_writable(self) -> None:
        self._check_open()
        if self._failed is not None:
            raise StorageFailure(f"log store {self._dir} failed earlier and accepts no more writes: {self._failed}")

    def _wipe(self, start: LogStart) -> LogStart:
        """Delete every segment and index file durably, then clear the reset flag."""
        self._segments.delete_all()
        self._index.delete_all()
        self._segments.sync()
        self._index.sync()
        start = replace(start, reset_pending=False)
        log_start.save(self._start_path, start)
        return start

    def _seal_before(self, new_seg: int) -> None:
        """Before segment ``new_seg`` is created, make every segment older than the
        one before it durable, with the index and the directory entries, whatever
        the flush policy. Recovery then only needs to scan the newest two segments:
        nothing older can be torn. Once per segment (the data was written a whole
        segment ago, so the OS has mostly written it back already)."""
        older = self._segments.starts
        if older and older[0] < new_seg - self._sb:
            self._segments.sync(before=new_seg - self._sb)
            self._index.sync()

    def _record(self, index: int) -> IndexRecord:
        self._check_open()
        rec = self._index.record(index)
        if rec is None:
            raise CorruptLog(f"the index in {self._dir} has no record of entry {index} "
                             f"(log {self._snap_index + 1}..{self._last})")
        return rec

    def _frame_position(self, index: int) -> int:
        hit = self._cache.get(index)
        return hit[1] if hit is not None else self._record(index).position

    def _end_of(self, index: int) -> int:
        """End of the frame of ``index`` (``snap_index``: the log start)."""
        if index == self._last:
            return self._end
        if index == self._snap_index:
            return self._start_pos
        hit = self._cache.get(index)
        if hit is not None:
            return hit[1] + HEADER_BYTES + len(hit[0].data)
        return self._record(index).end

    def _first_index_in(self, seg: int) -> int:
        """Index of the entry whose frame opens segment ``seg`` (every segment
        after the one holding the log start opens with a frame)."""
        head = self._segments.pread(seg, 0, HEADER_BYTES)
        if len(head) == HEADER_BYTES:
            magic, _size, _term, index, _kind, _crc = HEADER.unpack(head)
            if magic == ENTRY_MAGIC and self._snap_index < index <= self._last \
                    and self._frame_position(index) == seg:
                return int(index)
        raise CorruptLog(f"segment {seg} in {self._dir} does not open with the frame the index expects")

    def _truncate_after(self, index: int) -> None:
        """Drop every entry after ``index`` (a conflict truncation decided by the core)."""
        end = self._end_of(index)
        term = self.term(index)
        dropped_entries = self._last - index
        dropped_bytes = self._segments.cut(end)
        self._index.truncate_after(index)
        # Make the cut durable before new entries go over it, whatever the flush
        # policy: otherwise a power loss could bring back the dropped entries
        # behind (or between) new ones. Conflict truncations are rare (a leader
        # change), so this costs nothing in steady state.
        self._segments.sync()
        self._index.sync()
        self._cache.truncate_after(index)
        for i in [i for i in self._damaged if i > index]:
            del self._damaged[i]  # overwritten by the leader's entries: nothing left to repair
        self._last, self._last_term, self._end = index, term, end
        log.info("event=truncate dir=%s from_index=%d entries=%d bytes=%d", self._dir, index + 1,
                 dropped_entries, dropped_bytes)

    def _read_entries(self, lo: int, hi: int, max_bytes: int, out: list[Entry]) -> int:
        """Read entries ``lo .. hi - 1`` from disk into ``out`` within the byte
        limit (at least one in ``out``); returns the data size taken. One pread of
        index records per index file and one of data per run of frames in a
        segment; every frame is checked against the index and its CRC."""
        self._check_open()
        size = 0
        index = lo
        sb = self._sb
        while index < hi:
            n = min(hi - index, RECORDS_PER_READ)
            raw = self._index.read_raw(index, index + n)
            if len(raw) < n * RECORD_BYTES:
                raise CorruptLog(f"the index in {self._dir} has no record of entry {index + len(raw) // RECORD_BYTES}")
            recs = list(RECORD.iter_unpack(raw))
            take = 0
            for rec in recs:
                if rec[2] < HEADER_BYTES:
                    raise CorruptLog(f"index record of entry {index + take} has frame size {rec[2]}")
                size += rec[2] - HEADER_BYTES
                if (out or take) and size > max_bytes:
                    size -= rec[2] - HEADER_BYTES
                    break
                take += 1
            i = 0
            while i < take:  # one pread per run of adjacent frames within a segment
                pos0 = recs[i][0]
                seg = segment_start(pos0, sb)
                end = pos0 + recs[i][2]
                j = i + 1
                while j < take and recs[j][0] == end and end + recs[j][2] <= seg + sb:
                    end += recs[j][2]
                    j += 1
                if pos0 < self._start_pos or end > seg + sb:
                    raise CorruptLog(f"index record of entry {index + i} points outside the log (position {pos0})")
                buf = memoryview(self._segments.pread(seg, pos0 - seg, end - pos0))
                for k in range(i, j):
                    pos, term, fsize, kind = recs[k]
                    frame = buf[pos - pos0 : pos - pos0 + fsize]
                    problem = check_frame(frame, index + k, term, fsize, kind)
                    if problem is not None:
                        # Damage to stored data: reported, never served; the
                        # entries before it are returned, it is repaired from a peer.
                        exc = self._damaged_at(index + k, IndexRecord(index + k, pos, term, fsize, kind), problem)
                        if not out:
                            raise exc
                        return size
                    out.append(Entry(term, index + k, bytes(frame[HEADER_BYTES:]), EntryKind(kind)))
                i = j
            index += take
            if take < n:
                break
        return size
