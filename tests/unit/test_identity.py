"""Data-directory identities (``dledger.store.identity``) and what a node does with
them: the meta file formats, damage, adoption, and a node on an empty or wiped
data directory that must not vote (issue 9, case 8)."""

from __future__ import annotations

import asyncio
import struct
import zlib
from pathlib import Path
from typing import Any, AsyncIterator

import pytest

from raftmq.dledger import DLedger, NodeConfig, codec
from tests.ports import free_ports
from raftmq.dledger.core.messages import NodeId, RequestVote, RequestVoteReply
from raftmq.dledger.store import identity as ident
from raftmq.dledger.store.identity import DataDirIdentity, IdentityFileError


class Counter:
    def apply(self, index: int, payload: bytes, position: int) -> int:
        return index

    def snapshot(self) -> bytes:
        return b""

    def restore(self, data: bytes) -> None:
        return None


# --- file formats -------------------------------------------------------------------


def test_identity_file_layout_is_as_documented() -> None:
    raw = ident.encode_identity(0x0102030405060708, (0xAA, 0xBB), adopt=True)
    assert raw[0:4] == b"DLID"
    assert struct.unpack_from(">I", raw, 4)[0] == zlib.crc32(raw[8:])
    assert raw[8] == 1 and raw[9] == ident.FLAG_ADOPT
    assert struct.unpack_from(">QH", raw, 10) == (0x0102030405060708, 2)
    assert struct.unpack_from(">QQ", raw, 20) == (0xAA, 0xBB) and len(raw) == 36
    assert ident.decode_identity(raw) == (0x0102030405060708, (0xAA, 0xBB), True)
    assert ident.decode_identity(ident.encode_identity(5, (), adopt=False)) == (5, (), False)


def test_peers_file_layout_is_as_documented() -> None:
    raw = ident.encode_peers({"n2": 7, "n1": 2**64 - 1})
    assert raw[0:4] == b"DLPR" and struct.unpack_from(">I", raw, 4)[0] == zlib.crc32(raw[8:])
    assert raw[8] == 1 and raw[9] == 0 and struct.unpack_from(">H", raw, 10)[0] == 2
    assert raw[12:14] == b"\x00\x02" and raw[14:16] == b"n1" and struct.unpack_from(">Q", raw, 16)[0] == 2**64 - 1
    assert ident.decode_peers(raw) == {"n1": 2**64 - 1, "n2": 7}
    assert ident.decode_peers(ident.encode_peers({})) == {}


@pytest.mark.parametrize("which", ["identity", "peers"])
def test_every_flipped_bit_and_every_cut_is_detected(which: str) -> None:
    if which == "identity":
        raw, decode = ident.encode_identity(0x1234, (9,), adopt=False), ident.decode_identity
    else:
        raw, decode = ident.encode_peers({"n1": 1, "node-two": 2}), ident.decode_peers
    for bit in range(len(raw) * 8):
        bad = bytearray(raw)
        bad[bit // 8] ^= 1 << (bit % 8)
        with pytest.raises(IdentityFileError):
            decode(bytes(bad))
    for n in range(len(raw)):
        with pytest.raises(IdentityFileError):
            decode(raw[:n])
    with pytest.raises(IdentityFileError):
        decode(raw + b"\x00")


def test_former_ids_are_capped() -> None:
    raw = ident.encode_identity(1, tuple(range(2, 200)), adopt=False)
    _, former, _ = ident.decode_identity(raw)
    assert former == tuple(range(200 - ident.MAX_FORMER_IDS, 200))


# --- opening a data directory ----------------------------------------------------------


def test_a_new_data_directory_gets_an_id_that_survives_reopening(tmp_path: Path) -> None:
    a = DataDirIdentity.open(tmp_path, has_data=False)
    assert a.id != 0 and not a.adopting and a.former == ()
    assert (tmp_path / "meta" / "identity").exists()
    b = DataDirIdentity.open(tmp_path, has_data=True)
    assert b.id == a.id and not b.adopting


def test_peers_are_remembered_once_and_never_overwritten(tmp_path: Path) -> None:
    a = DataDirIdentity.open(tmp_path, has_data=False)
    a.remember("n2", 11)
    a.remember("n2", 22)  # n2 came back wiped: we keep telling it 11
    assert a.known("n2") == 11
    assert DataDirIdentity.open(tmp_path, has_data=True).known("n2") == 11


def test_told_another_id_means_lost_data_until_acknowledged(tmp_path: Path) -> None:
    a = DataDirIdentity.open(tmp_path, has_data=False)
    assert not a.check_known_as("n1", a.id)
    assert a.check_known_as("n1", 999)
    assert a.check_known_as("n1", 999)  # not acknowledged yet: still news
    a.acknowledge_lost(999)
    assert not a.check_known_as("n1", 999)
    reopened = DataDirIdentity.open(tmp_path, has_data=True)
    assert not reopened.check_known_as("n1", 999) and reopened.id == a.id
    assert reopened.check_known_as("n3", 1000)


def test_a_damaged_identity_file_with_a_log_does_not_look_wiped(tmp_path: Path) -> None:
    """Its log is intact: the node adopts the id the first peer knows it under
    instead of taking that for data loss; a later, different id is loss again."""
    a = DataDirIdentity.open(tmp_path, has_data=False)
    old = a.id
    path = tmp_path / "meta" / "identity"
    raw = bytearray(path.read_bytes())
    raw[12] ^= 0x10  # a bit of the id
    path.write_bytes(bytes(raw))
    b = DataDirIdentity.open(tmp_path, has_data=True)
    assert b.adopting and b.id != old
    assert (tmp_path / "meta" / "identity.damaged").read_bytes() == bytes(raw)
    interim = b.id
    assert not b.check_known_as("n1", old)  # adopted, not lost
    assert b.id == old and not b.adopting and interim in b.former
    c = DataDirIdentity.open(tmp_path, has_data=True)
    assert c.id == old and not c.adopting
    assert not c.check_known_as("n3", interim)  # a peer that saw the interim id
    assert c.check_known_as("n2", 4242)


def test_a_damaged_identity_file_in_an_empty_directory_is_a_new_directory(tmp_path: Path) -> None:
    a = DataDirIdentity.open(tmp_path, has_data=False)
    (tmp_path / "meta" / "identity").write_bytes(b"garbage")
    b = DataDirIdentity.open(tmp_path, has_data=False)
    assert not b.adopting and b.id != a.id
    assert b.check_known_as("n1", a.id)  # whatever it was, it holds nothing now


def test_a_log_without_identity_written_by_an_older_version_adopts_then_is_confirmed(tmp_path: Path) -> None:
    a = DataDirIdentity.open(tmp_path, has_data=True)
    assert a.adopting
    assert not a.check_known_as("n1", a.id)  # a peer names our own id: adoption over
    assert not DataDirIdentity.open(tmp_path, has_data=True).adopting
    assert a.check_known_as("n1", 31337)


def test_a_damaged_peers_file_is_forgotten_not_fatal(tmp_path: Path) -> None:
    a = DataDirIdentity.open(tmp_path, has_data=False)
    a.remember("n2", 11)
    (tmp_path / "meta" / "peers").write_bytes(b"DLPR" + b"\x00" * 10)
    b = DataDirIdentity.open(tmp_path, has_data=True)
    assert b.id == a.id and b.known("n2") is None
    b.remember("n2", 12)
    assert DataDirIdentity.open(tmp_path, has_data=True).known("n2") == 12


# --- a node on an empty or wiped data directory ------------------------------------------


def make_node(tmp_path: Path, ports: dict[str, int], **kw: Any) -> DLedger:
    peers = {n: f"127.0.0.1:{p}" for n, p in ports.items()}
    return DLedger(NodeConfig("n2", "g", peers, str(tmp_path / "n2"), **kw), Counter())


@pytest.mark.parametrize("kw, recovering", [
    ({}, True),  # no flag: an empty data directory might be a wiped disk
    ({"bootstrap": True}, False),  # the first start of a new group
    ({"bootstrap": True, "rejoin": True}, True),
    ({"rejoin": True}, True),
])
def test_an_empty_data_directory_votes_only_when_bootstrapping(tmp_path: Path, kw: dict[str, Any],
                                                               recovering: bool) -> None:
    ports = dict(zip(("n1", "n2", "n3"), free_ports(3)))
    node = make_node(tmp_path, ports, **kw)
    try:
        assert node.core.recovering is recovering
        assert (tmp_path / "n2" / "recovering").exists() is recovering
        assert node.identity.id and not node.identity.adopting
    finally:
        node.store.close()


class FakePeer:
    """A raw n1: a listener where n2's connection to n1 lands, and a connection to n2."""

    def __init__(self, port: int) -> None:
        self.port = port
        self.payloads: list[bytes] = []
        self.server: asyncio.Server | None = None
        self.writers: list[asyncio.StreamWriter] = []
        self.handlers: list[asyncio.Task[None]] = []

    async def start(self) -> None:
        async def accept(r: asyncio.StreamReader, w: asyncio.StreamWriter) -> None:
            task = asyncio.current_task()
            assert task is not None
            self.handlers.append(task)
            self.writers.append(w)
            frames = codec.FrameDecoder()
            try:
                while data := await r.read(65536):
                    self.payloads += [bytes(p) for p in frames.feed(data)]
            except ConnectionError:
                pass

        self.server = await asyncio.start_server(accept, "127.0.0.1", self.port)

    async def vote_reply(self, timeout_s: float = 5.0) -> RequestVoteReply:
        deadline = asyncio.get_running_loop().time() + timeout_s
        while True:
            for p in self.payloads[1:]:
                m = codec.decode(p)
                if isinstance(m, RequestVoteReply) and not m.pre_vote:
                    return m
            assert asyncio.get_running_loop().time() < deadline, "no vote reply"
            await asyncio.sleep(0.01)

    async def stop(self) -> None:
        for w in self.writers:
            w.close()
        await asyncio.wait_for(asyncio.gather(*self.handlers), 5)  # each ends at its EOF
        if self.server is not None:
            self.server.close()
            await self.server.wait_closed()


@pytest.fixture
async def bootstrapped_n2(tmp_path: Path) -> AsyncIterator[tuple[DLedger, FakePeer, dict[str, int]]]:
    """n2 on an empty data directory with ``bootstrap`` (as a wiped node whose TOML
    still says so), started, and a fake n1."""
    ports = dict(zip(("n1", "n2", "n3"), free_ports(3)))
    fake = FakePeer(ports["n1"])
    await fake.start()
    node = make_node(tmp_path, ports, bootstrap=True, election_timeout_ticks=1000)
    await node.start()
    try:
        yield node, fake, ports
    finally:
        await node.stop()
        await fake.stop()


async def ask_vote(port: int, known_as: int | None) -> asyncio.StreamWriter:
    """As n1: a hello, then at once (same write) a vote request for a log far ahead."""
    _, w = await asyncio.open_connection("127.0.0.1", port)
    w.write(codec.frame(codec.encode_hello("n1", "g", 77, known_as))
            + codec.frame(codec.encode(RequestVote(5, NodeId("n1"), NodeId("n2"), 100, 4))))
    await w.drain()
    return w


async def test_a_bootstrapped_empty_node_grants_votes_to_a_peer_that_never_knew_it(
        bootstrapped_n2: tuple[DLedger, FakePeer, dict[str, int]]) -> None:
    """The control: with nobody remembering it, an empty node of a new group votes."""
    node, fake, ports = bootstrapped_n2
    w = await ask_vote(ports["n2"], known_as=None)
    try:
        reply = await fake.vote_reply()
        assert reply.granted and not node.core.recovering
        assert node.identity.known("n1") == 77
    finally:
        w.close()


async def test_a_node_told_it_is_known_under_another_id_refuses_the_vote_behind_that_hello(
        bootstrapped_n2: tuple[DLedger, FakePeer, dict[str, int]], tmp_path: Path,
        caplog: pytest.LogCaptureFixture) -> None:
    """A wiped node restarted with ``bootstrap`` still in its config: n1 remembers
    its old data directory, so n2 recovers (durably) before it reads n1's vote
    request, and refuses it."""
    node, fake, ports = bootstrapped_n2
    old_id = node.identity.id ^ 0xFFFF
    w = await ask_vote(ports["n2"], known_as=old_id)
    try:
        reply = await fake.vote_reply()
        assert not reply.granted
        assert node.core.recovering and (tmp_path / "n2" / "recovering").exists()
        assert old_id in node.identity.former
        warnings = [r for r in caplog.records if r.levelname == "WARNING" and "data lost" in r.getMessage()]
        assert len(warnings) == 1, caplog.text
        # n2's own hello to n1 carries its id (it dialed before it heard of n1's).
        hello = codec.decode_hello(fake.payloads[0])
        assert hello.node_id == "n2" and hello.data_id == node.identity.id
    finally:
        w.close()
