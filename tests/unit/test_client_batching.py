"""The producer's batching, ordering lanes, sequence window and error handling,
against a fake transport that records the requests (no server, no sockets)."""

from __future__ import annotations

import asyncio
import time
from typing import Any

import msgpack
import pytest

from raftmq.client.errors import MessageTooLarge, Timeout, TopicNotFound
from raftmq.client.producer import Message, Producer, SequenceWindow


class FakeTransport:
    """Answers produce requests like the broker: one result per message, the
    queue offset counting per queue. ``hold`` makes requests wait; ``fail``
    maps a request to an exception to raise instead."""

    def __init__(self) -> None:
        self.requests: list[dict[str, Any]] = []
        self.raw: list[bytes] = []
        self.in_flight = 0
        self.max_in_flight = 0
        self.hold: asyncio.Event | None = None
        self.fail: Any = None
        self.offsets: dict[int, int] = {}

    async def start(self) -> None:
        pass

    async def close(self) -> None:
        pass

    async def call(self, method: str, path: str, body: Any = None, **kw: Any) -> Any:
        assert method == "POST" and path.endswith("/messages") and kw.get("write") is True
        req = msgpack.unpackb(body, raw=False)
        self.raw.append(bytes(body))
        self.requests.append(req)
        self.in_flight += 1
        self.max_in_flight = max(self.max_in_flight, self.in_flight)
        try:
            if self.hold is not None:
                await self.hold.wait()
            if self.fail is not None:
                exc = self.fail(req)
                if exc is not None:
                    raise exc
            results = []
            for m in req["messages"]:
                q = m.get("queue_id", 0)
                off = self.offsets.get(q, 0)
                self.offsets[q] = off + 1
                results.append({"msg_id": "id-" + m["body"].decode(), "queue_id": q, "queue_offset": off})
            return {"results": results}
        finally:
            self.in_flight -= 1


async def wait_until(cond: Any, timeout_s: float = 2.0) -> None:
    deadline = time.monotonic() + timeout_s
    while not cond():
        assert time.monotonic() < deadline, "condition not reached"
        await asyncio.sleep(0.001)


async def test_concurrent_sends_share_one_request_and_each_caller_gets_its_own_result() -> None:
    ft = FakeTransport()
    async with Producer(["http://x:1"], transport=ft, linger_ms=20) as p:
        results = await asyncio.gather(*(p.send("t", f"m{i}".encode()) for i in range(50)))
    assert len(ft.requests) == 1
    assert [m["body"] for m in ft.requests[0]["messages"]] == [f"m{i}".encode() for i in range(50)]
    assert [r.msg_id for r in results] == [f"id-m{i}" for i in range(50)]
    assert [r.queue_offset for r in results] == list(range(50))


async def test_linger_holds_a_lone_message_then_sends_it() -> None:
    ft = FakeTransport()
    async with Producer(["http://x:1"], transport=ft, linger_ms=40) as p:
        t0 = time.monotonic()
        task = asyncio.ensure_future(p.send("t", b"a"))
        await asyncio.sleep(0.01)
        assert ft.requests == []  # still lingering
        await task
        assert time.monotonic() - t0 >= 0.035
    assert len(ft.requests) == 1


async def test_full_batch_by_count_goes_at_once_without_waiting_for_linger() -> None:
    ft = FakeTransport()
    async with Producer(["http://x:1"], transport=ft, linger_ms=10_000, batch_max_messages=4) as p:
        futs = [asyncio.ensure_future(p.send("t", f"{i}".encode())) for i in range(8)]
        done, pending = await asyncio.wait(futs, timeout=0.5)
        assert len(done) == 8  # two full batches, long before the linger
    assert [len(r["messages"]) for r in ft.requests] == [4, 4]


async def test_partial_lane_waits_for_linger_then_flush_sends_it() -> None:
    ft = FakeTransport()
    async with Producer(["http://x:1"], transport=ft, linger_ms=10_000, batch_max_messages=4) as p:
        futs = [asyncio.ensure_future(p.send("t", f"{i}".encode())) for i in range(3)]
        done, pending = await asyncio.wait(futs, timeout=0.2)
        assert not done and ft.requests == []
        await p.flush()
        assert all(f.done() for f in futs)
    assert [len(r["messages"]) for r in ft.requests] == [3]


async def test_full_batch_by_bytes_goes_at_once() -> None:
    ft = FakeTransport()
    async with Producer(["http://x:1"], transport=ft, linger_ms=10_000, batch_max_bytes=3000) as p:
        futs = [asyncio.ensure_future(p.send("t", bytes([65 + i]) * 1024)) for i in range(4)]
        await asyncio.wait(futs, timeout=0.5)
        assert [len(r["messages"]) for r in ft.requests] == [2, 2]
        assert all(f.done() for f in futs)


async def test_requests_carry_producer_id_and_increasing_sequences() -> None:
    ft = FakeTransport()
    async with Producer(["http://x:1"], transport=ft, linger_ms=0, batch_max_messages=1, producer_id="p-1") as p:
        await asyncio.gather(*(p.send("t", b"x") for _ in range(5)))
    assert {r["producer_id"] for r in ft.requests} == {"p-1"}
    assert sorted(r["sequence"] for r in ft.requests) == [0, 1, 2, 3, 4]


async def test_not_idempotent_sends_no_producer_id() -> None:
    ft = FakeTransport()
    async with Producer(["http://x:1"], transport=ft, idempotent=False) as p:
        await p.send("t", b"x")
    assert "producer_id" not in ft.requests[0] and "sequence" not in ft.requests[0]


async def test_round_robin_requests_in_flight_are_capped_and_batches_grow_meanwhile() -> None:
    ft = FakeTransport()
    ft.hold = asyncio.Event()
    async with Producer(["http://x:1"], transport=ft, linger_ms=0, batch_max_messages=2, max_in_flight=2) as p:
        futs = [asyncio.ensure_future(p.send("t", f"{i}".encode())) for i in range(10)]
        await wait_until(lambda: len(ft.requests) == 2)
        await asyncio.sleep(0.02)
        assert ft.in_flight == 2 and len(ft.requests) == 2
        ft.hold.set()
        await asyncio.gather(*futs)
    assert ft.max_in_flight == 2
    assert sum(len(r["messages"]) for r in ft.requests) == 10


async def test_sharding_key_lane_has_one_request_in_flight_and_keeps_call_order() -> None:
    ft = FakeTransport()
    ft.hold = asyncio.Event()
    async with Producer(["http://x:1"], transport=ft, linger_ms=0) as p:
        first = asyncio.ensure_future(p.send("t", b"k0", sharding_key="k"))
        await wait_until(lambda: len(ft.requests) == 1)
        rest = [asyncio.ensure_future(p.send("t", f"k{i}".encode(), sharding_key="k")) for i in range(1, 20)]
        await asyncio.sleep(0.02)
        assert len(ft.requests) == 1  # the next request waits for the first to be answered
        ft.hold.set()
        await asyncio.gather(first, *rest)
    assert ft.max_in_flight == 1
    bodies = [m["body"] for r in ft.requests for m in r["messages"]]
    assert bodies == [f"k{i}".encode() for i in range(20)]
    assert all(m["sharding_key"] == "k" for r in ft.requests for m in r["messages"])


async def test_explicit_queue_and_round_robin_never_share_a_request() -> None:
    ft = FakeTransport()
    async with Producer(["http://x:1"], transport=ft, linger_ms=20) as p:
        res = await asyncio.gather(p.send("t", b"a"), p.send("t", b"b", queue_id=3), p.send("t", b"c"),
                                   p.send("t", b"d", sharding_key="s"))
    assert sorted(sorted(m["body"] for m in r["messages"]) for r in ft.requests) == [[b"a", b"c"], [b"b"], [b"d"]]
    assert res[1].queue_id == 3


async def test_sharding_lane_bounds_distinct_keys_per_request() -> None:
    ft = FakeTransport()
    async with Producer(["http://x:1"], transport=ft, linger_ms=10_000, max_sharding_keys_per_batch=3) as p:
        futs = [asyncio.ensure_future(p.send("t", f"{i}".encode(), sharding_key=f"k{i % 5}")) for i in range(10)]
        await p.flush()
        await asyncio.gather(*futs)
    for r in ft.requests:
        assert len({m["sharding_key"] for m in r["messages"]}) <= 3


async def test_one_bad_message_fails_only_its_caller() -> None:
    ft = FakeTransport()

    def reject(req: dict[str, Any]) -> Exception | None:
        if any(m["body"] == b"bad" for m in req["messages"]):
            return MessageTooLarge("a message body of 3 bytes exceeds the limit", code="message_too_large", status=413)
        return None

    ft.fail = reject
    async with Producer(["http://x:1"], transport=ft, linger_ms=20) as p:
        res = await asyncio.gather(p.send("t", b"ok1"), p.send("t", b"bad"), p.send("t", b"ok2"),
                                   return_exceptions=True)
    assert isinstance(res[1], MessageTooLarge) and res[1].code == "message_too_large"
    assert [r.msg_id for r in (res[0], res[2])] == ["id-ok1", "id-ok2"]  # type: ignore[union-attr]
    # the rejected batch got no sequence reused: each request has its own
    seqs = [r["sequence"] for r in ft.requests]
    assert len(seqs) == len(set(seqs))


async def test_batch_over_broker_limit_is_split_and_limit_remembered() -> None:
    ft = FakeTransport()

    def limit(req: dict[str, Any]) -> Exception | None:
        if len(req["messages"]) > 4:
            return MessageTooLarge("10 messages in one request; the limit is 4", code="batch_too_large", status=413)
        return None

    ft.fail = limit
    async with Producer(["http://x:1"], transport=ft, linger_ms=20) as p:
        res = await asyncio.gather(*(p.send("t", f"{i}".encode()) for i in range(10)))
        assert [r.msg_id for r in res] == [f"id-{i}" for i in range(10)]
        ft.requests.clear()
        await asyncio.gather(*(p.send("t", f"{i}".encode()) for i in range(8)))
        assert all(len(r["messages"]) <= 4 for r in ft.requests)  # no more oversized attempts


async def test_topic_not_found_and_timeout_reach_every_caller_of_the_batch() -> None:
    ft = FakeTransport()
    ft.fail = lambda req: TopicNotFound("topic 'nope' does not exist", code="topic_not_found", status=404)
    async with Producer(["http://x:1"], transport=ft, linger_ms=10) as p:
        res = await asyncio.gather(p.send("nope", b"1"), p.send("nope", b"2"), return_exceptions=True)
        assert all(isinstance(r, TopicNotFound) for r in res)
        assert len(ft.requests) == 1  # not split: every message would fail alike
        ft.fail = lambda req: Timeout("gave up", outcome_unknown=True)
        res = await asyncio.gather(p.send("t", b"1"), p.send("t", b"2"), return_exceptions=True)
        assert all(isinstance(r, Timeout) and r.outcome_unknown for r in res)


async def test_send_batch_returns_results_in_order_across_lanes() -> None:
    ft = FakeTransport()
    async with Producer(["http://x:1"], transport=ft, linger_ms=10_000) as p:
        res = await p.send_batch("t", [b"a", Message(b"b", queue_id=2), {"body": "c", "tags": "x"},
                                       Message("d", sharding_key="k", keys=["k1"])])
    assert [r.msg_id for r in res] == ["id-a", "id-b", "id-c", "id-d"]
    assert res[1].queue_id == 2


async def test_sequence_window_blocks_new_requests_behind_an_unanswered_one() -> None:
    w = SequenceWindow(limit=4)
    s0 = await w.acquire(1)
    s1 = await w.acquire(2)
    s2 = await w.acquire(1)
    assert (s0, s1, s2) == (0, 1, 2) and w.weight == 4
    blocked = asyncio.ensure_future(w.acquire(1))
    await asyncio.sleep(0.01)
    assert not blocked.done()
    w.release(s1)  # answered, but s0 (older) may still be retried: nothing freed
    await asyncio.sleep(0.01)
    assert not blocked.done() and w.weight == 4
    w.release(s0)  # frees s0 and s1
    assert await asyncio.wait_for(blocked, 1) == 3
    assert w.weight == 2


async def test_closed_producer_refuses_sends() -> None:
    ft = FakeTransport()
    p = Producer(["http://x:1"], transport=ft)
    await p.start()
    await p.close()
    with pytest.raises(RuntimeError):
        await p.send("t", b"x")


async def test_large_round_robin_lane_goes_as_two_requests_in_flight_together() -> None:
    ft = FakeTransport()
    ft.hold = asyncio.Event()
    async with Producer(["http://x:1"], transport=ft, linger_ms=5, split_min_messages=256) as p:
        futs = [asyncio.ensure_future(p.send("t", b"%d" % i)) for i in range(600)]
        await wait_until(lambda: len(ft.requests) == 2)
        assert ft.in_flight == 2
        ft.hold.set()
        res = await asyncio.gather(*futs)
    assert [len(r["messages"]) for r in ft.requests] == [300, 300]
    assert [r.msg_id for r in res] == [f"id-{i}" for i in range(600)]
