"""``FileMetaStore``: the ``MetaStore`` seam (``dledger.store.base``) as small
files under a node's data directory, one file per record.

A record named ``snapshots/00000000000000000042`` is the file
``<data>/snapshots/00000000000000000042``; ``recovering`` is
``<data>/recovering``. Each value is written whole with ``write_atomically``
(temp file, fsync, rename, directory fsync), so the files are exactly those
the runtime wrote before this seam existed: a data directory written by an
older version opens unchanged. The byte formats belong to the modules that
name the records (``dledger.store.snapshots``, ``dledger.store.identity``).
"""

from __future__ import annotations

from pathlib import Path

from raftmq.dledger.errors import StorageFailure
from raftmq.dledger.store.durable import make_dirs, write_atomically


def check_name(name: str) -> list[str]:
    """The parts of a record name: ``record`` or ``folder/record``. ValueError
    for anything else (empty, absolute, ``.`` or ``..``, deeper folders), so a
    name can never point outside the data directory."""
    parts = name.split("/")
    if not 1 <= len(parts) <= 2 or any(p in ("", ".", "..") for p in parts):
        raise ValueError(f"bad record name {name!r}: expected 'record' or 'folder/record'")
    return parts


class FileMetaStore:
    """A ``MetaStore`` of small files under ``root`` (module docstring).

    ``folders`` are created (durably) at once, as the runtime always did for
    ``snapshots`` and ``meta``; any other folder is created on its first write.
    """

    def __init__(self, root: str | Path, folders: tuple[str, ...] = ()) -> None:
        self.root = Path(root)
        try:
            make_dirs(self.root, *(self.root / f for f in folders))
        except OSError as exc:
            raise StorageFailure(f"cannot create {self.root}: {exc}") from exc

    def _path(self, name: str) -> Path:
        return self.root.joinpath(*check_name(name))

    def read(self, name: str) -> bytes | None:
        path = self._path(name)
        try:
            return path.read_bytes()
        except FileNotFoundError:
            return None
        except OSError as exc:
            raise StorageFailure(f"cannot read {path}: {exc}") from exc

    def write(self, name: str, data: bytes) -> None:
        path = self._path(name)
        if path.parent != self.root:
            try:
                make_dirs(path.parent)
            except OSError as exc:
                raise StorageFailure(f"cannot create {path.parent}: {exc}") from exc
        write_atomically(path, data)

    def delete(self, name: str) -> None:
        path = self._path(name)
        try:
            path.unlink(missing_ok=True)
        except OSError as exc:
            raise StorageFailure(f"cannot delete {path}: {exc}") from exc

    def rename(self, name: str, new_name: str) -> None:
        path, new = self._path(name), self._path(new_name)
        try:
            path.replace(new)
        except OSError as exc:
            raise StorageFailure(f"cannot rename {path} to {new.name}: {exc}") from exc

    def names(self, folder: str) -> list[str]:
        check_name(folder)
        try:
            return [p.name for p in (self.root / folder).iterdir()]
        except FileNotFoundError:
            return []
        except OSError as exc:
            raise StorageFailure(f"cannot list {self.root / folder}: {exc}") from exc
