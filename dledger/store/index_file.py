"""The entry index under ``<data>/index/``: entry index -> frame position, term,
size and kind, with fixed-width records so that entry N is found with one
positional read, without a scan and without holding the index in memory.

Each file is named by the first entry index it holds (20 zero-padded decimal
digits) and holds up to ``entries_per_file`` consecutive records; the files
together hold consecutive records with no gap. The record of entry N is at
byte ``(N - first) * 24`` of its file. Record layout, big-endian (``struct``
format ``>QQIB3x``)::

    offset  size  field      meaning
    ------  ----  ---------  -----------------------------------------------
         0     8  position   global commitlog position of the entry's frame
         8     8  term       term of the entry
        16     4  size       total frame size (32-byte header + body)
        20     1  kind       EntryKind
        21     3  padding    zero

The index is derived data: after a crash the store rebuilds the records of the
tail from the data segments (``recovery.py``), so a lost or torn index tail is
repaired, not trusted.
"""

from __future__ import annotations

import logging
import os
import struct
from bisect import bisect_right
from dataclasses import dataclass
from pathlib import Path
from typing import Final, Sequence

from raftmq.dledger.core.messages import Entry
from raftmq.dledger.errors import StorageFailure
from raftmq.dledger.store.durable import open_dir
from raftmq.dledger.store.entry_format import HEADER_BYTES
from raftmq.dledger.store.file_names import file_name, parse_file_name

log = logging.getLogger(__name__)

RECORD: Final = struct.Struct(">QQIB3x")
RECORD_BYTES: Final = RECORD.size  # 24

assert RECORD_BYTES == 24


@dataclass(slots=True, frozen=True)
class IndexRecord:
    """Where entry ``index`` is and what it is, as the index says."""

    index: int
    position: int
    term: int
    size: int
    kind: int

    @property
    def end(self) -> int:
        """Position just after the frame."""
        return self.position + self.size


def encode_records(entries: Sequence[Entry], positions: Sequence[int]) -> bytes:
    """The index records of ``entries`` written at ``positions``."""
    pack = RECORD.pack
    return b"".join([pack(p, e.term, HEADER_BYTES + len(e.data), e.kind) for e, p in zip(entries, positions)])


class _File:
    __slots__ = ("first", "count", "fd")

    def __init__(self, first: int, count: int, fd: int) -> None:
        self.first = first
        self.count = count
        self.fd = fd

    @property
    def end(self) -> int:
        """One past the last index held."""
        return self.first + self.count


class IndexFiles:
    """The index files of one log, with cached descriptors."""

    def __init__(self, directory: Path, entries_per_file: int) -> None:
        self.directory = directory
        self.entries_per_file = entries_per_file
        self._dir_fd = open_dir(directory)
        self._files: list[_File] = []
        self._firsts: list[int] = []
        self._dirty: set[int] = set()  # firsts of files written since the last sync
        self._dir_dirty = False
        self._load()

    def _load(self) -> None:
        """Open the files; drop a torn partial record at the end of a file and any
        file after a gap (recovery rebuilds what is missing from the data)."""
        firsts = sorted(f for f in (parse_file_name(n) for n in os.listdir(self.directory)) if f is not None)
        for first in firsts:
            path = self.directory / file_name(first)
            if self._files and self._files[-1].end != first:
                log.warning("event=index_gap dir=%s file=%s expected_first=%d: deleting it and later files",
                            self.directory, path.name, self._files[-1].end)
                self._unlink(path)
                continue
            try:
                fd = os.open(path, os.O_RDWR)
                size = os.fstat(fd).st_size
                if size % RECORD_BYTES:
                    log.warning("event=index_torn_record file=%s size=%d: cutting the partial record", path, size)
                    os.ftruncate(fd, size - size % RECORD_BYTES)
                    self._dirty.add(first)
            except OSError as exc:
                raise StorageFailure(f"cannot open index file {path}: {exc}") from exc
            self._files.append(_File(first, size // RECORD_BYTES, fd))
            self._firsts.append(first)

    # -- reading -----------------------------------------------------------
    def _file_of(self, index: int) -> _File | None:
        i = bisect_right(self._firsts, index) - 1
        if i < 0:
            return None
        f = self._files[i]
        return f if index < f.end else None

    def record(self, index: int) -> IndexRecord | None:
        """The record of entry ``index``, or None if the index holds none."""
        f = self._file_of(index)
        if f is None:
            return None
        raw = self._pread(f, (index - f.first) * RECORD_BYTES, RECORD_BYTES)
        if len(raw) < RECORD_BYTES:
            return None
        pos, term, size, kind = RECORD.unpack(raw)
        return IndexRecord(index, pos, term, size, kind)

    def read_raw(self, lo: int, hi: int) -> bytes:
        """The raw records of ``lo`` .. ``hi - 1``, as many as are held
        contiguously from ``lo`` (possibly none)."""
        out: list[bytes] = []
        index = lo
        while index < hi:
            f = self._file_of(index)
            if f is None:
                break
            n = min(hi, f.end) - index
            raw = self._pread(f, (index - f.first) * RECORD_BYTES, n * RECORD_BYTES)
            out.append(raw)
            if len(raw) < n * RECORD_BYTES:
                break
            index += n
        return b"".join(out)

    def _pread(self, f: _File, offset: int, size: int) -> bytes:
        try:
            return os.pread(f.fd, size, offset)
        except OSError as exc:
            raise StorageFailure(f"read of index file {file_name(f.first)} failed: {exc}") from exc

    # -- writing -----------------------------------------------------------
    def append(self, first_index: int, records: bytes) -> None:
        """Add the records of ``first_index`` onwards: one write per index file
        touched. The index must end just before ``first_index`` (or be empty)."""
        if self._files and self._files[-1].end != first_index:
            raise AssertionError(f"index append at {first_index} but the index ends at {self._files[-1].end - 1}")
        view = memoryview(records)
        index = first_index
        while view:
            f = self._files[-1] if self._files and self._files[-1].count < self.entries_per_file else None
            if f is None:
                f = self._create(index)
            n = min(len(view) // RECORD_BYTES, self.entries_per_file - f.count)
            self._pwrite(f, view[: n * RECORD_BYTES], f.count * RECORD_BYTES)
            f.count += n
            index += n
            view = view[n * RECORD_BYTES :]

    def _create(self, first: int) -> _File:
        path = self.directory / file_name(first)
        try:
            fd = os.open(path, os.O_RDWR | os.O_CREAT | os.O_TRUNC, 0o644)
        except OSError as exc:
            raise StorageFailure(f"cannot create index file {path}: {exc}") from exc
        f = _File(first, 0, fd)
        self._files.append(f)
        self._firsts.append(first)
        self._dir_dirty = True
        return f

    def _pwrite(self, f: _File, data: memoryview, offset: int) -> None:
        try:
            while data:
                n = os.pwrite(f.fd, data, offset)
                data = data[n:]
                offset += n
        except OSError as exc:
            raise StorageFailure(f"write to index file {file_name(f.first)} failed: {exc}") from exc
        self._dirty.add(f.first)

    def truncate_after(self, index: int) -> int:
        """Drop every record after ``index``; returns how many went."""
        dropped = 0
        while self._files and self._files[-1].first > index:
            dropped += self._files[-1].count
            self._delete_last()
        if self._files and self._files[-1].end > index + 1:
            f = self._files[-1]
            keep = index + 1 - f.first
            try:
                os.ftruncate(f.fd, keep * RECORD_BYTES)
            except OSError as exc:
                raise StorageFailure(f"truncate of index file {file_name(f.first)} failed: {exc}") from exc
            dropped += f.count - keep
            f.count = keep
            self._dirty.add(f.first)
        return dropped

    def drop_through(self, index: int) -> int:
        """Delete the files whose records are all at or below ``index`` (prefix
        deletion); returns how many files went."""
        n = 0
        while self._files and self._files[0].end - 1 <= index:
            f = self._files.pop(0)
            self._firsts.pop(0)
            self._close_and_unlink(f)
            n += 1
        return n

    def delete_all(self) -> None:
        while self._files:
            self._delete_last()

    def _delete_last(self) -> None:
        f = self._files.pop()
        self._firsts.pop()
        self._close_and_unlink(f)

    def _close_and_unlink(self, f: _File) -> None:
        try:
            os.close(f.fd)
        except OSError:
            pass  # closing is best effort; the unlink below is what matters
        self._dirty.discard(f.first)
        self._unlink(self.directory / file_name(f.first))

    def _unlink(self, path: Path) -> None:
        try:
            path.unlink()
        except OSError as exc:
            raise StorageFailure(f"delete of index file {path} failed: {exc}") from exc
        self._dir_dirty = True

    # -- durability --------------------------------------------------------
    def sync(self) -> None:
        """fdatasync every index file written since the last sync, and the
        directory if files were created or deleted."""
        try:
            for f in self._files:
                if f.first in self._dirty:
                    os.fdatasync(f.fd)
            self._dirty.clear()
            if self._dir_dirty:
                os.fsync(self._dir_fd)
                self._dir_dirty = False
        except OSError as exc:
            raise StorageFailure(f"fdatasync in {self.directory} failed: {exc}") from exc

    def close(self) -> None:
        for f in self._files:
            os.close(f.fd)
        self._files.clear()
        self._firsts.clear()
        if self._dir_fd >= 0:
            os.close(self._dir_fd)
            self._dir_fd = -1
