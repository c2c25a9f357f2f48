"""The cluster secret's handshake: the pure proofs and frames (dledger.peer_auth), the
hello's version 2 (dledger.codec), the secret's loading (dledger.peer_security), the
refusal log's rate limit, and PeerTransport with secrets on 127.0.0.1."""

from __future__ import annotations

import asyncio
import logging
import struct
from pathlib import Path
from typing import AsyncIterator

import pytest

from raftmq.dledger import codec, peer_auth
from raftmq.dledger.core.messages import NodeId, TimeoutNow
from raftmq.dledger.errors import CodecError
from raftmq.dledger.peer_security import PeerSecurity, load_cluster_secret
from raftmq.dledger.refusal_log import RefusalLog
from raftmq.dledger.settings import LogSettings
from raftmq.dledger.transport import PeerTransport, TransportConfig
from tests.ports import free_ports
from tests.unit.test_transport import until

SECRET = b"s" * 32
ND, NA = b"d" * 16, b"a" * 16


def test_proofs_depend_on_every_field_and_the_two_sides_differ() -> None:
    base = peer_auth.acceptor_proof(SECRET, "g", "n1", "n2", ND, NA)
    assert len(base) == peer_auth.PROOF_BYTES
    assert base == peer_auth.acceptor_proof(SECRET, "g", "n1", "n2", ND, NA)
    variants = [
        peer_auth.acceptor_proof(b"t" * 32, "g", "n1", "n2", ND, NA),
        peer_auth.acceptor_proof(SECRET, "h", "n1", "n2", ND, NA),
        peer_auth.acceptor_proof(SECRET, "g", "n2", "n1", ND, NA),
        peer_auth.acceptor_proof(SECRET, "g", "n1", "n2", NA, ND),
        peer_auth.acceptor_proof(SECRET, "gn", "1", "n2", ND, NA),  # delimiting: no field shifting
        peer_auth.dialer_proof(SECRET, "g", "n1", "n2", ND, NA),  # a dialer's proof is no acceptor's
    ]
    assert all(v != base for v in variants)
    assert peer_auth.proof_ok(base, base) and not peer_auth.proof_ok(base, variants[0])


def test_challenge_and_proof_frames_round_trip_and_refuse_anything_else() -> None:
    proof = peer_auth.dialer_proof(SECRET, "g", "n2", "n1", NA, ND)
    assert peer_auth.decode_challenge(peer_auth.encode_challenge(NA, proof)) == (NA, proof)
    assert peer_auth.decode_proof(peer_auth.encode_proof(proof)) == proof
    for bad in (b"", b"\xc1", peer_auth.encode_proof(proof), peer_auth.encode_challenge(NA[:8], proof),
                codec.encode(TimeoutNow(1, NodeId("n1"), NodeId("n2")))):
        with pytest.raises(CodecError):
            peer_auth.decode_challenge(bad)
    for bad in (b"", peer_auth.encode_challenge(NA, proof), peer_auth.encode_proof(proof[:31])):
        with pytest.raises(CodecError):
            peer_auth.decode_proof(bad)


def test_hello_version_2_carries_the_nonce_and_version_1_forms_still_decode() -> None:
    h = codec.decode_hello(codec.encode_hello("n1", "g", 5, None, ND))
    assert (h.node_id, h.cluster, h.data_id, h.known_as, h.nonce) == ("n1", "g", 5, None, ND)
    assert codec.decode_hello(codec.encode_hello("n1", "g")).nonce is None
    assert codec.decode_hello(codec.encode_hello("n1", "g", 5, 6)).nonce is None
    with pytest.raises(CodecError):
        codec.decode_hello(codec.encode_hello("n1", "g", 5, None, b"short"))
    import msgpack
    with pytest.raises(CodecError):  # 7 items claiming version 1
        codec.decode_hello(msgpack.packb([100, 1, "n1", "g", None, None, ND]))


def test_secret_loading_refuses_unreadable_files_and_short_secrets(tmp_path: Path) -> None:
    f = tmp_path / "secret"
    f.write_bytes(b"x" * 16 + b"\n")
    assert load_cluster_secret(str(f), {}) == b"x" * 16
    assert load_cluster_secret(None, {"RAFTMQ_CLUSTER_SECRET": "y" * 20}) == b"y" * 20
    assert load_cluster_secret(None, {}) is None
    f.write_bytes(b"x" * 15 + b"\n")
    with pytest.raises(ValueError, match="at least 16 bytes"):
        load_cluster_secret(str(f), {})
    with pytest.raises(ValueError, match="cannot read"):
        load_cluster_secret(str(tmp_path / "missing"), {})
    with pytest.raises(ValueError, match="cluster_secret_file"):
        LogSettings(cluster_secret_file=str(tmp_path / "missing"))
    with pytest.raises(ValueError, match="both or neither"):
        LogSettings(peer_tls_cert=str(f))
    with pytest.raises(ValueError, match="peer_max_handshakes"):
        LogSettings(peer_max_handshakes=0)


def test_refusal_log_logs_once_an_interval_per_source_with_the_count_suppressed() -> None:
    r = RefusalLog(interval_s=60, max_sources=2)
    assert r.note("a", 0) == 0
    assert [r.note("a", t) for t in (1, 2, 3)] == [None, None, None]
    assert r.note("b", 4) == 0  # another source has its own line
    assert r.note("a", 61) == 3
    assert r.note("c", 200) == 0  # over max_sources: stale sources are forgotten, not the new one refused


class AuthNet:
    """Two transports n1, n2 of cluster "g", each with its own security."""

    def __init__(self) -> None:
        self.ports = dict(zip(("n1", "n2"), free_ports(2)))
        self.got: dict[str, list[object]] = {"n1": [], "n2": []}
        self.all: list[PeerTransport] = []

    async def start(self, nid: str, secret: bytes | None, cfg: TransportConfig = TransportConfig()) -> PeerTransport:
        other = "n2" if nid == "n1" else "n1"
        t = PeerTransport(nid, "g", ("127.0.0.1", self.ports[nid]), {other: ("127.0.0.1", self.ports[other])},
                          self.got[nid].append, cfg, seed=1, security=PeerSecurity(secret))
        self.all.append(t)
        await t.start()
        return t


@pytest.fixture
async def anet() -> AsyncIterator[AuthNet]:
    n = AuthNet()
    try:
        yield n
    finally:
        for t in n.all:
            await t.stop()


async def test_peers_with_the_same_secret_exchange_messages(anet: AuthNet) -> None:
    a, b = await anet.start("n1", SECRET), await anet.start("n2", SECRET)
    a.send(TimeoutNow(3, NodeId("n1"), NodeId("n2")))
    b.send(TimeoutNow(4, NodeId("n2"), NodeId("n1")))
    await until(lambda: anet.got["n1"] and anet.got["n2"], what="messages both ways")
    assert anet.got["n2"][0] == TimeoutNow(3, NodeId("n1"), NodeId("n2"))


@pytest.mark.parametrize("other", [b"t" * 32, None], ids=["wrong-secret", "no-secret"])
async def test_a_peer_with_another_or_no_secret_is_refused_both_ways(
        anet: AuthNet, other: bytes | None, caplog: pytest.LogCaptureFixture) -> None:
    caplog.set_level(logging.WARNING, logger="raftmq.dledger.transport")
    cfg = TransportConfig(hello_timeout_ms=300, reconnect_max_ms=50)
    a, b = await anet.start("n1", SECRET, cfg), await anet.start("n2", other, cfg)
    for i in range(20):
        a.send(TimeoutNow(i + 1, NodeId("n1"), NodeId("n2")))
        b.send(TimeoutNow(i + 1, NodeId("n2"), NodeId("n1")))
        await asyncio.sleep(0.05)
    assert anet.got == {"n1": [], "n2": []}
    assert not a.connected("n2")
    if other is not None:  # a wrong secret: n2 checks n1's proof, so its dial never counts as connected
        assert not b.connected("n1")
    # Without a secret n2 checks nothing: each dial of n1 counts as connected until n1
    # refuses it (a moment later, every 50 ms); that nothing reached n1 is checked above.
    text = caplog.text
    assert "refused peer connection" in text
    if other is None:
        assert "misconfiguration" in text
    else:
        assert "secret differs" in text
    # Redials every 50 ms for a second: the refusal lines stay at one per source and minute.
    assert text.count("refused peer connection") <= 4


async def test_a_forged_hello_without_the_proof_never_reaches_on_message(anet: AuthNet) -> None:
    await anet.start("n2", SECRET)
    r, w = await asyncio.open_connection("127.0.0.1", anet.ports["n2"])
    try:
        for payload in (codec.encode_hello("n1", "g", 7, None),
                        codec.encode(TimeoutNow(9, NodeId("n1"), NodeId("n2")))):
            w.write(codec.frame(payload))
        await w.drain()
        assert await asyncio.wait_for(r.read(), 5) == b""  # closed, nothing answered
    finally:
        w.close()
    assert anet.got["n2"] == []


async def test_handshakes_beyond_max_handshakes_are_closed_at_once(anet: AuthNet) -> None:
    await anet.start("n2", SECRET, TransportConfig(max_handshakes=2, hello_timeout_ms=5000))
    conns = [await asyncio.open_connection("127.0.0.1", anet.ports["n2"]) for _ in range(3)]
    try:
        assert await asyncio.wait_for(conns[2][0].read(), 2) == b""
        with pytest.raises(TimeoutError):
            await asyncio.wait_for(conns[0][0].read(), 0.3)
    finally:
        for _, w in conns:
            w.close()


async def test_unfinished_frames_beyond_max_buffered_bytes_pause_reading(anet: AuthNet) -> None:
    cap = 4 << 20
    t = await anet.start("n2", None, TransportConfig(max_buffered_bytes=cap, max_inbound_per_peer=8))
    writers = []
    try:
        for _ in range(4):
            _, w = await asyncio.open_connection("127.0.0.1", anet.ports["n2"])
            w.write(codec.frame(codec.encode_hello("n1", "g")) + struct.pack(">I", 60 << 20))
            writers.append(w)
        chunk = b"\0" * (256 << 10)
        for _ in range(40):  # 10 MiB a connection offered, 40 MiB in all
            for w in writers:
                w.write(chunk)
            await asyncio.sleep(0.01)
        await asyncio.sleep(0.3)
        # One connection reads on (10 MiB: under one frame), the others wait near the cap.
        assert t._buffered <= cap + (10 << 20) + 4 * (256 << 10), t._buffered
        assert len(t._paused) >= 2
    finally:
        for w in writers:
            w.close()
    await until(lambda: t._buffered == 0, what="buffers released")


def test_local_groups_get_a_private_secret_file_kept_across_restarts(tmp_path: Path) -> None:
    from raftmq.client.local.node_toml import ensure_cluster_secret

    path = ensure_cluster_secret(tmp_path / "base")
    text = path.read_text()
    assert path.is_absolute() and (path.stat().st_mode & 0o777) == 0o600
    assert len(text.strip()) == 64 and int(text, 16) >= 0
    assert ensure_cluster_secret(tmp_path / "base") == path and path.read_text() == text
    assert load_cluster_secret(str(path), {}) == text.strip().encode()
