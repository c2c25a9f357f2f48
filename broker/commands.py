"""The commands the broker writes into the replicated log, one per entry.

Every entry body is one msgpack array whose first element is the command
kind. The leader stamps everything that must be identical on every replica
(store timestamp, queue choice, tag hashes, keys) into the command before it
proposes it, so that applying is deterministic.

``produce`` is laid out so that the framed message records are the *last*
element: a msgpack ``bin`` at the end of the body. Its data therefore starts
at ``len(body) - len(records)``, and each message's physical offset in the
CommitLog is ``entry body position + that start + the record's offset``.

| kind | fields after the kind |
|---|---|
| NOOP (0) | — |
| PRODUCE (1) | topic, queue_id, store_ts_ms, producer_id or nil, sequence or nil, part, tag_hashes [i64], keys [[str]], records (bin) |
| COMMIT_OFFSET (2) | group, topic, queue_id, offset, reset (moves the offset back only when true) |
| CREATE_TOPIC (3) | name, queues |
| UPDATE_TOPIC (4) | name, queues |
"""

from __future__ import annotations

import enum
from dataclasses import dataclass

import msgpack


class Kind(enum.IntEnum):
    NOOP = 0
    PRODUCE = 1
    COMMIT_OFFSET = 2
    CREATE_TOPIC = 3
    UPDATE_TOPIC = 4


@dataclass(slots=True, frozen=True)
class Produce:
    topic: str
    queue_id: int
    store_ts_ms: int
    producer_id: str | None
    sequence: int | None
    part: int
    tag_hashes: list[int]
    keys: list[list[str]]
    records: bytes


@dataclass(slots=True, frozen=True)
class CommitOffset:
    group: str
    topic: str
    queue_id: int
    offset: int
    reset: bool = False


@dataclass(slots=True, frozen=True)
class CreateTopic:
    name: str
    queues: int


@dataclass(slots=True, frozen=True)
class UpdateTopic:
    name: str
    queues: int


@dataclass(slots=True, frozen=True)
class Noop:
    pass


Command = Produce | CommitOffset | CreateTopic | UpdateTopic | Noop


def encode(cmd: Command) -> bytes:
    if isinstance(cmd, Produce):
        return msgpack.packb(
            [Kind.PRODUCE, cmd.topic, cmd.queue_id, cmd.store_ts_ms, cmd.producer_id, cmd.sequence, cmd.part,
             cmd.tag_hashes, cmd.keys, cmd.records],
            use_bin_type=True,
        )
    if isinstance(cmd, CommitOffset):
        return msgpack.packb([Kind.COMMIT_OFFSET, cmd.group, cmd.topic, cmd.queue_id, cmd.offset, cmd.reset])
    if isinstance(cmd, CreateTopic):
        return msgpack.packb([Kind.CREATE_TOPIC, cmd.name, cmd.queues])
    if isinstance(cmd, UpdateTopic):
        return msgpack.packb([Kind.UPDATE_TOPIC, cmd.name, cmd.queues])
    return msgpack.packb([Kind.NOOP])


MAX_QUEUES = 1 << 16
"""The most queues a CREATE_TOPIC or UPDATE_TOPIC may name. The service's own
(configurable) ``max_topic_queues`` is far lower; this bound is fixed so that
every replica, whatever its configuration, judges a command the same way."""
_I64 = 1 << 63


def _int(v: object, what: str, lo: int = 0, hi: int = _I64 - 1) -> int:
    if type(v) is not int or not lo <= v <= hi:
        raise ValueError(f"{what} must be an integer in {lo}..{hi}, not {v!r:.40}")
    return v


def _str(v: object, what: str) -> str:
    if type(v) is not str or not v:
        raise ValueError(f"{what} must be a non-empty string, not {v!r:.40}")
    return v


def _arity(obj: list[object], *allowed: int) -> None:
    if len(obj) not in allowed:
        raise ValueError(f"{Kind(obj[0]).name} must have {' or '.join(map(str, allowed))} items, not {len(obj)}")


def _produce(obj: list[object]) -> Produce:
    _arity(obj, 10)
    producer_id, sequence, tag_hashes, keys, records = obj[4], obj[5], obj[7], obj[8], obj[9]
    if producer_id is not None:
        _str(producer_id, "producer_id")
    if sequence is not None:
        _int(sequence, "sequence", -_I64)
    if type(tag_hashes) is not list:
        raise ValueError("tag_hashes must be an array")
    for h in tag_hashes:
        _int(h, "tag hash", -_I64)
    if type(keys) is not list or any(type(k) is not list or any(type(x) is not str for x in k) for k in keys):
        raise ValueError("keys must be an array of arrays of strings")
    if type(records) is not bytes:
        raise ValueError("records must be a bin")
    return Produce(_str(obj[1], "topic"), _int(obj[2], "queue_id"), _int(obj[3], "store_ts_ms"),
                   producer_id, sequence, _int(obj[6], "part"), tag_hashes, keys, records)  # type: ignore[arg-type]


def _commit_offset(obj: list[object]) -> CommitOffset:
    _arity(obj, 5, 6)  # 5: written before ``reset`` existed
    reset = obj[5] if len(obj) > 5 else False
    if type(reset) is not bool:
        raise ValueError(f"reset must be a boolean, not {reset!r:.40}")
    return CommitOffset(_str(obj[1], "group"), _str(obj[2], "topic"), _int(obj[3], "queue_id"),
                        _int(obj[4], "offset"), reset)


def _topic(obj: list[object]) -> tuple[str, int]:
    _arity(obj, 3)
    return _str(obj[1], "topic name"), _int(obj[2], "queues", 1, MAX_QUEUES)


def decode(body: bytes) -> Command:
    """Decode an entry body written by ``encode``, checking every field's type
    and range. Entries are written by the leader only, so a failure here means
    a bug, corruption or a faulty peer: raise ValueError (the state machine
    applies such an entry as a no-op, identically on every replica)."""
    try:
        obj = msgpack.unpackb(body, raw=False, use_list=True)
        if type(obj) is not list or not obj or type(obj[0]) is not int:
            raise ValueError("a command must be an array starting with its kind")
        kind = Kind(obj[0])
        if kind is Kind.PRODUCE:
            return _produce(obj)
        if kind is Kind.COMMIT_OFFSET:
            return _commit_offset(obj)
        if kind is Kind.CREATE_TOPIC:
            return CreateTopic(*_topic(obj))
        if kind is Kind.UPDATE_TOPIC:
            return UpdateTopic(*_topic(obj))
        _arity(obj, 1)
        return Noop()
    except (ValueError, TypeError, IndexError, msgpack.UnpackException, RecursionError) as exc:
        raise ValueError(f"undecodable broker command: {exc}") from exc
