"""Recovery of the commitlog on open: scrub every retained entry, tell a torn
tail from damage inside the log, cut only the tail, and make the index agree
with the data.

After a crash the end of the log may be torn (a frame half written), hold
garbage (pages the OS never wrote, zeros) or be ahead of or behind the index
(data and index are written separately and, with the ``async`` policy, reach
the disk in any order). Elsewhere, a disk may damage bytes that were durable
long ago. Recovery reads the whole retained log once, sequentially (a scrub,
about one second per GiB), so damage is found at start and never first by a
reader:

1. Scan frame by frame from the start of the retained log (the log-start
   checkpoint) across the segments, checking magic, size bounds, index
   continuity (each index is the previous plus one), the kind and the body
   CRC; an end-of-segment marker (or fewer than 8 bytes left) moves on to the
   next segment.
2. A frame that fails a check is *damaged in place*, not a torn tail, when its
   boundaries are known (from its own header, or else from its index record)
   and a sound frame of the next index follows right after it: the entry is
   kept in the index, reported in ``Tail.damaged``, and the scan goes on. The
   store then refuses to serve it and the runtime fetches an intact copy of
   the same (index, term) from a peer (``FileLogStore.repair``), as
   protocol-aware recovery does (Alagappan et al., FAST 2018).
3. Otherwise the scan stops there and the log is cut at the end of the last
   sound frame (truncate its segment, delete later segment files). If sound
   frames of later indexes lie beyond the cut, or the cut falls in a segment
   older than the newest two (which ``FileLogStore`` makes durable before it
   creates a newer one), the node has dropped entries it may have
   acknowledged: ``Tail.lost_entries`` says so, and the runtime keeps the node
   from voting until a leader has given them back (Raft's safety assumes a
   voter never forgets what it acknowledged). A plain torn tail (nothing sound
   after it, in the newest two segments) is cut silently: with the ``sync``
   policy it was never acknowledged, with ``async`` it is the documented
   price of a power loss.
4. Rewrite the index records from the first one that differs from the scan,
   drop index records beyond the last entry, and make all that durable before
   anything new is appended.

What is cut and what is damaged is logged.
"""

from __future__ import annotations

import logging
import zlib
from dataclasses import dataclass
from typing import Final

from raftmq.dledger.store.entry_format import (
    BLANK,
    BLANK_BYTES,
    BLANK_MAGIC,
    ENTRY_MAGIC,
    HEADER,
    HEADER_BYTES,
    KINDS,
    blank_marker,
    header_problem,
    segment_start,
)
from raftmq.dledger.store.index_file import RECORD, RECORD_BYTES, IndexFiles, IndexRecord
from raftmq.dledger.store.log_start import LogStart
from raftmq.dledger.store.segment import SegmentFiles

log = logging.getLogger(__name__)

READ_CHUNK_BYTES: Final = 4 << 20
RECORDS_PER_FEED: Final = 1 << 16


@dataclass(slots=True, frozen=True)
class Tail:
    """The end of the recovered log, and what the scrub found on the way."""

    last_index: int
    last_term: int
    end: int  # position just after the last frame: where the next frame is placed from
    damaged: tuple[IndexRecord, ...] = ()  # entries kept but damaged in place: repair from a peer
    lost_entries: bool = False  # the cut dropped entries that were durable (see the module doc)


@dataclass(slots=True, frozen=True)
class _Anchor:
    position: int  # where the scan starts
    next_index: int  # index expected at ``position``
    prev_term: int  # term of next_index - 1
    prev_end: int  # end of the frame of next_index - 1 (the log end if nothing scans)


def recover(segments: SegmentFiles, index: IndexFiles, start: LogStart) -> Tail:
    """Scrub the retained log and make the commitlog and the index end at the
    last sound entry; see the module doc."""
    sb = segments.segment_bytes
    where = segments.directory
    # Leftovers of a compaction interrupted between checkpoint and deletion.
    stale = segments.delete_before(segment_start(start.next_position, sb))
    if stale:
        log.info("event=drop_compacted_segments dir=%s count=%d", where, len(stale))
    index.drop_through(start.index)

    anchor = _Anchor(start.next_position, start.index + 1, start.term, start.next_position)
    reconciler = _IndexReconciler(index, anchor.next_index)
    scan = _Scan(segments, index, anchor, reconciler)
    scan.run()
    reconciler.finish(scan.last_index)

    lost = False
    if scan.reason != "end":
        tearable_from = segments.starts[-2] if len(segments.starts) >= 2 else segments.starts[0]
        # Only the newest two segments can hold unsynced bytes: a bad frame further
        # back is damage to durable data, and so is one followed by sound frames.
        lost = scan.stop < tearable_from or scan.sound_frame_after(scan.stop)
    dropped = segments.cut(scan.end)
    if scan.reason != "end" or dropped:
        level = logging.WARNING if scan.reason != "end" else logging.INFO
        log.log(level, "event=cut_tail dir=%s stopped_at=%d reason=%r last_index=%d end=%d dropped_bytes=%d "
                "lost_entries=%s", where, scan.stop, scan.reason, scan.last_index, scan.end, dropped, lost)
    if lost:
        log.error("event=lost_entries dir=%s after_index=%d: sound entries lay beyond damage that could not "
                  "be bounded; they were dropped and must come back from a leader", where, scan.last_index)
    for rec in scan.damaged:
        log.error("event=damaged_entry dir=%s index=%d term=%d position=%d size=%d: kept, to be repaired "
                  "from a peer", where, rec.index, rec.term, rec.position, rec.size)
    if reconciler.rewritten or reconciler.dropped:
        log.info("event=index_repaired dir=%s from_index=%d rewritten=%d dropped=%d", index.directory,
                 reconciler.rewritten_from, reconciler.rewritten, reconciler.dropped)
    # Make the repair durable before anything new is appended on top of it.
    segments.sync()
    index.sync()
    return Tail(scan.last_index, scan.last_term, scan.end, tuple(scan.damaged), lost)


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

    def __init__(self, segments: SegmentFiles, index: IndexFiles, anchor: _Anchor,
                 reconciler: _IndexReconciler) -> None:
        self.segments = segments
        self.index = index
        self.damaged: list[IndexRecord] = []
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

    def _problem_at(self, pos: int, seg_end: int, expected: int) -> tuple[str | None, int, int, int]:
        """Check the frame at ``pos``: (problem or None, size, term, kind)."""
        head = self._get(pos, HEADER_BYTES)
        if len(head) < HEADER_BYTES:
            return "torn header", 0, 0, 0
        magic, size, term, index, kind, crc = HEADER.unpack(head)
        if magic != ENTRY_MAGIC:
            return f"bad magic {magic:#010x}", 0, 0, 0
        problem = header_problem(head)
        if problem is not None:
            return problem, 0, 0, 0
        if size < HEADER_BYTES or pos + size > seg_end:
            return f"bad frame size {size}", 0, 0, 0
        if index != expected:
            return f"index {index} does not follow {expected - 1}", 0, 0, 0
        if kind not in KINDS:
            return f"bad kind {kind}", 0, 0, 0
        body = self._get(pos + HEADER_BYTES, size - HEADER_BYTES)
        if len(body) < size - HEADER_BYTES:
            return "torn body", 0, 0, 0
        if zlib.crc32(body) != crc:
            return f"crc mismatch at index {index}", 0, 0, 0
        return None, size, term, kind

    def _next_frame_at(self, pos: int) -> int:
        """Where the frame after one ending at ``pos`` starts (past an end-of-segment marker)."""
        sb = self.segments.segment_bytes
        seg_end = segment_start(pos, sb) + sb if pos % sb else pos
        if pos == seg_end or seg_end - pos < BLANK_BYTES:
            return seg_end
        head = self._get(pos, BLANK_BYTES)
        if len(head) == BLANK_BYTES and BLANK.unpack(head) == (BLANK_MAGIC, seg_end - pos):
            return seg_end
        return pos

    def _sound_at(self, pos: int, index: int, min_term: int) -> bool:
        sb = self.segments.segment_bytes
        problem, _size, term, _kind = self._problem_at(pos, segment_start(pos, sb) + sb, index)
        return problem is None and term >= min_term

    def _damaged_in_place(self, pos: int, seg_end: int, expected: int) -> IndexRecord | None:
        """The damaged entry ``expected`` at ``pos``, if its bounds are known (from its
        header or its index record) and a sound frame of the next index follows it."""
        candidates: list[IndexRecord] = []
        head = self._get(pos, HEADER_BYTES)
        if len(head) == HEADER_BYTES:
            magic, size, term, index, kind, _crc = HEADER.unpack(head)
            if magic == ENTRY_MAGIC and header_problem(head) is None and index == expected and kind in KINDS and HEADER_BYTES <= size \
                    and pos + size <= seg_end:
                candidates.append(IndexRecord(expected, pos, term, size, kind))
        rec = self.index.record(expected)
        if rec is not None and rec.position == pos and HEADER_BYTES <= rec.size and rec.end <= seg_end \
                and rec.kind in KINDS and rec not in candidates:
            candidates.append(rec)
        for c in candidates:
            if c.term >= self.last_term and self._sound_at(self._next_frame_at(c.end), expected + 1, c.term):
                return c
        return None

    def _misplaced_marker(self, pos: int, seg_end: int, expected: int) -> bool:
        """A damaged end-of-segment marker: the index puts the next entry at the start
        of the next segment and it is sound there. Rewrites the marker."""
        rec = self.index.record(expected)
        if rec is None or rec.position != seg_end or not self._sound_at(seg_end, expected, self.last_term):
            return False
        seg = seg_end - self.segments.segment_bytes
        self.segments.pwrite(seg, pos - seg, blank_marker(seg_end - pos))
        self._buf, self._buf_pos = b"", 0
        log.warning("event=marker_repaired segment=%d position=%d", seg, pos)
        return True

    def sound_frame_after(self, pos: int) -> bool:
        """Whether a sound frame of a later index than the last kept one lies
        anywhere after ``pos``: the start of each later segment, then a search for
        the frame magic through the rest of ``pos``'s segment."""
        sb = self.segments.segment_bytes
        after = self.last_index + 1
        for seg in self.segments.starts:
            if seg > pos and self._sound_from(seg, after):
                return True
        seg = segment_start(pos, sb)
        magic = ENTRY_MAGIC.to_bytes(4, "big")
        at = pos + 1
        while at < seg + sb:
            chunk = self.segments.pread(seg, at - seg, min(READ_CHUNK_BYTES, seg + sb - at))
            if not chunk:
                break
            i = chunk.find(magic)
            while i >= 0:
                if self._sound_from(at + i, after):
                    return True
                i = chunk.find(magic, i + 1)
            at += max(1, len(chunk) - 3)  # overlap: a magic split across chunks
        return False

    def _sound_from(self, pos: int, min_index: int) -> bool:
        head = self._get(pos, HEADER_BYTES)
        if len(head) < HEADER_BYTES:
            return False
        _magic, _size, _term, index, _kind, _crc = HEADER.unpack(head)
        if index < min_index:
            return False
        return self._sound_at(pos, index, 0)

    def run(self) -> None:
        sb = self.segments.segment_bytes
        records = bytearray()
        pack = RECORD.pack
        pos = self.pos
        while True:
            seg_end = segment_start(pos, sb) + sb
            if seg_end - pos < BLANK_BYTES:
                pos = seg_end  # too little room for anything: the segment ends here
                continue
            head = self._get(pos, BLANK_BYTES)
            if not len(head):
                self.reason = "end"
                break
            if len(head) == BLANK_BYTES:
                magic, size = BLANK.unpack(head)
                if magic == BLANK_MAGIC and size == seg_end - pos:
                    pos = seg_end
                    continue
            expected = self.last_index + 1
            problem, size, term, kind = self._problem_at(pos, seg_end, expected)
            if problem is not None:
                rec = self._damaged_in_place(pos, seg_end, expected)
                if rec is None:
                    if self._misplaced_marker(pos, seg_end, expected):
                        pos = seg_end
                        continue
                    self.reason = problem
                    break
                self.damaged.append(rec)
                size, term, kind = rec.size, rec.term, rec.kind
            records += pack(pos, term, size, kind)
            if len(records) >= RECORDS_PER_FEED * RECORD_BYTES:
                self._reconciler.feed(records)
                records = bytearray()
            self.last_index = expected
            self.last_term = term
            pos += size
            self.end = pos
        self.stop = pos
        self._reconciler.feed(records)
