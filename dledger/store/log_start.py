"""The log-start checkpoint, ``<data>/meta/log_start``: where the retained log
begins, so that the snapshot point survives restarts after ``compact`` and
``reset`` (the entries before it are gone, but ``term(first_index() - 1)`` must
still answer and the next frame must go at a deterministic position).

Written atomically (``durable.write_atomically``: temp file, fsync, rename,
directory fsync). Layout, big-endian (``struct`` format ``>IHHQQQQI``), 44 bytes::

    offset  size  field          meaning
    ------  ----  -------------  ---------------------------------------------
         0     4  magic          0xDEDE5A01
         4     2  version        1
         6     2  flags          bit 0: a reset is in progress (finish it on open)
         8     8  segment_bytes  segment size the commitlog was written with
        16     8  index          snapshot index = first_index() - 1
        24     8  term           term of the snapshot index
        32     8  next_position  commitlog position of the frame of first_index()
                                 (or where it will be placed from, if none yet)
        40     4  crc            zlib.crc32 of bytes 0..39
"""

from __future__ import annotations

import struct
import zlib
from dataclasses import dataclass
from pathlib import Path
from typing import Final

from raftmq.dledger.errors import CorruptLog, StorageFailure
from raftmq.dledger.store.durable import write_atomically

LAYOUT: Final = struct.Struct(">IHHQQQQ")
CRC: Final = struct.Struct(">I")
MAGIC: Final = 0xDEDE5A01
VERSION: Final = 1
FLAG_RESET_PENDING: Final = 1


@dataclass(slots=True, frozen=True)
class LogStart:
    """The snapshot point of the retained log, and the segment size it assumes."""

    segment_bytes: int
    index: int = 0
    term: int = 0
    next_position: int = 0
    reset_pending: bool = False


def encode(start: LogStart) -> bytes:
    flags = FLAG_RESET_PENDING if start.reset_pending else 0
    body = LAYOUT.pack(MAGIC, VERSION, flags, start.segment_bytes, start.index, start.term, start.next_position)
    return body + CRC.pack(zlib.crc32(body))


def decode(raw: bytes, where: str) -> LogStart:
    """Parse a checkpoint; ``CorruptLog`` if it is not one we wrote."""
    if len(raw) != LAYOUT.size + CRC.size:
        raise CorruptLog(f"{where}: {len(raw)} bytes, expected {LAYOUT.size + CRC.size}")
    body = raw[: LAYOUT.size]
    (crc,) = CRC.unpack_from(raw, LAYOUT.size)
    if zlib.crc32(body) != crc:
        raise CorruptLog(f"{where}: crc mismatch")
    magic, version, flags, segment_bytes, index, term, next_position = LAYOUT.unpack(body)
    if magic != MAGIC or version != VERSION:
        raise CorruptLog(f"{where}: magic {magic:#010x} version {version} is not a log-start checkpoint")
    return LogStart(segment_bytes, index, term, next_position, bool(flags & FLAG_RESET_PENDING))


def load(path: Path) -> LogStart | None:
    """The checkpoint at ``path``, or None if there is none yet."""
    try:
        raw = path.read_bytes()
    except FileNotFoundError:
        return None
    except OSError as exc:
        raise StorageFailure(f"cannot read {path}: {exc}") from exc
    return decode(raw, str(path))


def save(path: Path, start: LogStart) -> None:
    """Replace the checkpoint atomically and durably."""
    write_atomically(path, encode(start))
