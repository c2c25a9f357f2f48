"""The ``MetaStore`` seam (``dledger.store.base``): its file and memory
implementations keep the same contract, the file one keeps the data
directory's layout, and snapshots read through it refuse damaged records
with a clear error (``dledger.store.snapshots``)."""

from __future__ import annotations

import struct
import zlib
from pathlib import Path
from typing import Callable

import pytest

from raftmq.dledger.core.messages import Snapshot, SnapshotMeta
from raftmq.dledger.errors import StorageFailure
from raftmq.dledger.store.base import MetaStore
from raftmq.dledger.store.memory import MemoryMetaStore
from raftmq.dledger.store.meta import FileMetaStore
from raftmq.dledger.store.snapshots import SnapshotStore, decode_snapshot, encode_snapshot

STORES: dict[str, Callable[[Path], MetaStore]] = {
    "file": lambda tmp: FileMetaStore(tmp / "data"),
    "memory": lambda tmp: MemoryMetaStore(),
}


@pytest.mark.parametrize("kind", STORES)
def test_both_meta_stores_keep_the_same_contract(kind: str, tmp_path: Path) -> None:
    m = STORES[kind](tmp_path)
    assert m.read("recovering") is None and m.names("snapshots") == []
    m.write("recovering", b"")
    m.write("snapshots/1", b"one")
    m.write("snapshots/2", b"two")
    m.write("snapshots/2", b"TWO")
    assert m.read("recovering") == b"" and m.read("snapshots/2") == b"TWO"
    assert sorted(m.names("snapshots")) == ["1", "2"]
    m.rename("snapshots/1", "snapshots/1.damaged")
    assert m.read("snapshots/1") is None and m.read("snapshots/1.damaged") == b"one"
    m.delete("snapshots/2")
    m.delete("snapshots/2")  # nothing to delete: no error
    assert sorted(m.names("snapshots")) == ["1.damaged"]


@pytest.mark.parametrize("kind", STORES)
@pytest.mark.parametrize("name", ["", "../x", "/abs/x", "a/b/c", "a/", "./x", "a/.."])
def test_a_record_name_outside_the_store_is_refused(kind: str, name: str, tmp_path: Path) -> None:
    m = STORES[kind](tmp_path)
    with pytest.raises(ValueError, match="bad record name"):
        m.write(name, b"x")
    with pytest.raises(ValueError, match="bad record name"):
        m.read(name)


def test_the_file_meta_store_keeps_the_data_directory_layout(tmp_path: Path) -> None:
    m = FileMetaStore(tmp_path / "data", folders=("snapshots", "meta"))
    assert (tmp_path / "data" / "snapshots").is_dir() and (tmp_path / "data" / "meta").is_dir()
    m.write("recovering", b"")
    SnapshotStore(m).save(Snapshot(SnapshotMeta(42, 3, 4096), b"state"))
    assert (tmp_path / "data" / "recovering").read_bytes() == b""
    raw = (tmp_path / "data" / "snapshots" / f"{42:020d}").read_bytes()
    # magic, crc32 of the rest, index, term, next_position, data (the layout older versions wrote)
    assert raw[:4] == b"SNAP" and struct.unpack_from(">I", raw, 4)[0] == zlib.crc32(raw[8:])
    assert struct.unpack_from(">QQQ", raw, 8) == (42, 3, 4096) and raw[32:] == b"state"


def test_snapshots_round_trip_and_are_pruned_by_index() -> None:
    snaps = SnapshotStore(MemoryMetaStore())
    for i in (7, 3, 12):
        snaps.save(Snapshot(SnapshotMeta(i, 1, i * 100), f"s{i}".encode()))
    assert snaps.indexes() == [3, 7, 12]
    assert snaps.load(7) == Snapshot(SnapshotMeta(7, 1, 700), b"s7")
    snaps.prune(7)
    assert snaps.indexes() == [7, 12]
    with pytest.raises(StorageFailure, match="snapshot 3 is missing"):
        snaps.load(3)


@pytest.mark.parametrize("damage", ["cut", "short", "flip", "empty"])
def test_a_damaged_snapshot_is_a_storage_failure_naming_it(damage: str) -> None:
    raw = encode_snapshot(Snapshot(SnapshotMeta(5, 2, 160), b"some state"))
    bad = {"cut": raw[:-1], "short": raw[:20], "flip": raw[:12] + bytes([raw[12] ^ 1]) + raw[13:],
           "empty": b""}[damage]
    with pytest.raises(StorageFailure, match="snapshot snapshots/x is corrupt"):
        decode_snapshot(bad, "snapshots/x")
