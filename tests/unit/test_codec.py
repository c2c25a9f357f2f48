"""dledger.codec: every message round-trips; anything else is a CodecError."""

import msgpack
import pytest
from hypothesis import given, settings, strategies as st

from dledger import codec
from dledger.core.messages import (
    AppendEntries, AppendEntriesReply, Entry, EntryKind, InstallSnapshot, InstallSnapshotReply, NodeId,
    RequestVote, RequestVoteReply, Snapshot, SnapshotMeta, TimeoutNow,
)
from dledger.errors import CodecError

A, B = NodeId("n1"), NodeId("n2")
MESSAGES = [
    AppendEntries(3, A, B, 10, 2, (Entry(3, 11, b"x" * 1024), Entry(3, 12, b"", EntryKind.NOOP), Entry(3, 13, b"")), 9),
    AppendEntries(3, A, B, 0, 0, (), 0),
    AppendEntriesReply(3, B, A, True, match_index=13),
    AppendEntriesReply(3, B, A, False, reject_index=10, hint_index=7, hint_term=2),
    RequestVote(4, A, B, 13, 3, pre_vote=True),
    RequestVote(4, A, B, 13, 3, transfer=True),
    RequestVoteReply(4, B, A, True, pre_vote=True),
    TimeoutNow(4, A, B),
    InstallSnapshot(5, A, B, Snapshot(SnapshotMeta(100, 4, 123456), b"state")),
    InstallSnapshotReply(5, B, A, 100),
]


@pytest.mark.parametrize("m", MESSAGES, ids=lambda m: type(m).__name__)
def test_round_trip(m: object) -> None:
    assert codec.decode(codec.encode(m)) == m  # type: ignore[arg-type]


@pytest.mark.parametrize("obj", [
    [99, 1, "a", "b"],  # unknown type
    [1, 1, "a", "b", 0, 0, 0],  # wrong arity
    [1, -1, "a", "b", 0, 0, 0, []],  # negative term
    [1, 1, "a", "", 0, 0, 0, []],  # empty id
    [1, 1, "a", "b", 0, 0, 0, [1, 5, 0, b"x"]],  # entry index not prev+1
    [1, 1, "a", "b", 0, 0, 0, [1, 1, 7, b"x"]],  # bad kind
    [1, 1, "a", "b", 0, 0, 0, [1, 1, 0, "text"]],  # data not bytes
    [2, 1, "a", "b", 1, 0, 0, 0, 0],  # success not a bool
    [3, True, "a", "b", 0, 0, False, False],  # bool where an int belongs
    {"not": "a list"},
])
def test_malformed_messages_are_rejected(obj: object) -> None:
    with pytest.raises(CodecError):
        codec.decode(msgpack.packb(obj, use_bin_type=True))


@settings(max_examples=300)
@given(st.binary(max_size=200))
def test_arbitrary_bytes_only_ever_raise_codec_error(raw: bytes) -> None:
    try:
        codec.decode(raw)
    except CodecError:
        pass


def test_hello_round_trip_and_rejection() -> None:
    assert codec.decode_hello(codec.encode_hello("n1", "g")) == ("n1", "g")
    with pytest.raises(CodecError):
        codec.decode_hello(codec.encode(TimeoutNow(1, A, B)))
