"""``FileHardStateStore``: the durable ``(term, voted_for)`` of a node, in
``<data>/meta/hardstate``.

A node must not vote or campaign before its term and vote are on stable
storage (Raft §5.1, Figure 2), so ``save`` always fsyncs, whatever the log's
flush policy, and replaces the file atomically (temp file, fsync, rename,
directory fsync): after a crash at any point the file holds either the old or
the new state, never a torn mix. Layout, big-endian::

    offset  size  field       meaning
    ------  ----  ----------  -----------------------------------------------
         0     4  magic       0xDEDE4801
         4     2  version     1
         6     1  has_vote    1 if voted_for is set, else 0
         7     1  reserved    zero
         8     8  term        current term
        16     2  vote_len    length n of voted_for in UTF-8 (0 if no vote)
        18     n  voted_for   node id, UTF-8
      18+n     4  crc         zlib.crc32 of bytes 0 .. 18+n-1
"""

from __future__ import annotations

import struct
import zlib
from pathlib import Path
from typing import Final

from raftmq.dledger.core.messages import HardState, NodeId
from raftmq.dledger.errors import CorruptLog, StorageFailure
from raftmq.dledger.store.durable import make_dirs, write_atomically

HEAD: Final = struct.Struct(">IHBxQH")
CRC: Final = struct.Struct(">I")
MAGIC: Final = 0xDEDE4801
VERSION: Final = 1
FILE_NAME: Final = "hardstate"


def encode(state: HardState) -> bytes:
    vote = b"" if state.voted_for is None else state.voted_for.encode()
    if len(vote) > 0xFFFF:
        raise ValueError(f"voted_for: node id of {len(vote)} bytes is too long")
    body = HEAD.pack(MAGIC, VERSION, state.voted_for is not None, state.term, len(vote)) + vote
    return body + CRC.pack(zlib.crc32(body))


def decode(raw: bytes, where: str) -> HardState:
    """Parse a hard state file; ``CorruptLog`` if it is not one we wrote whole."""
    if len(raw) < HEAD.size + CRC.size:
        raise CorruptLog(f"{where}: {len(raw)} bytes is too short for a hard state")
    magic, version, has_vote, term, vote_len = HEAD.unpack_from(raw, 0)
    if magic != MAGIC or version != VERSION:
        raise CorruptLog(f"{where}: magic {magic:#010x} version {version} is not a hard state")
    end = HEAD.size + vote_len
    if len(raw) != end + CRC.size or zlib.crc32(raw[:end]) != CRC.unpack_from(raw, end)[0]:
        raise CorruptLog(f"{where}: torn or damaged hard state (crc mismatch)")
    voted_for = NodeId(raw[HEAD.size : end].decode()) if has_vote else None
    return HardState(term, voted_for)


class FileHardStateStore:
    """A ``HardStateStore`` in one small file, replaced atomically on every save."""

    def __init__(self, data_dir: str | Path) -> None:
        self._dir = Path(data_dir) / "meta"
        make_dirs(self._dir)
        self._path = self._dir / FILE_NAME

    def load(self) -> HardState:
        """The last saved state (term 0, no vote for a new node). A leftover temp
        file from a save that did not finish is ignored: the rename never happened."""
        try:
            raw = self._path.read_bytes()
        except FileNotFoundError:
            return HardState()
        except OSError as exc:
            raise StorageFailure(f"cannot read {self._path}: {exc}") from exc
        return decode(raw, str(self._path))

    def save(self, state: HardState) -> None:
        """Durably replace the state; returns only once it is on stable storage.
        ``StorageFailure`` if it could not be written (the old state stays)."""
        write_atomically(self._path, encode(state))
