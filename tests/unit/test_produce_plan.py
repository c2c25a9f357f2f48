"""The produce path's pure steps (broker/produce.py): ``parse_produce``
validates a decoded body in one place, ``plan_produce`` picks queues and
numbers the parts that become log entries."""

from __future__ import annotations

from typing import Any

import pytest

from raftmq.broker.config import Limits
from raftmq.broker.errors import BatchTooLarge, InvalidArgument, MessageTooLarge, QueueNotFound
from raftmq.broker.message import sharding_queue
from raftmq.broker.produce import OutMessage, Part, ProduceRequest, parse_produce, plan_produce

LIMITS = Limits(max_message_bytes=100, max_batch_messages=4, max_properties=2)


def request(*messages: OutMessage) -> ProduceRequest:
    return ProduceRequest(tuple(messages))


def m(queue_id: int | None = None, key: str | None = None) -> OutMessage:
    return OutMessage(b"x", queue_id=queue_id, sharding_key=key)


# ----------------------------------------------------------------------
# plan_produce
# ----------------------------------------------------------------------
def test_messages_without_a_queue_or_key_go_to_the_round_robin_queue_in_one_part() -> None:
    assert plan_produce("t", request(m(), m(), m()), 4, round_robin=6) == [Part(0, 2, (0, 1, 2))]


def test_successive_round_robin_values_cycle_through_every_queue() -> None:
    chosen = [plan_produce("t", request(m()), 3, rr)[0].queue_id for rr in range(6)]
    assert chosen == [0, 1, 2, 0, 1, 2]


def test_a_sharding_key_always_maps_to_the_same_queue_whatever_the_round_robin() -> None:
    key = "order-17"
    queues = {plan_produce("t", request(m(key=key)), 8, rr)[0].queue_id for rr in range(20)}
    assert queues == {sharding_queue(key, 8)}
    # The hash is part of the API: a key keeps its queue across versions.
    assert [sharding_queue(k, 8) for k in ("order-17", "a", "b", "c")] == [0, 7, 5, 3]


def test_an_explicit_queue_is_used_as_given() -> None:
    assert plan_produce("t", request(m(queue_id=3)), 4, round_robin=0) == [Part(0, 3, (0,))]


def test_an_explicit_queue_the_topic_does_not_have_is_a_queue_not_found() -> None:
    with pytest.raises(QueueNotFound, match="no queue 4") as err:
        plan_produce("t", request(m(), m(queue_id=4)), 4, round_robin=0)
    assert err.value.details == {"topic": "t", "queue_id": 4}
    with pytest.raises(QueueNotFound):
        plan_produce("t", request(m(queue_id=-1)), 4, round_robin=0)


def test_parts_are_numbered_by_first_appearance_of_each_queue_choice() -> None:
    k = "k"  # sharding_queue("k", 4) may equal the explicit queue: then they share a part
    kq = sharding_queue(k, 4)
    other = (kq + 1) % 4
    plan = plan_produce("t", request(m(queue_id=other), m(), m(key=k), m(queue_id=other), m(), m(queue_id=kq)),
                        4, round_robin=1)
    assert plan == [Part(0, other, (0, 3)), Part(1, 1, (1, 4)), Part(2, kq, (2, 5))]


def test_a_retry_is_split_into_the_same_parts_whichever_round_robin_queue_it_gets() -> None:
    """Dedup keys on (producer, sequence, part): the part numbers and their
    messages must not depend on the round-robin value."""
    req = request(m(), m(queue_id=0), m(), m(key="a"))
    a, b = plan_produce("t", req, 4, round_robin=0), plan_produce("t", req, 4, round_robin=3)
    assert [(p.part, p.indexes) for p in a] == [(p.part, p.indexes) for p in b]
    assert a[0].queue_id == 0 and b[0].queue_id == 3  # the round-robin part moved, its number did not


# ----------------------------------------------------------------------
# parse_produce
# ----------------------------------------------------------------------
def parse(body: dict[str, Any], limits: Limits = LIMITS) -> ProduceRequest:
    return parse_produce(body, limits)


def test_a_full_request_is_parsed_into_typed_messages() -> None:
    req = parse({"producer_id": "p", "sequence": 3, "messages": [
        {"body": "hé", "tags": "a", "keys": "k1 k2", "properties": {"x": "1"}, "born_ts": 5},
        {"body_b64": "AAE=", "queue_id": 1},
        {"body": b"raw", "sharding_key": "s", "keys": ["k"], "tags": None, "properties": None},
    ]})
    assert (req.producer_id, req.sequence) == ("p", 3)
    assert req.messages == (
        OutMessage("hé".encode(), "a", ("k1", "k2"), {"x": "1"}, None, None, 5),
        OutMessage(b"\x00\x01", queue_id=1),
        OutMessage(b"raw", "", ("k",), {}, None, "s", None),
    )


@pytest.mark.parametrize("body, field", [
    ({"messages": [{"body": "x", "deliver_at_ms": 1}]}, "deliver_at_ms"),
    ({"messages": [{"body": "x"}, {"body": "y", "delay_ms": 5}]}, "delay_ms"),
    ({"messages": [{"body": "x"}], "transaction": "t1"}, "transaction"),
])
def test_an_unknown_field_is_refused_with_its_name(body: dict[str, Any], field: str) -> None:
    with pytest.raises(InvalidArgument, match=repr(field)) as err:
        parse(body)
    assert err.value.code == "invalid_argument" and err.value.http_status == 400


def test_more_properties_than_the_limit_are_refused() -> None:
    assert parse({"messages": [{"body": "x", "properties": {"a": "1", "b": "2"}}]}).messages[0].properties
    with pytest.raises(InvalidArgument, match=r"messages\[0\].properties holds 3 properties; the limit is 2"):
        parse({"messages": [{"body": "x", "properties": {"a": "1", "b": "2", "c": "3"}}]})


def test_sizes_and_counts_are_checked_against_the_limits() -> None:
    parse({"messages": [{"body": "x" * 100}] * 4})
    with pytest.raises(MessageTooLarge, match="101 bytes exceeds the limit of 100"):
        parse({"messages": [{"body": "x"}, {"body": "x" * 101}]})
    with pytest.raises(BatchTooLarge, match="5 messages in one request; the limit is 4"):
        parse({"messages": [{"body": "x"}] * 5})
    with pytest.raises(InvalidArgument, match="at least one message"):
        parse({"messages": []})
    with pytest.raises(InvalidArgument, match="at most 32"):
        parse({"messages": [{"body": "x", "keys": [f"k{i}" for i in range(33)]}]})
    with pytest.raises(InvalidArgument, match="at most 256 characters"):
        parse({"messages": [{"body": "x", "tags": "t" * 257}]})


@pytest.mark.parametrize("body, message", [
    ({}, "'messages' is required"),
    ({"messages": {"body": "x"}}, "'messages' must be list"),
    ({"messages": ["x"]}, r"messages\[0\] must be an object"),
    ({"messages": [{"tags": "a"}]}, r"messages\[0\] needs a body"),
    ({"messages": [{"body_b64": "!!"}]}, "not valid base64"),
    ({"messages": [{"body": "x", "tags": "a||b"}]}, "one tag"),
    ({"messages": [{"body": "x", "keys": [""]}]}, "non-empty strings"),
    ({"messages": [{"body": "x", "properties": {"a": 1}}]}, "string values"),
    ({"messages": [{"body": "x", "queue_id": "1"}]}, "queue_id must be an integer"),
    ({"messages": [{"body": "x", "queue_id": True}]}, "queue_id must be an integer"),
    ({"messages": [{"body": "x", "sharding_key": 3}]}, "sharding_key must be a string"),
    ({"messages": [{"body": "x", "born_ts": -1}]}, "born_ts must be a non-negative integer"),
    ({"messages": [{"body": "x"}], "producer_id": 1, "sequence": 1}, "'producer_id' must be str"),
    ({"messages": [{"body": "x"}], "producer_id": "p", "sequence": "1"}, "'sequence' must be int"),
    ({"messages": [{"body": "x"}], "producer_id": "p", "sequence": -1}, "sequence must not be negative"),
    ({"messages": [{"body": "x"}], "producer_id": "p"}, "producer_id and sequence go together"),
    ({"messages": [{"body": "x"}], "sequence": 1}, "producer_id and sequence go together"),
])
def test_a_malformed_request_is_an_invalid_argument_saying_what_is_wrong(body: dict[str, Any], message: str) -> None:
    with pytest.raises(InvalidArgument, match=message):
        parse(body)
