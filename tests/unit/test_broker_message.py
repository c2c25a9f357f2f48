"""Message records (framing, validation), stable hashes and message ids."""

from __future__ import annotations

import os
import struct
import subprocess
import sys
import zlib
from pathlib import Path

import msgpack
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from raftmq.broker.message import (
    HEADER_BYTES,
    MAGIC,
    Message,
    RecordError,
    decode_record,
    encode_records,
    format_msg_id,
    format_msg_ids,
    iter_records,
    parse_msg_id,
    record_sizes,
    sharding_queue,
    tag_hash,
)

REPO = Path(__file__).resolve().parents[2]

text = st.text(max_size=20)
messages = st.builds(
    Message,
    topic=st.text(min_size=1, max_size=20),
    queue_id=st.integers(0, 1024),
    body=st.binary(max_size=300),
    tags=text,
    keys=st.lists(text, max_size=4).map(tuple),
    properties=st.dictionaries(text, text, max_size=4),
    born_ts_ms=st.integers(0, 2**63 - 1),
    store_ts_ms=st.integers(0, 2**63 - 1),
    producer_id=st.none() | text,
    sequence=st.none() | st.integers(0, 2**63 - 1),
)


def sample(body: bytes = b"hello", **kw: object) -> Message:
    fields: dict[str, object] = dict(topic="orders", queue_id=3, body=body, tags="TagA", keys=("k1", "k2"),
                                     properties={"a": "b"}, born_ts_ms=1_700_000_000_000,
                                     store_ts_ms=1_700_000_000_005, producer_id="p-1", sequence=7)
    fields.update(kw)
    return Message(**fields)  # type: ignore[arg-type]


def reframe(payload: bytes) -> bytes:
    """A record with a correct header around an arbitrary payload."""
    return struct.pack(">III", HEADER_BYTES + len(payload), MAGIC, zlib.crc32(payload)) + payload


# ----------------------------------------------------------------------
# round trips
# ----------------------------------------------------------------------
@given(st.lists(messages, min_size=1, max_size=6))
@settings(max_examples=150)
def test_records_round_trip_and_each_decodes_alone_from_its_slice(msgs: list[Message]) -> None:
    buf = encode_records(msgs)
    decoded = list(iter_records(buf))
    assert [m for _, _, m in decoded] == msgs
    assert [(off, size) for off, size, _ in decoded] == record_sizes(buf)
    for off, size, m in decoded:
        assert decode_record(buf[off:off + size]) == m  # one positional read of `size` bytes
    assert sum(size for _, size, _ in decoded) == len(buf)


def test_record_layout_is_size_magic_crc_then_msgpack_payload() -> None:
    m = sample()
    rec = encode_records([m])
    size, magic, crc = struct.unpack_from(">III", rec)
    assert (size, magic) == (len(rec), 0x524D5131)
    payload = rec[12:]
    assert crc == zlib.crc32(payload)
    assert msgpack.unpackb(payload, raw=False) == [
        "orders", 3, "TagA", ["k1", "k2"], {"a": "b"}, 1_700_000_000_000, 1_700_000_000_005, "p-1", 7, b"hello"]


def test_optional_fields_round_trip_as_none_and_defaults() -> None:
    m = Message(topic="t", queue_id=0, body=b"")
    (got,) = [x for _, _, x in iter_records(encode_records([m]))]
    assert got == m
    assert got.producer_id is None and got.sequence is None and got.keys == () and dict(got.properties) == {}


def test_iter_records_accepts_a_memoryview_of_a_larger_entry() -> None:
    recs = encode_records([sample(b"a"), sample(b"bb")])
    entry = b"prefix-of-the-command" + recs  # records sit at the end of a produce entry body
    view = memoryview(entry)[len(entry) - len(recs):]
    assert [m.body for _, _, m in iter_records(view)] == [b"a", b"bb"]


def test_empty_batch_encodes_to_nothing() -> None:
    assert encode_records([]) == b""
    assert record_sizes(b"") == []
    assert list(iter_records(b"")) == []


# ----------------------------------------------------------------------
# validation
# ----------------------------------------------------------------------
def test_record_error_is_a_value_error() -> None:
    assert issubclass(RecordError, ValueError)


def test_bad_magic_is_rejected() -> None:
    rec = bytearray(encode_records([sample()]))
    rec[4] ^= 0xFF
    with pytest.raises(RecordError, match="magic"):
        decode_record(bytes(rec))
    with pytest.raises(RecordError, match="magic"):
        record_sizes(bytes(rec))


@pytest.mark.parametrize("cut", [0, 5, 11, 12, 20])
def test_short_buffer_is_rejected(cut: int) -> None:
    rec = encode_records([sample()])
    with pytest.raises(RecordError):
        decode_record(rec[:cut])


def test_truncated_last_record_is_rejected_by_record_sizes() -> None:
    recs = encode_records([sample(), sample()])
    with pytest.raises(RecordError, match="claims"):
        record_sizes(recs[:-1])
    with pytest.raises(RecordError, match="trailing"):
        record_sizes(recs + b"\x00" * 5)


def test_buffer_longer_than_the_record_is_rejected() -> None:
    rec = encode_records([sample()])
    with pytest.raises(RecordError, match="claims"):
        decode_record(rec + b"\x00")


def test_size_field_smaller_than_a_header_is_rejected() -> None:
    rec = bytearray(encode_records([sample()]))
    struct.pack_into(">I", rec, 0, 4)
    with pytest.raises(RecordError):
        record_sizes(bytes(rec))


@pytest.mark.parametrize("where", ["crc", "payload_first", "payload_last"])
def test_flipped_byte_fails_the_crc(where: str) -> None:
    rec = bytearray(encode_records([sample(b"x" * 64)]))
    pos = {"crc": 8, "payload_first": 12, "payload_last": len(rec) - 1}[where]
    rec[pos] ^= 0x01
    with pytest.raises(RecordError, match="CRC"):
        decode_record(bytes(rec))


@pytest.mark.parametrize("payload", [
    b"\xc1",  # never-used msgpack byte
    msgpack.packb([1, 2, 3]),  # wrong arity
    msgpack.packb({"topic": "t"}),  # not an array
    msgpack.packb([1, 0, "", [], {}, 0, 0, None, None, b""]),  # topic not a string
    msgpack.packb(["t", -1, "", [], {}, 0, 0, None, None, b""]),  # negative queue id
    msgpack.packb(["t", 0, "", [1], {}, 0, 0, None, None, b""]),  # key not a string
    msgpack.packb(["t", 0, "", [], {"a": 1}, 0, 0, None, None, b""]),  # property value not a string
    msgpack.packb(["t", 0, "", [], {}, "0", 0, None, None, b""]),  # timestamp not an int
    msgpack.packb(["t", 0, "", [], {}, 0, 0, 5, None, b""]),  # producer id not a string
    msgpack.packb(["t", 0, "", [], {}, 0, 0, None, "1", b""]),  # sequence not an int
    msgpack.packb(["t", 0, "", [], {}, 0, 0, None, None, "text"], use_bin_type=True),  # body not binary
])
def test_well_framed_but_malformed_payload_is_rejected(payload: bytes) -> None:
    with pytest.raises(RecordError):
        decode_record(reframe(payload))


# ----------------------------------------------------------------------
# stable hashes
# ----------------------------------------------------------------------
def test_tag_hash_is_pinned() -> None:
    # Stored in ConsumeQueues on disk and compared across replicas: a change of
    # algorithm must fail here, not silently break filtering of old data.
    assert tag_hash("") == 0
    assert tag_hash("TagA") == 5042894231036011105
    assert tag_hash("TagD") == -2118584605063052891
    assert tag_hash("b") == -8902839231844102283
    assert tag_hash("订单") == 8047084877056969971


@given(st.text(min_size=1))
def test_tag_hash_is_a_signed_64_bit_integer(tags: str) -> None:
    h = tag_hash(tags)
    assert -(2**63) <= h < 2**63
    assert h == tag_hash(tags)


def test_sharding_queue_is_pinned() -> None:
    assert sharding_queue("order-1", 8) == 5
    assert sharding_queue("user-42", 16) == 6
    assert sharding_queue("order-2", 1000) == 251
    assert sharding_queue("order-3", 1000) == 856
    assert sharding_queue("anything", 1) == 0


@given(st.text(), st.integers(1, 1000))
def test_sharding_queue_is_in_range(key: str, queues: int) -> None:
    assert 0 <= sharding_queue(key, queues) < queues


def test_sharding_queue_rejects_no_queues() -> None:
    with pytest.raises(ValueError, match="queues"):
        sharding_queue("k", 0)


def test_hashes_are_identical_in_another_process_with_another_hash_seed() -> None:
    code = "from broker.message import tag_hash, sharding_queue; print(tag_hash('TagX'), sharding_queue('key-9', 7))"
    env = dict(os.environ, PYTHONHASHSEED="12345", PYTHONPATH=str(REPO))
    out = subprocess.run([sys.executable, "-c", code], env=env, capture_output=True, text=True, check=True)
    assert out.stdout.split() == [str(tag_hash("TagX")), str(sharding_queue("key-9", 7))]


# ----------------------------------------------------------------------
# message ids
# ----------------------------------------------------------------------
@given(st.from_regex(r"[A-Za-z0-9_-]{1,64}", fullmatch=True), st.integers(0, 2**64 - 1))
def test_msg_id_round_trips(group: str, phys: int) -> None:
    s = format_msg_id(group, phys)
    assert parse_msg_id(s) == (group, phys)


@given(st.from_regex(r"[A-Za-z0-9_-]{1,64}", fullmatch=True), st.lists(st.integers(0, 2**64 - 1), max_size=20))
def test_format_msg_ids_is_format_msg_id_for_each(group: str, positions: list[int]) -> None:
    assert format_msg_ids(group, positions) == [format_msg_id(group, p) for p in positions]


@pytest.mark.parametrize("group, positions", [("", [0]), ("g", [5, -1]), ("g", [2**64, 3])])
def test_format_msg_ids_rejects_bad_input(group: str, positions: list[int]) -> None:
    with pytest.raises(ValueError):
        format_msg_ids(group, positions)


def test_msg_id_format_is_group_dash_16_hex_digits() -> None:
    assert format_msg_id("broker-a", 1234) == "broker-a-00000000000004D2"
    assert parse_msg_id("broker-a-00000000000004d2") == ("broker-a", 1234)


@pytest.mark.parametrize("bad", [
    "", "broker-a", "broker-a-", "-00000000000004D2", "broker-a-4D2", "broker-a-00000000000004D2X",
    "broker-a-0000000000000G00", "broker-a-000000000000004D22", "broker-a_00000000000004D2",
])
def test_parse_msg_id_rejects_malformed_ids(bad: str) -> None:
    with pytest.raises(ValueError, match="message id"):
        parse_msg_id(bad)


def test_parse_msg_id_rejects_non_strings() -> None:
    with pytest.raises(ValueError):
        parse_msg_id(42)  # type: ignore[arg-type]


@pytest.mark.parametrize("group, phys", [("", 0), ("g", -1), ("g", 2**64)])
def test_format_msg_id_rejects_bad_input(group: str, phys: int) -> None:
    with pytest.raises(ValueError):
        format_msg_id(group, phys)


# -- encode_batch: the produce hot path must frame exactly like encode_records --
from hypothesis import given as _given, strategies as _st  # noqa: E402

from raftmq.broker.message import encode_batch, encode_records  # noqa: E402


@_given(
    _st.lists(_st.tuples(_st.binary(max_size=300), _st.text(max_size=5), _st.lists(_st.text(min_size=1, max_size=4), max_size=3),
                         _st.dictionaries(_st.text(max_size=3), _st.text(max_size=3), max_size=2),
                         _st.integers(min_value=0, max_value=2**40)), min_size=1, max_size=8),
    _st.sampled_from([None, "p1"]), _st.sampled_from([None, 0, 7, 2**33]),
)
def test_encode_batch_is_byte_identical_to_encode_records(items, pid, seq) -> None:  # type: ignore[no-untyped-def]
    msgs = [Message(topic="topic-a", queue_id=3, body=b, tags=t, keys=tuple(k), properties=p, born_ts_ms=born,
                    store_ts_ms=1795000000000, producer_id=pid, sequence=seq) for b, t, k, p, born in items]
    fast = encode_batch("topic-a", 3, 1795000000000, pid, seq, [(b, t, k, p, born) for b, t, k, p, born in items])
    assert fast == encode_records(msgs)


def test_encode_batch_large_bodies_use_wider_bin_headers() -> None:
    for n in (0, 255, 256, 65535, 65536, 70000):
        body = b"z" * n
        assert encode_batch("t", 0, 1, None, None, [(body, "", (), {}, 5)]) == encode_records(
            [Message(topic="t", queue_id=0, body=body, born_ts_ms=5, store_ts_ms=1)])


def test_record_view_matches_strict_decoder_and_rejects_damage() -> None:
    from raftmq.broker.message import RecordError, decode_record, record_view

    m = Message(topic="t", queue_id=2, body=b"\x00body", tags="a", keys=("k1",), properties={"p": "v"},
                born_ts_ms=5, store_ts_ms=6, producer_id="p", sequence=9)
    rec = encode_records([m])
    view = record_view(rec, "g-0000000000000000", 42)
    strict = decode_record(rec)
    assert (view["topic"], view["queue_id"], view["body"], view["tags"], view["keys"], view["properties"],
            view["born_ts"], view["store_ts"], view["queue_offset"]) == (
        strict.topic, strict.queue_id, strict.body, strict.tags, list(strict.keys), dict(strict.properties),
        strict.born_ts_ms, strict.store_ts_ms, 42)
    damaged = bytearray(rec)
    damaged[-1] ^= 0xFF
    with pytest.raises(RecordError):
        record_view(bytes(damaged), "x", 0)
    with pytest.raises(RecordError):
        record_view(rec[:-1], "x", 0)
