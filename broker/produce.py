"""A produce request, from the decoded HTTP body to the plan of log entries.

Two pure steps, no I/O, no broker state:

- ``parse_produce(body, limits)`` is the one place a produce request is
  validated: its shape (known fields only, each of its type), its sizes
  (message bodies, tags, keys, property names and values, the producer id)
  and its counts (messages, keys, properties).
  The JSON and the msgpack body both arrive here as a plain dict. Anything
  wrong is a ``BrokerError`` naming the field: an unknown field is refused
  (400 ``invalid_argument``), so a field this broker does not implement
  (``deliver_at_ms``, for instance) is never silently dropped.
- ``plan_produce(request, queues, round_robin)`` chooses each message's queue
  (explicit ``queue_id``, else by ``sharding_key`` hash, else the request's
  round-robin queue) and splits the request into parts, one log entry each.

Parts are grouped by the queue *choice*, not by the resulting queue, in
order of first appearance, and numbered in that order: a retried request is
split the same way on any leader, whichever round-robin queue it picks, so
the producer dedup key (producer id, sequence, part) names the same messages.
"""

from __future__ import annotations

import base64
import binascii
from dataclasses import dataclass
from types import MappingProxyType
from typing import Any, Mapping, NamedTuple

from raftmq.broker.config import Limits
from raftmq.broker.errors import (BatchTooLarge, InvalidArgument, MessageTooLarge, NameTooLong, PropertyTooLong,
                                  QueueNotFound)
from raftmq.broker.message import sharding_queue

REQUEST_FIELDS = frozenset({"messages", "producer_id", "sequence"})
MESSAGE_FIELDS = frozenset({"body", "body_b64", "tags", "keys", "properties", "queue_id", "sharding_key", "born_ts"})
MAX_TAG_CHARS = 256
MAX_KEYS = 32
MAX_KEY_CHARS = 256
NO_PROPERTIES: Mapping[str, str] = MappingProxyType({})


class OutMessage(NamedTuple):
    """What a producer sends: the body and its optional attributes. A named
    tuple, not a frozen dataclass: one is built per message on the hot path,
    and a tuple is built several times faster (measured)."""

    body: bytes
    tags: str = ""
    keys: tuple[str, ...] = ()
    properties: Mapping[str, str] = NO_PROPERTIES
    queue_id: int | None = None
    sharding_key: str | None = None
    born_ts_ms: int | None = None


@dataclass(slots=True, frozen=True)
class ProduceRequest:
    """A validated produce request. ``producer_id`` and ``sequence`` are both
    set (an idempotent producer: a retry is answered from the dedup table) or
    both None."""

    messages: tuple[OutMessage, ...]
    producer_id: str | None = None
    sequence: int | None = None


class Part(NamedTuple):
    """One log entry of a produce request: messages ``indexes`` (positions in
    the request) to queue ``queue_id``, numbered ``part`` for dedup."""

    part: int
    queue_id: int
    indexes: tuple[int, ...]


def _unknown(obj: Mapping[Any, Any], known: frozenset[str], where: str) -> InvalidArgument:
    names = sorted(map(str, set(obj) - known))
    return InvalidArgument(f"unknown field{'s' if len(names) > 1 else ''} {', '.join(map(repr, names))} in {where} "
                           f"(known: {', '.join(sorted(known))})")


def parse_produce(body: Mapping[str, Any], limits: Limits) -> ProduceRequest:
    """Validate a decoded produce body (see the module docstring). Raises
    InvalidArgument (400), BatchTooLarge or MessageTooLarge (413)."""
    if not REQUEST_FIELDS.issuperset(body):
        raise _unknown(body, REQUEST_FIELDS, "the request")
    msgs = body.get("messages")
    if msgs is None:
        raise InvalidArgument("field 'messages' is required")
    if type(msgs) is not list:
        raise InvalidArgument("field 'messages' must be list")
    producer_id = body.get("producer_id")
    if producer_id is not None:
        if type(producer_id) is not str:
            raise InvalidArgument("field 'producer_id' must be str")
        if len(producer_id) > limits.max_producer_id_bytes or len(producer_id.encode()) > limits.max_producer_id_bytes:
            raise NameTooLong(f"producer_id is longer than {limits.max_producer_id_bytes} bytes (UTF-8)")
    sequence = body.get("sequence")
    if sequence is not None:
        if type(sequence) is not int:
            raise InvalidArgument("field 'sequence' must be int")
        if sequence < 0:
            raise InvalidArgument("sequence must not be negative")
    if (producer_id is None) != (sequence is None):
        raise InvalidArgument("producer_id and sequence go together")
    if not msgs:
        raise InvalidArgument("messages must hold at least one message")
    if len(msgs) > limits.max_batch_messages:
        raise BatchTooLarge(f"{len(msgs)} messages in one request; the limit is {limits.max_batch_messages}")
    return ProduceRequest(tuple([_parse_message(m, i, limits) for i, m in enumerate(msgs)]), producer_id, sequence)


def _parse_message(m: Any, i: int, limits: Limits) -> OutMessage:
    """``messages[i]``, validated (the hot path: plain type checks, one lookup per field)."""
    if type(m) is not dict:
        raise InvalidArgument(f"messages[{i}] must be an object")
    if not MESSAGE_FIELDS.issuperset(m):
        raise _unknown(m, MESSAGE_FIELDS, f"messages[{i}]")
    get = m.get
    body = get("body")
    tb = type(body)
    if tb is str:
        body = body.encode("utf-8")
    elif tb is not bytes:
        b64 = get("body_b64")
        if type(b64) is not str:
            raise InvalidArgument(f"messages[{i}] needs a body (a string, bytes in msgpack, or body_b64)")
        try:
            body = base64.b64decode(b64, validate=True)
        except (binascii.Error, ValueError):
            raise InvalidArgument(f"messages[{i}].body_b64 is not valid base64") from None
    if len(body) > limits.max_message_bytes:
        raise MessageTooLarge(f"a message body of {len(body)} bytes exceeds the limit of {limits.max_message_bytes}")
    tags = get("tags") or ""
    if type(tags) is not str or len(tags) > MAX_TAG_CHARS or "||" in tags:
        raise InvalidArgument(f"messages[{i}].tags must be one tag (a string of at most {MAX_TAG_CHARS} "
                              f"characters, no '||')")
    keys = get("keys") or ()
    if keys:
        if type(keys) is str:
            keys = [k for k in keys.split(" ") if k]
        if (type(keys) is not list or len(keys) > MAX_KEYS
                or not all(type(k) is str and 0 < len(k) <= MAX_KEY_CHARS for k in keys)):
            raise InvalidArgument(f"messages[{i}].keys must be a list of at most {MAX_KEYS} non-empty strings")
        keys = tuple(keys)
    props = get("properties") or {}
    if props:
        if type(props) is not dict or not all(type(k) is str and type(v) is str for k, v in props.items()):
            raise InvalidArgument(f"messages[{i}].properties must be an object of string values")
        if len(props) > limits.max_properties:
            raise InvalidArgument(f"messages[{i}].properties holds {len(props)} properties; "
                                  f"the limit is {limits.max_properties}")
        _check_property_sizes(props, i, limits)
    qid = get("queue_id")
    if qid is not None and type(qid) is not int:
        raise InvalidArgument(f"messages[{i}].queue_id must be an integer")
    skey = get("sharding_key")
    if skey is not None and type(skey) is not str:
        raise InvalidArgument(f"messages[{i}].sharding_key must be a string")
    born = get("born_ts")
    if born is not None and (type(born) is not int or born < 0):
        raise InvalidArgument(f"messages[{i}].born_ts must be a non-negative integer (ms)")
    return OutMessage(body, tags, keys, props, qid, skey, born)


def _check_property_sizes(props: dict[str, str], i: int, limits: Limits) -> None:
    """Every property name and value of ``messages[i]`` within its limit (PropertyTooLong)."""
    kmax, vmax = limits.max_property_key_chars, limits.max_property_value_chars
    for k, v in props.items():
        if len(k) > kmax:
            raise PropertyTooLong(f"messages[{i}].properties: a property name of {len(k)} characters exceeds "
                                  f"the limit of {kmax}")
        if len(v) > vmax:
            raise PropertyTooLong(f"messages[{i}].properties[{k!r}]: a value of {len(v)} characters exceeds "
                                  f"the limit of {vmax}")


def plan_produce(topic: str, request: ProduceRequest, queues: int, round_robin: int) -> list[Part]:
    """The parts of ``request`` to a topic of ``queues`` queues. Messages
    without ``queue_id`` or ``sharding_key`` go to queue ``round_robin %
    queues`` (the caller's counter, one value per request). Raises
    QueueNotFound (404) for an explicit queue the topic does not have."""
    groups: dict[tuple[bool, int], list[int]] = {}  # (by round robin?, queue) -> message indexes
    for i, m in enumerate(request.messages):
        if m.queue_id is not None:
            if not 0 <= m.queue_id < queues:
                raise QueueNotFound(f"topic {topic!r} has queues 0..{queues - 1}; there is no queue {m.queue_id}",
                                    topic=topic, queue_id=m.queue_id)
            key = (False, m.queue_id)
        elif m.sharding_key is not None:
            key = (False, sharding_queue(m.sharding_key, queues))
        else:
            key = (True, 0)
        g = groups.get(key)
        if g is None:
            groups[key] = [i]
        else:
            g.append(i)
    return [Part(part, round_robin % queues if rr else q, tuple(idxs))
            for part, ((rr, q), idxs) in enumerate(groups.items())]
