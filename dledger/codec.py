"""Wire encoding of peer messages: msgpack arrays, framed by a length prefix.

A frame on a peer connection is::

    +----------------------+------------------------------+
    | length: u32 big-end. | payload: `length` bytes      |
    +----------------------+------------------------------+

The payload is one msgpack array ``[type, term, src, dst, fields...]``:

| type | message | fields after dst |
|---|---|---|
| 1 | AppendEntries | prev_log_index, prev_log_term, leader_commit, entries |
| 2 | AppendEntriesReply | success, match_index, reject_index, hint_index, hint_term |
| 3 | RequestVote | last_log_index, last_log_term, pre_vote, transfer |
| 4 | RequestVoteReply | granted, pre_vote |
| 5 | TimeoutNow | — |
| 6 | InstallSnapshot | index, term, next_position, data |
| 7 | InstallSnapshotReply | match_index |
| 100 | Hello (first frame of a connection) | cluster name (term is 0, dst is "") |

``entries`` is a flat array ``[term, index, kind, data, term, index, kind,
data, ...]`` (4 items an entry), ``data`` a msgpack bin. ``decode`` checks
every field's type and range and raises ``CodecError`` for anything else.
"""

from __future__ import annotations

import struct
from typing import Any

import msgpack

from dledger.core.messages import (
    AppendEntries,
    AppendEntriesReply,
    Entry,
    EntryKind,
    InstallSnapshot,
    InstallSnapshotReply,
    Message,
    NodeId,
    RequestVote,
    RequestVoteReply,
    Snapshot,
    SnapshotMeta,
    TimeoutNow,
)
from dledger.errors import CodecError

FRAME_HEADER = struct.Struct(">I")
MAX_FRAME_BYTES = 64 << 20
MAX_ID_CHARS = 128
HELLO = 100

_AE, _AER, _RV, _RVR, _TN, _IS, _ISR = 1, 2, 3, 4, 5, 6, 7
_KINDS = (EntryKind.NORMAL, EntryKind.NOOP)


def encode(m: Message) -> bytes:
    """The msgpack payload of ``m`` (no length prefix)."""
    t = type(m)
    if t is AppendEntries:
        flat: list[Any] = []
        ext = flat.extend
        for e in m.entries:  # type: ignore[union-attr]
            ext((e.term, e.index, int(e.kind), e.data))
        return msgpack.packb([_AE, m.term, m.src, m.dst, m.prev_log_index, m.prev_log_term,  # type: ignore[union-attr]
                              m.leader_commit, flat], use_bin_type=True)  # type: ignore[union-attr]
    if t is AppendEntriesReply:
        return msgpack.packb([_AER, m.term, m.src, m.dst, m.success, m.match_index, m.reject_index,  # type: ignore[union-attr]
                              m.hint_index, m.hint_term])  # type: ignore[union-attr]
    if t is RequestVote:
        return msgpack.packb([_RV, m.term, m.src, m.dst, m.last_log_index, m.last_log_term,  # type: ignore[union-attr]
                              m.pre_vote, m.transfer])  # type: ignore[union-attr]
    if t is RequestVoteReply:
        return msgpack.packb([_RVR, m.term, m.src, m.dst, m.granted, m.pre_vote])  # type: ignore[union-attr]
    if t is TimeoutNow:
        return msgpack.packb([_TN, m.term, m.src, m.dst])
    if t is InstallSnapshot:
        meta = m.snapshot.meta  # type: ignore[union-attr]
        return msgpack.packb([_IS, m.term, m.src, m.dst, meta.index, meta.term, meta.next_position,
                              m.snapshot.data], use_bin_type=True)  # type: ignore[union-attr]
    if t is InstallSnapshotReply:
        return msgpack.packb([_ISR, m.term, m.src, m.dst, m.match_index])  # type: ignore[union-attr]
    raise CodecError(f"cannot encode {t.__name__}")


def frame(payload: bytes) -> bytes:
    return FRAME_HEADER.pack(len(payload)) + payload


def encode_hello(node_id: str, cluster: str) -> bytes:
    return msgpack.packb([HELLO, 0, node_id, "", cluster])


def decode_hello(payload: bytes) -> tuple[str, str]:
    obj = _unpack(payload)
    if len(obj) != 5 or obj[0] != HELLO:
        raise CodecError("expected a hello frame")
    return _id(obj[2]), _str(obj[4], "cluster")


def _unpack(payload: bytes) -> list[Any]:
    try:
        obj = msgpack.unpackb(payload, raw=False, use_list=True, strict_map_key=True,
                              max_bin_len=MAX_FRAME_BYTES, max_str_len=1 << 16, max_array_len=1 << 24,
                              max_map_len=0, max_ext_len=0)
    except Exception as exc:  # msgpack raises a zoo of exception types on bad input
        raise CodecError(f"undecodable frame: {type(exc).__name__}: {exc}") from None
    if type(obj) is not list or len(obj) < 4:
        raise CodecError("a message must be an array of at least 4 items")
    return obj


def _nat(v: Any, name: str) -> int:
    if type(v) is not int or v < 0:
        raise CodecError(f"{name} must be a non-negative integer, not {v!r:.40}")
    return v


def _bool(v: Any, name: str) -> bool:
    if type(v) is not bool:
        raise CodecError(f"{name} must be a boolean, not {v!r:.40}")
    return v


def _str(v: Any, name: str) -> str:
    if type(v) is not str or len(v) > MAX_ID_CHARS:
        raise CodecError(f"{name} must be a short string")
    return v


def _id(v: Any) -> NodeId:
    if type(v) is not str or not 0 < len(v) <= MAX_ID_CHARS:
        raise CodecError("node ids must be non-empty short strings")
    return NodeId(v)


def _arity(obj: list[Any], n: int) -> None:
    if len(obj) != n:
        raise CodecError(f"message type {obj[0]} needs {n} items, got {len(obj)}")


def decode(payload: bytes) -> Message:
    """Decode and validate one message payload; CodecError on anything malformed."""
    obj = _unpack(payload)
    t = obj[0]
    if type(t) is not int:
        raise CodecError("message type must be an integer")
    term, src, dst = _nat(obj[1], "term"), _id(obj[2]), _id(obj[3])
    if t == _AE:
        _arity(obj, 8)
        flat = obj[7]
        if type(flat) is not list or len(flat) % 4:
            raise CodecError("entries must be a flat array of [term, index, kind, data] groups")
        prev = _nat(obj[4], "prev_log_index")
        entries = []
        expect = prev + 1
        for i in range(0, len(flat), 4):
            et, ei, ek, ed = flat[i], flat[i + 1], flat[i + 2], flat[i + 3]
            if type(et) is not int or et < 0 or ei != expect or type(ei) is not int:
                raise CodecError(f"entry {i // 4}: bad term or non-consecutive index")
            if type(ed) is not bytes or ek not in (0, 1):
                raise CodecError(f"entry {i // 4}: data must be bytes and kind 0 or 1")
            entries.append(Entry(et, ei, ed, _KINDS[ek]))
            expect += 1
        return AppendEntries(term, src, dst, prev, _nat(obj[5], "prev_log_term"), tuple(entries),
                             _nat(obj[6], "leader_commit"))
    if t == _AER:
        _arity(obj, 9)
        return AppendEntriesReply(term, src, dst, _bool(obj[4], "success"), _nat(obj[5], "match_index"),
                                  _nat(obj[6], "reject_index"), _nat(obj[7], "hint_index"), _nat(obj[8], "hint_term"))
    if t == _RV:
        _arity(obj, 8)
        return RequestVote(term, src, dst, _nat(obj[4], "last_log_index"), _nat(obj[5], "last_log_term"),
                           _bool(obj[6], "pre_vote"), _bool(obj[7], "transfer"))
    if t == _RVR:
        _arity(obj, 6)
        return RequestVoteReply(term, src, dst, _bool(obj[4], "granted"), _bool(obj[5], "pre_vote"))
    if t == _TN:
        _arity(obj, 4)
        return TimeoutNow(term, src, dst)
    if t == _IS:
        _arity(obj, 8)
        if type(obj[7]) is not bytes:
            raise CodecError("snapshot data must be bytes")
        meta = SnapshotMeta(_nat(obj[4], "index"), _nat(obj[5], "term"), _nat(obj[6], "next_position"))
        return InstallSnapshot(term, src, dst, Snapshot(meta, obj[7]))
    if t == _ISR:
        _arity(obj, 5)
        return InstallSnapshotReply(term, src, dst, _nat(obj[4], "match_index"))
    raise CodecError(f"unknown message type {t}")
