"""``SnapshotStore``: the state machine's snapshots of one node, kept as
records ``snapshots/<20-digit index>`` of a ``MetaStore`` (on disk the files
``<data>/snapshots/<index>``, as before this module existed).

A snapshot is taken where applying crosses a segment boundary (the state just
before that segment's first entry) or installed from a leader; retention cuts
the log only at such a point (``DLedger.compact``). Record layout, big-endian::

    offset  size  field          meaning
    ------  ----  -------------  ---------------------------------------------
         0     4  magic          0x534E4150 ("SNAP")
         4     4  crc            zlib.crc32 of bytes 8 .. end
         8     8  index          the last entry the state reflects
        16     8  term           that entry's term
        24     8  next_position  byte position of the entry after it
        32     .  data           the state machine's ``snapshot()`` bytes

Written whole and atomically (``MetaStore.write``).
"""

from __future__ import annotations

import struct
import zlib
from typing import Final

from raftmq.dledger.core.messages import Snapshot, SnapshotMeta
from raftmq.dledger.errors import StorageFailure
from raftmq.dledger.store.base import MetaStore

FOLDER: Final = "snapshots"
_HEADER: Final = struct.Struct(">IIQQQ")
_MAGIC: Final = 0x534E4150  # "SNAP"


def encode_snapshot(snap: Snapshot) -> bytes:
    body = struct.pack(">QQQ", snap.meta.index, snap.meta.term, snap.meta.next_position) + snap.data
    return struct.pack(">II", _MAGIC, zlib.crc32(body)) + body


def decode_snapshot(raw: bytes, where: str) -> Snapshot:
    """A snapshot record's bytes; ``StorageFailure`` naming ``where`` if they are
    not one written whole."""
    if len(raw) < _HEADER.size:
        raise StorageFailure(f"snapshot {where} is corrupt: {len(raw)} bytes, shorter than its header")
    magic, crc, index, term, next_pos = _HEADER.unpack_from(raw)
    if magic != _MAGIC or zlib.crc32(raw[8:]) != crc:
        raise StorageFailure(f"snapshot {where} is corrupt")
    return Snapshot(SnapshotMeta(index, term, next_pos), raw[_HEADER.size:])


class SnapshotStore:
    """The snapshots of one node, by the index they were taken at."""

    def __init__(self, records: MetaStore) -> None:
        self._records = records

    @staticmethod
    def _name(index: int) -> str:
        return f"{FOLDER}/{index:020d}"

    def indexes(self) -> list[int]:
        """The indexes of the snapshots kept, ascending."""
        return sorted(int(n) for n in self._records.names(FOLDER) if n.isdigit())

    def save(self, snap: Snapshot) -> None:
        self._records.write(self._name(snap.meta.index), encode_snapshot(snap))

    def load(self, index: int) -> Snapshot:
        """The snapshot at ``index``; ``StorageFailure`` if it is missing, damaged
        or names another index."""
        name = self._name(index)
        raw = self._records.read(name)
        snap = None if raw is None else decode_snapshot(raw, name)
        if snap is None or snap.meta.index != index:
            raise StorageFailure(f"snapshot {index} is missing or names another index")
        return snap

    def prune(self, keep_from: int) -> None:
        """Delete every snapshot taken before ``keep_from``."""
        for i in self.indexes():
            if i < keep_from:
                self._records.delete(self._name(i))
