"""A wiped disk is detected without operator flags (issue 9, case 8), with real
broker processes.

A follower is paused while messages are acknowledged by the leader and the
other follower; then the leader and that other follower are killed, the
latter's data directory is wiped and it is started again exactly as a restart
would start it (no flag; its TOML still says ``bootstrap = true``), and the
paused follower is resumed. The wiped node and the lagging one must not elect
a leader without the acknowledged messages: the lagging node remembers the
wiped node's data-directory id and says so in its transport hello, so the
wiped node rejoins as a non-voter. Once the old leader is back, every
acknowledged message is readable from every node.

Before identities, the wiped node voted for the lagging one at once, and the
messages acknowledged while it was paused were lost on every node.
"""

from __future__ import annotations

import shutil
import signal
import time
from pathlib import Path

import pytest

from tests.integration.broker_group import http, running_group
from tests.integration.test_broker_failover import Producer, all_applied_equal, create_topic

pytestmark = pytest.mark.integration

QUEUES = 2
# 5,000 messages of 2 KB acknowledged while the lagging follower is paused: 10 MB,
# more than the TCP buffers of its connection from the leader hold (its receive
# buffer, and the dead leader's send buffer, which the kernel still delivers
# once it resumes). With less, it would receive everything after all.
BATCHES = 100
BATCH = 50
PAD = "x" * 2000
NO_LEADER_WINDOW_S = 6.0  # five or more election timeouts (600 to 1200 ms each)


def read_local(url: str, topic: str) -> dict[tuple[int, int], str]:
    """Every message of ``topic`` as this node holds it (``consistency=local``: its own store)."""
    got: dict[tuple[int, int], str] = {}
    for q in range(QUEUES):
        offset = 0
        while True:
            status, _, body = http("GET", f"{url}/v1/topics/{topic}/queues/{q}/messages"
                                          f"?offset={offset}&max=512&consistency=local")
            assert status == 200, body
            for m in body["messages"]:
                got[(q, m["queue_offset"])] = m["body"]
            if body["next_offset"] >= body["max_offset"]:
                break
            offset = body["next_offset"]
    return got


def test_a_wiped_node_restarted_without_flags_does_not_help_a_lagging_node_lose_acknowledged_messages(
        tmp_path: Path) -> None:
    with running_group(tmp_path, extra={"checkpoint_interval_ms": 200}) as group:
        create_topic(group, "wipe", QUEUES)
        p = Producer(group, "wipe")
        assert p.send([f"warm-{k}" for k in range(20)])
        group.wait_for(lambda: all_applied_equal(group), 20, "every node to hold the warm-up")

        leader = group.leader()
        lagging, wiped = [n for n in group.nodes if n.id != leader.id]
        group.kill(lagging.id, signal.SIGSTOP)
        try:
            for b in range(BATCHES):
                assert p.send([f"b{b}-{k}-{PAD}" for k in range(BATCH)]), "a batch was not acknowledged"
        finally:
            group.kill(leader.id)  # SIGKILL
            group.kill(wiped.id)
        assert len(p.acked) == 20 + BATCHES * BATCH

        shutil.rmtree(wiped.data_dir)
        assert "bootstrap = true" in wiped.config_path.read_text()  # as the group's first start had it
        group.start(wiped.id)
        group.wait_for(lambda: group.health(wiped.id), 20, f"{wiped.id} to serve again")
        lagging.proc.send_signal(signal.SIGCONT)  # type: ignore[union-attr]

        # The old leader, which alone holds the acknowledged messages, is down: the
        # wiped node and the lagging one must not make a leader of their own.
        marker = wiped.data_dir / "dledger" / "recovering"
        told = False
        end = time.monotonic() + NO_LEADER_WINDOW_S
        while time.monotonic() < end:
            for n in (wiped, lagging):
                h = group.health(n.id)
                assert not (h and h["role"] == "leader"), (
                    f"{n.id} became leader (term {h['term']}) with the old leader down: the wiped node voted\n"
                    f"{group.logs()}")
            told = told or marker.exists()
            time.sleep(0.05)
        assert told, f"{wiped.id} never learned that it lost its data\n{group.logs()}"

        group.start(leader.id)
        group.leader(30)
        group.wait_for(lambda: all_applied_equal(group), 60, "every node to catch up")
        group.wait_for(lambda: not marker.exists(), 20, f"{wiped.id} to vote again once caught up")
        want = {(r["queue_id"], r["queue_offset"]): body for body, r in p.acked}
        for n in group.nodes:
            got = read_local(n.http_url, "wipe")
            missing = [k for k in want if got.get(k) != want[k]]
            assert not missing, (f"{len(missing)} of {len(want)} acknowledged messages missing or different on "
                                 f"{n.id}, e.g. {missing[:5]}\n{group.logs()}")
        log_text = wiped.log_path.read_text()
        assert log_text.count("data lost; no votes until caught up") == 1, log_text[-3000:]
