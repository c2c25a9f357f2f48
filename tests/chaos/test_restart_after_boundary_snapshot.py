"""Found by the 10-minute chaos run (seed 600, ``lost_on_node`` 209,629 on n2):
a node killed after it wrote a segment-boundary snapshot but before its next
checkpoint restarts from that snapshot as if a leader had installed it, which
empties its ConsumeQueues (they resume at the snapshot's offsets): everything
before is still in its log but no longer served by it.

A restarted node must serve every message it served before."""

from __future__ import annotations

import asyncio
import time
from pathlib import Path

import pytest

from raftmq.chaos.nemesis import Group
from raftmq.chaos.workload import QUEUES, TOPIC, create_topic
from raftmq.client import Producer
from raftmq.client.http import Transport, TransportConfig

pytestmark = pytest.mark.integration


async def _min_offsets(url: str) -> dict[int, tuple[int, int]]:
    tr = Transport([url], TransportConfig(discover=False, deadline_ms=3000))
    try:
        t = await tr.call("GET", f"/v1/topics/{TOPIC}", url=url)
    finally:
        await tr.close()
    return {q["queue_id"]: (q["min_offset"], q["max_offset"]) for q in t["queue_offsets"]}


async def test_a_node_killed_between_a_boundary_snapshot_and_a_checkpoint_still_serves_everything(
        tmp_path: Path) -> None:
    # Long checkpoint interval: every boundary snapshot is newer than the checkpoint.
    g = Group(tmp_path, 3, "async", distinct_hosts=False, segment_bytes=64 << 10, checkpoint_interval_ms=60_000)
    try:
        g.start_all()
        leader = await g.wait_leader(30)
        assert leader is not None
        await create_topic(g.urls)
        async with Producer(g.urls, linger_ms=0) as p:
            for i in range(3000):  # a few hundred KiB: several segment boundaries
                await p.send(TOPIC, f"m-{i:06d}", queue_id=i % QUEUES)
        follower = next(n for n in g.nodes if n is not leader)
        deadline = time.monotonic() + 20
        while time.monotonic() < deadline:
            before = await _min_offsets(follower.http_url)
            if all(hi == 750 for _, hi in before.values()):
                break
            await asyncio.sleep(0.1)
        assert "snapshot at segment boundary" in follower.log_path.read_text()
        await g.kill(follower)
        g.start(follower)
        deadline = time.monotonic() + 20
        after: dict[int, tuple[int, int]] = {}
        while time.monotonic() < deadline:
            try:
                after = await _min_offsets(follower.http_url)
                if all(hi == 750 for _, hi in after.values()):
                    break
            except Exception:  # noqa: BLE001 - not serving yet
                pass
            await asyncio.sleep(0.1)
        assert after == before == {q: (0, 750) for q in range(QUEUES)}, (before, after)
    finally:
        await g.stop_all()
        await g.close()
