"""A committed entry that is not a valid broker command (a bug, or a faulty
peer that got it committed) is applied as a no-op with one ERROR line naming
its index, identically on every replica, and never raises out of apply
(issue 11). A snapshot from a peer is checked in full before anything is
restored (``BrokerState.check_snapshot``)."""

from __future__ import annotations

import logging
from pathlib import Path

import msgpack
import pytest

from raftmq.broker import commands
from raftmq.broker.commands import CreateTopic
from raftmq.broker.statemachine import BrokerState
from tests.unit.test_broker_statemachine import apply_all, digest, log_of, produce

P = msgpack.packb

INVALID: list[tuple[str, bytes]] = [
    ("empty", b""),
    ("garbage", b"\xc1\xff\x00"),
    ("not an array", P({"k": 1})),
    ("unknown kind", P([99, "t", 1])),
    ("kind is a str", P(["1", "t"])),
    ("noop with fields", P([0, 1])),
    ("create: queues a str", P([3, "t2", "4"])),
    ("create: no queues", P([3, "t2", 0])),
    ("create: negative queues", P([3, "t2", -1])),
    ("create: 2**40 queues", P([3, "t2", 1 << 40])),
    ("create: name an int", P([3, 7, 2])),
    ("update: missing queues", P([4, "t"])),
    ("commit: negative offset", P([2, "g", "t", 0, -5])),
    ("commit: queue a float", P([2, "g", "t", 0.5, 1])),
    ("commit: reset an int", P([2, "g", "t", 0, 1, 1])),
    ("commit: group nil", P([2, None, "t", 0, 1])),
    ("produce: short", P([1, "t", 0])),
    ("produce: queue negative", P([1, "t", -1, 2, None, None, 0, [], [], b""], use_bin_type=True)),
    ("produce: records a str", P([1, "t", 0, 2, None, None, 0, [], [], "x"], use_bin_type=True)),
    ("produce: tag hashes a map", P([1, "t", 0, 2, None, None, 0, {}, [], b""], use_bin_type=True)),
    ("produce: keys of ints", P([1, "t", 0, 2, None, None, 0, [], [[1]], b""], use_bin_type=True)),
    ("produce: garbage records", P([1, "t", 0, 2, None, None, 0, [1], [[]], b"\x00" * 40], use_bin_type=True)),
    ("create: max_topics zero", P([3, "t2", 2, 0])),
    ("create: max_topics a str", P([3, "t2", 2, "9"])),
    ("commit: max_groups negative", P([2, "g", "t", 0, 1, False, -1])),
    ("commit: eight items", P([2, "g", "t", 0, 1, False, 5, 5])),
    ("acl add: admin an int", P([20, "k", "s" * 16, 1])),
    ("acl add: no secret", P([20, "k"])),
    ("acl remove: key an int", P([21, 5])),
    ("acl grant: actions a str", P([22, "k", "topic", "t*", "pub"])),
    ("acl revoke: action nil", P([23, "k", "topic", "t*", [None]])),
]


def produce_without_tag_hashes() -> bytes:
    obj = msgpack.unpackb(produce("t", 0, [b"a", b"b"]), raw=False)
    obj[7] = []
    return msgpack.packb(obj, use_bin_type=True)


@pytest.mark.parametrize("body", [b for _, b in INVALID] + [produce_without_tag_hashes()],
                         ids=[n for n, _ in INVALID] + ["produce: fewer tag hashes than records"])
def test_an_invalid_command_is_applied_as_a_noop_on_every_replica(tmp_path: Path, body: bytes,
                                                                  caplog: pytest.LogCaptureFixture) -> None:
    good = log_of()
    entries = good[:5] + [body] + good[5:]
    states = [BrokerState(tmp_path / f"r{i}", "g", cq_entries_per_file=7) for i in range(2)]
    reference = BrokerState(tmp_path / "ref", "g", cq_entries_per_file=7)
    with caplog.at_level(logging.ERROR, logger="raftmq.broker.statemachine"):
        results = [apply_all(s, entries) for s in states]
    assert results[0][5] is None and results[0] == results[1]
    lines = [r.getMessage() for r in caplog.records]
    assert len(lines) == 2 and lines[0] == lines[1] and "index=6 " in lines[0], lines  # one line per replica
    # The same state as a log with a no-op in its place (positions aside: the bodies differ in size).
    apply_all(reference, good[:5] + [commands.encode(commands.Noop())] + good[5:])
    for s in states:
        assert s.applied_index == len(entries)
        assert (s.topics, s.offsets) == (reference.topics, reference.offsets)
        assert [s.queue_range("t", q) for q in (0, 1)] == [reference.queue_range("t", q) for q in (0, 1)]
        s.cq.flush()
    assert states[0].dedup == states[1].dedup
    assert digest(tmp_path / "r0") == digest(tmp_path / "r1")


def test_every_valid_command_still_decodes() -> None:
    for body in log_of() + [commands.encode(commands.Noop()), commands.encode(commands.UpdateTopic("t", 4)),
                            commands.encode(commands.CommitOffset("g", "t", 1, 4, True)),
                            msgpack.packb([2, "g", "t", 1, 4])]:  # written before ``reset`` existed
        commands.decode(body)


def test_check_snapshot_accepts_a_real_snapshot(tmp_path: Path) -> None:
    s = BrokerState(tmp_path / "a", "g")
    apply_all(s, log_of())
    assert BrokerState.check_snapshot(s.snapshot()) is None
    empty = BrokerState(tmp_path / "b", "g")
    assert BrokerState.check_snapshot(empty.snapshot()) is None


def doc_with(tmp_path: Path, **change: object) -> bytes:
    s = BrokerState(tmp_path / "c", "g")
    apply_all(s, log_of())
    doc = msgpack.unpackb(s.snapshot(), raw=False, strict_map_key=False)
    doc.update(change)
    return msgpack.packb(doc, use_bin_type=True)


@pytest.mark.parametrize("change", [
    {"topics": {"t": "2"}}, {"topics": [1]}, {"offsets": [["g", "t", 0]]}, {"offsets": [["g", "t", 0, -1]]},
    {"dedup": [["p", [[1, 0, ["x"]]]]]}, {"queues": [["t", 0, None]]}, {"queues": "abc"},
    {"time_marks": [[1, -1]]}, {"index": "1"},
], ids=str)
def test_check_snapshot_refuses_what_restore_could_not_load(tmp_path: Path, change: dict[str, object]) -> None:
    assert BrokerState.check_snapshot(doc_with(tmp_path, **change)) is not None


@pytest.mark.parametrize("data", [b"", b"\xc1", b"garbage", P([1, 2, 3]), P({"index": 1})], ids=repr)
def test_check_snapshot_refuses_empty_or_undecodable_data(data: bytes) -> None:
    problem = BrokerState.check_snapshot(data)
    assert problem is not None and len(problem) <= 200


def test_create_topic_within_bounds_applies(tmp_path: Path) -> None:
    s = BrokerState(tmp_path / "d", "g")
    assert s.apply(1, commands.encode(CreateTopic("x", commands.MAX_QUEUES)), 32) == commands.MAX_QUEUES
