"""The produce handler (broker/http/app.py): a JSON and a msgpack body both go
through ``parse_produce``, after one leadership and topic check."""

from __future__ import annotations

import asyncio
import json
from typing import Any

import msgpack
from aiohttp.test_utils import TestClient, TestServer

from raftmq.broker.config import Limits
from raftmq.broker.errors import TopicNotFound
from raftmq.broker.http.app import make_app
from raftmq.broker.produce import ProduceRequest


class FakeBroker:
    """What the produce handler uses of a Broker, recording each call."""

    def __init__(self) -> None:
        self.limits = Limits(max_properties=1)
        self.calls: list[tuple[str, Any]] = []

    def writable_topic(self, topic: str) -> int:
        self.calls.append(("writable_topic", topic))
        if topic != "t":
            raise TopicNotFound(f"topic {topic!r} does not exist", topic=topic)
        return 4

    async def produce(self, topic: str, queues: int, request: ProduceRequest) -> list[dict[str, Any]]:
        self.calls.append(("produce", request))
        return [{"msg_id": f"m{i}", "queue_id": 0, "queue_offset": i} for i in range(len(request.messages))]


async def post(broker: FakeBroker, body: dict[str, Any], msgpack_body: bool,
               topic: str = "t") -> tuple[int, dict[str, Any]]:
    if msgpack_body:
        data, ctype = msgpack.packb(body, use_bin_type=True), "application/msgpack"
    else:
        data, ctype = json.dumps(body).encode(), "application/json"
    async with TestClient(TestServer(make_app(broker))) as client:  # type: ignore[arg-type]
        resp = await client.post(f"/v1/topics/{topic}/messages", data=data, headers={"Content-Type": ctype})
        raw = await resp.read()
        return resp.status, (msgpack.unpackb(raw) if msgpack_body else json.loads(raw))


def test_both_encodings_refuse_an_unknown_message_field_naming_it() -> None:
    for as_msgpack in (False, True):
        broker = FakeBroker()
        status, body = asyncio.run(post(broker, {"messages": [{"body": "x", "deliver_at_ms": 5}]}, as_msgpack))
        assert status == 400 and body["error"] == "invalid_argument", body
        assert "'deliver_at_ms'" in body["message"]
        assert [c[0] for c in broker.calls] == ["writable_topic"]  # nothing proposed


def test_both_encodings_enforce_max_properties() -> None:
    for as_msgpack in (False, True):
        status, body = asyncio.run(post(FakeBroker(), {"messages": [{"body": "x", "properties": {"a": "1", "b": "2"}}]},
                                        as_msgpack))
        assert status == 400 and "the limit is 1" in body["message"], body


def test_a_valid_request_is_checked_once_then_produced() -> None:
    for as_msgpack in (False, True):
        broker = FakeBroker()
        status, body = asyncio.run(post(broker, {"messages": [{"body": "x"}, {"body": "y"}]}, as_msgpack))
        assert status == 200 and [r["queue_offset"] for r in body["results"]] == [0, 1]
        assert [c[0] for c in broker.calls] == ["writable_topic", "produce"]
        assert [m.body for m in broker.calls[1][1].messages] == [b"x", b"y"]


def test_an_unknown_topic_is_a_404_before_the_body_is_read() -> None:
    status, body = asyncio.run(post(FakeBroker(), {"messages": [{"body": "x", "bogus": 1}]}, False, topic="nope"))
    assert status == 404 and body["error"] == "topic_not_found"
