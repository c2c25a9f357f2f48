"""Crash recovery of FileLogStore under simulated power loss.

The simulated disk keeps, per file, what the last fdatasync made durable and,
per directory, which names the last directory fsync made durable. At the
"power loss" every file loses an arbitrary part of what was written after its
last fdatasync (cut short, or pages never written and read back as zeros), and
files whose creation was never made durable may vanish. After a reopen every
flushed entry must still be there (``sync`` policy), only a prefix of what was
appended may be kept (with entries damaged in the middle of it reported, for
repair from a peer, and never served), and appends must continue at the positions a replica
that never crashed would use.
"""

from __future__ import annotations

import os
import random
import stat
from pathlib import Path

import pytest

from raftmq.dledger.core.messages import Entry
from raftmq.dledger.store.file_store import FileLogStore, StoreConfig

SEG = 2048
PAGE = 256  # loss granularity of the simulated disk (small, to hit headers and bodies alike)


class SimulatedDisk:
    """Records what fdatasync/fsync made durable while the store runs."""

    def __init__(self, monkeypatch: pytest.MonkeyPatch) -> None:
        self.content: dict[str, bytes] = {}  # path -> bytes made durable by its last fdatasync
        self.names: dict[str, set[str]] = {}  # directory -> names made durable by its last fsync
        real_fdatasync, real_fsync = os.fdatasync, os.fsync

        def fdatasync(fd: int) -> None:
            real_fdatasync(fd)
            path = os.readlink(f"/proc/self/fd/{fd}")
            with open(path, "rb") as f:
                self.content[path] = f.read()

        def fsync(fd: int) -> None:
            real_fsync(fd)
            path = os.readlink(f"/proc/self/fd/{fd}")
            if stat.S_ISDIR(os.stat(path).st_mode):
                self.names[path] = set(os.listdir(path))
                for gone in [p for p in self.content if os.path.dirname(p) == path
                             and os.path.basename(p) not in self.names[path]]:
                    del self.content[gone]  # its deletion is durable: its old bytes can never come back
            else:
                with open(path, "rb") as f:
                    self.content[path] = f.read()

        monkeypatch.setattr(os, "fdatasync", fdatasync)
        monkeypatch.setattr(os, "fsync", fsync)

    def power_loss(self, rng: random.Random, dirs: list[Path]) -> None:
        """Lose an arbitrary part of everything that was not made durable."""
        for d in dirs:
            durable_names = self.names.get(str(d), set())
            for name in sorted(os.listdir(d)):
                path = d / name
                current = path.read_bytes()
                durable = self.content.get(str(path))
                if durable is None:
                    if name not in durable_names and rng.random() < 0.5:
                        path.unlink()  # its creation never reached the disk
                        continue
                    durable = b""
                # The store never changes synced bytes without syncing again.
                assert current[: len(durable)] == durable, path
                tail = bytearray(current[len(durable) : len(durable) + rng.randint(0, len(current) - len(durable))])
                for page in range(0, len(tail), PAGE):
                    if rng.random() < 0.3:
                        tail[page : page + PAGE] = bytes(len(tail[page : page + PAGE]))
                path.write_bytes(durable + bytes(tail))


def _config(flush: str) -> StoreConfig:
    return StoreConfig(segment_bytes=SEG, flush=flush, index_file_entries=16, cache_bytes=0)


@pytest.mark.parametrize("flush", ["sync", "async"])
@pytest.mark.parametrize("seed", range(30))
def test_power_loss_keeps_every_flushed_entry_and_serves_only_a_prefix(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch, seed: int, flush: str) -> None:
    rng = random.Random(seed)
    root = tmp_path / "node"
    disk = SimulatedDisk(monkeypatch)
    store = FileLogStore(root, _config(flush))
    written: list[Entry] = []
    flushed_last = 0
    term = 1
    for _ in range(rng.randint(3, 14)):
        first = len(written) + 1
        if written and rng.random() < 0.25:  # a new leader overwrites a suffix
            first = rng.randint(flushed_last + 1, len(written) + 1)
            term += 1
        batch = [Entry(term, first + k, rng.randbytes(rng.randint(0, 400))) for k in range(rng.randint(1, 10))]
        store.append(batch)
        del written[first - 1 :]
        written.extend(batch)
        if rng.random() < 0.6:
            store.flush()
            flushed_last = len(written) if flush == "sync" else 0
    store.close()

    disk.power_loss(rng, [root / "commitlog", root / "index"])
    monkeypatch.undo()

    store = FileLogStore(root, _config(flush))
    last = store.last_index()
    assert flushed_last <= last <= len(written)
    # A lost page with sound entries after it is damage in place, not a torn
    # tail: reported (never a flushed entry), and repaired from a peer's copy.
    for index, term in store.damaged():
        assert flushed_last < index <= last and written[index - 1].term == term
        assert store.repair(written[index - 1])
    assert store.damaged() == []
    assert store.entries(1, last + 1, 1 << 30) == written[:last]

    # The log goes on exactly as on a replica that never crashed.
    tail = [Entry(term + 1, last + 1 + k, rng.randbytes(rng.randint(0, 400))) for k in range(5)]
    store.append(tail)
    reference = FileLogStore(tmp_path / "reference", _config(flush))
    reference.append(written[:last] + tail)
    for i in range(1, last + len(tail) + 1):
        assert store.body_position(i) == reference.body_position(i)
    reference.close()
    store.close()
    reopened = FileLogStore(root, _config(flush))
    assert reopened.entries(1, last + len(tail) + 1, 1 << 30) == written[:last] + tail
    reopened.close()
