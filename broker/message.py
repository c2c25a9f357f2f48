"""The message model and its record framing in the CommitLog.

A ``produce`` command carries a batch of messages for one topic and queue as
one ``bin`` of concatenated records. Each message is its own framed record,
so it has its own physical offset in the CommitLog (entry body position +
offset of the record in the body) and can be read back alone with a single
positional read of its size, then checked by itself (magic, size, CRC).

Record layout (all integers big-endian, unsigned)::

    offset  size  field
    0       4     total_size   bytes of the whole record, header included (>= 12)
    4       4     magic        0x524D5131 ("RMQ1"): format and version marker
    8       4     crc32        zlib.crc32 of the payload (bytes 12 .. total_size)
    12      n     payload      msgpack array of 10 elements:
                                 [topic (str), queue_id (int), tags (str),
                                  keys ([str]), properties ({str: str}),
                                  born_ts_ms (int), store_ts_ms (int),
                                  producer_id (str | nil), sequence (int | nil),
                                  body (bin)]

``total_size = 12 + n``. Records follow one another with no padding.

``producer_id`` and ``sequence``: the broker writes nil in both since the
producer's identity moved to the ``produce`` command, once per log entry
(``broker.commands``); records written before carry the entry's producer id
and sequence in every record. Both forms decode and apply alike: nothing
reads these two fields back from a record.

Also here: the stable hashes everything deterministic relies on
(:func:`tag_hash` for ConsumeQueue tag filtering, :func:`sharding_queue` for
queue choice by key) and the message id format (:func:`format_msg_id`).
"""

from __future__ import annotations

import hashlib
import logging
import re
import struct
import zlib
from collections.abc import Iterable, Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any, Final

import msgpack

log = logging.getLogger(__name__)

__all__ = [
    "HEADER_BYTES",
    "MAGIC",
    "Message",
    "RecordError",
    "decode_record",
    "encode_records",
    "format_msg_id",
    "iter_records",
    "parse_msg_id",
    "record_sizes",
    "sharding_queue",
    "tag_hash",
]

MAGIC: Final = 0x524D5131  # b"RMQ1"
HEADER_BYTES: Final = 12
_HEADER = struct.Struct(">III")  # total_size, magic, crc32
_SIZE_MAGIC = struct.Struct(">II")
_MAX_U32: Final = 0xFFFF_FFFF
_MAX_U64: Final = 0xFFFF_FFFF_FFFF_FFFF
_PAYLOAD_FIELDS: Final = 10


class RecordError(ValueError):
    """A message record is malformed: short, wrong magic, wrong size or CRC, bad payload."""


@dataclass(slots=True, frozen=True)
class Message:
    """One message as stored. ``store_ts_ms`` is stamped by the leader so that
    every replica stores the same bytes; ``producer_id``/``sequence`` are the
    producer's dedup identity, or None."""

    topic: str
    queue_id: int
    body: bytes
    tags: str = ""
    keys: tuple[str, ...] = ()
    properties: Mapping[str, str] = field(default_factory=dict)
    born_ts_ms: int = 0
    store_ts_ms: int = 0
    producer_id: str | None = None
    sequence: int | None = None


# ----------------------------------------------------------------------
# records
# ----------------------------------------------------------------------
def encode_records(messages: list[Message] | tuple[Message, ...]) -> bytes:
    """Frame ``messages`` as concatenated records (see the module docstring).

    One packer and one final join: no per-message copies of the batch.
    """
    packer = msgpack.Packer(use_bin_type=True, autoreset=True)
    pack_header = _HEADER.pack
    crc32 = zlib.crc32
    parts: list[bytes] = []
    append = parts.append
    for m in messages:
        payload = packer.pack([
            m.topic, m.queue_id, m.tags, list(m.keys), dict(m.properties),
            m.born_ts_ms, m.store_ts_ms, m.producer_id, m.sequence, m.body,
        ])
        size = HEADER_BYTES + len(payload)
        if size > _MAX_U32:
            raise RecordError(f"a record of {size} bytes does not fit the 32-bit size field")
        append(pack_header(size, MAGIC, crc32(payload)))
        append(payload)
    return b"".join(parts)


def _bin_header(n: int) -> bytes:
    if n < 0x100:
        return b"\xc4" + n.to_bytes(1, "big")
    if n < 0x10000:
        return b"\xc5" + n.to_bytes(2, "big")
    return b"\xc6" + n.to_bytes(4, "big")


_EMPTY_TAGS_KEYS_PROPS = msgpack.packb("") + msgpack.packb([]) + msgpack.packb({})


def encode_batch(topic: str, queue_id: int, store_ts_ms: int, producer_id: str | None, sequence: int | None,
                 items: Iterable[tuple[bytes, str, Sequence[str], Mapping[str, str], int]]) -> bytes:
    """``encode_records`` for one produce batch, straight from its fields: the
    same bytes, without building a ``Message`` per message. ``items`` are
    ``(body, tags, keys, properties, born_ts_ms)``. The fields shared by the
    batch are packed once; each body is copied once (into the final join) and
    checksummed in place."""
    packb = msgpack.Packer(use_bin_type=True, autoreset=True).pack
    head = b"\x9a" + packb(topic) + packb(queue_id)  # a 10-element array
    shared = packb(store_ts_ms) + packb(producer_id) + packb(sequence)
    pack_header = _HEADER.pack
    crc32 = zlib.crc32
    parts: list[bytes] = []
    append = parts.append
    plain = head + _EMPTY_TAGS_KEYS_PROPS
    cache: dict[tuple[int, int], tuple[bytes, int]] = {}  # (born, body size) -> (mid, its crc)
    for body, tags, keys, props, born in items:
        if not tags and not keys and not props:
            n = len(body)
            hit = cache.get((born, n))
            if hit is None:
                mid = plain + packb(born) + shared + _bin_header(n)
                hit = cache[(born, n)] = (mid, crc32(mid))
            mid, crc = hit
            size = HEADER_BYTES + len(mid) + n
            if size > _MAX_U32:
                raise RecordError(f"a record of {size} bytes does not fit the 32-bit size field")
            append(pack_header(size, MAGIC, crc32(body, crc)))
            append(mid)
            append(body)
            continue
        else:
            mid = head + packb(tags) + packb(list(keys)) + packb(dict(props)) + packb(born) + shared + _bin_header(len(body))
        size = HEADER_BYTES + len(mid) + len(body)
        if size > _MAX_U32:
            raise RecordError(f"a record of {size} bytes does not fit the 32-bit size field")
        append(pack_header(size, MAGIC, crc32(body, crc32(mid))))
        append(mid)
        append(body)
    return b"".join(parts)


def record_sizes(buf: bytes | memoryview) -> list[tuple[int, int]]:
    """``(offset, size)`` of every record in ``buf``, reading headers only.

    Used when applying ``produce`` (the hot path): the payloads were checked
    by the leader that framed them and are covered by the log entry's CRC, so
    only the framing (magic, sizes, exact fit) is verified here.
    """
    out: list[tuple[int, int]] = []
    end = len(buf)
    off = 0
    unpack = _SIZE_MAGIC.unpack_from
    while off < end:
        if end - off < HEADER_BYTES:
            raise RecordError(f"{end - off} trailing bytes at offset {off}: shorter than a record header")
        size, magic = unpack(buf, off)
        if magic != MAGIC:
            raise RecordError(f"bad magic {magic:#010x} at offset {off} (expected {MAGIC:#010x})")
        if size < HEADER_BYTES or off + size > end:
            raise RecordError(f"record at offset {off} claims {size} bytes; {end - off} remain")
        out.append((off, size))
        off += size
    return out


def record_view(buf: bytes | memoryview, msg_id: str, queue_offset: int) -> dict[str, Any]:
    """One record as the HTTP API's message object, for the read hot path.

    The framing and CRC are checked (so a damaged record is never served), but
    not each field's type: records are written only by the leader from
    validated input, and the CRC covers them since. ``decode_record`` is the
    strict form."""
    if len(buf) < HEADER_BYTES:
        raise RecordError(f"{len(buf)} bytes is shorter than a record header")
    size, magic, crc = _HEADER.unpack_from(buf, 0)
    if magic != MAGIC or size != len(buf):
        raise RecordError(f"bad record framing (magic {magic:#010x}, size {size}, buffer {len(buf)})")
    payload = buf[HEADER_BYTES:]
    if zlib.crc32(payload) != crc:
        raise RecordError("record CRC mismatch")
    try:
        topic, queue_id, tags, keys, props, born, store, _pid, _seq, body = msgpack.unpackb(payload, raw=False)
    except Exception as exc:  # msgpack raises several unrelated types
        raise RecordError(f"undecodable record payload: {exc}") from None
    return {"queue_offset": queue_offset, "msg_id": msg_id, "topic": topic, "queue_id": queue_id, "body": body,
            "tags": tags, "keys": keys, "properties": props, "born_ts": born, "store_ts": store}


def iter_records(buf: bytes | memoryview) -> Iterator[tuple[int, int, Message]]:
    """Yield ``(offset, size, message)`` for every record in ``buf``, each
    fully validated; ``buf[offset:offset + size]`` decodes alone."""
    view = memoryview(buf)
    for off, size in record_sizes(view):
        yield off, size, decode_record(view[off:off + size])


def decode_record(buf: bytes | memoryview) -> Message:
    """Decode exactly one record; ``buf`` must hold exactly that record.

    Checks the header (length, magic, size), the CRC of the payload and the
    payload's shape and types; anything wrong raises :class:`RecordError`.
    """
    n = len(buf)
    if n < HEADER_BYTES:
        raise RecordError(f"{n} bytes: shorter than a record header ({HEADER_BYTES})")
    size, magic, crc = _HEADER.unpack_from(buf, 0)
    if magic != MAGIC:
        raise RecordError(f"bad magic {magic:#010x} (expected {MAGIC:#010x})")
    if size != n:
        raise RecordError(f"record claims {size} bytes but the buffer holds {n}")
    payload = memoryview(buf)[HEADER_BYTES:]
    actual = zlib.crc32(payload)
    if actual != crc:
        raise RecordError(f"CRC mismatch: stored {crc:#010x}, computed {actual:#010x}")
    try:
        obj = msgpack.unpackb(payload, raw=False, use_list=True, strict_map_key=True)
    except (ValueError, TypeError, msgpack.UnpackException) as exc:
        raise RecordError(f"undecodable payload: {exc}") from exc
    return _message_from(obj)


def _message_from(obj: Any) -> Message:
    """Type-check a decoded payload array and build the Message."""
    if not isinstance(obj, list) or len(obj) != _PAYLOAD_FIELDS:
        raise RecordError(f"payload is not an array of {_PAYLOAD_FIELDS} fields")
    topic, queue_id, tags, keys, props, born, store, producer_id, sequence, body = obj
    if not isinstance(topic, str):
        raise RecordError("payload field topic is not a string")
    if not _is_int(queue_id) or queue_id < 0:
        raise RecordError("payload field queue_id is not a non-negative integer")
    if not isinstance(tags, str):
        raise RecordError("payload field tags is not a string")
    if not isinstance(keys, list) or not all(isinstance(k, str) for k in keys):
        raise RecordError("payload field keys is not a list of strings")
    if not isinstance(props, dict) or not all(isinstance(v, str) for v in props.values()):
        raise RecordError("payload field properties is not a map of strings")
    if not _is_int(born) or not _is_int(store):
        raise RecordError("payload timestamps are not integers")
    if producer_id is not None and not isinstance(producer_id, str):
        raise RecordError("payload field producer_id is neither nil nor a string")
    if sequence is not None and not _is_int(sequence):
        raise RecordError("payload field sequence is neither nil nor an integer")
    if not isinstance(body, bytes):
        raise RecordError("payload field body is not binary")
    return Message(topic, queue_id, body, tags, tuple(keys), props, born, store, producer_id, sequence)


def _is_int(x: object) -> bool:
    return isinstance(x, int) and not isinstance(x, bool)


# ----------------------------------------------------------------------
# stable hashes
# ----------------------------------------------------------------------
def tag_hash(tags: str) -> int:
    """The tag hash code stored in ConsumeQueue entries: a signed 64-bit
    BLAKE2b digest of the UTF-8 tags, 0 for no tags.

    Stable across processes, Python versions and machines (never ``hash()``),
    since replicas and restarts must agree. Pulls filter by this code first
    and then compare the real tags, as different tags may share a code.
    """
    if not tags:
        return 0
    digest = hashlib.blake2b(tags.encode("utf-8"), digest_size=8).digest()
    return int.from_bytes(digest, "big", signed=True)


def sharding_queue(key: str, queues: int) -> int:
    """The queue for a sharding key: the same key always lands in the same
    queue while the topic keeps ``queues`` queues (unsigned 64-bit BLAKE2b of
    the UTF-8 key, modulo ``queues``)."""
    if queues < 1:
        raise ValueError(f"queues must be at least 1, not {queues}")
    digest = hashlib.blake2b(key.encode("utf-8"), digest_size=8).digest()
    return int.from_bytes(digest, "big") % queues


# ----------------------------------------------------------------------
# message ids
# ----------------------------------------------------------------------
_MSG_ID = re.compile(r"(.+)-([0-9A-Fa-f]{16})")


def format_msg_id(group: str, phys_offset: int) -> str:
    """``<group>-<physical offset as 16 upper-case hex digits>``: identical on
    every replica of the group, and enough to read the message in one read."""
    if not group:
        raise ValueError("group must not be empty")
    if not 0 <= phys_offset <= _MAX_U64:
        raise ValueError(f"physical offset {phys_offset} is not an unsigned 64-bit integer")
    return f"{group}-{phys_offset:016X}"


def format_msg_ids(group: str, positions: list[int]) -> list[str]:
    """``format_msg_id`` for many offsets of one group (checked once, not per id)."""
    if positions:
        format_msg_id(group, min(positions)), format_msg_id(group, max(positions))
    prefix = group + "-"
    return [f"{prefix}{pos:016X}" for pos in positions]


def parse_msg_id(s: str) -> tuple[str, int]:
    """Split a message id into ``(group, physical offset)``; ValueError if it is
    not ``<group>-<16 hex digits>``. Groups may contain '-': the last one splits."""
    if not isinstance(s, str):
        raise ValueError(f"a message id is a string, not {type(s).__name__}")
    m = _MSG_ID.fullmatch(s)
    if m is None:
        raise ValueError(f"malformed message id {s!r}: expected '<group>-<16 hex digits>'")
    return m.group(1), int(m.group(2), 16)
