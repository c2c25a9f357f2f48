"""dledger.codec: every message survives the wire unchanged; any other bytes are a CodecError.

The last test is a micro-benchmark (``-m slow``), logging its figures.
"""

from __future__ import annotations

import logging
import os
import time
from typing import Any

import msgpack
import pytest
from hypothesis import HealthCheck, example, given, settings, strategies as st

from raftmq.dledger import codec
from raftmq.dledger.core.messages import (
    AppendEntries,
    AppendEntriesReply,
    Entry,
    EntryKind,
    InstallSnapshot,
    InstallSnapshotReply,
    FetchEntry,
    FetchEntryReply,
    Message,
    NodeId,
    RequestVote,
    RequestVoteReply,
    Snapshot,
    SnapshotMeta,
    TimeoutNow,
)
from raftmq.dledger.errors import CodecError

log = logging.getLogger(__name__)

A, B = NodeId("n1"), NodeId("n2")
U64 = (1 << 64) - 1
MAX = (1 << 62) - 1  # MAX_TERM = MAX_INDEX: the largest term or index a frame may carry

MESSAGES: list[Message] = [
    AppendEntries(3, A, B, 10, 2, (Entry(3, 11, b"x" * 1024), Entry(3, 12, b"", EntryKind.NOOP), Entry(3, 13, b"")), 9),
    AppendEntries(3, A, B, 0, 0, (), 0),  # heartbeat
    AppendEntries(7, A, B, 99, 6, (Entry(7, 100, os.urandom(4 << 20)),), 99),  # one large entry
    AppendEntries(MAX, A, B, MAX - 2, MAX, (Entry(MAX, MAX - 1, b"a"), Entry(MAX, MAX, b"b")), MAX),
    AppendEntriesReply(3, B, A, True, match_index=13),
    AppendEntriesReply(3, B, A, False, reject_index=10, hint_index=7, hint_term=2),
    RequestVote(4, A, B, 13, 3),
    RequestVote(4, A, B, 13, 3, pre_vote=True),
    RequestVote(4, A, B, 13, 3, transfer=True),
    RequestVoteReply(4, B, A, True, pre_vote=True),
    RequestVoteReply(4, B, A, False),
    TimeoutNow(4, A, B),
    TimeoutNow(4, NodeId("nœud-é"), NodeId("x" * codec.MAX_ID_CHARS)),
    InstallSnapshot(5, A, B, Snapshot(SnapshotMeta(100, 4, 123456), b"state")),
    InstallSnapshot(5, A, B, Snapshot(SnapshotMeta(0, 0, 0), b"")),
    InstallSnapshotReply(5, B, A, 100),
    FetchEntry(6, A, B, 42),
    FetchEntryReply(6, B, A, Entry(6, 42, b"payload")),
    FetchEntryReply(6, B, A, Entry(6, 43, b"", EntryKind.NOOP)),
]


@pytest.mark.parametrize("m", MESSAGES, ids=lambda m: type(m).__name__)
def test_every_message_round_trips(m: Message) -> None:
    out = codec.decode(codec.encode(m))
    assert out == m
    assert type(out) is type(m)
    if isinstance(out, AppendEntries):
        assert all(type(e.kind) is EntryKind and type(e.data) is bytes for e in out.entries)


def test_decode_accepts_a_memoryview_of_a_larger_buffer() -> None:
    payload = codec.encode(MESSAGES[0])
    buf = b"junk" + payload + b"junk"
    assert codec.decode(memoryview(buf)[4 : 4 + len(payload)]) == MESSAGES[0]


# --- hypothesis: random messages round-trip -------------------------------------------

ids = st.text(min_size=1, max_size=codec.MAX_ID_CHARS).map(NodeId)
nat = st.integers(min_value=0, max_value=MAX)  # a term or index a frame may carry
small = st.integers(min_value=0, max_value=1 << 40)


@st.composite
def append_entries(draw: st.DrawFn) -> AppendEntries:
    prev = draw(small)
    n = draw(st.integers(0, 20))
    entries = tuple(
        Entry(draw(small), prev + 1 + i, draw(st.binary(max_size=64)), draw(st.sampled_from(list(EntryKind))))
        for i in range(n)
    )
    return AppendEntries(draw(nat), draw(ids), draw(ids), prev, draw(nat), entries, draw(nat))


messages = st.one_of(
    append_entries(),
    st.builds(AppendEntriesReply, nat, ids, ids, st.booleans(), nat, nat, nat, nat),
    st.builds(RequestVote, nat, ids, ids, nat, nat, st.booleans(), st.booleans()),
    st.builds(RequestVoteReply, nat, ids, ids, st.booleans(), st.booleans()),
    st.builds(TimeoutNow, nat, ids, ids),
    st.builds(InstallSnapshot, nat, ids, ids, st.builds(Snapshot, st.builds(SnapshotMeta, nat, nat, nat),
                                                         st.binary(max_size=256))),
    st.builds(InstallSnapshotReply, nat, ids, ids, nat),
    st.builds(FetchEntry, nat, ids, ids, nat),
    nat.flatmap(lambda t: st.builds(FetchEntryReply, st.just(t), ids, ids,
                                    st.builds(Entry, st.just(t), nat, st.binary(max_size=64),
                                              st.sampled_from(list(EntryKind))))),
)


@settings(max_examples=400)
@given(messages)
def test_random_messages_round_trip(m: Message) -> None:
    assert codec.decode(codec.encode(m)) == m


# --- malformed payloads ---------------------------------------------------------------

OK_ENTRY = [1, 1, 0, b"x"]
BAD_OBJECTS: list[tuple[str, Any]] = [
    ("not an array", {"not": "a list"}),
    ("a bare int", 5),
    ("empty array", []),
    ("unknown type", [99, 1, "a", "b"]),
    ("hello as a message", [codec.HELLO, 1, "a", "g"]),
    ("type is a bool", [True, 1, "a", "b", 0, 0, 0, []]),
    ("type is a str", ["1", 1, "a", "b", 0, 0, 0, []]),
    ("AppendEntries too short", [1, 1, "a", "b", 0, 0, 0]),
    ("AppendEntries too long", [1, 1, "a", "b", 0, 0, 0, [], 0]),
    ("negative term", [1, -1, "a", "b", 0, 0, 0, []]),
    ("term is a float", [1, 1.0, "a", "b", 0, 0, 0, []]),
    ("term is a str", [1, "1", "a", "b", 0, 0, 0, []]),
    ("term is a bool", [1, True, "a", "b", 0, 0, 0, []]),
    ("empty src", [1, 1, "", "b", 0, 0, 0, []]),
    ("dst is bytes", [1, 1, "a", b"b", 0, 0, 0, []]),
    ("src is None", [1, 1, None, "b", 0, 0, 0, []]),
    ("over-long id", [1, 1, "a" * (codec.MAX_ID_CHARS + 1), "b", 0, 0, 0, []]),
    ("huge str", [1, 1, "a" * 100_000, "b", 0, 0, 0, []]),
    ("negative prev_log_index", [1, 1, "a", "b", -1, 0, 0, []]),
    ("leader_commit is None", [1, 1, "a", "b", 0, 0, None, []]),
    ("entries not an array", [1, 1, "a", "b", 0, 0, 0, b"entries"]),
    ("entries flat instead of nested", [1, 1, "a", "b", 0, 0, 0, OK_ENTRY]),
    ("entry of 3 items", [1, 1, "a", "b", 0, 0, 0, [[1, 1, 0]]]),
    ("entry of 5 items", [1, 1, "a", "b", 0, 0, 0, [[1, 1, 0, b"x", 0]]]),
    ("entry is a 4-char str", [1, 1, "a", "b", 0, 0, 0, ["abcd"]]),
    ("entry is a 4-byte bin", [1, 1, "a", "b", 0, 0, 0, [b"abcd"]]),
    ("entry is an int", [1, 1, "a", "b", 0, 0, 0, [7]]),
    ("entry index not prev+1", [1, 1, "a", "b", 0, 0, 0, [[1, 5, 0, b"x"]]]),
    ("entry indexes not consecutive", [1, 1, "a", "b", 0, 0, 0, [OK_ENTRY, [1, 3, 0, b"x"]]]),
    ("entry index is a bool", [1, 1, "a", "b", 0, 0, 0, [[1, True, 0, b"x"]]]),
    ("entry index is a float", [1, 1, "a", "b", 0, 0, 0, [[1, 1.0, 0, b"x"]]]),
    ("negative entry term", [1, 1, "a", "b", 0, 0, 0, [[-1, 1, 0, b"x"]]]),
    ("entry term is a str", [1, 1, "a", "b", 0, 0, 0, [["1", 1, 0, b"x"]]]),
    ("unknown entry kind", [1, 1, "a", "b", 0, 0, 0, [[1, 1, 7, b"x"]]]),
    ("negative entry kind", [1, 1, "a", "b", 0, 0, 0, [[1, 1, -1, b"x"]]]),
    ("entry kind is a float", [1, 1, "a", "b", 0, 0, 0, [[1, 1, 1.0, b"x"]]]),
    ("entry kind is a bool", [1, 1, "a", "b", 0, 0, 0, [[1, 1, True, b"x"]]]),
    ("entry data is a str", [1, 1, "a", "b", 0, 0, 0, [[1, 1, 0, "text"]]]),
    ("entry data is None", [1, 1, "a", "b", 0, 0, 0, [[1, 1, 0, None]]]),
    ("success is an int", [2, 1, "a", "b", 1, 0, 0, 0, 0]),
    ("success is None", [2, 1, "a", "b", None, 0, 0, 0, 0]),
    ("AppendEntriesReply too short", [2, 1, "a", "b", True, 0, 0, 0]),
    ("negative hint_term", [2, 1, "a", "b", False, 0, 0, 0, -5]),
    ("RequestVote last_log_index is a bool", [3, 1, "a", "b", True, 0, False, False]),
    ("RequestVote pre_vote is an int", [3, 1, "a", "b", 0, 0, 0, False]),
    ("RequestVoteReply too long", [4, 1, "a", "b", True, False, False]),
    ("TimeoutNow with a field", [5, 1, "a", "b", 0]),
    ("snapshot data is a str", [6, 1, "a", "b", 0, 0, 0, "state"]),
    ("snapshot meta negative", [6, 1, "a", "b", -1, 0, 0, b"state"]),
    ("InstallSnapshotReply match_index is a float", [7, 1, "a", "b", 1.5]),
]


# Terms and indexes above MAX_TERM = MAX_INDEX (2**62-1): a node that adopted one
# could never campaign again (term + 1 would not encode), so no frame may carry one.
BAD_OBJECTS += [
    ("term 2**64-1", [5, U64, "a", "b"]),
    ("term 2**62", [5, MAX + 1, "a", "b"]),
    ("heartbeat of term 2**62", [1, MAX + 1, "a", "b", 0, 0, 0, []]),
    ("leader_commit 2**62", [1, 1, "a", "b", 0, 0, MAX + 1, []]),
    ("prev_log_index 2**62", [1, 1, "a", "b", MAX + 1, 0, 0, []]),
    ("entry term 2**62", [1, 1, "a", "b", 0, 0, 0, [[MAX + 1, 1, 0, b"x"]]]),
    ("entries past 2**62-1", [1, 1, "a", "b", MAX, 1, 0, [[1, MAX + 1, 0, b"x"]]]),
    ("match_index 2**62", [2, 1, "a", "b", True, MAX + 1, 0, 0, 0]),
    ("vote last_log_term 2**64-1", [3, 1, "a", "b", 0, U64, False, False]),
    ("snapshot index 2**62", [6, 1, "a", "b", MAX + 1, 0, 0, b"s"]),
    ("InstallSnapshotReply match 2**62", [7, 1, "a", "b", MAX + 1]),
]


@pytest.mark.parametrize("obj", [o for _, o in BAD_OBJECTS], ids=[n for n, _ in BAD_OBJECTS])
def test_malformed_messages_raise_codec_error(obj: Any) -> None:
    with pytest.raises(CodecError):
        codec.decode(msgpack.packb(obj, use_bin_type=True))


@pytest.mark.parametrize("payload", [
    b"",
    b"\xc1",  # reserved msgpack byte
    b"\x94\x05\x01\xa1a",  # array of 4, truncated
    msgpack.packb([5, 1, "a", "b"]) + b"\x00",  # trailing byte
    msgpack.packb([5, 1, "a", "b"]) + msgpack.packb([5, 1, "a", "b"]),  # two documents
    msgpack.packb(msgpack.ExtType(1, b"x")),  # ext type
    msgpack.packb([5, 1, msgpack.ExtType(1, b"x"), "b"]),
    b"\xdd\xff\xff\xff\xff",  # array claiming 4 billion items
    b"\xc6\xff\xff\xff\xff",  # bin claiming 4 GiB
    b"\x91" * 5000 + b"\x00",  # nested 5000 deep
], ids=lambda p: p[:12].hex() or "empty")
def test_undecodable_payloads_raise_codec_error(payload: bytes) -> None:
    with pytest.raises(CodecError):
        codec.decode(payload)


@pytest.mark.parametrize("m", [MESSAGES[0], MESSAGES[4], MESSAGES[6], MESSAGES[13]], ids=lambda m: type(m).__name__)
def test_every_truncation_of_a_message_raises_codec_error(m: Message) -> None:
    payload = codec.encode(m)
    for n in range(len(payload)):
        with pytest.raises(CodecError):
            codec.decode(payload[:n])


@settings(max_examples=1000, suppress_health_check=[HealthCheck.too_slow])
@given(st.binary(max_size=300))
@example(b"\x98\x01")
@example(msgpack.packb([1, 1, "a", "b", 0, 0, 0, [[1, 1, 1.0, b"x"]]]))
def test_decode_of_arbitrary_bytes_raises_only_codec_error(raw: bytes) -> None:
    try:
        m = codec.decode(raw)
    except CodecError:
        return
    assert codec.decode(codec.encode(m)) == m  # whatever decodes is a valid message


# Arbitrary msgpack documents behind a valid type code: far more likely than random
# bytes to get past the unpacker and exercise the field checks.
scalars = st.one_of(st.none(), st.booleans(), st.integers(min_value=-(1 << 63), max_value=U64),
                    st.floats(allow_nan=False), st.text(max_size=8), st.binary(max_size=8))
documents = st.recursive(scalars, lambda inner: st.lists(inner, max_size=6), max_leaves=30)


@settings(max_examples=1000, suppress_health_check=[HealthCheck.too_slow])
@given(st.integers(1, 7), documents, documents, documents, st.lists(documents, max_size=6))
def test_decode_of_arbitrary_documents_raises_only_codec_error(code: int, term: Any, src: Any, dst: Any,
                                                              rest: list[Any]) -> None:
    raw = msgpack.packb([code, term, src, dst, *rest], use_bin_type=True)
    try:
        m = codec.decode(raw)
    except CodecError:
        return
    assert codec.encode(m) == raw  # accepted only if it is exactly a message's encoding


@settings(max_examples=300)
@given(messages, st.data())
def test_corrupting_one_byte_of_a_message_never_raises_anything_but_codec_error(m: Message, data: st.DataObject) -> None:
    payload = bytearray(codec.encode(m))
    pos = data.draw(st.integers(0, len(payload) - 1))
    payload[pos] = data.draw(st.integers(0, 255))
    try:
        codec.decode(bytes(payload))
    except CodecError:
        pass


# --- encode ----------------------------------------------------------------------------


@pytest.mark.parametrize("obj", [
    "not a message",
    Entry(1, 1, b"x"),
    TimeoutNow(1 << 64, A, B),  # beyond what msgpack carries
    TimeoutNow(1, A, object()),  # type: ignore[arg-type]
])
def test_encode_raises_codec_error_for_what_it_cannot_carry(obj: Any) -> None:
    with pytest.raises(CodecError):
        codec.encode(obj)


def test_encode_is_still_correct_after_a_failed_encode() -> None:
    """The shared packer must not keep half a document after an error."""
    with pytest.raises(CodecError):
        codec.encode(AppendEntries(1, A, B, 0, 0, (Entry(1, 1, object()),), 0))  # type: ignore[arg-type]
    assert codec.decode(codec.encode(MESSAGES[0])) == MESSAGES[0]


# --- hello -------------------------------------------------------------------------------


def test_hello_round_trips() -> None:
    assert codec.decode_hello(codec.encode_hello("n1", "group-a")) == codec.Hello("n1", "group-a", None, None)


@pytest.mark.parametrize("data_id, known_as", [
    (0x0123456789ABCDEF, 0xFEDCBA9876543210),
    (1, None),  # the sender has never seen the receiver
    ((1 << 64) - 1, (1 << 64) - 1),
    (None, 7),
])
def test_hello_round_trips_with_data_directory_ids(data_id: int | None, known_as: int | None) -> None:
    payload = codec.encode_hello("n1", "group-a", data_id, known_as)
    assert len(msgpack.unpackb(payload)) == 6
    assert codec.decode_hello(payload) == codec.Hello("n1", "group-a", data_id, known_as)


def test_hello_without_ids_keeps_the_older_four_item_form() -> None:
    """What a node older than data-directory ids sends and reads: still accepted, ids None."""
    old = msgpack.packb([codec.HELLO, codec.PROTOCOL_VERSION, "n1", "g"])
    assert codec.encode_hello("n1", "g") == old
    assert codec.decode_hello(old) == codec.Hello("n1", "g")


@pytest.mark.parametrize("payload", [
    codec.encode(TimeoutNow(1, A, B)),  # a message is not a hello
    msgpack.packb([codec.HELLO, codec.PROTOCOL_VERSION + 1, "n1", "g"]),  # another protocol version
    msgpack.packb([codec.HELLO, True, "n1", "g"]),
    msgpack.packb([codec.HELLO, codec.PROTOCOL_VERSION, "", "g"]),
    msgpack.packb([codec.HELLO, codec.PROTOCOL_VERSION, "n1", ""]),
    msgpack.packb([codec.HELLO, codec.PROTOCOL_VERSION, "n1", 5]),
    msgpack.packb([codec.HELLO, codec.PROTOCOL_VERSION, "n1"]),
    msgpack.packb([codec.HELLO, codec.PROTOCOL_VERSION, "n1", "g", "extra"]),
    msgpack.packb([codec.HELLO, codec.PROTOCOL_VERSION, "n1", "g", 5]),  # one id only
    msgpack.packb([codec.HELLO, codec.PROTOCOL_VERSION, "n1", "g", 5, 6, 7]),
    msgpack.packb([codec.HELLO, codec.PROTOCOL_VERSION, "n1", "g", 0, None]),  # 0 is never an id
    msgpack.packb([codec.HELLO, codec.PROTOCOL_VERSION, "n1", "g", -1, None]),
    msgpack.packb([codec.HELLO, codec.PROTOCOL_VERSION, "n1", "g", "id", None]),
    msgpack.packb([codec.HELLO, codec.PROTOCOL_VERSION, "n1", "g", 5, True]),
    msgpack.packb([codec.HELLO, codec.PROTOCOL_VERSION, "n1", "g", 5, b"\x01"]),
    msgpack.packb([codec.HELLO, codec.PROTOCOL_VERSION, "n1", "g", 5.0, None]),
    msgpack.packb([codec.HELLO, codec.PROTOCOL_VERSION, "n" * 1000, "g"]),
    b"GET / HTTP/1.1\r\n\r\n",
    b"",
])
def test_decode_hello_rejects_anything_else(payload: bytes) -> None:
    with pytest.raises(CodecError):
        codec.decode_hello(payload)


# --- frames ------------------------------------------------------------------------------


def test_frame_is_a_big_endian_length_then_the_payload() -> None:
    assert codec.frame(b"abc") == b"\x00\x00\x00\x03abc"
    assert codec.frame(b"") == b"\x00\x00\x00\x00"
    assert codec.frame(b"x" * 258)[:4] == b"\x00\x00\x01\x02"


def _split_all(decoder: codec.FrameDecoder, chunks: list[bytes]) -> list[bytes]:
    return [bytes(p) for c in chunks for p in decoder.feed(c)]


@settings(max_examples=300)
@given(st.lists(st.binary(max_size=300), max_size=12), st.data())
def test_frame_decoder_returns_the_payloads_whatever_the_read_boundaries(payloads: list[bytes],
                                                                         data: st.DataObject) -> None:
    stream = b"".join(codec.frame(p) for p in payloads)
    cuts = sorted(data.draw(st.lists(st.integers(0, len(stream)), max_size=20)))
    chunks = [stream[a:b] for a, b in zip([0, *cuts], [*cuts, len(stream)])]
    decoder = codec.FrameDecoder(1024)
    assert _split_all(decoder, chunks) == payloads
    assert decoder.buffered_bytes == 0


def test_frame_decoder_fed_byte_by_byte() -> None:
    payloads = [codec.encode(m) for m in MESSAGES[:2]] + [b""]
    stream = b"".join(codec.frame(p) for p in payloads)
    decoder = codec.FrameDecoder()
    assert _split_all(decoder, [stream[i : i + 1] for i in range(len(stream))]) == payloads


def test_frame_decoder_keeps_an_unfinished_frame() -> None:
    decoder = codec.FrameDecoder()
    assert [bytes(p) for p in decoder.feed(codec.frame(b"one") + b"\x00\x00\x00\x05ab")] == [b"one"]
    assert decoder.buffered_bytes == 6
    assert [bytes(p) for p in decoder.feed(b"cde" + codec.frame(b"three"))] == [b"abcde", b"three"]
    assert decoder.buffered_bytes == 0


def test_frame_decoder_rejects_an_oversized_length_before_its_payload_arrives() -> None:
    decoder = codec.FrameDecoder(max_frame_bytes=100)
    assert [bytes(p) for p in decoder.feed(codec.frame(b"x" * 100))] == [b"x" * 100]
    with pytest.raises(CodecError, match="exceeds max_frame_bytes=100"):
        list(decoder.feed(b"\x00\x00\x00\x65"))  # 101: only the header has arrived
    with pytest.raises(CodecError):
        list(codec.FrameDecoder().feed(b"\xff\xff\xff\xff"))


def test_frame_decoder_yields_the_frames_before_an_oversized_length() -> None:
    frames = codec.FrameDecoder(max_frame_bytes=100).feed(codec.frame(b"a") + codec.frame(b"b") + b"\xff" * 4)
    assert bytes(next(frames)) == b"a"
    assert bytes(next(frames)) == b"b"
    with pytest.raises(CodecError):
        next(frames)


# --- benchmark ---------------------------------------------------------------------------


@pytest.mark.slow
def test_benchmark_codec_append_entries_64_entries_of_1kib() -> None:
    """Not a timed assertion: logs encode/decode throughput (run with -m slow --log-cli-level=INFO)."""
    entries = tuple(Entry(5, 1001 + i, os.urandom(1024)) for i in range(64))
    m = AppendEntries(5, A, B, 1000, 5, entries, 999)
    payload = codec.encode(m)
    assert codec.decode(payload) == m

    def best_us(f: Any, n: int) -> float:
        best = float("inf")
        for _ in range(5):
            t0 = time.perf_counter()
            for _ in range(n):
                f()
            best = min(best, (time.perf_counter() - t0) / n)
        return best * 1e6

    enc = best_us(lambda: codec.encode(m), 2000)
    dec = best_us(lambda: codec.decode(payload), 2000)
    hb = AppendEntries(5, A, B, 1000, 5, (), 999)
    hb_payload = codec.encode(hb)
    hb_enc = best_us(lambda: codec.encode(hb), 50_000)
    hb_dec = best_us(lambda: codec.decode(hb_payload), 50_000)
    log.info("codec AppendEntries 64x1KiB: payload=%d bytes encode=%.1fus decode=%.1fus "
             "-> %.0f messages/s, %.0f entries/s encode+decode on one core; heartbeat encode=%.2fus decode=%.2fus",
             len(payload), enc, dec, 1e6 / (enc + dec), 64e6 / (enc + dec), hb_enc, hb_dec)
