"""``NodeStorage``: everything a dledger node keeps across restarts, as the
three storage seams of ``dledger.store.base``, bundled so that a runtime gets
all of them from one place (``DLedger(..., storage=...)``):

- ``log``: the replicated log (``LogStore``);
- ``hard_state``: the current term and vote (``HardStateStore``);
- ``meta``: the small records: snapshots, the recovering marker, the
  data-directory identity (``MetaStore``).

``NodeStorage.files`` is what a node uses by default: the files under its data
directory, laid out as always. ``NodeStorage.in_memory`` touches no disk (tests,
embedding); keep the object to restart a node with its state, make a new one
to give it a wiped disk.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

from raftmq.dledger.store.base import HardStateStore, LogStore, MetaStore
from raftmq.dledger.store.file_store import FileHardStateStore, FileLogStore, StoreConfig
from raftmq.dledger.store.identity import META_DIR
from raftmq.dledger.store.memory import MemoryHardStateStore, MemoryLogStore, MemoryMetaStore
from raftmq.dledger.store.meta import FileMetaStore
from raftmq.dledger.store.snapshots import FOLDER as SNAPSHOT_FOLDER


@dataclass(slots=True, frozen=True)
class NodeStorage:
    """The storage of one node (module docstring)."""

    log: LogStore
    hard_state: HardStateStore
    meta: MetaStore

    @classmethod
    def files(cls, data_dir: str | Path, *, segment_bytes: int, flush: str) -> NodeStorage:
        """Open (creating where missing) the files of the data directory
        ``data_dir``: the log with its segment size and flush policy
        (``async`` or ``sync``), ``meta/hardstate``, ``snapshots/``, ``meta/``."""
        data = Path(data_dir)
        meta = FileMetaStore(data, folders=(SNAPSHOT_FOLDER, META_DIR))
        hard_state = FileHardStateStore(data)
        log = FileLogStore(data, StoreConfig(segment_bytes=segment_bytes, flush=flush))
        return cls(log, hard_state, meta)

    @classmethod
    def in_memory(cls) -> NodeStorage:
        """Empty storage that lives in this process's memory only."""
        return cls(MemoryLogStore(), MemoryHardStateStore(), MemoryMetaStore())
