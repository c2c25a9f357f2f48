"""PeerTransport on 127.0.0.1: delivery in order, reconnects, hostile input, bounded queues,
the peer-down signal, and task ownership. Every transport is stopped by the fixture.

The last test is a throughput benchmark (``-m slow``), logging its figures.
"""

from __future__ import annotations

import asyncio
import logging
import os
import random
import struct
import time
import tracemalloc
from pathlib import Path
from typing import Any, AsyncIterator, Callable

import pytest

from raftmq.dledger import codec
from tests.ports import free_ports
from raftmq.dledger.core.messages import AppendEntries, Entry, Message, NodeId, RequestVote, TimeoutNow
from raftmq.dledger.errors import StorageFailure
from raftmq.dledger.store.identity import DataDirIdentity
from raftmq.dledger.transport import Backoff, PeerTransport, TransportConfig

log = logging.getLogger(__name__)

IDS = ("n1", "n2", "n3")
CLUSTER = "g"


async def until(cond: Callable[[], Any], timeout_s: float = 5.0, what: str = "condition") -> None:
    """Poll ``cond`` until it holds; fail after ``timeout_s``."""
    deadline = time.monotonic() + timeout_s
    while not cond():
        if time.monotonic() > deadline:
            pytest.fail(f"timed out after {timeout_s}s waiting for {what}")
        await asyncio.sleep(0.005)


class Net:
    """Up to three transports of one cluster, recording what each receives."""

    def __init__(self) -> None:
        self.ports = dict(zip(IDS, free_ports(len(IDS))))
        self.got: dict[str, list[Message]] = {i: [] for i in IDS}
        self.down: dict[str, list[str]] = {i: [] for i in IDS}
        self.t: dict[str, PeerTransport] = {}
        self.all: list[PeerTransport] = []

    def make(self, nid: str, cfg: TransportConfig = TransportConfig(),
             on_message: Callable[[Message], None] | None = None) -> PeerTransport:
        peers = {p: ("127.0.0.1", self.ports[p]) for p in IDS if p != nid}
        t = PeerTransport(nid, CLUSTER, ("127.0.0.1", self.ports[nid]), peers, on_message or self.got[nid].append,
                          cfg, on_peer_down=self.down[nid].append, seed=1)
        self.t[nid] = t
        self.all.append(t)
        return t

    async def start(self, nid: str, cfg: TransportConfig = TransportConfig()) -> PeerTransport:
        t = self.make(nid, cfg)
        await t.start()
        return t


@pytest.fixture
async def net() -> AsyncIterator[Net]:
    n = Net()
    try:
        yield n
    finally:
        for t in n.all:
            await t.stop()


def msg(src: str, dst: str, term: int) -> TimeoutNow:
    return TimeoutNow(term, NodeId(src), NodeId(dst))


async def deliver(net: Net, src: str, dst: str, term: int = 1, timeout_s: float = 10.0) -> None:
    """Send until one arrives: what is queued while a peer is unreachable is dropped (by design)."""
    deadline = time.monotonic() + timeout_s
    while not any(m.src == src and m.term == term for m in net.got[dst]):
        if time.monotonic() > deadline:
            pytest.fail(f"{src} -> {dst} term={term} not delivered in {timeout_s}s")
        net.t[src].send(msg(src, dst, term))
        await asyncio.sleep(0.02)


async def closed_by_peer(reader: asyncio.StreamReader, timeout_s: float = 5.0) -> bool:
    """True once the other end closes the connection (EOF or reset)."""
    try:
        while await asyncio.wait_for(reader.read(65536), timeout_s):
            pass
    except ConnectionError:
        pass
    return True


# --- delivery ------------------------------------------------------------------------------


async def test_three_nodes_exchange_messages_in_order_per_connection(net: Net) -> None:
    for i in IDS:
        await net.start(i)
    for s in IDS:
        for d in IDS:
            if s != d:
                await deliver(net, s, d, term=1_000_000)
    for g in net.got.values():
        g.clear()
    for k in range(500):
        for s in IDS:
            for d in IDS:
                if s != d:
                    net.t[s].send(msg(s, d, k))
    await until(lambda: all(len(net.got[d]) == 1000 for d in IDS), what="1000 messages at every node")
    for d in IDS:
        for s in IDS:
            if s != d:
                assert [m.term for m in net.got[d] if m.src == s] == list(range(500))
                assert all(m.dst == d for m in net.got[d])
    assert net.t["n1"].stats()["n2"]["sent"] >= 500 and net.t["n2"].stats()["n1"]["received"] >= 500


async def test_large_append_entries_arrive_intact(net: Net) -> None:
    await net.start("n2")
    await net.start("n1")
    await deliver(net, "n1", "n2")
    entries = tuple(Entry(2, 11 + i, os.urandom(random.Random(i).randrange(0, 300_000))) for i in range(40))
    big = AppendEntries(2, NodeId("n1"), NodeId("n2"), 10, 1, entries, 10)
    for _ in range(3):
        net.t["n1"].send(big)
    await until(lambda: sum(isinstance(m, AppendEntries) for m in net.got["n2"]) == 3, 10, "3 AppendEntries")
    assert [m for m in net.got["n2"] if isinstance(m, AppendEntries)] == [big, big, big]


async def test_flush_writes_queued_messages_at_once_without_the_writer_task(net: Net) -> None:
    await net.start("n2")
    t1 = await net.start("n1")
    await deliver(net, "n1", "n2")
    before = t1.stats()["n2"]["sent"]
    t1.send(msg("n1", "n2", 7))
    t1.send(msg("n1", "n2", 8))
    assert t1.stats()["n2"]["queued"] == 2
    t1.flush()  # no await: written to the socket by this call
    assert t1.stats()["n2"] == t1.stats()["n2"] | {"sent": before + 2, "queued": 0}
    await until(lambda: [m.term for m in net.got["n2"]][-2:] == [7, 8], what="both flushed messages")


async def test_sends_without_a_flush_still_go_out_in_order(net: Net) -> None:
    """A caller that never calls ``flush`` (the runtime always does) is flushed on the next loop turn."""
    await net.start("n2")
    t1 = await net.start("n1")
    await deliver(net, "n1", "n2")
    net.got["n2"].clear()
    for k in range(100):
        t1.send(msg("n1", "n2", k))
    await until(lambda: len(net.got["n2"]) == 100, what="100 unflushed messages")
    assert [m.term for m in net.got["n2"]] == list(range(100))


async def test_flush_leaves_a_pushed_back_connection_to_the_writer_and_keeps_order(net: Net) -> None:
    """Bursts far over the socket's buffer: flush writes while the connection takes it, then the writer
    task goes on minding pushback; nothing is lost or reordered."""
    await net.start("n2")
    cfg = TransportConfig(write_batch_bytes=64 * 1024, send_queue_frames=100_000)
    t1 = await net.start("n1", cfg)
    await deliver(net, "n1", "n2")
    net.got["n2"].clear()
    body = b"x" * 8192
    n = 0
    for burst in range(20):
        for _ in range(200):
            n += 1
            t1.send(AppendEntries(1, NodeId("n1"), NodeId("n2"), n, 1, (Entry(1, n + 1, body),), 0))
        t1.flush()
        await asyncio.sleep(0)
    await until(lambda: len(net.got["n2"]) == n, 20, f"{n} AppendEntries")
    assert [m.prev_log_index for m in net.got["n2"]] == list(range(1, n + 1))
    assert t1.stats()["n2"]["dropped"] == 0


async def test_a_peer_that_starts_late_receives_after_the_sender_reconnects(net: Net) -> None:
    await net.start("n1")
    net.t["n1"].send(msg("n1", "n2", 0))
    await until(lambda: net.t["n1"].stats()["n2"]["dropped"] >= 1, what="a failed dial dropping the queue")
    assert not net.t["n1"].connected("n2")
    await net.start("n2")
    await deliver(net, "n1", "n2", 7)
    await until(lambda: net.t["n1"].connected("n2"), what="n1 connected to n2")


async def test_sender_notices_a_peer_restart_and_reconnects(net: Net) -> None:
    await net.start("n1")
    await net.start("n2")
    await deliver(net, "n1", "n2", 1)
    await net.t["n2"].stop()
    # Detected without sending anything: the closed connection wakes the writer.
    await until(lambda: not net.t["n1"].connected("n2"), what="n1 seeing its connection to n2 closed")
    await net.start("n2")
    await deliver(net, "n1", "n2", 2)
    assert net.t["n1"].connected("n2")


async def test_sending_to_an_unknown_or_own_id_is_dropped_quietly(net: Net) -> None:
    t = await net.start("n1")
    t.send(msg("n1", "nobody", 1))
    t.send(msg("n1", "n1", 1))
    assert set(t.stats()) == {"n2", "n3"}
    assert not t.connected("nobody")


async def test_an_exception_in_on_message_does_not_stop_the_reader(net: Net, caplog: pytest.LogCaptureFixture) -> None:
    got: list[Message] = []

    def flaky(m: Message) -> None:
        if m.term % 2:
            raise RuntimeError("boom")
        got.append(m)

    n2 = net.make("n2", on_message=flaky)
    await n2.start()
    await net.start("n1")
    await until(lambda: net.t["n1"].connected("n2"), what="n1 connected")
    for k in range(10):
        net.t["n1"].send(msg("n1", "n2", k))
    await until(lambda: len(got) == 5, what="the even messages")
    assert [m.term for m in got] == [0, 2, 4, 6, 8]
    assert "on_message-failed" in caplog.text


async def test_a_message_too_large_for_a_frame_is_dropped_by_the_sender(net: Net) -> None:
    cfg = TransportConfig(max_frame_bytes=4096)
    await net.start("n2", cfg)
    n1 = await net.start("n1", cfg)
    await deliver(net, "n1", "n2", 1)
    n1.send(AppendEntries(1, NodeId("n1"), NodeId("n2"), 0, 0, (Entry(1, 1, b"x" * 5000),), 0))
    n1.send(msg("n1", "n2", 2))
    await until(lambda: any(m.term == 2 for m in net.got["n2"]), what="the message after the big one")
    assert n1.stats()["n2"]["dropped"] == 1
    assert not any(isinstance(m, AppendEntries) for m in net.got["n2"])


# --- hostile input ------------------------------------------------------------------------

HELLO_N1 = codec.frame(codec.encode_hello("n1", CLUSTER))


@pytest.mark.parametrize("garbage", [
    pytest.param(b"GET / HTTP/1.1\r\nHost: x\r\n\r\n", id="http-request"),
    pytest.param(b"\x00\x00\x00\x05hello", id="junk-first-frame"),
    pytest.param(struct.pack(">I", 1 << 30), id="absurd-length"),
    pytest.param(struct.pack(">I", codec.MAX_HELLO_BYTES + 1), id="hello-over-limit"),
    pytest.param(codec.frame(codec.encode(msg("n1", "n2", 1))), id="message-before-hello"),
    pytest.param(codec.frame(codec.encode_hello("n1", "other-cluster")), id="wrong-cluster"),
    pytest.param(codec.frame(codec.encode_hello("intruder", CLUSTER)), id="unknown-node"),
    pytest.param(codec.frame(codec.encode_hello("n2", CLUSTER)), id="own-id"),
    pytest.param(HELLO_N1 + b"\x00\x00\x00\x03\xc1\xc1\xc1", id="hello-then-junk"),
    pytest.param(HELLO_N1 + struct.pack(">I", (64 << 20) + 1), id="hello-then-oversized-length"),
    pytest.param(HELLO_N1 + codec.frame(codec.encode(msg("n3", "n2", 1))), id="hello-then-spoofed-src"),
    pytest.param(HELLO_N1 + codec.frame(codec.encode(msg("n1", "n3", 1))), id="hello-then-wrong-dst"),
    pytest.param(b"", id="silence"),
])
async def test_hostile_input_closes_that_connection_and_the_node_keeps_serving(
        net: Net, garbage: bytes, caplog: pytest.LogCaptureFixture) -> None:
    caplog.set_level(logging.WARNING, logger="raftmq.dledger.transport")
    await net.start("n2", TransportConfig(hello_timeout_ms=200))
    await net.start("n3")
    await deliver(net, "n3", "n2", 1)  # a healthy connection that must survive

    r, w = await asyncio.open_connection("127.0.0.1", net.ports["n2"])
    try:
        w.write(garbage)
        await w.drain()
        assert await closed_by_peer(r)
    finally:
        w.close()
    assert "node=n2" in caplog.text and "reason=" in caplog.text

    await deliver(net, "n3", "n2", 2)  # the existing connection still works
    await net.start("n1")
    await deliver(net, "n1", "n2", 3)  # and new peers are still accepted
    assert net.t["n3"].stats()["n2"]["connected"]


async def test_a_garbage_flood_is_cut_off_without_buffering_it(net: Net) -> None:
    n2 = await net.start("n2")
    r, w = await asyncio.open_connection("127.0.0.1", n2.listen_port)
    try:
        w.write(HELLO_N1 + codec.frame(codec.encode(msg("n1", "n2", 1))) + os.urandom(1 << 20))
        assert await closed_by_peer(r)
    finally:
        w.close()
    assert [m.term for m in net.got["n2"]] == [1]  # the valid frame before the junk was delivered


async def test_dialer_sends_hello_then_frames_and_redials_a_peer_that_talks_back() -> None:
    """The wire seen by a raw listener standing in for n2: a hello, then one frame per
    message; bytes written back on that connection make the dialer drop it and redial."""
    conns: asyncio.Queue[tuple[asyncio.StreamReader, asyncio.StreamWriter]] = asyncio.Queue()

    async def accept(r: asyncio.StreamReader, w: asyncio.StreamWriter) -> None:
        await conns.put((r, w))

    server = await asyncio.start_server(accept, "127.0.0.1", 0)
    port = server.sockets[0].getsockname()[1]
    t = PeerTransport("n1", CLUSTER, ("127.0.0.1", 0), {"n2": ("127.0.0.1", port)}, lambda m: None)
    writers: list[asyncio.StreamWriter] = []
    try:
        await t.start()
        r, w = await asyncio.wait_for(conns.get(), 5)
        writers.append(w)
        for k in range(3):
            t.send(msg("n1", "n2", k))
        frames = codec.FrameDecoder()
        payloads: list[bytes] = []
        while len(payloads) < 4:
            payloads += [bytes(p) for p in frames.feed(await asyncio.wait_for(r.read(4096), 5))]
        assert codec.decode_hello(payloads[0]) == codec.Hello("n1", CLUSTER)
        assert [codec.decode(p) for p in payloads[1:]] == [msg("n1", "n2", k) for k in range(3)]

        w.write(b"unexpected")
        assert await closed_by_peer(r)
        r2, w2 = await asyncio.wait_for(conns.get(), 5)  # redialed
        writers.append(w2)
        assert codec.decode_hello(bytes(next(codec.FrameDecoder().feed(await r2.readexactly(4 + len(payloads[0])))))) \
            == codec.Hello("n1", CLUSTER)
    finally:
        await t.stop()
        for w in writers:
            w.close()
        server.close()
        await server.wait_closed()


# --- data-directory identities in the hello ---------------------------------------------


class Identities:
    """Transports with data-directory identities under ``tmp_path``; records, in one
    list, what each node is told about lost data and the messages it delivers."""

    def __init__(self, base: Path) -> None:
        self.base = base
        self.ports = dict(zip(IDS, free_ports(len(IDS))))
        self.events: dict[str, list[tuple[Any, ...]]] = {i: [] for i in IDS}
        self.ident: dict[str, DataDirIdentity] = {}
        self.all: list[PeerTransport] = []

    def identity(self, nid: str) -> DataDirIdentity:
        self.ident[nid] = DataDirIdentity.open(self.base / nid, has_data=False, node_id=nid)
        return self.ident[nid]

    async def start(self, nid: str, on_lost_data: Callable[[str, int], None] | None = None) -> PeerTransport:
        ev = self.events[nid]
        peers = {p: ("127.0.0.1", self.ports[p]) for p in IDS if p != nid}
        t = PeerTransport(nid, CLUSTER, ("127.0.0.1", self.ports[nid]), peers, lambda m: ev.append(("msg", m)),
                          seed=1, identity=self.ident.get(nid) or self.identity(nid),
                          on_lost_data=on_lost_data or (lambda peer, known: ev.append(("lost", peer, known))))
        self.all.append(t)
        await t.start()
        return t


@pytest.fixture
async def ids(tmp_path: Path) -> AsyncIterator[Identities]:
    n = Identities(tmp_path)
    try:
        yield n
    finally:
        for t in n.all:
            await t.stop()


async def raw_hello(port: int, *frames: bytes) -> tuple[asyncio.StreamReader, asyncio.StreamWriter]:
    """A raw connection that writes ``frames`` in one write."""
    r, w = await asyncio.open_connection("127.0.0.1", port)
    w.write(b"".join(frames))
    await w.drain()
    return r, w


def vote(src: str, dst: str) -> bytes:
    return codec.frame(codec.encode(RequestVote(5, NodeId(src), NodeId(dst), 100, 4)))


async def test_peers_learn_each_others_ids_and_send_them_back_in_later_hellos(ids: Identities) -> None:
    n1 = await ids.start("n1")
    await ids.start("n2")
    await until(lambda: ids.ident["n1"].known("n2") == ids.ident["n2"].id
                and ids.ident["n2"].known("n1") == ids.ident["n1"].id, what="ids exchanged")
    # Remembered on disk too.
    assert DataDirIdentity.open(ids.base / "n1", has_data=True).known("n2") == ids.ident["n2"].id
    # A redial now says "I know you as <your id>": nothing is lost.
    hello = codec.decode_hello(n1._hello_frame(n1._peers["n2"])[4:])
    assert hello == codec.Hello("n1", CLUSTER, ids.ident["n1"].id, ids.ident["n2"].id)
    assert not [e for e in ids.events["n2"] + ids.events["n1"] if e[0] == "lost"]


async def test_a_node_told_it_is_known_under_another_id_learns_it_before_any_frame(ids: Identities) -> None:
    """The hello's verdict comes first: a vote request behind it in the same read
    reaches the node only after it was told it lost its data."""
    await ids.start("n2")
    me = ids.ident["n2"].id
    old_id = me ^ 0x5A5A
    r, w = await raw_hello(ids.ports["n2"], codec.frame(codec.encode_hello("n1", CLUSTER, 77, old_id)),
                           vote("n1", "n2"))
    try:
        await until(lambda: len(ids.events["n2"]) == 2, what="the verdict and the vote")
        kinds = [e[0] for e in ids.events["n2"]]
        assert kinds == ["lost", "msg"] and ids.events["n2"][0] == ("lost", "n1", old_id)
        assert old_id in ids.ident["n2"].former and ids.ident["n2"].id == me
        assert ids.ident["n2"].known("n1") == 77
    finally:
        w.close()
    # Acknowledged: the same hello again is no news (the node recovered once).
    r, w = await raw_hello(ids.ports["n2"], codec.frame(codec.encode_hello("n1", CLUSTER, 77, old_id)),
                           vote("n1", "n2"))
    try:
        await until(lambda: len(ids.events["n2"]) == 3, what="the second vote")
        assert [e[0] for e in ids.events["n2"]] == ["lost", "msg", "msg"]
    finally:
        w.close()


async def test_a_hello_naming_our_own_id_or_none_is_no_loss(ids: Identities) -> None:
    await ids.start("n2")
    me = ids.ident["n2"].id
    for known in (me, None):
        r, w = await raw_hello(ids.ports["n2"], codec.frame(codec.encode_hello("n1", CLUSTER, 77, known)),
                               vote("n1", "n2"))
        w.close()
    await until(lambda: len(ids.events["n2"]) == 2, what="two votes")
    assert all(e[0] == "msg" for e in ids.events["n2"])


async def test_no_frame_is_delivered_when_the_recovery_cannot_be_made_durable(ids: Identities) -> None:
    def cannot_persist(peer: str, known_as: int) -> None:
        raise StorageFailure("disk gone")

    await ids.start("n2", on_lost_data=cannot_persist)
    r, w = await raw_hello(ids.ports["n2"], codec.frame(codec.encode_hello("n1", CLUSTER, 77, 12345)),
                           vote("n1", "n2"))
    try:
        assert await closed_by_peer(r)
    finally:
        w.close()
    assert ids.events["n2"] == []
    assert 12345 not in ids.ident["n2"].former  # not acknowledged: the next hello tries again


async def test_a_peer_that_said_hello_the_older_way_is_answered_the_older_way(ids: Identities) -> None:
    """An older node refuses the 6-item hello; once its 4-item hello is seen, we send it that form."""
    await ids.start("n1")
    n1 = ids.all[0]
    new = codec.decode_hello(n1._hello_frame(n1._peers["n2"])[4:])
    assert new.data_id == ids.ident["n1"].id  # nothing heard from n2 yet: the new form
    r, w = await raw_hello(ids.ports["n1"], codec.frame(codec.encode_hello("n2", CLUSTER)), vote("n2", "n1"))
    try:
        await until(lambda: ids.events["n1"], what="the old node's vote")
        assert n1._hello_frame(n1._peers["n2"]) == codec.frame(codec.encode_hello("n1", CLUSTER))
        assert ids.ident["n1"].known("n2") is None
    finally:
        w.close()
    r, w = await raw_hello(ids.ports["n1"], codec.frame(codec.encode_hello("n2", CLUSTER, 5, None)))
    try:  # n2 was upgraded: the new form again
        await until(lambda: ids.ident["n1"].known("n2") == 5, what="n2's id")
        assert codec.decode_hello(n1._hello_frame(n1._peers["n2"])[4:]).data_id == ids.ident["n1"].id
    finally:
        w.close()


# --- bounded queues ----------------------------------------------------------------------


async def test_queue_to_a_dead_peer_is_bounded_and_drops_are_counted(net: Net) -> None:
    t = await net.start("n1", TransportConfig(send_queue_frames=10, reconnect_min_ms=1000, reconnect_max_ms=1000))
    m = msg("n1", "n2", 1)
    for _ in range(100):  # warm up: the first dial fails and clears the queue
        t.send(m)
    await until(lambda: t.stats()["n2"]["dropped"] >= 90, what="drops counted")
    before = t.stats()["n2"]["dropped"]
    tracemalloc.start()
    try:
        snap0 = tracemalloc.take_snapshot()
        for _ in range(100_000):
            t.send(m)
        grown = sum(s.size_diff for s in tracemalloc.take_snapshot().compare_to(snap0, "filename")
                    if "dledger" in str(s.traceback))
    finally:
        tracemalloc.stop()
    st = t.stats()["n2"]
    assert st["queued"] <= 10
    assert st["dropped"] - before >= 100_000 - 10
    assert grown < 64 * 1024  # not 100,000 queued references
    assert not st["connected"] and st["sent"] == 0


async def test_a_failed_dial_drops_what_was_queued(net: Net) -> None:
    t = await net.start("n1", TransportConfig(reconnect_min_ms=200, reconnect_max_ms=200))
    for k in range(5):
        t.send(msg("n1", "n3", k))
    await until(lambda: t.stats()["n3"]["dropped"] == 5, what="the queue cleared after a failed dial")
    assert t.stats()["n3"]["queued"] == 0


# --- peer down ---------------------------------------------------------------------------


async def test_on_peer_down_fires_when_the_sending_peer_stops(net: Net) -> None:
    await net.start("n1")
    await net.start("n2")
    await deliver(net, "n1", "n2")
    await until(lambda: net.t["n2"].stats()["n1"]["inbound"] == 1, what="n2's incoming connection from n1")
    await net.t["n1"].stop()
    await until(lambda: net.down["n2"] == ["n1"], what="on_peer_down('n1') at n2")
    await net.t["n2"].stop()
    assert net.down["n2"] == ["n1"]  # not called again for connections closed by our own stop
    assert net.down["n1"] == []


async def test_on_peer_down_fires_when_the_peer_connection_is_reset(net: Net) -> None:
    await net.start("n2")
    r, w = await asyncio.open_connection("127.0.0.1", net.ports["n2"])
    w.write(HELLO_N1 + codec.frame(codec.encode(msg("n1", "n2", 1))))
    await w.drain()
    await until(lambda: len(net.got["n2"]) == 1, what="the raw peer's message")
    w.transport.abort()  # RST, as when the process is killed
    await until(lambda: net.down["n2"] == ["n1"], what="on_peer_down after a reset")


# --- lifecycle ---------------------------------------------------------------------------


async def test_stop_ends_every_task_and_is_idempotent(net: Net) -> None:
    for i in IDS:
        await net.start(i)
    await until(lambda: all(net.t[i].connected(p) for i in IDS for p in IDS if p != i), what="a full mesh")
    for i in IDS:
        await net.t[i].stop()
        await net.t[i].stop()
    await asyncio.sleep(0)
    assert not [t for t in asyncio.all_tasks() if t.get_name().startswith("dledger-send-")]
    with pytest.raises(RuntimeError):
        await net.t["n1"].start()


async def test_cancelling_stop_propagates_cancelled_error(net: Net) -> None:
    t = await net.start("n1")

    async def stopper() -> None:
        await t.stop()

    task = asyncio.create_task(stopper())
    await asyncio.sleep(0)  # inside stop(), awaiting the writer tasks
    task.cancel()
    with pytest.raises(asyncio.CancelledError):
        await task


async def test_listen_port_zero_binds_a_free_port() -> None:
    t = PeerTransport("n1", CLUSTER, ("127.0.0.1", 0), {}, lambda m: None)
    try:
        await t.start()
        assert t.listen_port > 0
    finally:
        await t.stop()


# --- config and backoff (pure) --------------------------------------------------------


@pytest.mark.parametrize("field,value", [
    ("max_frame_bytes", 100),
    ("max_frame_bytes", 1 << 32),
    ("send_queue_frames", 0),
    ("write_batch_bytes", 0),
    ("reconnect_min_ms", 0),
    ("reconnect_max_ms", 5),
    ("connect_timeout_ms", 0),
    ("hello_timeout_ms", -1),
])
def test_config_rejects_bad_values_naming_the_field(field: str, value: int) -> None:
    with pytest.raises(ValueError, match=field):
        TransportConfig(**{field: value})


def test_backoff_grows_exponentially_with_jitter_within_bounds() -> None:
    b = Backoff(20, 1000, random.Random(7))
    delays = [b.next_ms() for _ in range(12)]
    assert delays[0] == 20
    assert all(20 <= d <= 1000 for d in delays)
    for n, d in enumerate(delays):
        ceiling = min(20 * 2**n, 1000)
        assert ceiling / 2 <= d <= ceiling
    assert len(set(delays[6:])) > 1  # jittered, not a constant at the cap
    b.reset()
    assert b.next_ms() == 20
    again = Backoff(20, 1000, random.Random(7))
    assert [again.next_ms() for _ in range(12)] == delays  # seeded: reproducible


# --- benchmark ---------------------------------------------------------------------------


@pytest.mark.slow
async def test_benchmark_transport_throughput_append_entries_64_entries_of_1kib() -> None:
    """Not a timed assertion: logs messages/s between two transports on loopback, in one
    process and one event loop (so sender and receiver share one core)."""
    entries = tuple(Entry(5, 1001 + i, os.urandom(1024)) for i in range(64))
    ae = AppendEntries(5, NodeId("n1"), NodeId("n2"), 1000, 5, entries, 999)
    hb = AppendEntries(5, NodeId("n1"), NodeId("n2"), 1000, 5, (), 999)
    for m, total in ((ae, 20_000), (hb, 200_000)):
        got = 0
        done = asyncio.Event()

        def on_message(_: Message) -> None:
            nonlocal got
            got += 1
            if got == total:
                done.set()

        rx = PeerTransport("n2", CLUSTER, ("127.0.0.1", 0), {"n1": ("127.0.0.1", 1)}, on_message)
        await rx.start()
        tx = PeerTransport("n1", CLUSTER, ("127.0.0.1", 0), {"n2": ("127.0.0.1", rx.listen_port)}, lambda _: None)
        try:
            await tx.start()
            await until(lambda: tx.connected("n2"), what="connected")
            t0 = time.perf_counter()
            sent = 0
            while sent < total:
                room = min(256 - int(tx.stats()["n2"]["queued"]), total - sent)
                for _ in range(room):  # keep the queue topped up without overflowing it
                    tx.send(m)
                sent += room
                await asyncio.sleep(0)
            await asyncio.wait_for(done.wait(), 120)
            dt = time.perf_counter() - t0
            assert tx.stats()["n2"]["dropped"] == 0
            log.info("transport %s with %d entries (1 KiB each): %d messages in %.2fs = %.0f messages/s, "
                     "%.0f entries/s, %.0f MB/s of entry data", type(m).__name__, len(m.entries), total, dt,
                     total / dt, total * len(m.entries) / dt, total * len(m.entries) * 1024 / dt / 1e6)
        finally:
            await tx.stop()
            await rx.stop()
