"""ConsumeQueue: per topic and queue, queue offset -> CommitLog position.

RocketMQ's dispatch index. Applying a ``produce`` entry appends one entry per
message to the ConsumeQueue of its topic and queue; a pull reads entries from
a queue offset, then reads each message with one positional read of the
CommitLog. Built from committed entries only, so it never rolls back, except
that on restart entries written after the last checkpoint are cut off
(:meth:`ConsumeQueue.truncate_to`) and re-applied from the log.

Files: ``<data>/consumequeue/<topic>/<queueId>/<fileName>``. Every file holds
``entries_per_file`` (300,000) fixed 20-byte entries; entry ``i`` of a queue is
queue offset ``i``; a file's name is the queue offset of its first slot,
zero-padded to 20 decimal digits, and is always a multiple of
``entries_per_file`` (``00000000000000000000``, ``00000000000000300000``, ...),
so the file and position of any offset follow by arithmetic. Entry layout
(big-endian)::

    offset  size  field
    0       8     phys_offset  u64  CommitLog physical offset of the message record
    8       4     size         u32  bytes of the message record
    12      8     tag_hash     i64  broker.message.tag_hash(tags), 0 for no tags

Only the last file may be shorter than ``entries_per_file * 20`` bytes; its
length gives ``max_offset`` (the next offset to write). A torn tail (a length
that is not a multiple of 20) is cut on open.

``min_offset`` is the larger of the first file's name and the value kept in
``<queue dir>/min_offset`` (absent: 0), which retention writes when it
advances ``min_offset`` (possibly inside a file, possibly past every file),
as do a snapshot install and a cut below ``min_offset``::

    offset  size  field
    0       8     min_offset  u64
    8       4     crc32       u32  zlib.crc32 of bytes 0..8

written atomically (temporary file, fsync, rename). Entries below
``min_offset`` of a file are a hole (zeros) or stale and are never read. A
queue whose files were all deleted keeps ``max_offset == min_offset``.

Checksums: the broker checkpoint records, per queue, ``min_offset``,
``max_offset`` and for every file its start, its number of entries and the
CRC32 (``zlib.crc32``) of its bytes from 0 to ``entries * 20`` (holes
included, as zeros): :meth:`ConsumeQueue.checkpoint_record`. The CRC of the
file being appended to is carried forward with each batch written
(``zlib.crc32(data, crc)``), and a full file's CRC is never recomputed, so a
checkpoint reads no file. On start :meth:`ConsumeQueue.restore_checkpoint`
reads each file once, compares, and cuts the entries written after the
checkpoint; any difference means the queue is damaged and the broker
rebuilds its derived state from the log.

Reads check what they can without the checkpoint: the entries of a queue
point at records in log order, so each entry must start at or after the end
of the one before it. :meth:`ConsumeQueue.read` reads one neighbour on each
side of the entries asked for and raises :class:`DamagedEntry` when that
order breaks, which is what a flipped bit in a physical offset that still
lands on a valid record (a neighbour's) looks like.

Writes are one ``pwrite`` per file touched per batch; reads are ``pread``s of
the entries asked for (files are never loaded whole). Durability comes from
:meth:`ConsumeQueue.flush` (fdatasync), called before each checkpoint.
Objects here are not thread-safe: the state machine owns them.
"""

from __future__ import annotations

import logging
import os
import struct
import zlib
from collections import OrderedDict
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Final

from raftmq.broker.store import CorruptStore
from raftmq.dledger import fsync_dir, write_atomically

log = logging.getLogger(__name__)

__all__ = ["ENTRY_BYTES", "ENTRIES_PER_FILE", "ConsumeQueue", "ConsumeQueueStore", "DamagedEntry"]

ENTRY_BYTES: Final = 20
ENTRIES_PER_FILE: Final = 300_000
_ENTRY = struct.Struct(">QIq")
_STATE = struct.Struct(">QI")
_STATE_NAME: Final = "min_offset"
_NAME_DIGITS: Final = 20

_CRC_CHUNK: Final = 1 << 20

CqEntry = tuple[int, int, int]  # (phys_offset, size, tag_hash)
CqRead = tuple[int, int, int, int]  # (queue_offset, phys_offset, size, tag_hash)
# What a checkpoint keeps of a queue: [min_offset, max_offset, [[start, entries, crc32], ...]]
QueueRecord = list


class DamagedEntry(CorruptStore):
    """Entries read from a queue are out of log order: one of them (or a
    neighbour) is damaged and must not be served."""


class _FdCache:
    """Open file descriptors shared by the queues of one store, the least
    recently used closed beyond ``capacity`` so that thousands of queues do
    not exhaust the process's descriptors. Closing an fd loses nothing (the
    data is in the page cache); ``flush`` reopens files it must sync."""

    def __init__(self, capacity: int) -> None:
        if capacity < 1:
            raise ValueError(f"max_open_files must be at least 1, not {capacity}")
        self._capacity = capacity
        self._fds: OrderedDict[str, int] = OrderedDict()

    def get(self, path: str, create: bool = False) -> int:
        fd = self._fds.get(path)
        if fd is not None:
            self._fds.move_to_end(path)
            return fd
        fd = os.open(path, os.O_RDWR | (os.O_CREAT if create else 0), 0o644)
        self._fds[path] = fd
        if len(self._fds) > self._capacity:
            _, old = self._fds.popitem(last=False)
            os.close(old)
        return fd

    def forget(self, path: str) -> None:
        fd = self._fds.pop(path, None)
        if fd is not None:
            os.close(fd)

    def close(self) -> None:
        while self._fds:
            _, fd = self._fds.popitem()
            os.close(fd)


def _name(start: int) -> str:
    return f"{start:0{_NAME_DIGITS}d}"


def _is_name(name: str) -> bool:
    return len(name) == _NAME_DIGITS and name.isdigit()


class ConsumeQueue:
    """The ConsumeQueue of one topic and queue, in directory ``dir``.

    ``entries_per_file`` must be the same every time a directory is opened
    (and on every replica, for byte-identical files): it fixes file names.
    """

    def __init__(self, dir: Path | str, entries_per_file: int = ENTRIES_PER_FILE,
                 *, _fds: _FdCache | None = None) -> None:
        if entries_per_file < 1:
            raise ValueError(f"entries_per_file must be at least 1, not {entries_per_file}")
        self.dir = Path(dir)
        self._epf = entries_per_file
        self._own_fds = _fds is None
        self._fds = _FdCache(8) if _fds is None else _fds
        self._dirty: set[int] = set()  # starts of files written since the last flush
        self._dir_dirty = False  # files created or removed since the last flush
        self._new_dir = False  # the directory itself was created since the last flush
        self._min = 0
        self._max = 0
        self._last_file: int | None = None  # start of the newest file on disk
        # Every file on disk: its start -> CRC32 of its bytes (None until known).
        self._files: dict[int, int | None] = {}
        self._load()

    # ------------------------------------------------------------------
    # opening
    # ------------------------------------------------------------------
    def _load(self) -> None:
        if not self.dir.is_dir():
            return
        starts = sorted(int(n) for n in os.listdir(self.dir) if _is_name(n))
        state_min = self._read_state()
        epf, full = self._epf, self._epf * ENTRY_BYTES
        for s in starts:
            if s % epf:
                raise CorruptStore(f"{self.dir / _name(s)}: name is not a multiple of "
                                   f"entries_per_file={epf} (opened with another setting?)")
        for a, b in zip(starts, starts[1:]):
            if b != a + epf:
                raise CorruptStore(f"{self.dir}: files missing between {_name(a)} and {_name(b)}")
        for s in starts[:-1]:
            size = os.path.getsize(self._path(s))
            if size != full:
                raise CorruptStore(f"{self._path(s)}: {size} bytes, expected {full} (only the last file may be short)")
        if starts:
            last = starts[-1]
            path = self._path(last)
            size = os.path.getsize(path)
            if size > full:
                raise CorruptStore(f"{path}: {size} bytes, more than {epf} entries")
            if size % ENTRY_BYTES:
                cut = size - size % ENTRY_BYTES
                log.warning("consume queue %s: torn tail cut, %d bytes -> %d", path, size, cut)
                os.truncate(path, cut)
                size = cut
            if size == 0:
                os.unlink(path)  # created, never written: as if not there
                starts.pop()
                self._dir_dirty = True
        if not starts:
            self._min = self._max = state_min or 0
            return
        self._files = dict.fromkeys(starts)
        last = starts[-1]
        self._last_file = last
        self._max = last + os.path.getsize(self._path(last)) // ENTRY_BYTES
        self._min = max(starts[0], state_min or 0)
        if self._min > self._max:
            # Only after a torn first write into a file that starts with a hole:
            # no entry at or after min_offset ever landed, so nothing is lost.
            log.warning("consume queue %s: entries end at %d, below min_offset %d; emptied",
                        self.dir, self._max, self._min)
            self._remove_files_from(0)
            self._max = self._min
            self._last_file = None

    def _read_state(self) -> int | None:
        path = self.dir / _STATE_NAME
        try:
            raw = path.read_bytes()
        except FileNotFoundError:
            return None
        if len(raw) != _STATE.size:
            raise CorruptStore(f"{path}: {len(raw)} bytes, expected {_STATE.size}")
        value, crc = _STATE.unpack(raw)
        if zlib.crc32(raw[:8]) != crc:
            raise CorruptStore(f"{path}: CRC mismatch")
        return int(value)

    def _write_state(self, min_offset: int) -> None:
        """Persist ``min_offset`` atomically; 0 is the default and needs no file."""
        path = self.dir / _STATE_NAME
        if min_offset == 0:
            try:
                path.unlink()
                self._dir_dirty = True
            except FileNotFoundError:
                pass
            return
        self._ensure_dir()
        raw = min_offset.to_bytes(8, "big")
        write_atomically(path, raw + zlib.crc32(raw).to_bytes(4, "big"))

    def _ensure_dir(self) -> None:
        if not self.dir.is_dir():
            self.dir.mkdir(parents=True, exist_ok=True)
            self._new_dir = True

    # ------------------------------------------------------------------
    # properties
    # ------------------------------------------------------------------
    @property
    def min_offset(self) -> int:
        """The first queue offset that can be read."""
        return self._min

    @property
    def max_offset(self) -> int:
        """The next queue offset to be written (one past the last entry)."""
        return self._max

    @property
    def entries_per_file(self) -> int:
        return self._epf

    def _path(self, start: int) -> str:
        return os.path.join(self.dir, _name(start))

    # ------------------------------------------------------------------
    # writing
    # ------------------------------------------------------------------
    def append_batch(self, entries: Sequence[CqEntry]) -> int:
        """Append ``(phys_offset, size, tag_hash)`` entries; returns the queue
        offset of the first. One ``pwrite`` per file touched."""
        first = self._max
        n = len(entries)
        if n == 0:
            return first
        data = self._pack(entries)
        view = memoryview(data)
        epf = self._epf
        pos, i = first, 0
        while i < n:
            start = pos - pos % epf
            k = min(start + epf - pos, n - i)
            path = self._path(start)
            if start != self._last_file:
                self._ensure_dir()
                self._dir_dirty = True
                self._last_file = start
            fd = self._fds.get(path, create=True)
            chunk = view[i * ENTRY_BYTES:(i + k) * ENTRY_BYTES]
            at = (pos - start) * ENTRY_BYTES
            written = os.pwrite(fd, chunk, at)
            if written != len(chunk):
                raise OSError(f"{path}: short write ({written} of {len(chunk)} bytes)")
            crc = self._files.get(start)
            if crc is None:  # a new file (maybe starting with a hole), or one not checksummed yet
                crc = self._crc_of(start, at)
            self._files[start] = zlib.crc32(chunk, crc)
            self._dirty.add(start)
            i += k
            pos += k
            self._max = pos
        return first

    def _pack(self, entries: Sequence[CqEntry]) -> bytes:
        pack = _ENTRY.pack
        try:
            return b"".join([pack(p, s, h) for p, s, h in entries])
        except struct.error as exc:
            raise ValueError(f"consume queue entry out of range (u64 phys, u32 size, i64 tag hash): {exc}") from exc

    def truncate_to(self, max_offset: int) -> None:
        """Cut every entry at and after ``max_offset`` (restart: entries written
        after the last checkpoint are re-applied from the log). Cutting below
        ``min_offset`` leaves an empty queue that resumes at ``max_offset``.
        Asking for more entries than are on disk raises :class:`CorruptStore`."""
        if max_offset < 0:
            raise ValueError(f"max_offset must not be negative, not {max_offset}")
        if max_offset > self._max:
            raise CorruptStore(f"{self.dir}: cannot truncate to {max_offset}: only {self._max} entries on disk")
        if max_offset == self._max:
            return
        if max_offset <= self._min:
            self._remove_files_from(0)
            self._write_state(max_offset)
            self._min = self._max = max_offset
            self._last_file = None
            log.info("consume queue %s emptied, resumes at %d", self.dir, max_offset)
            return
        keep = (max_offset - 1) - (max_offset - 1) % self._epf  # the file holding the new last entry
        self._remove_files_from(keep + self._epf)
        fd = self._fds.get(self._path(keep))
        os.ftruncate(fd, (max_offset - keep) * ENTRY_BYTES)
        self._files[keep] = None  # recomputed when next needed
        self._dirty.add(keep)
        self._last_file = keep
        log.info("consume queue %s truncated %d -> %d", self.dir, self._max, max_offset)
        self._max = max_offset

    def reset(self, offset: int) -> None:
        """Empty the queue and resume it at ``offset`` (installing a snapshot:
        the messages before it are not on this node)."""
        if offset < 0:
            raise ValueError(f"offset must not be negative, not {offset}")
        self._remove_files_from(0)
        self._write_state(offset)
        self._min = self._max = offset
        self._last_file = None

    def delete_before(self, min_phys_offset: int) -> int:
        """Retention: forget entries pointing before ``min_phys_offset`` (their
        CommitLog data is gone). Deletes whole files whose entries all point
        before it and advances ``min_offset`` to the first entry at or after
        it. Physical offsets grow with queue offsets, so this is a binary
        search. Returns the new ``min_offset``."""
        lo, hi = self._min, self._max
        if lo >= hi or self._phys_at(lo) >= min_phys_offset:
            return self._min
        if self._phys_at(hi - 1) < min_phys_offset:
            new_min = hi
        else:
            while lo < hi:  # first offset whose phys >= min_phys_offset
                mid = (lo + hi) // 2
                if self._phys_at(mid) < min_phys_offset:
                    lo = mid + 1
                else:
                    hi = mid
            new_min = lo
        # State first: a crash between the two leaves extra files, never a
        # min_offset that points at deleted entries.
        self._write_state(new_min)
        epf, top = self._epf, self._max
        doomed = [s for s in self._file_starts() if min(s + epf, top) <= new_min]
        for s in doomed:
            self._remove_file(s)
        if self._last_file is not None and self._last_file in doomed:
            self._last_file = None
        log.info("consume queue %s retention: min_offset %d -> %d, %d files deleted",
                 self.dir, self._min, new_min, len(doomed))
        self._min = new_min
        return new_min

    def _phys_at(self, offset: int) -> int:
        start = offset - offset % self._epf
        raw = self._pread(start, offset - start, 1)
        return int.from_bytes(raw[:8], "big")

    def _file_starts(self) -> list[int]:
        if not self.dir.is_dir():
            return []
        return sorted(int(n) for n in os.listdir(self.dir) if _is_name(n))

    def _remove_files_from(self, start: int) -> None:
        for s in self._file_starts():
            if s >= start:
                self._remove_file(s)

    def _remove_file(self, start: int) -> None:
        path = self._path(start)
        self._fds.forget(path)
        self._dirty.discard(start)
        self._files.pop(start, None)
        os.unlink(path)
        self._dir_dirty = True

    # ------------------------------------------------------------------
    # reading
    # ------------------------------------------------------------------
    def read(self, offset: int, max_entries: int) -> list[CqRead]:
        """Up to ``max_entries`` entries from ``offset`` as ``(queue_offset,
        phys_offset, size, tag_hash)``; an offset below ``min_offset`` reads
        from ``min_offset``; at or beyond ``max_offset`` the list is empty.

        The entry before and the entry after those returned are read too, and
        all must be in log order (each starting at or after the end of the
        one before): :class:`DamagedEntry` otherwise (module docstring)."""
        first = max(offset, self._min)
        end = min(first + max_entries, self._max)
        if first >= end:
            return []
        lo, hi = max(first - 1, self._min), min(end + 1, self._max)
        got = self._read_range(lo, hi)
        prev_end = -1
        for qoff, phys, size, _ in got:
            if phys < prev_end:
                raise DamagedEntry(f"consume queue {self.dir}: entry {qoff} points at {phys}, inside or before "
                                   f"the message of entry {qoff - 1} (which ends at {prev_end}): damaged entry")
            prev_end = phys + size
        return got[first - lo:end - lo]

    def _read_range(self, pos: int, end: int) -> list[CqRead]:
        out: list[CqRead] = []
        epf = self._epf
        while pos < end:
            start = pos - pos % epf
            k = min(start + epf, end) - pos
            buf = self._pread(start, pos - start, k)
            out.extend([(pos + j, p, s, h) for j, (p, s, h) in enumerate(_ENTRY.iter_unpack(buf))])
            pos += k
        return out

    def _pread(self, start: int, index: int, count: int) -> bytes:
        path = self._path(start)
        try:
            fd = self._fds.get(path)
        except FileNotFoundError:
            raise CorruptStore(f"{path}: missing, yet offsets {start + index}.. are below max_offset") from None
        want = count * ENTRY_BYTES
        buf = os.pread(fd, want, index * ENTRY_BYTES)
        if len(buf) != want:
            raise CorruptStore(f"{path}: short read at entry {index} ({len(buf)} of {want} bytes)")
        return buf

    # ------------------------------------------------------------------
    # checksums (module docstring)
    # ------------------------------------------------------------------
    def _file_entries(self, start: int) -> int:
        """Entries in the file starting at ``start``, holes included (only the last is short)."""
        return self._max - start if start == self._last_file else self._epf

    def _crc_of(self, start: int, nbytes: int) -> int:
        """CRC32 of the first ``nbytes`` of a file as on disk (a hole reads as zeros)."""
        crc = 0
        if nbytes == 0:
            return crc
        fd = self._fds.get(self._path(start))
        pos = 0
        while pos < nbytes:
            buf = os.pread(fd, min(_CRC_CHUNK, nbytes - pos), pos)
            if not buf:
                raise CorruptStore(f"{self._path(start)}: {pos} bytes, expected at least {nbytes}")
            crc = zlib.crc32(buf, crc)
            pos += len(buf)
        return crc

    def checkpoint_record(self) -> QueueRecord:
        """``[min_offset, max_offset, [[start, entries, crc32], ...]]``: what a
        checkpoint keeps to verify this queue on start. Reads a file only if
        its CRC is not known yet (after a restart from an old checkpoint)."""
        files = []
        for start in sorted(self._files):
            n = self._file_entries(start)
            crc = self._files[start]
            if crc is None:
                crc = self._files[start] = self._crc_of(start, n * ENTRY_BYTES)
            files.append([start, n, crc])
        return [self._min, self._max, files]

    def restore_checkpoint(self, record: QueueRecord) -> str | None:
        """Check the queue against a checkpoint's record of it and cut the
        entries written after it. Returns what is wrong (the queue is then
        left as it was), or None once the queue is exactly as recorded."""
        min_offset, max_offset, files = record
        if self._min != min_offset:
            return f"{self.dir}: min_offset {self._min} on disk, {min_offset} in the checkpoint"
        if self._max < max_offset:
            return f"{self.dir}: {self._max} entries on disk, the checkpoint says {max_offset}"
        recorded = [f[0] for f in files]
        # Files after the last recorded one were created after the checkpoint
        # (appends only ever create a file past the last one): they are cut.
        last = recorded[-1] if recorded else -1
        on_disk = sorted(s for s in self._files if s <= last)
        if on_disk != recorded:
            return f"{self.dir}: files {[_name(s) for s in on_disk]} on disk, {[_name(s) for s in recorded]} recorded"
        for start, n, crc in files:
            if n != (max_offset - start if start == last else self._epf):
                return f"{self.dir}: the checkpoint records {n} entries for file {_name(start)}"
            try:
                actual = self._crc_of(start, n * ENTRY_BYTES)
            except CorruptStore as exc:
                return str(exc)
            if actual != crc:
                return (f"{self._path(start)}: CRC of its first {n} entries is {actual:#010x}, "
                        f"the checkpoint says {crc:#010x}")
        self.truncate_to(max_offset)
        for start, _, crc in files:
            if start in self._files:
                self._files[start] = crc
        return None

    # ------------------------------------------------------------------
    # durability
    # ------------------------------------------------------------------
    def flush(self) -> None:
        """fdatasync every file written since the last flush, and the directory
        if files were created or removed."""
        for start in sorted(self._dirty):
            os.fdatasync(self._fds.get(self._path(start)))
        self._dirty.clear()
        if self._dir_dirty and self.dir.is_dir():
            fsync_dir(self.dir)
        if self._new_dir:  # make the new <topic>/<queueId> directories durable too
            fsync_dir(self.dir.parent)
            fsync_dir(self.dir.parent.parent)
        self._dir_dirty = self._new_dir = False

    def close(self) -> None:
        """Flush and release file descriptors."""
        self.flush()
        for start in self._file_starts():
            self._fds.forget(self._path(start))
        if self._own_fds:
            self._fds.close()

    def _destroy(self) -> None:
        """Remove the queue's files, state and directory (the store's restart path)."""
        self._remove_files_from(0)
        self._write_state(0)
        self._min = self._max = 0
        self._last_file = None
        self._dir_dirty = False
        if not self.dir.is_dir():
            return
        try:
            self.dir.rmdir()
        except OSError as exc:
            log.warning("consume queue %s: directory left behind: %s", self.dir, exc)


class ConsumeQueueStore:
    """All ConsumeQueues of a broker, under ``<data_dir>/consumequeue``.

    Queues found on disk are listed at open; the others are created when
    first asked for. ``entries_per_file`` is a per-cluster constant (every
    replica must use the same value for byte-identical files).
    """

    def __init__(self, data_dir: Path | str, entries_per_file: int = ENTRIES_PER_FILE,
                 max_open_files: int = 256) -> None:
        self.root = Path(data_dir) / "consumequeue"
        self.root.mkdir(parents=True, exist_ok=True)
        self._epf = entries_per_file
        self._fds = _FdCache(max_open_files)
        self._queues: dict[tuple[str, int], ConsumeQueue] = {}
        for topic_dir in sorted(self.root.iterdir()):
            if not topic_dir.is_dir():
                continue
            for qdir in sorted(topic_dir.iterdir()):
                if qdir.is_dir() and qdir.name.isdigit():
                    key = (topic_dir.name, int(qdir.name))
                    self._queues[key] = ConsumeQueue(qdir, entries_per_file, _fds=self._fds)
        log.info("consume queues opened dir=%s queues=%d", self.root, len(self._queues))

    def queue(self, topic: str, queue_id: int) -> ConsumeQueue:
        """The queue of ``topic`` and ``queue_id``, opened or created on first use."""
        key = (topic, queue_id)
        q = self._queues.get(key)
        if q is None:
            if not topic or "/" in topic or "\0" in topic or topic in (".", ".."):
                raise ValueError(f"topic {topic!r} cannot name a directory")
            if not isinstance(queue_id, int) or queue_id < 0:
                raise ValueError(f"queue_id must be a non-negative integer, not {queue_id!r}")
            q = self._queues[key] = ConsumeQueue(self.root / topic / str(queue_id), self._epf, _fds=self._fds)
        return q

    def queues(self) -> list[tuple[str, int]]:
        """Every (topic, queue_id) known, sorted."""
        return sorted(self._queues)

    def truncate_all(self, max_offsets: Mapping[tuple[str, int], int]) -> None:
        """Restart: cut every queue to its length at the checkpoint; queues not
        in ``max_offsets`` were created after it and are removed."""
        for key in list(self._queues):
            if key in max_offsets:
                self._queues[key].truncate_to(max_offsets[key])
            else:
                self._drop(key)
        for key, m in max_offsets.items():
            if key not in self._queues and m > 0:
                raise CorruptStore(f"consume queue {key[0]}/{key[1]} is missing; the checkpoint says it holds {m} entries")

    def checkpoint_records(self) -> list[list[object]]:
        """``[topic, queue_id, min_offset, max_offset, files]`` per queue (see
        :meth:`ConsumeQueue.checkpoint_record`), sorted."""
        return [[t, q, *self._queues[(t, q)].checkpoint_record()] for t, q in sorted(self._queues)]

    def restore_checkpoint(self, records: Sequence[Sequence[object]]) -> str | None:
        """Check every queue against a checkpoint's records and cut what was
        written after it; queues it does not name were created after it and
        are removed. Returns the first problem found, or None."""
        wanted = {(str(r[0]), int(r[1])): list(r[2:]) for r in records}  # type: ignore[call-overload]
        for key, record in sorted(wanted.items()):
            q = self.queue(*key)
            problem = q.restore_checkpoint(record)
            if problem is not None:
                return problem
        for key in list(self._queues):
            if key not in wanted:
                self._drop(key)
        return None

    def reset_all(self, start_offsets: Mapping[tuple[str, int], int]) -> None:
        """Snapshot install: every queue becomes empty and resumes at its offset
        in ``start_offsets``; queues not in it are removed."""
        for key in list(self._queues):
            if key not in start_offsets:
                self._drop(key)
        for (topic, queue_id), offset in start_offsets.items():
            self.queue(topic, queue_id).reset(offset)

    def delete_before(self, min_phys_offset: int) -> None:
        """Retention on every queue (see :meth:`ConsumeQueue.delete_before`)."""
        for q in self._queues.values():
            q.delete_before(min_phys_offset)

    def _drop(self, key: tuple[str, int]) -> None:
        q = self._queues.pop(key)
        q._destroy()
        try:
            q.dir.parent.rmdir()  # the topic directory, if that was its last queue
        except OSError:
            pass
        log.info("consume queue %s/%d removed", key[0], key[1])

    def flush(self) -> None:
        """fdatasync every queue written since the last flush."""
        for q in self._queues.values():
            q.flush()

    def close(self) -> None:
        for q in self._queues.values():
            q.flush()
        self._fds.close()

