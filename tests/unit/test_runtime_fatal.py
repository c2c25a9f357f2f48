"""A node whose core reports a broken invariant stops instead of carrying on."""

from __future__ import annotations

from pathlib import Path

import pytest

from raftmq.dledger import DLedger, NodeConfig
from tests.ports import free_ports
from raftmq.dledger.core.messages import NodeId, TimeoutNow
from raftmq.dledger.errors import NodeStopped


class Counter:
    def apply(self, index: int, payload: bytes, position: int) -> int:
        return index

    def snapshot(self) -> bytes:
        return b""

    def restore(self, data: bytes) -> None:
        return None



async def test_broken_invariant_stops_the_node(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    peers = {n: f"127.0.0.1:{p}" for n, p in zip(("n1", "n2", "n3"), free_ports(3))}
    node = DLedger(NodeConfig("n1", "g", peers, str(tmp_path)), Counter())
    await node.start()
    try:
        def broken(m: object) -> None:
            raise AssertionError("node=n1 term=3: another leader n2 in my term")

        monkeypatch.setattr(node.core, "step", broken)
        node._on_message(TimeoutNow(3, NodeId("n2"), NodeId("n1")))
        assert node.fatal.is_set()
        assert isinstance(node.failed, AssertionError)
        with pytest.raises(NodeStopped):
            await node.propose(b"x")
    finally:
        await node.stop()
