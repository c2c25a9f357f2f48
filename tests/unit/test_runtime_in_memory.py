"""Three ``DLedger`` runtimes in one event loop on the memory seams
(``NodeStorage.in_memory``, ``MemoryNetwork``): the leader is killed in the
middle of a stream of proposals, another is elected, more are proposed, and
every acknowledged proposal is applied on the survivors, in the same order,
with nothing lost. A guard makes any socket or file written under the test
fail it, and the last two tests show the guard catching a runtime left on
its default file store or TCP transport."""

from __future__ import annotations

import asyncio
import builtins
import io
import json
import os
import socket
from pathlib import Path
from typing import Any, Iterable

import pytest

from raftmq.dledger import DLedger, MemoryNetwork, NodeConfig, NodeStorage
from raftmq.dledger.errors import LeadershipLost, NodeStopped, NotLeader, ProposalDropped

IDS = ("n1", "n2", "n3")
# Addresses are only validated; the memory network never opens them.
PEERS = {n: f"127.0.0.1:{9 + i}" for i, n in enumerate(IDS)}
TIMEOUT_S = 30


class Forbidden(Exception):
    """A socket was created or a file written under the guard."""


class NoDiskNoPorts:
    """Makes every socket creation, directory creation and file opened for
    writing raise ``Forbidden``, and records each attempt (a runtime might
    catch and log the error; the record still fails the test)."""

    _WRITE_FLAGS = os.O_WRONLY | os.O_RDWR | os.O_CREAT | os.O_APPEND | os.O_TRUNC

    def __init__(self, monkeypatch: pytest.MonkeyPatch) -> None:
        self.violations: list[str] = []
        real_open, real_os_open = builtins.open, os.open

        def refuse(what: str) -> None:
            self.violations.append(what)
            raise Forbidden(what)

        def guarded_open(file: Any, mode: str = "r", *args: Any, **kw: Any) -> Any:
            if any(c in mode for c in "wax+"):
                refuse(f"open({file!r}, {mode!r})")
            return real_open(file, mode, *args, **kw)

        def guarded_os_open(path: Any, flags: int, *args: Any, **kw: Any) -> int:
            if flags & self._WRITE_FLAGS:
                refuse(f"os.open({path!r}, {flags:#o})")
            return real_os_open(path, flags, *args, **kw)

        def no_socket(*args: Any, **kw: Any) -> socket.socket:
            refuse(f"socket.socket{args}")
            raise AssertionError("unreachable")

        def no_mkdir(path: Any, *args: Any, **kw: Any) -> None:
            refuse(f"mkdir({path!r})")

        monkeypatch.setattr(builtins, "open", guarded_open)
        monkeypatch.setattr(io, "open", guarded_open)
        monkeypatch.setattr(os, "open", guarded_os_open)
        monkeypatch.setattr(os, "mkdir", no_mkdir)
        monkeypatch.setattr(socket, "socket", no_socket)


class Recorder:
    """A state machine that records what it applied, in order."""

    def __init__(self) -> None:
        self.applied: list[tuple[int, bytes]] = []

    def apply(self, index: int, payload: bytes, position: int) -> int:
        self.applied.append((index, payload))
        return len(self.applied)

    def snapshot(self) -> bytes:
        return json.dumps([[i, p.hex()] for i, p in self.applied]).encode()

    def restore(self, data: bytes) -> None:
        self.applied = [(i, bytes.fromhex(p)) for i, p in json.loads(data)]


def make_node(n: str, data_dir: Path, net: MemoryNetwork, **kw: Any) -> tuple[DLedger, Recorder]:
    sm = Recorder()
    # Small segments: applying crosses segment boundaries and takes snapshots (into memory).
    cfg = NodeConfig(n, "g", PEERS, str(data_dir / n), tick_ms=20, bootstrap=True, segment_bytes=2048,
                     seed=IDS.index(n))
    return DLedger(cfg, sm, **{"storage": NodeStorage.in_memory(), "transport": net.attach, **kw}), sm


async def wait_leader(nodes: Iterable[DLedger], above_term: int = 0) -> DLedger:
    nodes = list(nodes)
    while True:
        leaders = [d for d in nodes if d.is_leader() and d.term > above_term]
        if leaders:
            return leaders[0]
        await asyncio.sleep(0.01)


async def propose_many(leader: DLedger, prefix: str, count: int, acked: dict[int, bytes]) -> None:
    """Propose ``count`` payloads, up to 8 in flight; record the acknowledged ones."""
    sem = asyncio.Semaphore(8)

    async def one(i: int) -> None:
        payload = f"{prefix}-{i:04d}".encode()
        async with sem:
            try:
                index, _ = await leader.propose(payload)
            except (NotLeader, LeadershipLost, ProposalDropped, NodeStopped):
                return  # not acknowledged: it may or may not be in the log
            acked[index] = payload

    await asyncio.gather(*(one(i) for i in range(count)))


async def kill_leader_and_carry_on(data_dir: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    guard = NoDiskNoPorts(monkeypatch)  # the loop (and its self-pipe) exists already
    net = MemoryNetwork()
    made = {n: make_node(n, data_dir, net) for n in IDS}
    nodes = {n: d for n, (d, _) in made.items()}
    for d in nodes.values():
        await d.start()
    try:
        acked: dict[int, bytes] = {}
        await propose_many(await wait_leader(nodes.values()), "before", 150, acked)
        assert len(acked) == 150
        old = await wait_leader(nodes.values())

        # Kill the leader while a stream of proposals is in flight.
        stream = asyncio.create_task(propose_many(old, "during", 150, acked))
        while len(acked) < 200 and not stream.done():
            await asyncio.sleep(0)
        net.kill(old.config.node_id)
        await old.stop()
        await stream
        assert 0 < sum(p.startswith(b"during-") for p in acked.values()) < 150  # killed mid-stream
        survivors = [d for d in nodes.values() if d is not old]

        new = await wait_leader(survivors, above_term=old.term)
        assert new is not old
        await propose_many(new, "after", 150, acked)
        assert sum(p.startswith(b"after-") for p in acked.values()) == 150

        last = max(acked)
        for d in survivors:
            await d.wait_applied(last)
        logs = [dict(made[d.config.node_id][1].applied) for d in survivors]
        for index, payload in acked.items():
            assert all(lg.get(index) == payload for lg in logs), f"acknowledged entry {index} lost or changed"
        a, b = (made[d.config.node_id][1].applied for d in survivors)
        n = min(len(a), len(b))
        assert a[:n] == b[:n] and n >= len(acked)
        assert [i for i, _ in a] == sorted(i for i, _ in a)  # in index order, each once
        assert len({p for _, p in a}) == len(a)  # no payload applied twice
        assert all(d.storage.meta.names("snapshots") for d in survivors)  # boundary snapshots, in memory
    finally:
        for d in nodes.values():
            await d.stop()
    assert net.delivered > 0
    assert guard.violations == []


def test_three_runtimes_in_one_loop_lose_nothing_acknowledged_when_the_leader_dies(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    data_dir = tmp_path / "never-created"
    asyncio.run(asyncio.wait_for(kill_leader_and_carry_on(data_dir, monkeypatch), TIMEOUT_S))
    assert not data_dir.exists()


async def wiped_follower_rejoins(data_dir: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    guard = NoDiskNoPorts(monkeypatch)
    net = MemoryNetwork()
    nodes = {n: make_node(n, data_dir, net)[0] for n in IDS}
    for d in nodes.values():
        await d.start()
    try:
        acked: dict[int, bytes] = {}
        leader = await wait_leader(nodes.values())
        await propose_many(leader, "x", 30, acked)
        victim = next(d for d in nodes.values() if d is not leader)
        name, old_id = victim.config.node_id, victim.identity.id
        net.kill(name)
        await victim.stop()
        # Back with empty storage and ``bootstrap``: only the peers' hellos can tell it lost its data.
        nodes[name], sm = make_node(name, data_dir, net, storage=NodeStorage.in_memory())
        assert not nodes[name].core.recovering
        await nodes[name].start()
        await nodes[name].wait_applied(max(acked))
        assert old_id in nodes[name].identity.former  # told by a hello, acknowledged
        assert dict(sm.applied).items() >= acked.items()
    finally:
        for d in nodes.values():
            await d.stop()
    assert guard.violations == []


def test_a_wiped_follower_is_told_by_the_memory_network_that_it_lost_its_data(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    asyncio.run(asyncio.wait_for(wiped_follower_rejoins(tmp_path / "never-created", monkeypatch), TIMEOUT_S))


def test_the_guard_catches_a_runtime_on_its_default_file_store(tmp_path: Path,
                                                               monkeypatch: pytest.MonkeyPatch) -> None:
    async def main() -> NoDiskNoPorts:
        guard = NoDiskNoPorts(monkeypatch)
        with pytest.raises(Forbidden):
            make_node("n1", tmp_path / "never-created", MemoryNetwork(), storage=None)
        return guard

    assert asyncio.run(main()).violations
    assert not (tmp_path / "never-created").exists()


def test_the_guard_catches_a_runtime_on_its_default_tcp_transport(tmp_path: Path,
                                                                  monkeypatch: pytest.MonkeyPatch) -> None:
    async def main() -> NoDiskNoPorts:
        guard = NoDiskNoPorts(monkeypatch)
        node, _ = make_node("n1", tmp_path / "never-created", MemoryNetwork(), transport=None)
        try:
            with pytest.raises(Forbidden):
                await node.start()
        finally:
            await node.stop()
        return guard

    violations = asyncio.run(main()).violations
    assert violations and all(v.startswith("socket.socket") for v in violations)
