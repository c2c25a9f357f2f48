"""Recovery of the commitlog's tail on open: find the last sound entry, cut a
torn or corrupt tail, and make the index agree with the data.

After a crash the end of the log may be torn (a frame half written), hold
garbage (pages the OS never wrote, zeros) or be ahead of or behind the index
(data and index are written separately and, with the ``async`` policy, reach
the disk in any order). What can be damaged is bounded by ``FileLogStore``'s
durability discipline: before it creates a segment it makes every segment
older than the previous one durable (data, index and directory), and it makes
a conflict truncation durable before writing over it. So only the newest two
segments can hold unsynced bytes, and recovery never trusts them:

1. Find an anchor: the first frame of the second-newest segment (or an older
   one) whose preceding entry is confirmed by the index *and* by that entry's
   own frame (header and CRC), walking back one segment at a time; if none is
   confirmed, the start of the retained log (the log-start checkpoint).
2. Scan frame by frame from the anchor across the following segments,
   checking magic, size bounds, index continuity (each index is the previous
   plus one), the kind and the body CRC; an end-of-segment marker (or fewer
   than 8 bytes left) moves on to the next segment.
3. Cut the commitlog at the end of the last sound frame (truncate its segment,
   delete later segment files), rewrite the index records from the first one
   that differs from the scan, drop index records beyond the last entry, and
   make all that durable before anything new is appended.

Opening thus costs one sequential read of at most two segments, not of the
log (more only if the index is damaged below them). Entries before the anchor
are trusted to the index and checked by CRC when read: a damaged entry there is
not a torn tail but damage to synced data, and raises ``CorruptLog`` at read
time rather than being silently dropped or served. For the same reason a scan
that stops in a segment older than the newest two raises ``CorruptLog`` at open
instead of cutting durable entries. What is cut is logged.
"""

from __future__ import annotations

import logging
import zlib
from dataclasses import dataclass
from typing import Final

from dledger.errors import CorruptLog
from dledger.store.entry_format import (
    BLANK,
    BLANK_BYTES,
    BLANK_MAGIC,
    ENTRY_MAGIC,
    HEADER,
    HEADER_BYTES,
    KINDS,
    blank_marker,
    check_frame,
    place,
    segment_start,
)
from dledger.store.index_file import RECORD, RECORD_BYTES, IndexFiles
from dledger.store.log_start import LogStart
from dledger.store.segment import SegmentFiles

log = logging.getLogger(__name__)

READ_CHUNK_BYTES: Final = 4 << 20
RECORDS_PER_FEED: Final = 1 << 16


@dataclass(slots=True, frozen=True)
class Tail:
    """The end of the recovered log."""

    last_index: int
    last_term: int
    end: int  # position just after the last frame: where the next frame is placed from


@dataclass(slots=True, frozen=True)
class _Anchor:
    position: int  # where the scan starts
    next_index: int  # index expected at ``position``
    prev_term: int  # term of next_index - 1
    prev_end: int  # end of the frame of next_index - 1 (the log end if nothing scans)


def recover(segments: SegmentFiles, index: IndexFiles, start: LogStart) -> Tail:
    """Make the commitlog and the index end at the last sound entry; see the module doc."""
    sb = segments.segment_bytes
    where = segments.directory
    # Leftovers of a compaction interrupted between checkpoint and deletion.
    stale = segments.delete_before(segment_start(start.next_position, sb))
    if stale:
        log.info("event=drop_compacted_segments dir=%s count=%d", where, len(stale))
    index.drop_through(start.index)

    anchor = _find_anchor(segments, index, start)
    reconciler = _IndexReconciler(index, anchor.next_index)
    scan = _Scan(segments, anchor, reconciler)
    scan.run()
    tearable_from = segments.starts[-2] if len(segments.starts) >= 2 else None
    if tearable_from is not None and scan.stop < tearable_from:
        # Only the newest two segments can hold unsynced bytes; a bad frame (or a
        # missing file) further back is damage to durable data, not a torn tail.
        # Cutting there would silently drop durable entries: refuse instead.
        raise CorruptLog(f"{where}: entry {scan.last_index + 1} at position {scan.stop} is damaged "
                         f"({scan.reason}) in a segment older than the newest two; the log is corrupt "
                         f"beyond its tail (restore this node's data from a replica)")
    reconciler.finish(scan.last_index)

    dropped = segments.cut(scan.end)
    if scan.reason != "end" or dropped:
        level = logging.INFO if scan.reason == "end" else logging.WARNING
        log.log(level, "event=cut_tail dir=%s stopped_at=%d reason=%r last_index=%d end=%d dropped_bytes=%d",
                where, scan.stop, scan.reason, scan.last_index, scan.end, dropped)
    if reconciler.rewritten or reconciler.dropped:
        log.info("event=index_repaired dir=%s from_index=%d rewritten=%d dropped=%d", index.directory,
                 reconciler.rewritten_from, reconciler.rewritten, reconciler.dropped)
    # Make the repair durable before anything new is appended on top of it.
    segments.sync()
    index.sync()
    return Tail(scan.last_index, scan.last_term, scan.end)


def _find_anchor(segments: SegmentFiles, index: IndexFiles, start: LogStart) -> _Anchor:
    """The newest segment start whose previous entry the index and the data
    agree on, or the start of the retained log."""
    sb = segments.segment_bytes
    # The newest segment is never an anchor: the one before it may hold the
    # unsynced start of the last batch (FileLogStore makes every older segment
    # durable before creating a new one), so the scan always covers both.
    for seg in reversed(segments.starts[:-1]):
        if seg <= start.next_position:
            break
        head = segments.pread(seg, 0, HEADER_BYTES)
        if len(head) < HEADER_BYTES:
            continue
        magic, size, _term, first, _kind, _crc = HEADER.unpack(head)
        if magic != ENTRY_MAGIC or first - 1 <= start.index:
            continue
        prev = index.record(first - 1)
        if prev is None or prev.position < start.next_position or prev.end > seg:
            continue
        if place(prev.end, size, sb) != seg:
            continue
        prev_seg = segment_start(prev.position, sb)
        frame = segments.pread(prev_seg, prev.position - prev_seg, prev.size + BLANK_BYTES)
        problem = check_frame(frame, prev.index, prev.term, prev.size, prev.kind)
        room = seg - prev.end
        if problem is None and room >= BLANK_BYTES and bytes(frame[prev.size :]) != blank_marker(room):
            problem = "no end-of-segment marker after it"  # the rollover itself was torn
        if problem is not None:
            log.warning("event=anchor_rejected segment=%d index=%d problem=%s", seg, prev.index, problem)
            continue
        return _Anchor(seg, first, prev.term, prev.end)
    return _Anchor(start.next_position, start.index + 1, start.term, start.next_position)


class _IndexReconciler:
    """Compares the scanned records with the index and rewrites from the first
    difference on, in bounded chunks."""

    def __init__(self, index: IndexFiles, first: int) -> None:
        self.index = index
        self.next = first
        self.diverged = False
        self.rewritten = 0
        self.rewritten_from = first
        self.dropped = 0

    def feed(self, records: bytearray) -> None:
        n = len(records) // RECORD_BYTES
        if not n:
            return
        skip = 0
        if not self.diverged:
            existing = self.index.read_raw(self.next, self.next + n)
            if existing == records:
                self.next += n
                return
            while skip < len(existing) // RECORD_BYTES:
                a = skip * RECORD_BYTES
                if existing[a : a + RECORD_BYTES] != records[a : a + RECORD_BYTES]:
                    break
                skip += 1
            self.dropped += self.index.truncate_after(self.next + skip - 1)
            self.diverged = True
            self.rewritten_from = self.next + skip
        self.index.append(self.next + skip, bytes(records[skip * RECORD_BYTES :]))
        self.rewritten += n - skip
        self.next += n

    def finish(self, last_index: int) -> None:
        if not self.diverged:
            self.dropped += self.index.truncate_after(last_index)


class _Scan:
    """The frame-by-frame scan from an anchor; see the module doc for the checks."""

    def __init__(self, segments: SegmentFiles, anchor: _Anchor, reconciler: _IndexReconciler) -> None:
        self.segments = segments
        self.pos = anchor.position
        self.last_index = anchor.next_index - 1
        self.last_term = anchor.prev_term
        self.end = anchor.prev_end
        self.stop = anchor.position  # where the scan stopped
        self.reason = "end"
        self._reconciler = reconciler
        self._buf = b""
        self._buf_pos = 0

    def _get(self, pos: int, n: int) -> memoryview:
        """``n`` bytes at ``pos`` (fewer at the end of a segment file)."""
        off = pos - self._buf_pos
        if off < 0 or off + n > len(self._buf):
            sb = self.segments.segment_bytes
            seg = segment_start(pos, sb)
            want = min(max(n, READ_CHUNK_BYTES), seg + sb - pos)
            self._buf = self.segments.pread(seg, pos - seg, want)
            self._buf_pos = pos
            off = 0
        return memoryview(self._buf)[off : off + n]

    def run(self) -> None:
        sb = self.segments.segment_bytes
        records = bytearray()
        pack = RECORD.pack
        crc32 = zlib.crc32
        pos = self.pos
        while True:
            seg_end = segment_start(pos, sb) + sb
            if seg_end - pos < BLANK_BYTES:
                pos = seg_end  # too little room for anything: the segment ends here
                continue
            head = self._get(pos, HEADER_BYTES)
            if len(head) < BLANK_BYTES:
                self.reason = "end" if not len(head) else "torn header"
                break
            magic, size = BLANK.unpack_from(head, 0)
            if magic == BLANK_MAGIC:
                if size != seg_end - pos:
                    self.reason = "bad end-of-segment marker"
                    break
                pos = seg_end
                continue
            if magic != ENTRY_MAGIC:
                self.reason = f"bad magic {magic:#010x}"
                break
            if len(head) < HEADER_BYTES:
                self.reason = "torn header"
                break
            _, size, term, index, kind, crc = HEADER.unpack(head)
            if size < HEADER_BYTES or pos + size > seg_end:
                self.reason = f"bad frame size {size}"
                break
            if index != self.last_index + 1:
                self.reason = f"index {index} does not follow {self.last_index}"
                break
            if kind not in KINDS:
                self.reason = f"bad kind {kind}"
                break
            body = self._get(pos + HEADER_BYTES, size - HEADER_BYTES)
            if len(body) < size - HEADER_BYTES:
                self.reason = "torn body"
                break
            if crc32(body) != crc:
                self.reason = f"crc mismatch at index {index}"
                break
            records += pack(pos, term, size, kind)
            if len(records) >= RECORDS_PER_FEED * RECORD_BYTES:
                self._reconciler.feed(records)
                records = bytearray()
            self.last_index = index
            self.last_term = term
            pos += size
            self.end = pos
        self.stop = pos
        self._reconciler.feed(records)
