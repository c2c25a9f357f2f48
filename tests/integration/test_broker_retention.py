"""Time-based retention: old CommitLog segments go, ConsumeQueue minimums move,
and a follower that lost everything catches up through a snapshot."""

from __future__ import annotations

import shutil
from pathlib import Path
from typing import Iterator

import pytest

from tests.integration.broker_group import BrokerGroup, http, running_group
from tests.integration.test_broker_failover import Producer, all_applied_equal, create_topic

pytestmark = pytest.mark.integration

RETENTION_S = 2.0


@pytest.fixture
def group(tmp_path: Path) -> Iterator[BrokerGroup]:
    with running_group(tmp_path, extra={"segment_bytes": 64 << 10, "retention_hours": RETENTION_S / 3600,
                                        "retention_check_interval_ms": 200, "checkpoint_interval_ms": 200}) as g:
        yield g


def queue_bounds(url: str, topic: str) -> list[tuple[int, int]]:
    _, _, t = http("GET", f"{url}/v1/topics/{topic}")
    return [(q["min_offset"], q["max_offset"]) for q in t["queue_offsets"]]


def test_old_segments_expire_and_a_wiped_follower_recovers_from_a_snapshot(group: BrokerGroup) -> None:
    create_topic(group, "ret", 1)
    p = Producer(group, "ret")
    for b in range(6):  # ~300 KiB: several 64 KiB segments
        assert p.send([f"old-{b}-{k}-" + "x" * 1000 for k in range(50)])
    old_ids = [r["msg_id"] for _, r in p.acked]
    group.wait_for(lambda: all_applied_equal(group), 20, "replication")

    def expired() -> bool:
        p.send([f"tick-{len(p.acked)}"])  # keeps marks moving forward in time
        return all(queue_bounds(n.http_url, "ret")[0][0] > 0 for n in group.nodes)

    group.wait_for(expired, 20, "retention to move every node's min_offset")
    leader = group.leader()
    lo, hi = queue_bounds(leader.http_url, "ret")[0]
    status, _, got = http("GET", f"{leader.http_url}/v1/topics/ret/queues/0/messages?offset=0&max=5")
    assert status == 200 and got["messages"][0]["queue_offset"] >= lo  # reading from 0 starts at the new minimum
    status, _, _ = http("GET", f"{leader.http_url}/v1/messages/{old_ids[0]}")
    assert status == 404  # its segment is gone
    dledger_dir = leader.data_dir / "dledger" / "commitlog"
    assert min(int(f.name) for f in dledger_dir.iterdir()) > 0, "the first segment was deleted"

    # A follower loses its whole data directory and comes back empty: the
    # leader's log no longer starts at 1, so it must install a snapshot.
    victim = group.followers()[0]
    group.kill(victim.id)
    shutil.rmtree(victim.data_dir)
    for b in range(3):
        assert p.send([f"new-{b}-{k}" for k in range(10)])
    group.start(victim.id)
    group.wait_for(lambda: all_applied_equal(group), 30, "the wiped follower to catch up")
    new = [(b, r) for b, r in p.acked if b.startswith("new-")]
    for body, r in new:
        status, _, got = http("GET", f"{victim.http_url}/v1/topics/ret/queues/0/messages?offset={r['queue_offset']}&max=1")
        assert status == 200 and got["messages"] and got["messages"][0]["body"] == body, (r, got, queue_bounds(victim.http_url, "ret"), queue_bounds(group.leader().http_url, "ret"), group.logs())
        status, _, m = http("GET", f"{victim.http_url}/v1/messages/{r['msg_id']}")
        assert status == 200 and m["body"] == body  # same message id (physical offset) on every replica
