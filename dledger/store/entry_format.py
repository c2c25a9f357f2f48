"""The commitlog's frames: how one log entry is laid out in a data segment, the
end-of-segment marker, and where the next frame goes (segment rollover).

Pure: bytes and integers in, bytes and integers out; the files are handled by
``segment.py``.

Entry frame, big-endian (``struct`` format ``>IIQQB3xI``), a 32-byte header
followed by the body::

    offset  size  field        meaning
    ------  ----  -----------  ---------------------------------------------
         0     4  magic        ENTRY_MAGIC = 0xDEDE0E01
         4     4  total_size   header + body bytes (32 + len(data))
         8     8  term         term of the entry
        16     8  index        Raft log index of the entry
        24     1  kind         EntryKind (0 NORMAL, 1 NOOP)
        25     3  header_check 0x800000 | (crc32 of bytes 0..25 and 28..32) & 0x7FFFFF;
                               zero in frames written before it existed
                               (those headers are checked by the index only)
        28     4  body_crc     zlib.crc32 of the body
        32     n  body         Entry.data, n = total_size - 32

The header check covers the fields the body CRC does not (term, index, size,
kind): a flipped bit in a term would otherwise pass every check of the scan on
open and make the node believe a wrong term.

End-of-segment marker, written where a frame does not fit in the rest of its
segment and at least 8 bytes remain (with fewer than 8 bytes left a reader
treats the rest of the segment as its end)::

    offset  size  field        meaning
    ------  ----  -----------  ---------------------------------------------
         0     4  magic        BLANK_MAGIC = 0xDEDE0EFF
         4     4  remaining    bytes from the marker to the end of its segment

Positions are global byte positions across segments: segment ``k`` holds
``[k * segment_bytes, (k + 1) * segment_bytes)``. The position of a frame is a
function of the end of the previous frame and the frame's size only
(``place``), so every replica that stores the same entries with the same
``segment_bytes`` puts them at the same positions: the broker's message ids
are positions.
"""

from __future__ import annotations

import struct
import zlib
from dataclasses import dataclass
from typing import Final, Sequence

from raftmq.dledger.core.messages import Entry, EntryKind

HEADER: Final = struct.Struct(">IIQQB3xI")
HEADER_BYTES: Final = HEADER.size  # 32
CHECK_AT: Final = 25  # the 3-byte header check (see the module doc)
NO_CHECK: Final = b"\x00\x00\x00"
ENTRY_MAGIC: Final = 0xDEDE0E01
BLANK: Final = struct.Struct(">II")
BLANK_MAGIC: Final = 0xDEDE0EFF
BLANK_BYTES: Final = BLANK.size  # 8
KINDS: Final = frozenset(int(k) for k in EntryKind)

assert HEADER_BYTES == 32 and BLANK_BYTES == 8


def header_check(head: bytes | bytearray | memoryview) -> bytes:
    """The 3-byte check of a frame header (its other 29 bytes)."""
    v = zlib.crc32(head[CHECK_AT + 3 : HEADER_BYTES], zlib.crc32(head[:CHECK_AT]))
    return ((v & 0x7FFFFF) | 0x800000).to_bytes(3, "big")


def header_problem(head: bytes | bytearray | memoryview) -> str | None:
    """None if the header's check holds (or it has none: an older frame)."""
    stored = bytes(head[CHECK_AT : CHECK_AT + 3])
    if stored == NO_CHECK or stored == header_check(head):
        return None
    return "header check mismatch"


_HEAD_FIELDS: Final = struct.Struct(">IIQQB")  # the 25 bytes before the header check
_crc32 = zlib.crc32


def encode_header(size: int, term: int, index: int, kind: int, body_crc: int) -> bytes:
    """A frame header with its check (the same value ``header_check`` computes)."""
    head = _HEAD_FIELDS.pack(ENTRY_MAGIC, size, term, index, kind)
    tail = body_crc.to_bytes(4, "big")
    v = _crc32(tail, _crc32(head))
    return head + ((v & 0x7FFFFF) | 0x800000).to_bytes(3, "big") + tail


def segment_start(position: int, segment_bytes: int) -> int:
    """Start position of the segment that holds ``position``."""
    return position - position % segment_bytes


def place(cursor: int, frame_bytes: int, segment_bytes: int) -> int:
    """Position of a frame of ``frame_bytes`` written after ``cursor`` (the end of
    the previous frame): ``cursor`` if it fits in the rest of that segment, else
    the start of the next segment. Idempotent: ``place(place(c, n), n) == place(c, n)``."""
    seg_end = segment_start(cursor, segment_bytes) + segment_bytes
    return cursor if cursor + frame_bytes <= seg_end else seg_end


def max_data_bytes(segment_bytes: int) -> int:
    """Largest entry body a segment can hold (a frame never spans segments)."""
    return segment_bytes - HEADER_BYTES


def blank_marker(remaining: int) -> bytes:
    """The end-of-segment marker for a segment with ``remaining`` bytes left."""
    return BLANK.pack(BLANK_MAGIC, remaining)


@dataclass(slots=True, frozen=True)
class EncodedBatch:
    """A batch of entries as frames, ready to write.

    ``writes`` has one ``(segment start, offset in segment, bytes)`` per segment
    touched; ``positions`` is the frame position of each entry; ``end`` is the
    end of the last frame (where the next one is placed from).
    """

    writes: list[tuple[int, int, bytes]]
    positions: list[int]
    end: int


def encode_batch(entries: Sequence[Entry], cursor: int, segment_bytes: int) -> EncodedBatch:
    """Frame ``entries`` (consecutive indexes) for writing after ``cursor``.

    Raises ``ValueError`` for non-consecutive indexes or an entry too large for a
    segment, before anything is written.
    """
    crc32 = zlib.crc32
    limit = max_data_bytes(segment_bytes)
    writes: list[tuple[int, int, bytes]] = []
    positions: list[int] = []
    parts: list[bytes] = []
    seg = segment_start(cursor, segment_bytes)
    seg_end = seg + segment_bytes
    chunk_pos = cursor  # position of parts[0]
    pos = cursor
    expected = entries[0].index
    for e in entries:
        data = e.data
        n = len(data)
        if e.index != expected:
            raise ValueError(f"entries are not consecutive: {e.index} follows {expected - 1}")
        if n > limit:
            raise ValueError(f"entry {e.index} has {n} bytes, more than a segment holds ({limit})")
        size = HEADER_BYTES + n
        if pos + size > seg_end:  # rollover: mark the end, continue in the next segment
            remaining = seg_end - pos
            if remaining >= BLANK_BYTES:
                parts.append(blank_marker(remaining))
            if parts:
                writes.append((seg, chunk_pos - seg, b"".join(parts)))
                parts = []
            seg = seg_end
            seg_end = seg + segment_bytes
            pos = chunk_pos = seg
        parts.append(encode_header(size, e.term, e.index, e.kind, crc32(data)))
        parts.append(data)
        positions.append(pos)
        pos += size
        expected += 1
    writes.append((seg, chunk_pos - seg, b"".join(parts)))
    return EncodedBatch(writes, positions, pos)


def check_frame(frame: bytes | memoryview, index: int, term: int, size: int, kind: int) -> str | None:
    """Check a whole frame read from disk against what the index says it is.
    Returns a description of the first problem, or None if the frame is sound."""
    if len(frame) < size or size < HEADER_BYTES:
        return f"short frame ({len(frame)} of {size} bytes)"
    magic, f_size, f_term, f_index, f_kind, crc = HEADER.unpack_from(frame, 0)
    if magic != ENTRY_MAGIC:
        return f"bad magic {magic:#010x}"
    problem = header_problem(frame[:HEADER_BYTES])
    if problem is not None:
        return problem
    if (f_size, f_term, f_index, f_kind) != (size, term, index, kind):
        return (f"header (size={f_size} term={f_term} index={f_index} kind={f_kind}) does not match "
                f"the index (size={size} term={term} index={index} kind={kind})")
    if kind not in KINDS:
        return f"unknown kind {kind}"
    if zlib.crc32(memoryview(frame)[HEADER_BYTES:size]) != crc:
        return "body crc mismatch"
    return None
