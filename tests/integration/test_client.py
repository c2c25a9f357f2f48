"""The client against a real 3-process broker group on 127.0.0.1: producing
through a leader SIGKILL, and the push consumer's clustering, broadcasting,
orderly and failover behaviour. Every group is stopped in a ``finally``; every
wait is on an observed condition with a deadline."""

from __future__ import annotations

import asyncio
import collections
import contextlib
import inspect
import time
from pathlib import Path
from typing import Any, AsyncIterator, Awaitable, Callable, Iterator

import pytest

from raftmq.client import Admin, Producer, PullConsumer, PushConsumer, RaftMQError, ReceivedMessage
from tests.integration.broker_group import BrokerGroup, running_group

pytestmark = [pytest.mark.integration, pytest.mark.timeout(120)]

SESSION_TIMEOUT_MS = 2000  # the broker drops a silent consumer after this (default 6 s)
FAST_CONSUMER = {"heartbeat_interval_ms": 300, "long_poll_ms": 500, "commit_interval_ms": 200,
                 "retry_backoff_initial_ms": 50, "retry_backoff_max_ms": 200}


def start_group(base: Path) -> contextlib.AbstractContextManager[BrokerGroup]:
    return running_group(base, extra={"consumer_session_timeout_ms": SESSION_TIMEOUT_MS})


@pytest.fixture(scope="module")
def shared_group(tmp_path_factory: pytest.TempPathFactory) -> Iterator[BrokerGroup]:
    """One group for the tests that do not kill nodes."""
    with start_group(tmp_path_factory.mktemp("client")) as g:
        yield g


@pytest.fixture
def own_group(tmp_path: Path) -> Iterator[BrokerGroup]:
    """A group of the test's own, for tests that kill nodes."""
    with start_group(tmp_path) as g:
        yield g


def urls_of(g: BrokerGroup) -> list[str]:
    return [n.http_url for n in g.nodes]


async def eventually(cond: Callable[[], Any], timeout_s: float, what: str, interval_s: float = 0.05) -> Any:
    deadline = time.monotonic() + timeout_s
    while True:
        v = cond()
        if inspect.isawaitable(v):
            v = await v
        if v:
            return v
        if time.monotonic() > deadline:
            pytest.fail(f"timed out after {timeout_s}s waiting for {what}")
        await asyncio.sleep(interval_s)


async def create_topic(urls: list[str], name: str, queues: int) -> None:
    async with Admin(urls) as a:
        await a.create_topic(name, queues)


async def read_everything(urls: list[str], topic: str) -> list[ReceivedMessage]:
    """Every stored message of ``topic``, queue by queue, in queue order."""
    out = []
    async with PullConsumer(urls, "verifier", topic) as c:
        for q, (lo, hi) in sorted((await c.bounds()).items()):
            off = lo
            while off < hi:
                res = await c.fetch(q, off, max_messages=1024)
                out.extend(res.messages)
                off = res.next_offset
    return out


async def start_push(consumers: list[PushConsumer], c: PushConsumer) -> PushConsumer:
    """Start a clustering consumer (the broker's heartbeat endpoint must answer)."""
    await c.start()
    consumers.append(c)
    return c


@pytest.fixture
async def consumers() -> AsyncIterator[list[PushConsumer]]:
    made: list[PushConsumer] = []
    try:
        yield made
    finally:
        await asyncio.gather(*(c.stop() for c in made), return_exceptions=True)


# ----------------------------------------------------------------------
# producing through a failover
# ----------------------------------------------------------------------
async def test_20000_sends_through_a_leader_kill_every_ack_stored_exactly_once(own_group: BrokerGroup) -> None:
    g = own_group
    urls = urls_of(g)
    n = 20_000
    await create_topic(urls, "failover", 8)
    old_leader = await asyncio.to_thread(g.leader)
    acked: dict[int, Any] = {}
    failed: list[tuple[int, BaseException]] = []
    async with Producer(urls[:1], deadline_ms=30_000) as p:  # one seed URL: the rest is discovered
        todo = iter(range(n))

        async def worker() -> None:
            for i in todo:
                try:
                    acked[i] = await p.send("failover", f"m-{i}".encode(), keys=[f"k{i}"])
                except RaftMQError as exc:
                    failed.append((i, exc))

        workers = [asyncio.create_task(worker()) for _ in range(1000)]  # 1000 outstanding sends
        try:
            await eventually(lambda: len(acked) >= n // 3, 40, "a third of the messages acknowledged")
            await asyncio.to_thread(g.kill, old_leader.id)
            killed_at = len(acked)
            await asyncio.wait_for(asyncio.gather(*workers), 60)
        finally:
            for w in workers:
                w.cancel()
    assert killed_at < n, "the kill came after every send: nothing was tested"
    assert not failed, f"{len(failed)} sends failed, first: {failed[0]}"
    assert len(acked) == n
    new_leader = await asyncio.to_thread(g.leader, 20, (old_leader.id,))
    assert new_leader.id != old_leader.id
    stored = await read_everything(urls, "failover")
    bodies = [m.body for m in stored]
    dupes = [b for b, c in collections.Counter(bodies).items() if c > 1]
    assert not dupes, f"{len(dupes)} messages stored twice, e.g. {dupes[:3]}"
    at = {(m.queue_id, m.queue_offset): m for m in stored}
    for i, r in acked.items():
        m = at.get((r.queue_id, r.queue_offset))
        assert m is not None and m.body == f"m-{i}".encode() and m.msg_id == r.msg_id, (i, r)
    assert len(stored) == n


async def test_a_resent_produce_request_is_answered_with_the_original_results(shared_group: BrokerGroup) -> None:
    """The contract the producer's retries rely on: the same bytes again (same producer id
    and sequence) are not stored again. Sent once to a follower too, which redirects."""
    import msgpack

    from raftmq.client.http import Transport

    urls = urls_of(shared_group)
    await create_topic(urls, "dedup", 4)
    raw = msgpack.packb({"messages": [{"body": b"once-%d" % i} for i in range(5)],
                         "producer_id": "itest-producer", "sequence": 0}, use_bin_type=True)
    async with Transport(urls) as t:
        first = await t.call("POST", "/v1/topics/dedup/messages", raw, write=True)
        follower = next(u for u in urls if u != t.leader)
        t.leader = follower  # a stale leader: the retry goes through a 307
        again = await t.call("POST", "/v1/topics/dedup/messages", raw, write=True)
    assert again == first
    stored = await read_everything(urls, "dedup")
    assert sorted(m.body for m in stored) == [b"once-%d" % i for i in range(5)]


# ----------------------------------------------------------------------
# push consumer
# ----------------------------------------------------------------------
async def test_clustering_consumers_split_queues_redeliver_failures_and_rebalance(
        shared_group: BrokerGroup, consumers: list[PushConsumer]) -> None:
    urls = urls_of(shared_group)
    await create_topic(urls, "cluster", 8)
    got: dict[str, list[bytes]] = {"c1": [], "c2": []}
    attempts: collections.Counter[bytes] = collections.Counter()

    def handler_for(name: str) -> Callable[[ReceivedMessage], Awaitable[None]]:
        async def handle(m: ReceivedMessage) -> None:
            attempts[m.body] += 1
            if m.body.endswith(b"7") and attempts[m.body] == 1:
                raise RuntimeError("fails once: must be redelivered")
            got[name].append(m.body)
        return handle

    c1 = await start_push(consumers, PushConsumer(urls, "g-cluster", "cluster", handler_for("c1"),
                                                  client_id="c1", **FAST_CONSUMER))
    c2 = await start_push(consumers, PushConsumer(urls, "g-cluster", "cluster", handler_for("c2"),
                                                  client_id="c2", **FAST_CONSUMER))
    await eventually(lambda: c1.assigned() == [0, 1, 2, 3] and c2.assigned() == [4, 5, 6, 7], 10,
                     "the 8 queues split 4/4 between the two consumers")
    first = [f"a-{i}".encode() for i in range(2000)]
    async with Producer(urls) as p:
        await asyncio.gather(*(p.send("cluster", b, queue_id=i % 8) for i, b in enumerate(first)))
        await eventually(lambda: set(got["c1"]) | set(got["c2"]) >= set(first), 20, "every message consumed")
        assert not set(got["c1"]) & set(got["c2"]), "a message went to both consumers of the group"
        assert got["c1"] and got["c2"]
        assert all(attempts[b] == 2 for b in first if b.endswith(b"7"))  # failed once, then delivered

        await c2.stop()  # c2's committed offsets let c1 carry on where c2 stopped
        consumers.remove(c2)
        await eventually(lambda: c1.assigned() == list(range(8)), 15, "c1 owning every queue after c2 left")
        second = [f"b-{i}".encode() for i in range(1000)]
        await asyncio.gather(*(p.send("cluster", b, queue_id=i % 8) for i, b in enumerate(second)))
        await eventually(lambda: set(got["c1"]) >= set(second), 20, "c1 consuming the messages sent after c2 left")
    async with Admin(urls) as a:
        await eventually(lambda: _lag_is_zero(a, "g-cluster", "cluster"), 10, "the group's lag committed to 0")


async def _lag_is_zero(a: Admin, group: str, topic: str) -> bool:
    return (await a.lag(group, topic))["lag"] == 0


async def test_broadcasting_delivers_every_message_to_every_consumer_and_resumes(
        shared_group: BrokerGroup, consumers: list[PushConsumer]) -> None:
    urls = urls_of(shared_group)
    await create_topic(urls, "bcast", 4)
    got: dict[str, list[bytes]] = {"b1": [], "b2": []}

    def make(name: str) -> PushConsumer:
        return PushConsumer(urls, "g-bcast", "bcast", lambda m: got[name].append(m.body), mode="broadcasting",
                            client_id=name, handler_in_thread=False, **FAST_CONSUMER)

    b1 = make("b1")
    await b1.start()
    consumers.append(b1)
    b2 = make("b2")
    await b2.start()
    consumers.append(b2)
    assert b1.assigned() == b2.assigned() == [0, 1, 2, 3]
    first = [f"x-{i}".encode() for i in range(1000)]
    async with Producer(urls) as p:
        await p.send_batch("bcast", first)
        await eventually(lambda: set(got["b1"]) >= set(first) and set(got["b2"]) >= set(first), 20,
                         "both broadcasting consumers receiving every message")
        await b1.stop()
        consumers.remove(b1)
        async with Admin(urls) as a:  # per-instance offsets live on the broker under <group>.<client id>
            assert sum(v or 0 for v in (await a.offsets("g-bcast.b1", "bcast")).values()) == len(first)
        got["b1"].clear()
        b1 = make("b1")  # a restart with the same client id resumes from its committed offsets
        await b1.start()
        consumers.append(b1)
        second = [f"y-{i}".encode() for i in range(100)]
        await p.send_batch("bcast", second)
        await eventually(lambda: set(got["b1"]) >= set(second) and set(got["b2"]) >= set(second), 20,
                         "both consumers receiving the second round")
    assert set(got["b1"]) == set(second), "the restarted consumer re-read messages it had committed"


async def test_orderly_consumers_process_each_sharding_key_in_send_order_never_concurrently(
        shared_group: BrokerGroup, consumers: list[PushConsumer]) -> None:
    urls = urls_of(shared_group)
    await create_topic(urls, "ordered", 4)
    keys = [f"order-{k}" for k in range(12)]
    per_key = 60
    seen: dict[str, list[int]] = collections.defaultdict(list)
    active: collections.Counter[int] = collections.Counter()
    overlaps: list[int] = []
    failed_once: set[bytes] = set()

    def handler(name: str) -> Callable[[ReceivedMessage], Awaitable[None]]:
        async def handle(m: ReceivedMessage) -> None:
            active[m.queue_id] += 1
            if active[m.queue_id] > 1:
                overlaps.append(m.queue_id)
            try:
                await asyncio.sleep(0.001)
                key, n = m.body.decode().rsplit(":", 1)
                if n == "30" and m.body not in failed_once:
                    failed_once.add(m.body)
                    raise RuntimeError("fails once: the queue must wait for it, not skip it")
                seen[key].append(int(n))
            finally:
                active[m.queue_id] -= 1
        return handle

    opts = dict(FAST_CONSUMER, lock_renew_interval_ms=1000)
    await start_push(consumers, PushConsumer(urls, "g-ordered", "ordered", handler("o1"), orderly=True,
                                                  client_id="o1", **opts))
    o2 = await start_push(consumers, PushConsumer(urls, "g-ordered", "ordered", handler("o2"), orderly=True,
                                                  client_id="o2", **opts))
    async with Producer(urls) as p:
        # All sends at once: the producer keeps each key's messages in call order.
        await asyncio.gather(*(p.send("ordered", f"{k}:{n}".encode(), sharding_key=k)
                               for n in range(per_key) for k in keys))
    stored = await read_everything(urls, "ordered")
    for k in keys:  # stored in send order, one queue per key
        mine = [m for m in stored if m.body.startswith(f"{k}:".encode())]
        assert len({m.queue_id for m in mine}) == 1
        assert [int(m.body.decode().rsplit(":", 1)[1]) for m in mine] == list(range(per_key))

    def halfway() -> bool:
        return sum(len(v) for v in seen.values()) >= len(keys) * per_key // 2 or all(
            len(seen[k]) == per_key for k in keys)

    # A new leader grants no queue lock for one lease (10 s), so the first messages take a while.
    await eventually(halfway, 40, "half of the ordered messages consumed")
    await o2.stop()  # a rebalance in the middle: o1 takes o2's queues once o2 has let go
    consumers.remove(o2)
    await eventually(lambda: all(len(seen[k]) >= per_key for k in keys), 40, "every ordered message consumed")
    assert not overlaps, f"queues processed by two handlers at once: {overlaps}"
    for k in keys:
        # At least once: a rebalance may replay a suffix, but never reorders or skips.
        assert _in_order_with_replays(seen[k]), (k, seen[k])
        assert set(seen[k]) == set(range(per_key))


def _in_order_with_replays(xs: list[int]) -> bool:
    """Each step goes to the next number or back to an earlier one (a replay), never skips ahead."""
    return bool(xs) and xs[0] == 0 and all(b <= a + 1 for a, b in zip(xs, xs[1:]))


async def test_push_consumer_keeps_its_place_through_a_leader_kill(
        own_group: BrokerGroup, consumers: list[PushConsumer]) -> None:
    g = own_group
    urls = urls_of(g)
    await create_topic(urls, "pfail", 4)
    got: list[bytes] = []
    c = await start_push(consumers, PushConsumer(urls, "g-pfail", "pfail", lambda m: got.append(m.body),
                                                 handler_in_thread=False, **FAST_CONSUMER))
    await eventually(lambda: c.assigned() == [0, 1, 2, 3], 10, "the only consumer owning every queue")
    sent: list[bytes] = []
    async with Producer(urls) as p:
        for i in range(0, 1500, 100):
            batch = [f"p-{j}".encode() for j in range(i, i + 100)]
            await p.send_batch("pfail", batch)
            sent += batch
            if i == 500:
                await eventually(lambda: set(got) >= set(sent), 20, "the first messages consumed")
                old = await asyncio.to_thread(g.leader)
                await asyncio.to_thread(g.kill, old.id)
    await eventually(lambda: set(got) >= set(sent), 30, "every message consumed across the failover")
    assert len(got) - len(set(got)) < 200, "far more redeliveries than one commit interval explains"
    async with Admin(urls) as a:
        await eventually(lambda: _lag_is_zero(a, "g-pfail", "pfail"), 15, "offsets committed on the new leader")
