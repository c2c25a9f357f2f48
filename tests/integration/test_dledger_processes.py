"""Failover of a real three-process dledger group (``dledger.tools.kvnode``) on loopback.

Every test waits on observed conditions with deadlines. The invariant checked
throughout: a proposal acknowledged to a client is in the applied state of
every node that is up, and a restarted node catches up to the same state.
"""

from __future__ import annotations

import asyncio
import os
import random
import signal
import socket
import struct
import time
from typing import Any

import msgpack
import pytest

from raftmq.dledger import codec
from raftmq.dledger.tools.kvnode import KvClient

NodeGroup = Any  # conftest.NodeGroup, handed out by the node_group fixture

pytestmark = [pytest.mark.integration, pytest.mark.timeout(120)]


class ProposalLoad:
    """``workers`` concurrent proposers, each proposing its own keys
    (``w<worker>-<n>``) one at a time, following ``not_leader`` hints and trying
    other nodes when a node is down or knows no leader. Bounded: at most
    ``per_worker`` keys each and ``max_s`` seconds in all.

    A ``not_leader`` reply means the entry was never appended, so the same key
    is retried; an outcome-unknown reply (``lost``, a broken connection, a
    timeout) moves on to the next key, recorded as ``unknown``.
    """

    def __init__(self, group: NodeGroup, workers: int = 50, per_worker: int = 400, max_s: float = 40.0) -> None:
        self.group = group
        self.workers = workers
        self.per_worker = per_worker
        self.max_s = max_s
        self.acked: dict[str, int] = {}  # key -> index it was acknowledged at
        self.unknown: set[str] = set()
        self.not_leader_replies = 0
        self._stop = asyncio.Event()
        self._clients: dict[str, KvClient] = {}
        self._locks = {nid: asyncio.Lock() for nid in group.ids}
        self._leader_hint: str | None = None

    def stop(self) -> None:
        self._stop.set()

    async def run(self) -> None:
        try:
            await asyncio.wait_for(asyncio.gather(*(self._worker(w) for w in range(self.workers))), self.max_s)
        except asyncio.TimeoutError:
            pass
        finally:
            for c in self._clients.values():
                await c.close()

    async def wait_acked(self, n: int, timeout_s: float) -> None:
        async def enough() -> bool:
            return len(self.acked) >= n

        await self.group.wait_for(enough, timeout_s, f"{n} acknowledged proposals")

    async def _client(self, nid: str) -> KvClient:
        async with self._locks[nid]:
            c = self._clients.get(nid)
            if c is None or not c.connected:
                c = await KvClient(self.group.client_addr[nid]).connect(timeout_s=1.0)
                self._clients[nid] = c
            return c

    def _other(self, nid: str, rng: random.Random) -> str:
        return rng.choice([n for n in self.group.ids if n != nid])

    async def _worker(self, w: int) -> None:
        rng = random.Random(w)
        target = self._leader_hint or rng.choice(self.group.ids)
        n = 0
        while n < self.per_worker and not self._stop.is_set():
            key = f"w{w}-{n}"
            payload = msgpack.packb([key, n])
            try:
                client = await self._client(target)
            except (OSError, asyncio.TimeoutError):
                # Down: nothing was sent, try the same key elsewhere.
                if self._leader_hint == target:
                    self._leader_hint = None
                target = self._other(target, rng)
                await asyncio.sleep(0.02)
                continue
            try:
                kind, value = await asyncio.wait_for(client.propose(payload), 5.0)
            except (OSError, asyncio.TimeoutError):
                # The connection broke (or hung) with the proposal in flight.
                self.unknown.add(key)
                n += 1
                if self._leader_hint == target:
                    self._leader_hint = None
                target = self._other(target, rng)
                continue
            if kind == "ok":
                self.acked[key] = value
                self._leader_hint = target
                n += 1
            elif kind == "not_leader":
                self.not_leader_replies += 1
                if value in self.group.client_addr and value != target:
                    target = value
                else:
                    target = self._other(target, rng)
                    await asyncio.sleep(0.02)  # nobody knows a leader yet: an election is on
            else:  # lost / dropped / error: outcome unknown or refused; next key
                self.unknown.add(key)
                n += 1


async def _states(group: NodeGroup, nids: list[str]) -> dict[str, dict[str, Any]] | None:
    out = {}
    for nid in nids:
        st = await group.ask(nid, "state", keys=True)
        if st is None:
            return None
        out[nid] = st
    return out


async def wait_converged(group: NodeGroup, nids: list[str], acked: dict[str, int], timeout_s: float) -> dict[str, Any]:
    """Wait until every node of ``nids`` holds every acknowledged key and all of
    them agree on applied count, last applied index, digest and key set."""

    async def converged() -> dict[str, Any] | None:
        sts = await _states(group, nids)
        if sts is None:
            return None
        first = next(iter(sts.values()))
        for st in sts.values():
            keys = set(st["keys"])
            if not keys.issuperset(acked):
                return None
            if (st["applied"], st["last_index"], st["digest"]) != (first["applied"], first["last_index"], first["digest"]):
                return None
            if keys != set(first["keys"]):
                return None
        return first

    return await group.wait_for(converged, timeout_s, f"nodes {nids} to converge with all {len(acked)} acked keys",
                                interval_s=0.2)


async def _assert_no_acked_lost(group: NodeGroup, nids: list[str], acked: dict[str, int]) -> None:
    for nid in nids:
        st = await group.ask(nid, "state", keys=True)
        assert st is not None, f"{nid} does not answer"
        missing = set(acked) - set(st["keys"])
        assert not missing, f"{nid} lost {len(missing)} acknowledged proposals, e.g. {sorted(missing)[:5]}"


def _assert_distinct_indexes(acked: dict[str, int]) -> None:
    by_index: dict[int, str] = {}
    for key, index in acked.items():
        assert index not in by_index, f"{key} and {by_index[index]} were both acknowledged at index {index}"
        by_index[index] = key


# ---------------------------------------------------------------------------
@pytest.mark.parametrize("flush", ["async", "sync"])
async def test_leader_sigkill_elects_new_leader_and_loses_no_acked_proposal(node_group: Any, flush: str) -> None:
    group: NodeGroup = node_group(flush=flush)
    group.start_all()
    old_leader = await group.wait_leader(timeout_s=15)

    load = ProposalLoad(group, workers=50, per_worker=400, max_s=40)
    load_task = asyncio.create_task(load.run())
    try:
        await load.wait_acked(500, timeout_s=20)
        group.kill(old_leader, signal.SIGKILL)
        killed_at = time.monotonic()
        acked_at_kill = len(load.acked)
        survivors = [n for n in group.ids if n != old_leader]

        new_leader = await group.wait_leader(among=survivors, timeout_s=15)
        failover_s = time.monotonic() - killed_at
        assert new_leader != old_leader
        # The followers see the leader's connection close and elect at once;
        # well under the 600-1200 ms election timeout on a quiet machine.
        assert failover_s < 5, f"failover took {failover_s:.1f} s"
        # Proposals resume through the new leader.
        await load.wait_acked(acked_at_kill + 500, timeout_s=20)
    finally:
        load.stop()
        await load_task
    print(f"failover: {old_leader} killed, {new_leader} leads after {failover_s:.2f} s; "
          f"acked={len(load.acked)} unknown={len(load.unknown)} not_leader={load.not_leader_replies}")

    _assert_distinct_indexes(load.acked)
    await wait_converged(group, survivors, load.acked, timeout_s=15)
    await _assert_no_acked_lost(group, survivors, load.acked)

    # The killed leader comes back with its data dir and catches up.
    group.start(old_leader)
    final = await wait_converged(group, group.ids, load.acked, timeout_s=20)
    assert final["applied"] >= len(load.acked)


async def test_follower_sigkill_then_restart_catches_up(node_group: Any) -> None:
    group: NodeGroup = node_group()
    group.start_all()
    leader = await group.wait_leader(timeout_s=15)
    follower = next(n for n in group.ids if n != leader)

    load = ProposalLoad(group, workers=20, per_worker=400, max_s=40)
    load_task = asyncio.create_task(load.run())
    try:
        await load.wait_acked(300, timeout_s=20)
        group.kill(follower, signal.SIGKILL)
        acked_at_kill = len(load.acked)
        # The remaining majority keeps committing while the follower is down.
        await load.wait_acked(acked_at_kill + 1000, timeout_s=20)
        down_acked = len(load.acked) - acked_at_kill
    finally:
        load.stop()
        await load_task
    assert down_acked >= 1000
    _assert_distinct_indexes(load.acked)
    alive = [n for n in group.ids if n != follower]
    await wait_converged(group, alive, load.acked, timeout_s=15)
    assert await group.leader(among=alive) == leader  # losing a follower does not cost the leadership

    group.start(follower)
    final = await wait_converged(group, group.ids, load.acked, timeout_s=20)
    assert final["applied"] >= len(load.acked)
    await _assert_no_acked_lost(group, group.ids, load.acked)


def _frame(body: bytes) -> bytes:
    return struct.pack(">I", len(body)) + body


def _garbage_payloads(node: str, peer: str, group_name: str) -> list[bytes]:
    """Byte strings to throw at ``node``'s Raft port: before a hello, and after
    a well-formed hello in which we pass for its peer ``peer``."""
    rng = random.Random(7)
    hello = _frame(codec.encode_hello(peer, group_name))
    return [
        bytes(rng.getrandbits(8) for _ in range(64 << 10)),  # noise
        b"\xff\xff\xff\xff" + b"x" * 100,  # a length prefix of 4 GiB
        _frame(b"\xc1" * 16),  # a sane length, undecodable msgpack (0xc1 is never used)
        _frame(msgpack.packb({"type": "bogus", "x": [1, 2]})),
        _frame(msgpack.packb([99, "n1", "n2", 1 << 40, None])),
        b"GET / HTTP/1.1\r\nHost: x\r\n\r\n",
        b"",  # connect and close at once
        _frame(codec.encode_hello(peer, "another-group")),  # a stranger's hello
        hello + bytes(rng.getrandbits(8) for _ in range(4096)),  # a peer's hello, then noise
        hello + _frame(b"\xc1" * 64),
        hello + _frame(msgpack.packb([1, 2, 3])),  # decodable, not a message
        hello + b"\x7f\xff\xff\xff",  # a frame announced at 2 GiB
        hello + b"\x00\x00\x00\x10" + b"\x00" * 8,  # a frame cut short by EOF
    ]


def _send_garbage(addr: str, data: bytes) -> None:
    host, port = addr.rsplit(":", 1)
    with socket.create_connection((host, int(port)), timeout=2) as s:
        try:
            if data:
                s.sendall(data)
            s.shutdown(socket.SHUT_WR)
            s.settimeout(2)
            while s.recv(65536):  # until the node closes it (or the timeout)
                pass
        except OSError:
            pass  # reset by the node: what we expect of it


async def test_garbage_on_raft_port_does_not_disturb_the_group(node_group: Any) -> None:
    group: NodeGroup = node_group()
    group.start_all()
    leader = await group.wait_leader(timeout_s=15)
    term_before = (await group.ask(leader, "status"))["term"]

    loop = asyncio.get_running_loop()
    for nid in group.ids:  # the leader and the followers
        # Posing as the leader to a follower is the worst case: dropping that
        # connection tells the follower its leader may be gone.
        peer = leader if nid != leader else next(n for n in group.ids if n != leader)
        for data in _garbage_payloads(nid, peer, group.group_name):
            await loop.run_in_executor(None, _send_garbage, group.raft_addr[nid], data)

    assert group.running() == group.ids, "a node died of garbage on its Raft port"
    # A follower that lost its leader's connection may start a pre-vote; the
    # others still hear from the leader and deny it, so nothing changes.
    assert await group.wait_leader(timeout_s=10) == leader
    status = await group.ask(leader, "status")
    assert status is not None and status["term"] == term_before, "garbage caused an election"

    acked: dict[str, int] = {}
    async with KvClient(group.client_addr[leader]) as c:
        for i in range(200):
            key = f"after-garbage-{i}"
            kind, value = await c.propose(msgpack.packb([key, i]))
            assert kind == "ok", (kind, value)
            acked[key] = value
    await wait_converged(group, group.ids, acked, timeout_s=15)


async def test_client_port_answers_bad_requests_and_keeps_the_connection(node_group: Any) -> None:
    group: NodeGroup = node_group()
    group.start_all()
    leader = await group.wait_leader(timeout_s=15)
    follower = next(n for n in group.ids if n != leader)
    async with KvClient(group.client_addr[follower]) as c:
        assert await c.request(["frobnicate"]) == ("bad_request", "unknown operation 'frobnicate'")
        kind, _ = await c.request(["propose", "not bytes"])
        assert kind == "bad_request"
        assert await c.propose(b"x") == ("not_leader", leader)
        assert (await c.status())["leader_id"] == leader
    async with KvClient(group.client_addr[leader]) as c:
        kind, index = await c.propose(os.urandom(100))
        assert kind == "ok" and index > 0
