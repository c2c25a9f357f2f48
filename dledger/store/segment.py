"""The commitlog's data segment files under ``<data>/commitlog/``.

Each file holds the bytes ``[start, start + segment_bytes)`` of the global
commitlog and is named by ``start`` in 20 zero-padded decimal digits
(``00000000000000000000``, ``00000000001073741824``, ...). Files are not
preallocated: a file is as long as what was written to it, and the bytes of a
segment before the first frame written after a snapshot install are a hole
(zeros). What the bytes mean is described in ``entry_format.py``.

This module only moves bytes: positional reads and writes on cached file
descriptors (at most ``MAX_OPEN_SEGMENTS`` open), truncation, deletion, and
fdatasync of what was written since the last sync (group commit). Write and
sync failures raise ``StorageFailure``.
"""

from __future__ import annotations

import os
from bisect import bisect_left, bisect_right
from pathlib import Path
from typing import Final

from raftmq.dledger.errors import StorageFailure
from raftmq.dledger.store.durable import open_dir
from raftmq.dledger.store.entry_format import segment_start
from raftmq.dledger.store.file_names import file_name, parse_file_name

MAX_OPEN_SEGMENTS: Final = 64  # descriptors kept open; more are closed oldest-opened first


class SegmentFiles:
    """The data segment files of one commitlog, with cached descriptors."""

    def __init__(self, directory: Path, segment_bytes: int) -> None:
        self.directory = directory
        self.segment_bytes = segment_bytes
        self._dir_fd = open_dir(directory)
        self._fds: dict[int, int] = {}
        self._dirty: set[int] = set()  # segment starts written since the last sync
        self._dir_dirty = False
        self.starts: list[int] = sorted(
            s for s in (parse_file_name(n) for n in os.listdir(directory)) if s is not None
        )
        for s in self.starts:
            if s % segment_bytes:
                raise ValueError(f"segment_bytes: segment file {file_name(s)} in {directory} is not a "
                                 f"multiple of {segment_bytes}; the log was written with another segment size")

    # -- descriptors -------------------------------------------------------
    def _fd(self, start: int, create: bool) -> int | None:
        fd = self._fds.get(start)
        if fd is not None:
            return fd
        i = bisect_left(self.starts, start)
        exists = i < len(self.starts) and self.starts[i] == start
        if not exists and not create:
            return None
        flags = os.O_RDWR | (os.O_CREAT if create else 0)
        try:
            fd = os.open(self.directory / file_name(start), flags, 0o644)
        except OSError as exc:
            raise StorageFailure(f"cannot open segment {file_name(start)} in {self.directory}: {exc}") from exc
        if not exists:
            self.starts.insert(i, start)
            self._dir_dirty = True
        self._fds[start] = fd
        if len(self._fds) > MAX_OPEN_SEGMENTS:
            self._close_one(keep=start)
        return fd

    def _close_one(self, keep: int) -> None:
        """Close the longest-open descriptor that has no unsynced writes (a big log
        must not run out of descriptors; an old segment is reopened when read)."""
        for s in self._fds:
            if s != keep and s not in self._dirty:
                os.close(self._fds.pop(s))
                return

    # -- reads -------------------------------------------------------------
    def pread(self, start: int, offset: int, size: int) -> bytes:
        """Up to ``size`` bytes at ``offset`` of segment ``start`` (short at the end
        of the file, empty if the file does not exist)."""
        fd = self._fd(start, create=False)
        if fd is None:
            return b""
        try:
            return os.pread(fd, size, offset)
        except OSError as exc:
            raise StorageFailure(f"read of segment {file_name(start)} at {offset} failed: {exc}") from exc

    # -- writes ------------------------------------------------------------
    def pwrite(self, start: int, offset: int, data: bytes) -> None:
        """Write all of ``data`` at ``offset`` of segment ``start`` (created if needed)."""
        fd = self._fd(start, create=True)
        assert fd is not None
        view = memoryview(data)
        try:
            while view:
                n = os.pwrite(fd, view, offset)
                view = view[n:]
                offset += n
        except OSError as exc:
            raise StorageFailure(f"write to segment {file_name(start)} at {offset} failed: {exc}") from exc
        self._dirty.add(start)

    def truncate(self, start: int, length: int) -> int:
        """Cut segment ``start`` to ``length`` bytes; returns how many bytes went."""
        fd = self._fd(start, create=False)
        if fd is None:
            return 0
        try:
            size = os.fstat(fd).st_size
            if size <= length:
                return 0
            os.ftruncate(fd, length)
        except OSError as exc:
            raise StorageFailure(f"truncate of segment {file_name(start)} to {length} failed: {exc}") from exc
        self._dirty.add(start)
        return size - length

    def delete(self, start: int) -> int:
        """Delete segment ``start``; returns its size."""
        i = bisect_left(self.starts, start)
        if i == len(self.starts) or self.starts[i] != start:
            return 0
        fd = self._fds.pop(start, None)
        path = self.directory / file_name(start)
        try:
            size = os.fstat(fd).st_size if fd is not None else path.stat().st_size
            if fd is not None:
                os.close(fd)
            path.unlink()
        except OSError as exc:
            raise StorageFailure(f"delete of segment {path} failed: {exc}") from exc
        del self.starts[i]
        self._dirty.discard(start)
        self._dir_dirty = True
        return size

    def cut(self, end: int) -> int:
        """Make ``end`` the end of the commitlog: truncate its segment there and
        delete every later segment. Returns how many bytes went."""
        seg = segment_start(end, self.segment_bytes)
        dropped = self.truncate(seg, end - seg)
        for s in self.starts[bisect_right(self.starts, seg):]:
            dropped += self.delete(s)
        return dropped

    def delete_before(self, start: int) -> list[int]:
        """Delete every segment that starts before ``start``; returns their starts."""
        gone = self.starts[: bisect_left(self.starts, start)]
        for s in gone:
            self.delete(s)
        return gone

    def delete_all(self) -> None:
        for s in list(self.starts):
            self.delete(s)

    # -- durability --------------------------------------------------------
    def sync(self, before: int | None = None) -> None:
        """fdatasync every segment written since the last sync (only those that
        start before ``before``, if given), and the directory if files were
        created or deleted. Group commit: called once per batch, not per entry."""
        try:
            for s in sorted(self._dirty):
                if before is not None and s >= before:
                    break
                fd = self._fds.get(s)
                if fd is not None:
                    os.fdatasync(fd)
                self._dirty.discard(s)
            if self._dir_dirty:
                os.fsync(self._dir_fd)
                self._dir_dirty = False
        except OSError as exc:
            raise StorageFailure(f"fdatasync in {self.directory} failed: {exc}") from exc

    def exists(self, start: int) -> bool:
        i = bisect_left(self.starts, start)
        return i < len(self.starts) and self.starts[i] == start

    def close(self) -> None:
        for fd in self._fds.values():
            os.close(fd)
        self._fds.clear()
        if self._dir_fd >= 0:
            os.close(self._dir_fd)
            self._dir_fd = -1
