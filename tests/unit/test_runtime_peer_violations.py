"""The runtime's side of impossible peer messages (issue 11): the core's
``PeerViolation`` is logged (one line per peer per VIOLATION_LOG_EVERY_S,
with the count not logged) and re-raised for the transport to close the
connection; the node never stops. A snapshot the state machine's
``check_snapshot`` refuses is dropped before anything is installed."""

from __future__ import annotations

import asyncio
import json
import logging
from pathlib import Path
from typing import Any

import pytest

from raftmq.dledger import DLedger, MemoryNetwork, NodeConfig, NodeStorage
from raftmq.dledger.core.messages import AppendEntries, InstallSnapshot, Snapshot, SnapshotMeta
from raftmq.dledger.errors import PeerViolation
from raftmq.dledger.transport import TransportHooks
from tests.unit.test_runtime_in_memory import IDS, PEERS, Recorder, make_node, wait_leader


class CheckedRecorder(Recorder):
    def check_snapshot(self, data: bytes) -> str | None:
        try:
            json.loads(data)
        except ValueError as exc:
            return str(exc)
        return None


async def test_violations_are_logged_rate_limited_and_never_stop_the_node(
        tmp_path: Path, caplog: pytest.LogCaptureFixture) -> None:
    net = MemoryNetwork()
    hooks: dict[str, TransportHooks] = {}

    def attach(h: TransportHooks) -> Any:
        hooks[h.node_id] = h
        return net.attach(h)

    nodes = {n: make_node(n, tmp_path, net, transport=attach)[0] for n in IDS}
    for d in nodes.values():
        await d.start()
    try:
        lead = await wait_leader(nodes.values())
        me = lead.config.node_id
        peer = next(n for n in IDS if n != me)
        term = lead.term
        with caplog.at_level(logging.ERROR, logger="raftmq.dledger.runtime"):
            for _ in range(5):  # was: AssertionError, the leader stopped
                with pytest.raises(PeerViolation):
                    hooks[me].on_message(AppendEntries(term, peer, me, 0, 0, (), 0))
        lines = [r.getMessage() for r in caplog.records if "event=peer_violation" in r.getMessage()]
        assert len(lines) == 1 and f"peer={peer}" in lines[0], lines
        await asyncio.sleep(0.2)
        assert lead.failed is None and lead.is_leader() and lead.term == term
    finally:
        for d in nodes.values():
            await d.stop()


async def test_a_snapshot_the_state_machine_refuses_installs_nothing(tmp_path: Path) -> None:
    net = MemoryNetwork()
    hooks: dict[str, TransportHooks] = {}

    def attach(h: TransportHooks) -> Any:
        hooks[h.node_id] = h
        return net.attach(h)

    made = {}
    for n in IDS:
        sm = CheckedRecorder()
        cfg = NodeConfig(n, "g", PEERS, str(tmp_path / n), tick_ms=20, bootstrap=True, seed=IDS.index(n))
        made[n] = (DLedger(cfg, sm, storage=NodeStorage.in_memory(), transport=attach), sm)
    for d, _ in made.values():
        await d.start()
    try:
        lead = await wait_leader(d for d, _ in made.values())
        for i in range(5):
            await lead.propose(b"p%d" % i)
        me = next(n for n in IDS if n != lead.config.node_id)
        follower, sm = made[me]
        await follower.wait_applied(lead.applied_index, 5)
        before = (follower.term, follower.last_index(), list(sm.applied))
        src = lead.config.node_id
        for term in (lead.term, lead.term + 1):  # from the leader itself: only the data is wrong
            snap = Snapshot(SnapshotMeta(follower.last_index() + 50, term), b"\x00 not json")
            with pytest.raises(PeerViolation):
                hooks[me].on_message(InstallSnapshot(term, src, me, snap))
        await asyncio.sleep(0.2)
        assert (follower.term, follower.last_index(), list(sm.applied)) == before
        assert follower.failed is None
    finally:
        for d, _ in made.values():
            await d.stop()


async def test_the_memory_network_closes_the_connection_a_violation_came_on(
        tmp_path: Path, caplog: pytest.LogCaptureFixture) -> None:
    """As TCP does: the receiver hears that the sender's connection closed."""
    net = MemoryNetwork()
    transports: dict[str, Any] = {}

    def attach(h: TransportHooks) -> Any:
        transports[h.node_id] = net.attach(h)
        return transports[h.node_id]

    nodes = {n: make_node(n, tmp_path, net, transport=attach)[0] for n in IDS}
    for d in nodes.values():
        await d.start()
    try:
        lead = await wait_leader(nodes.values())
        me = lead.config.node_id
        peer = next(n for n in IDS if n != me)
        with caplog.at_level(logging.INFO, logger="raftmq.dledger.runtime"):
            transports[peer].send(AppendEntries(lead.term, peer, me, 0, 0, (), 0))
            transports[peer].flush()
            await asyncio.sleep(0.2)
        text = caplog.text
        assert "event=peer_violation" in text
        assert f"follower={peer} connection closed" in text
        assert lead.failed is None and lead.is_leader()
    finally:
        for d in nodes.values():
            await d.stop()
