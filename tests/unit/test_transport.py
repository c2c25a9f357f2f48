"""PeerTransport on 127.0.0.1: delivery, reconnects, hostile input, bounded queues."""

from __future__ import annotations

import asyncio
import socket
import struct
from typing import Any, AsyncIterator, Callable

import pytest

from dledger import codec
from dledger.core.messages import Message, NodeId, TimeoutNow
from dledger.transport import PeerTransport, TransportConfig

IDS = ("n1", "n2", "n3")


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


async def until(cond: Callable[[], Any], timeout_s: float = 5) -> None:
    async def poll() -> None:
        while not cond():
            await asyncio.sleep(0.01)

    await asyncio.wait_for(poll(), timeout_s)


class Net:
    def __init__(self) -> None:
        self.ports = {i: free_port() for i in IDS}
        self.got: dict[str, list[Message]] = {i: [] for i in IDS}
        self.down: dict[str, list[str]] = {i: [] for i in IDS}
        self.t: dict[str, PeerTransport] = {}

    def make(self, nid: str, cfg: TransportConfig = TransportConfig()) -> PeerTransport:
        peers = {p: ("127.0.0.1", self.ports[p]) for p in IDS if p != nid}
        t = PeerTransport(nid, "g", ("127.0.0.1", self.ports[nid]), peers, self.got[nid].append, cfg,
                          on_peer_down=self.down[nid].append, seed=1)
        self.t[nid] = t
        return t


@pytest.fixture
async def net() -> AsyncIterator[Net]:
    n = Net()
    try:
        yield n
    finally:
        for t in n.t.values():
            await t.stop()


def msg(src: str, dst: str, term: int) -> TimeoutNow:
    return TimeoutNow(term, NodeId(src), NodeId(dst))


async def deliver(net: Net, src: str, dst: str, term: int = 1) -> None:
    """Send until it arrives: what is queued while a peer is unreachable is dropped,
    as Raft resends whatever still matters."""
    async def go() -> None:
        while not any(m.src == src and m.term == term for m in net.got[dst]):
            net.t[src].send(msg(src, dst, term))
            await asyncio.sleep(0.05)

    await asyncio.wait_for(go(), 10)


async def test_messages_arrive_in_order(net: Net) -> None:
    for i in IDS:
        await net.make(i).start()
    await deliver(net, "n1", "n2", 10_000)
    await deliver(net, "n3", "n2", 10_000)
    net.got["n2"].clear()
    for k in range(500):
        net.t["n1"].send(msg("n1", "n2", k))
        net.t["n3"].send(msg("n3", "n2", k))
    await until(lambda: len(net.got["n2"]) == 1000)
    from_n1 = [m.term for m in net.got["n2"] if m.src == "n1"]
    assert from_n1 == list(range(500))


async def test_sender_reconnects_to_a_peer_that_starts_late_or_restarts(net: Net) -> None:
    await net.make("n1").start()
    await net.make("n2").start()
    await until(lambda: net.t["n1"].connected("n2"))
    await net.t["n2"].stop()
    net.t["n2"] = net.make("n2")
    await net.t["n2"].start()

    await deliver(net, "n1", "n2", 7)


@pytest.mark.parametrize("garbage", [
    b"\x00\x00\x00\x05hello",  # not a hello
    struct.pack(">I", 1 << 30),  # absurd length
    codec.frame(codec.encode_hello("n1", "other-cluster")),  # wrong cluster
    codec.frame(codec.encode_hello("intruder", "g")),  # unknown node
    codec.frame(codec.encode_hello("n1", "g")) + b"\x00\x00\x00\x03\xc1\xc1\xc1",  # hello, then junk
    codec.frame(codec.encode_hello("n1", "g")) + codec.frame(codec.encode(msg("n3", "n2", 1))),  # spoofed src
])
async def test_hostile_input_drops_the_connection_and_the_node_keeps_serving(net: Net, garbage: bytes) -> None:
    await net.make("n2").start()
    r, w = await asyncio.open_connection("127.0.0.1", net.ports["n2"])
    w.write(garbage)
    await w.drain()
    assert await asyncio.wait_for(r.read(), 5) == b""  # closed by the transport
    w.close()
    await net.make("n1").start()
    await deliver(net, "n1", "n2")


async def test_queue_to_a_dead_peer_is_bounded(net: Net) -> None:
    t = net.make("n1", TransportConfig(send_queue_frames=10, reconnect_min_ms=1000, reconnect_max_ms=1000))
    await t.start()
    for k in range(1000):
        t.send(msg("n1", "n2", k))
    st = t.stats()["n2"]
    assert st["queued"] <= 10 and st["dropped"] >= 990


async def test_peer_down_fires_when_a_peer_process_goes_away(net: Net) -> None:
    await net.make("n1").start()
    await net.make("n2").start()
    await deliver(net, "n1", "n2")
    await net.t["n1"].stop()
    await until(lambda: net.down["n2"] == ["n1"])
