"""The transport's HTTP behaviour (leader following, retries, deadlines, error
mapping) against tiny scripted aiohttp servers on 127.0.0.1: each answers from
a script of (status, body, headers) and records what it received. Not a broker:
only what the client does with each kind of answer."""

from __future__ import annotations

import asyncio
import socket
from typing import Any, AsyncIterator, Callable

import msgpack
import pytest
from aiohttp import web

from raftmq.client.errors import (
    BadRequest,
    MessageTooLarge,
    OffsetOutOfRange,
    QueueNotFound,
    Rejected,
    ServerError,
    Timeout,
    TopicNotFound,
    from_response,
)
from raftmq.client.http import Transport, TransportConfig
from raftmq.client.producer import Producer

MSGPACK = "application/msgpack"
Answer = tuple[int, Any, dict[str, str]] | Callable[[web.Request], Any]


class ScriptedNode:
    """One fake node: pops an answer per request (the last one repeats)."""

    def __init__(self) -> None:
        self.script: list[Answer] = []
        self.received: list[tuple[str, str, bytes, dict[str, str]]] = []
        self.cluster: dict[str, Any] | None = None
        self.runner: web.AppRunner | None = None
        self.url = ""

    async def start(self) -> None:
        app = web.Application()
        app.router.add_route("*", "/{tail:.*}", self.handle)
        self.runner = web.AppRunner(app, access_log=None, shutdown_timeout=0.1)
        await self.runner.setup()
        site = web.TCPSite(self.runner, "127.0.0.1", 0)
        await site.start()
        port = site._server.sockets[0].getsockname()[1]  # type: ignore[union-attr]
        self.url = f"http://127.0.0.1:{port}"

    async def stop(self) -> None:
        if self.runner is not None:
            await self.runner.cleanup()

    async def handle(self, request: web.Request) -> web.StreamResponse:
        body = await request.read()
        if request.path == "/v1/cluster" and self.cluster is not None:
            return web.Response(body=msgpack.packb(self.cluster), content_type=MSGPACK)
        self.received.append((request.method, request.path_qs, body, dict(request.headers)))
        answer = self.script.pop(0) if len(self.script) > 1 else self.script[0]
        if callable(answer):
            return await answer(request)
        status, payload, headers = answer
        return web.Response(status=status, body=msgpack.packb(payload, use_bin_type=True), content_type=MSGPACK,
                            headers=headers)


@pytest.fixture
async def nodes() -> AsyncIterator[Callable[[int], Any]]:
    made: list[ScriptedNode] = []

    async def make(n: int) -> list[ScriptedNode]:
        out = []
        for _ in range(n):
            node = ScriptedNode()
            await node.start()
            made.append(node)
            out.append(node)
        return out

    try:
        yield make
    finally:
        for node in made:
            await node.stop()


def ok(body: Any) -> Answer:
    return (200, body, {})


def redirect(leader: str, path: str = "/") -> Answer:
    return (307, {"error": "not_leader", "message": "not the leader", "leader": leader}, {"Location": leader + path})


def unavailable(code: str = "no_leader") -> Answer:
    return (503, {"error": code, "message": code}, {"Retry-After": "1"})


def dead_url() -> str:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return f"http://127.0.0.1:{s.getsockname()[1]}"  # nothing listens there once closed


FAST = TransportConfig(deadline_ms=3000, backoff_initial_ms=5, backoff_max_ms=20, discover=False)


async def test_follows_307_to_the_leader_and_goes_there_directly_next_time(nodes: Any) -> None:
    follower, leader = await nodes(2)
    follower.script = [redirect(leader.url, "/v1/topics")]
    leader.script = [ok({"name": "t"})]
    async with Transport([follower.url], FAST) as t:
        assert await t.call("POST", "/v1/topics", {"name": "t"}, write=True) == {"name": "t"}
        assert t.leader == leader.url
        await t.call("POST", "/v1/topics", {"name": "t"}, write=True)
    assert len(follower.received) == 1 and len(leader.received) == 2
    assert leader.received[0][2] == follower.received[0][2]  # the same body, re-sent


async def test_leader_from_location_header_when_body_names_none(nodes: Any) -> None:
    follower, leader = await nodes(2)
    follower.script = [(307, {"error": "not_leader", "message": "x"}, {"Location": leader.url + "/v1/topics"})]
    leader.script = [ok({})]
    async with Transport([follower.url], FAST) as t:
        await t.call("POST", "/v1/topics", {}, write=True)
        assert t.leader == leader.url


async def test_retries_503_through_an_election_with_the_same_bytes(nodes: Any) -> None:
    (node,) = await nodes(1)
    node.script = [unavailable("no_leader"), unavailable("outcome_unknown"), unavailable("unavailable"), ok({"x": 1})]
    async with Transport([node.url], FAST) as t:
        loop = asyncio.get_running_loop()
        t0 = loop.time()
        assert await t.call("POST", "/v1/topics/t/messages", {"messages": [{"body": b"\x00\x01"}]}, write=True) == {"x": 1}
        assert loop.time() - t0 < 1.0  # Retry-After: 1 is an upper bound, not a wait
    bodies = [r[2] for r in node.received]
    assert len(bodies) == 4 and len(set(bodies)) == 1
    assert node.received[0][3]["Content-Type"] == MSGPACK and MSGPACK in node.received[0][3]["Accept"]


async def test_connection_refused_moves_on_to_another_node(nodes: Any) -> None:
    (live,) = await nodes(1)
    live.script = [ok({"ok": True})]
    async with Transport([dead_url(), live.url], FAST) as t:
        for _ in range(3):
            assert await t.call("GET", "/v1/topics") == {"ok": True}


async def test_node_dying_mid_request_is_retried_elsewhere_with_same_request(nodes: Any) -> None:
    first, second = await nodes(2)

    async def die(request: web.Request) -> web.StreamResponse:
        assert request.transport is not None
        request.transport.abort()  # the leader is SIGKILLed while the write is in flight
        await asyncio.sleep(1)
        return web.Response()

    first.script = [die]
    second.script = [ok({"results": []})]
    async with Transport([first.url, second.url], FAST) as t:
        t.leader = first.url
        assert await t.call("POST", "/v1/x", {"producer_id": "p", "sequence": 7}, write=True) == {"results": []}
        assert t.leader == second.url
    assert first.received[0][2] == second.received[0][2]


async def test_deadline_passing_raises_timeout_saying_if_a_write_may_be_stored(nodes: Any) -> None:
    (node,) = await nodes(1)
    cfg = TransportConfig(deadline_ms=300, backoff_initial_ms=5, backoff_max_ms=20, discover=False)
    node.script = [unavailable("outcome_unknown"), unavailable("no_leader")]
    async with Transport([node.url], cfg) as t:
        with pytest.raises(Timeout) as ei:
            await t.call("POST", "/v1/x", {}, write=True)
        assert ei.value.outcome_unknown  # the first attempt may have been stored
        node.script = [unavailable("no_leader")]
        with pytest.raises(Timeout) as ei:
            await t.call("POST", "/v1/x", {}, write=True)
        assert not ei.value.outcome_unknown  # never stored anywhere
    async with Transport([dead_url()], cfg) as t:
        with pytest.raises(Timeout) as ei:
            await t.call("POST", "/v1/x", {}, write=True)
        assert not ei.value.outcome_unknown  # never connected


async def test_attempt_timeout_on_a_hung_node_is_outcome_unknown_and_retried(nodes: Any) -> None:
    hung, good = await nodes(2)

    async def hang(request: web.Request) -> web.StreamResponse:
        await asyncio.sleep(5)
        return web.Response()

    hung.script = [hang]
    good.script = [ok({"done": 1})]
    cfg = TransportConfig(deadline_ms=3000, request_timeout_ms=200, backoff_initial_ms=5, discover=False)
    async with Transport([hung.url, good.url], cfg) as t:
        t.leader = hung.url
        assert await t.call("POST", "/v1/x", {}, write=True) == {"done": 1}


async def test_client_errors_are_raised_at_once_with_the_servers_code(nodes: Any) -> None:
    (node,) = await nodes(1)
    async with Transport([node.url], FAST) as t:
        node.script = [(404, {"error": "topic_not_found", "message": "topic 'x' does not exist", "topic": "x"}, {})]
        with pytest.raises(TopicNotFound) as ei:
            await t.call("GET", "/v1/topics/x")
        assert ei.value.status == 404 and "does not exist" in ei.value.message and ei.value.details["topic"] == "x"
        node.script = [(400, {"error": "invalid_argument", "message": "bad max"}, {})]
        with pytest.raises(BadRequest) as eb:
            await t.call("GET", "/v1/x")
        assert eb.value.code == "invalid_argument" and str(eb.value) == "invalid_argument: bad max"
    assert len(node.received) == 2  # no retries


async def test_discovers_members_and_leader_from_cluster(nodes: Any) -> None:
    seed, other = await nodes(2)
    seed.cluster = {"group": "g", "leader_id": "n2", "leader_url": other.url,
                    "members": [{"id": "n1", "http_url": seed.url, "role": "follower"},
                                {"id": "n2", "http_url": other.url, "role": "leader"}]}
    other.script = [ok({"ok": 1})]
    async with Transport([seed.url], TransportConfig(backoff_initial_ms=5)) as t:
        assert t.urls == [seed.url, other.url] and t.leader == other.url and t.group == "g"
        assert await t.call("POST", "/v1/x", {}, write=True) == {"ok": 1}
    assert seed.received == []


async def test_unexpected_server_errors_are_retried_a_few_times_then_raised(nodes: Any) -> None:
    (node,) = await nodes(1)
    node.script = [(500, {"error": "internal_error", "message": "boom"}, {})]
    async with Transport([node.url], TransportConfig(max_server_errors=2, down_ms=0, backoff_initial_ms=1,
                                                    discover=False)) as t:
        with pytest.raises(ServerError):
            await t.call("GET", "/v1/x")
    assert len(node.received) == 3


async def test_producer_retry_after_failover_resends_identical_request(nodes: Any) -> None:
    old, new = await nodes(2)

    async def answer(request: web.Request) -> web.StreamResponse:
        req = msgpack.unpackb(await request.read())
        res = [{"msg_id": f"g-{i:016X}", "queue_id": 0, "queue_offset": i} for i in range(len(req["messages"]))]
        return web.Response(body=msgpack.packb({"results": res}), content_type=MSGPACK)

    old.script = [unavailable("outcome_unknown"), redirect(new.url)]
    new.script = [answer]
    async with Producer([old.url], transport_config=FAST, linger_ms=5) as p:
        res = await asyncio.gather(*(p.send("t", bytes([i]) * 10, keys=[f"k{i}"]) for i in range(5)))
    assert [r.queue_offset for r in res] == list(range(5))
    bodies = [r[2] for r in old.received + new.received]
    assert len(bodies) == 3 and len(set(bodies)) == 1
    req = msgpack.unpackb(bodies[0])
    assert isinstance(req["producer_id"], str) and req["sequence"] == 0
    assert [m["body"] for m in req["messages"]] == [bytes([i]) * 10 for i in range(5)]


@pytest.mark.parametrize("status,body,cls", [
    (404, {"error": "topic_not_found", "message": "m"}, TopicNotFound),
    (404, {"error": "queue_not_found", "message": "m"}, QueueNotFound),
    (413, {"error": "message_too_large", "message": "m"}, MessageTooLarge),
    (413, {"error": "batch_too_large", "message": "m"}, MessageTooLarge),
    (413, {"error": "request_too_large", "message": "m"}, MessageTooLarge),
    (400, {"error": "offset_out_of_range", "message": "m", "max_offset": 7}, OffsetOutOfRange),
    (400, {"error": "malformed_body", "message": "m"}, BadRequest),
    (415, {"error": "unsupported_media_type", "message": "m"}, Rejected),
    (404, {"error": "not_found", "message": "no route"}, Rejected),
    (500, b"Internal Server Error", ServerError),
])
def test_error_mapping(status: int, body: Any, cls: type) -> None:
    err = from_response(status, body)
    assert type(err) is cls
    if isinstance(body, dict):
        assert err.code == body["error"] and err.message == "m" or body["error"] == "not_found"
    if isinstance(err, OffsetOutOfRange):
        assert err.max_offset == 7


def test_rejections_are_not_confused_with_each_other() -> None:
    assert not isinstance(from_response(404, {"error": "topic_not_found", "message": ""}), BadRequest)
    assert isinstance(from_response(400, {"error": "invalid_argument", "message": ""}), Rejected)


def test_sync_producer_and_admin_work_from_plain_code() -> None:
    from raftmq.client import SyncAdmin, SyncProducer
    from raftmq.client.http import LoopThread

    server_loop = LoopThread("fake-node")  # the fake node needs a loop of its own
    node = ScriptedNode()
    server_loop.run(node.start())
    try:
        async def answer(request: web.Request) -> web.StreamResponse:
            if request.path == "/v1/topics":
                return web.Response(body=msgpack.packb({"topics": [{"name": "t", "queues": 2}]}), content_type=MSGPACK)
            req = msgpack.unpackb(await request.read())
            res = [{"msg_id": f"g-{i}", "queue_id": 1, "queue_offset": i} for i in range(len(req["messages"]))]
            return web.Response(body=msgpack.packb({"results": res}), content_type=MSGPACK)

        node.script = [answer]
        with SyncProducer([node.url], linger_ms=1, discover=False) as p:
            assert p.send("t", "hello") == ("g-0", 1, 0)
            futs = [p.send_async("t", b"x") for _ in range(10)]
            assert sorted(f.result(5).queue_offset for f in futs) == list(range(10))  # one batched request
            assert [r.msg_id for r in p.send_batch("t", [b"a", b"b"])] == ["g-0", "g-1"]
        with SyncAdmin([node.url], discover=False) as a:
            assert a.list_topics() == [{"name": "t", "queues": 2}]
    finally:
        server_loop.run(node.stop())
        server_loop.stop()
