"""The commands the broker writes into the replicated log, one per entry.

Every entry body is one msgpack array whose first element is the command
kind. The leader stamps everything that must be identical on every replica
(store timestamp, queue choice, tag hashes, keys) into the command before it
proposes it, so that applying is deterministic.

``produce`` is laid out so that the framed message records are the *last*
element: a msgpack ``bin`` at the end of the body. Its data therefore starts
at ``len(body) - len(records)``, and each message's physical offset in the
CommitLog is ``entry body position + that start + the record's offset``.

A produce's ``producer_id`` and ``sequence`` are written once, in the
command; its records carry nil in theirs (entries written before did copy
them into every record, and still apply the same: ``broker.message``).

| kind | fields after the kind |
|---|---|
| NOOP (0) | — |
| PRODUCE (1) | topic, queue_id, store_ts_ms, producer_id or nil, sequence or nil, part, tag_hashes [i64], keys [[str]], records (bin) |
| COMMIT_OFFSET (2) | group, topic, queue_id, offset, reset (moves the offset back only when true), [max_groups] |
| CREATE_TOPIC (3) | name, queues, [max_topics] |
| UPDATE_TOPIC (4) | name, queues |
| ACL_ADD_USER (20) | access_key, secret_key, admin (bool) |
| ACL_REMOVE_USER (21) | access_key |
| ACL_GRANT (22) | access_key, resource ("topic" or "group"), pattern, actions [str] |
| ACL_REVOKE (23) | access_key, resource, pattern, actions [str] |

The ACL commands (:mod:`broker.acl`) put user secrets into the log: the data
directory (log, checkpoint) must be readable by the node's user only.

``[max_groups]`` and ``[max_topics]``: the leader's limit when it proposed
the command, appended (entries written before have none: no limit). Applying
refuses, identically on every node, a commit that would add one group past
``max_groups`` or a topic past ``max_topics`` (two proposals can pass the
leader's own check at once); the result is then None.
"""

from __future__ import annotations

import enum
from dataclasses import dataclass, field

import msgpack


class Kind(enum.IntEnum):
    NOOP = 0
    PRODUCE = 1
    COMMIT_OFFSET = 2
    CREATE_TOPIC = 3
    UPDATE_TOPIC = 4
    ACL_ADD_USER = 20
    ACL_REMOVE_USER = 21
    ACL_GRANT = 22
    ACL_REVOKE = 23


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
    max_groups: int | None = None  # refused at apply if it would add a group past this


@dataclass(slots=True, frozen=True)
class CreateTopic:
    name: str
    queues: int
    max_topics: int | None = None  # refused at apply if it would add a topic past this


@dataclass(slots=True, frozen=True)
class UpdateTopic:
    name: str
    queues: int


@dataclass(slots=True, frozen=True)
class Noop:
    pass


@dataclass(slots=True, frozen=True)
class AclAddUser:
    access_key: str
    secret_key: str = field(repr=False)  # never in a log line
    admin: bool


@dataclass(slots=True, frozen=True)
class AclRemoveUser:
    access_key: str


@dataclass(slots=True, frozen=True)
class AclGrant:
    access_key: str
    resource: str
    pattern: str
    actions: tuple[str, ...]


@dataclass(slots=True, frozen=True)
class AclRevoke:
    access_key: str
    resource: str
    pattern: str
    actions: tuple[str, ...]


AclCommand = AclAddUser | AclRemoveUser | AclGrant | AclRevoke
Command = Produce | CommitOffset | CreateTopic | UpdateTopic | Noop | AclCommand


def encode(cmd: Command) -> bytes:
    if isinstance(cmd, Produce):
        return msgpack.packb(
            [Kind.PRODUCE, cmd.topic, cmd.queue_id, cmd.store_ts_ms, cmd.producer_id, cmd.sequence, cmd.part,
             cmd.tag_hashes, cmd.keys, cmd.records],
            use_bin_type=True,
        )
    if isinstance(cmd, CommitOffset):
        limit = [] if cmd.max_groups is None else [cmd.max_groups]
        return msgpack.packb([Kind.COMMIT_OFFSET, cmd.group, cmd.topic, cmd.queue_id, cmd.offset, cmd.reset, *limit])
    if isinstance(cmd, CreateTopic):
        return msgpack.packb([Kind.CREATE_TOPIC, cmd.name, cmd.queues, *([] if cmd.max_topics is None else [cmd.max_topics])])
    if isinstance(cmd, UpdateTopic):
        return msgpack.packb([Kind.UPDATE_TOPIC, cmd.name, cmd.queues])
    if isinstance(cmd, AclAddUser):
        return msgpack.packb([Kind.ACL_ADD_USER, cmd.access_key, cmd.secret_key, cmd.admin])
    if isinstance(cmd, AclRemoveUser):
        return msgpack.packb([Kind.ACL_REMOVE_USER, cmd.access_key])
    if isinstance(cmd, (AclGrant, AclRevoke)):
        kind = Kind.ACL_GRANT if isinstance(cmd, AclGrant) else Kind.ACL_REVOKE
        return msgpack.packb([kind, cmd.access_key, cmd.resource, cmd.pattern, list(cmd.actions)])
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


def _limit(obj: list[object], at: int, what: str) -> int | None:
    """The leader's limit appended at ``obj[at]``, or None (written before limits existed)."""
    if len(obj) <= at or obj[at] is None:
        return None
    return _int(obj[at], what, 1)


def _commit_offset(obj: list[object]) -> CommitOffset:
    _arity(obj, 5, 6, 7)  # 5: written before ``reset`` existed; 7: with the leader's max_groups
    reset = obj[5] if len(obj) > 5 else False
    if type(reset) is not bool:
        raise ValueError(f"reset must be a boolean, not {reset!r:.40}")
    return CommitOffset(_str(obj[1], "group"), _str(obj[2], "topic"), _int(obj[3], "queue_id"),
                        _int(obj[4], "offset"), reset, _limit(obj, 6, "max_groups"))


def _topic(obj: list[object], *arity: int) -> tuple[str, int]:
    _arity(obj, *(arity or (3,)))
    return _str(obj[1], "topic name"), _int(obj[2], "queues", 1, MAX_QUEUES)


def _create_topic(obj: list[object]) -> CreateTopic:
    name, queues = _topic(obj, 3, 4)  # 4: with the leader's max_topics
    return CreateTopic(name, queues, _limit(obj, 3, "max_topics"))


def _acl_rule(obj: list[object]) -> tuple[str, str, str, tuple[str, ...]]:
    _arity(obj, 5)
    actions = obj[4]
    if type(actions) is not list:
        raise ValueError(f"actions must be an array, not {actions!r:.40}")
    return (_str(obj[1], "access_key"), _str(obj[2], "resource"), _str(obj[3], "pattern"),
            tuple(_str(a, "action") for a in actions))


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
            return _create_topic(obj)
        if kind is Kind.UPDATE_TOPIC:
            return UpdateTopic(*_topic(obj))
        if kind is Kind.ACL_ADD_USER:
            _arity(obj, 4)
            if type(obj[3]) is not bool:
                raise ValueError(f"admin must be a boolean, not {obj[3]!r:.40}")
            return AclAddUser(_str(obj[1], "access_key"), _str(obj[2], "secret_key"), obj[3])
        if kind is Kind.ACL_REMOVE_USER:
            _arity(obj, 2)
            return AclRemoveUser(_str(obj[1], "access_key"))
        if kind is Kind.ACL_GRANT:
            return AclGrant(*_acl_rule(obj))
        if kind is Kind.ACL_REVOKE:
            return AclRevoke(*_acl_rule(obj))
        _arity(obj, 1)
        return Noop()
    except (ValueError, TypeError, IndexError, msgpack.UnpackException, RecursionError) as exc:
        raise ValueError(f"undecodable broker command: {exc}") from exc
