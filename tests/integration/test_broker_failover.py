"""Broker groups under failure: SIGKILL of a follower or the leader in the
middle of a produce load, a torn CommitLog tail, and no leader at all."""

from __future__ import annotations

import hashlib
import os
import threading
import time
import uuid
from pathlib import Path
from typing import Any, Iterator

import pytest

from tests.integration.broker_group import BrokerGroup, http, running_group

pytestmark = pytest.mark.integration


@pytest.fixture
def group(tmp_path: Path) -> Iterator[BrokerGroup]:
    with running_group(tmp_path, extra={"checkpoint_interval_ms": 200}) as g:
        yield g


class Producer:
    """A minimal synchronous producer for tests: follows redirects, retries
    through elections until a deadline, and uses producer id + sequence so a
    retry is never stored twice."""

    def __init__(self, group: BrokerGroup, topic: str) -> None:
        self.group = group
        self.topic = topic
        self.pid = uuid.uuid4().hex
        self.seq = 0
        self.url = group.nodes[0].http_url
        self.acked: list[tuple[str, dict[str, Any]]] = []  # (body, result)
        self.failed = 0

    def send(self, bodies: list[str], deadline_s: float = 20) -> bool:
        self.seq += 1
        payload = {"messages": [{"body": b} for b in bodies], "producer_id": self.pid, "sequence": self.seq}
        end = time.monotonic() + deadline_s
        urls = [n.http_url for n in self.group.nodes]
        i = 0
        while time.monotonic() < end:
            try:
                status, headers, body = http("POST", f"{self.url}/v1/topics/{self.topic}/messages", payload, timeout_s=5)
            except OSError:
                i += 1
                self.url = urls[i % len(urls)]
                time.sleep(0.05)
                continue
            if status == 200:
                self.acked += list(zip(bodies, body["results"]))
                return True
            if status == 307:
                self.url = body["leader"]
            elif status in (503, 502):
                time.sleep(0.05)
                i += 1
                self.url = urls[i % len(urls)]
            else:
                raise AssertionError(f"unexpected {status}: {body}")
        self.failed += 1
        return False


def run_load(producers: list[Producer], batches: int, batch: int, stop: threading.Event) -> list[threading.Thread]:
    def work(p: Producer) -> None:
        for b in range(batches):
            if stop.is_set():
                return
            p.send([f"{p.pid}:{b}:{k}" for k in range(batch)])

    threads = [threading.Thread(target=work, args=(p,)) for p in producers]
    for t in threads:
        t.start()
    return threads


def create_topic(group: BrokerGroup, name: str, queues: int) -> None:
    status, _, body = http("POST", group.leader().http_url + "/v1/topics", {"name": name, "queues": queues})
    assert status == 200, body


def all_applied_equal(group: BrokerGroup) -> bool:
    hs = [group.health(n.id) for n in group.nodes]
    return all(hs) and len({h["applied_index"] for h in hs}) == 1 and hs[0]["applied_index"] >= hs[0]["commit_index"]


def cq_digest(node_data: Path) -> dict[str, str]:
    root = node_data / "consumequeue"
    out = {}
    for p in sorted(root.rglob("*")):
        if p.is_file():
            out[str(p.relative_to(root))] = hashlib.sha256(p.read_bytes()).hexdigest()
    return out


def read_all(url: str, topic: str, queues: int) -> dict[tuple[int, int], str]:
    got = {}
    for q in range(queues):
        offset = 0
        while True:
            status, _, body = http("GET", f"{url}/v1/topics/{topic}/queues/{q}/messages?offset={offset}&max=512")
            assert status == 200, body
            for m in body["messages"]:
                got[(q, m["queue_offset"])] = m["body"]
            if body["next_offset"] >= body["max_offset"]:
                break
            offset = body["next_offset"]
    return got


def test_killed_follower_restarts_with_identical_consume_queues_and_offsets(group: BrokerGroup) -> None:
    create_topic(group, "orders", 4)
    follower = group.followers()[0]
    producers = [Producer(group, "orders") for _ in range(4)]
    stop = threading.Event()
    threads = run_load(producers, batches=60, batch=8, stop=stop)
    group.wait_for(lambda: sum(len(p.acked) for p in producers) > 300, 30, "some acked messages")
    group.kill(follower.id)
    group.wait_for(lambda: sum(len(p.acked) for p in producers) > 900, 30, "more acks without the follower")
    group.start(follower.id)
    for t in threads:
        t.join(60)
    leader = group.leader()
    status, _, _ = http("POST", f"{leader.http_url}/v1/groups/g/offsets", {"topic": "orders", "queue_id": 2, "offset": 5})
    assert status == 200
    group.wait_for(lambda: all_applied_equal(group), 30, "every node to apply the same index")
    digests = [cq_digest(n.data_dir) for n in group.nodes]
    assert digests[0] and digests[0] == digests[1] == digests[2]
    offsets = [http("GET", f"{n.http_url}/v1/groups/g/offsets?topic=orders")[2] for n in group.nodes]
    assert offsets[0] == offsets[1] == offsets[2]
    assert all(p.failed == 0 for p in producers)


def test_leader_kill_under_load_loses_no_acknowledged_message(group: BrokerGroup) -> None:
    create_topic(group, "pay", 4)
    old = group.leader()
    producers = [Producer(group, "pay") for _ in range(4)]
    stop = threading.Event()
    threads = run_load(producers, batches=80, batch=4, stop=stop)
    group.wait_for(lambda: sum(len(p.acked) for p in producers) > 300, 30, "some acked messages")
    group.kill(old.id)
    new = group.leader(exclude=(old.id,))
    assert new.id != old.id
    for t in threads:
        t.join(90)
    acked = [(b, r) for p in producers for b, r in p.acked]
    assert len(acked) == 4 * 80 * 4 - sum(p.failed for p in producers) * 4
    got = read_all(group.leader(exclude=(old.id,)).http_url, "pay", 4)
    for body, r in acked:
        assert got.get((r["queue_id"], r["queue_offset"])) == body, f"acked {body} lost or moved"
    # No duplicates: producer dedup answers retries with the original result.
    assert len(set(got.values())) == len(got)
    group.start(old.id)
    group.wait_for(lambda: all_applied_equal(group), 30, "the old leader to catch up")
    assert read_all(old.http_url, "pay", 4) == got


def test_torn_commitlog_tail_is_repaired_on_restart(group: BrokerGroup) -> None:
    create_topic(group, "torn", 2)
    p = Producer(group, "torn")
    for b in range(40):
        assert p.send([f"m{b}-{k}" for k in range(5)])
    victim = group.followers()[0]
    group.wait_for(lambda: all_applied_equal(group), 20, "replication")
    group.kill(victim.id)
    segs = sorted((victim.data_dir / "dledger" / "commitlog").iterdir())
    last = segs[-1]
    data = last.read_bytes().rstrip(b"\0")
    size = len(data)
    with open(last, "r+b") as f:  # cut the last entry in half, then scribble on what remains of it
        f.truncate(size - 37)
        f.seek(size - 60)
        f.write(b"\xde\xad\xbe\xef")
    for b in range(10):
        assert p.send([f"after{b}"])
    group.start(victim.id)
    group.wait_for(lambda: all_applied_equal(group), 30, "the repaired node to catch up")
    assert cq_digest(victim.data_dir) == cq_digest(group.leader().data_dir)
    assert read_all(victim.http_url, "torn", 2) == read_all(group.leader().http_url, "torn", 2)


def test_no_leader_answers_503_with_retry_after(group: BrokerGroup) -> None:
    create_topic(group, "lonely", 1)
    group.wait_for(lambda: all_applied_equal(group), 20, "every node to know the topic")
    survivor = group.followers()[0]
    for n in group.nodes:
        if n.id != survivor.id:
            group.kill(n.id)

    def refused() -> tuple[int, dict[str, str], Any] | None:
        r = http("POST", f"{survivor.http_url}/v1/topics/lonely/messages", {"messages": [{"body": "x"}]}, timeout_s=5)
        return r if r[0] == 503 else None

    status, headers, body = group.wait_for(refused, 15, "503 from the survivor")
    assert body["error"] == "no_leader" and int(headers["Retry-After"]) >= 1
    # Reads of committed data still work without a leader.
    status, _, _ = http("GET", f"{survivor.http_url}/v1/topics/lonely/queues/0/messages")
    assert status == 200
