"""Durable small-file writes: atomic replace of a whole file, and directory fsync.

``write_atomically(path, data)`` writes ``<path>.tmp``, fsyncs it, renames it
over ``path`` and fsyncs the directory, so a reader finds either the old or the
new content, never a torn mix, and the new content survives a power loss once
the call returns. It is always fsynced, whatever the log's flush policy: it
holds what a node must not forget (term and vote, the log's snapshot point).
"""

from __future__ import annotations

import os
from pathlib import Path

from raftmq.dledger.errors import StorageFailure

TMP_SUFFIX = ".tmp"


def open_dir(path: Path) -> int:
    """A read-only descriptor of a directory, for fsync."""
    return os.open(path, os.O_RDONLY | getattr(os, "O_DIRECTORY", 0))


def fsync_dir(path: Path) -> None:
    """Make creations, renames and deletions in ``path`` durable."""
    fd = open_dir(path)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def write_atomically(path: Path, data: bytes) -> None:
    """Replace ``path`` with ``data`` atomically and durably; ``StorageFailure`` on
    any I/O error (the old content is then still in place)."""
    tmp = path.with_name(path.name + TMP_SUFFIX)
    try:
        fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o644)
        try:
            view = memoryview(data)
            while view:
                view = view[os.write(fd, view):]
            os.fsync(fd)
        finally:
            os.close(fd)
        os.replace(tmp, path)
        fsync_dir(path.parent)
    except OSError as exc:
        try:
            tmp.unlink(missing_ok=True)
        except OSError:
            pass  # the write already failed; a stale temp file is ignored on load
        raise StorageFailure(f"durable write of {path} failed: {exc}") from exc


def make_dirs(*paths: Path) -> None:
    """Create directories (and parents) and make their creation durable."""
    for path in paths:
        if not path.is_dir():
            path.mkdir(parents=True, exist_ok=True)
            fsync_dir(path.parent)
