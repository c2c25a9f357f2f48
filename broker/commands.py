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


def decode(body: bytes) -> Command:
    """Decode an entry body written by ``encode``. Entries are written by the
    leader only, so a failure here means a bug or corruption: raise ValueError."""
    try:
        obj = msgpack.unpackb(body, raw=False, use_list=True)
        kind = Kind(obj[0])
        if kind is Kind.PRODUCE:
            return Produce(obj[1], obj[2], obj[3], obj[4], obj[5], obj[6], obj[7], obj[8], obj[9])
        if kind is Kind.COMMIT_OFFSET:
            return CommitOffset(obj[1], obj[2], obj[3], obj[4], bool(obj[5]) if len(obj) > 5 else False,
                                obj[6] if len(obj) > 6 else None)
        if kind is Kind.CREATE_TOPIC:
            return CreateTopic(obj[1], obj[2], obj[3] if len(obj) > 3 else None)
        if kind is Kind.UPDATE_TOPIC:
            return UpdateTopic(obj[1], obj[2])
        if kind is Kind.ACL_ADD_USER:
            return AclAddUser(obj[1], obj[2], bool(obj[3]))
        if kind is Kind.ACL_REMOVE_USER:
            return AclRemoveUser(obj[1])
        if kind is Kind.ACL_GRANT:
            return AclGrant(obj[1], obj[2], obj[3], tuple(obj[4]))
        if kind is Kind.ACL_REVOKE:
            return AclRevoke(obj[1], obj[2], obj[3], tuple(obj[4]))
        return Noop()
    except (ValueError, TypeError, IndexError, msgpack.UnpackException) as exc:
        raise ValueError(f"undecodable broker command: {exc}") from exc
