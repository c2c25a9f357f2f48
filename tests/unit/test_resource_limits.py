"""The broker's resource limits (broker/config.py ``Limits``): each checked
before anything is proposed, and the replicated ones again, deterministically,
when the command is applied."""

from __future__ import annotations

import asyncio
import time
from pathlib import Path
from types import SimpleNamespace
from typing import Any

import msgpack
import pytest

from raftmq.broker import commands
from raftmq.broker.commands import CommitOffset, CreateTopic, Produce
from raftmq.broker.config import BrokerConfig, Limits, Member
from raftmq.broker.consumer_groups import ConsumerGroups
from raftmq.broker.errors import NameTooLong, PropertyTooLong, TooManyGroups
from raftmq.broker.message import decode_record, encode_batch, record_sizes, tag_hash
from raftmq.broker.produce import OutMessage, Part, ProduceRequest, parse_produce
from raftmq.broker.service import Broker, max_entry_bytes
from raftmq.broker.statemachine import BrokerState
from raftmq.dledger import LogSettings, NodeConfig, codec
from raftmq.dledger.codec import MAX_ID_CHARS
from raftmq.dledger.core.messages import AppendEntries, Entry

LIMITS = Limits(max_property_key_chars=4, max_property_value_chars=8, max_producer_id_bytes=6)


def parse(body: dict[str, Any]) -> ProduceRequest:
    return parse_produce(body, LIMITS)


def test_property_names_and_values_are_bounded() -> None:
    assert parse({"messages": [{"body": "x", "properties": {"abcd": "12345678"}}]}).messages[0].properties
    with pytest.raises(PropertyTooLong, match="a property name of 5 characters exceeds the limit of 4") as err:
        parse({"messages": [{"body": "x", "properties": {"abcde": "1"}}]})
    assert (err.value.code, err.value.http_status) == ("property_too_long", 400)
    with pytest.raises(PropertyTooLong, match=r"messages\[1\].properties\['a'\]: a value of 9 characters"):
        parse({"messages": [{"body": "x"}, {"body": "x", "properties": {"a": "123456789"}}]})


def test_the_producer_id_is_bounded_in_utf8_bytes() -> None:
    assert parse({"messages": [{"body": "x"}], "producer_id": "abcdef", "sequence": 1}).producer_id == "abcdef"
    with pytest.raises(NameTooLong, match="longer than 6 bytes") as err:
        parse({"messages": [{"body": "x"}], "producer_id": "abcdefg", "sequence": 1})
    assert (err.value.code, err.value.http_status) == ("name_too_long", 400)
    with pytest.raises(NameTooLong):
        parse({"messages": [{"body": "x"}], "producer_id": "ééé" + "é", "sequence": 1})  # 4 chars, 8 bytes


@pytest.mark.parametrize("field", ["max_property_key_chars", "max_property_value_chars", "max_producer_id_bytes",
                                   "max_group_name_chars", "max_topics", "max_groups"])
def test_every_new_limit_is_validated(field: str) -> None:
    with pytest.raises(ValueError, match=f"limits.{field}: must be at least 1"):
        Limits(**{field: 0})


# -- producer_id once per entry ------------------------------------------------
def _entry(pid: str | None, seq: int | None, bodies: list[bytes], in_records: bool) -> bytes:
    """A produce entry as the broker writes it (``in_records=False``) or as it
    wrote it before the producer id moved out of the records (True)."""
    items = [(b, "t", ("k",), {}, 5) for b in bodies]
    records = encode_batch("t", 0, 9, pid if in_records else None, seq if in_records else None, items)
    return commands.encode(Produce("t", 0, 9, pid, seq, 0, [tag_hash("t")] * len(bodies), [["k"]] * len(bodies),
                                   records))


def test_the_producer_id_is_written_once_per_entry_not_per_record() -> None:
    msgs = [OutMessage(b"x" * 100, "t", ("k",)) for _ in range(1000)]
    cmd = Broker._produce_command("t", Part(0, 0, tuple(range(1000))), 9, "p" * 200, 7, msgs)
    assert (cmd.producer_id, cmd.sequence) == ("p" * 200, 7)
    assert all(decode_record(bytes(cmd.records[off:off + size])).producer_id is None
               for off, size in record_sizes(cmd.records))
    entry = commands.encode(cmd)
    assert entry.count(b"p" * 200) == 1
    assert len(entry) < 1000 * 150  # 200 bytes more per record before


def test_an_entry_written_before_the_change_still_applies_the_same(tmp_path: Path) -> None:
    """The log on disk from before: records carrying the producer id. Applied
    now, every message is indexed at its record, the dedup table remembers the
    request, and a retry in the new form is answered from it."""
    old = _entry("p", 7, [b"a", b"bb", b"ccc"], in_records=True)
    state = BrokerState(tmp_path / "n", "g")
    try:
        state.apply(1, commands.encode(CreateTopic("t", 1)), 32)
        q, first, positions = state.apply(2, old, 1000)
        cmd = commands.decode(old)
        base = 1000 + len(old) - len(cmd.records)
        assert (q, first) == (0, 0)
        assert positions == [base + off for off, _ in record_sizes(cmd.records)]
        got = [decode_record(old[p - 1000 : p - 1000 + s]) for p, (_, s) in zip(positions, record_sizes(cmd.records))]
        assert [(m.body, m.producer_id, m.sequence, m.keys) for m in got] == [
            (b"a", "p", 7, ("k",)), (b"bb", "p", 7, ("k",)), (b"ccc", "p", 7, ("k",))]
        assert [e[1] for e in state.cq.queue("t", 0).read(0, 10)] == positions
        assert sorted(p for p, _, _ in state.index.query("k", 0, 10**15, 10)) == positions
        assert state.dedup_lookup("p", 7, 0) == (0, 0, positions)
        retry = _entry("p", 7, [b"a", b"bb", b"ccc"], in_records=False)
        assert state.apply(3, retry, 5000) == (0, 0, positions)  # the retry stores nothing
        assert state.cq.queue("t", 0).max_offset == 3
    finally:
        state.close()


def test_old_and_new_entries_index_the_same_messages(tmp_path: Path) -> None:
    """The same request in either form lands at the same queue offsets, with
    the same bodies, keys and tags: only the records' producer fields differ."""
    views = []
    for form in (True, False):
        state = BrokerState(tmp_path / str(form), "g")
        try:
            state.apply(1, commands.encode(CreateTopic("t", 1)), 32)
            entry = _entry("p", 3, [b"one", b"two"], in_records=form)
            _, first, positions = state.apply(2, entry, 1000)
            msgs = [decode_record(entry[p - 1000 : p - 1000 + s])
                    for p, (_, s) in zip(positions, record_sizes(commands.decode(entry).records))]
            views.append([(first + i, m.body, m.tags, m.keys, m.store_ts_ms) for i, m in enumerate(msgs)])
        finally:
            state.close()
    assert views[0] == views[1]


# -- an entry that always fits a frame ----------------------------------------
def _node_config(**log: Any) -> NodeConfig:
    return NodeConfig.build(LogSettings(**log), node_id="n1", group="g", peers={"n1": "127.0.0.1:1"}, data_dir="d")


def test_the_largest_entry_fits_a_segment_and_a_followers_frame() -> None:
    small = _node_config(segment_bytes=1 << 20)
    assert max_entry_bytes(small) == (1 << 20) - 32  # the segment is the tighter bound
    cfg = _node_config()
    limit = max_entry_bytes(cfg)
    assert limit == cfg.transport.max_frame_bytes - 4096
    # The AppendEntries that carries it (alone: it is larger than max_batch_bytes),
    # with ids of the longest length and the largest integers, fits a follower's frame.
    assert limit > cfg.max_batch_bytes
    top, node_id = (1 << 64) - 1, "\U0001d11e" * MAX_ID_CHARS  # 4 UTF-8 bytes a character
    frame = codec.encode(AppendEntries(top, node_id, node_id, top, top, (Entry(top, top, b"\0" * limit),), top))
    assert len(frame) <= cfg.transport.max_frame_bytes


# -- counts: topics and groups -------------------------------------------------
def test_a_topic_past_max_topics_is_refused_at_apply_alike_on_every_node(tmp_path: Path) -> None:
    """Two creations that both passed the leader's check (a race): the second
    applies as a refusal (None) on every node; entries written before the
    limit existed (no max_topics) apply as before."""
    log = [CreateTopic("a", 1, 2), CreateTopic("b", 1, 2), CreateTopic("c", 1, 2), CreateTopic("a", 2, 2),
           CreateTopic("old", 1)]
    for node in ("n1", "n2"):
        state = BrokerState(tmp_path / node, "g")
        try:
            results = [state.apply(i, commands.encode(c), 32 * i) for i, c in enumerate(log, 1)]
            assert results == [1, 1, None, 2, 1]
            assert state.topics == {"a": 2, "b": 1, "old": 1}
        finally:
            state.close()


def test_a_group_past_max_groups_is_refused_at_apply_and_counted_after_restart(tmp_path: Path) -> None:
    state = BrokerState(tmp_path / "n", "g")
    try:
        state.apply(1, commands.encode(CreateTopic("t", 2)), 32)
        log = [CommitOffset("g1", "t", 0, 0, max_groups=2), CommitOffset("g2", "t", 0, 0, max_groups=2),
               CommitOffset("g3", "t", 0, 0, max_groups=2), CommitOffset("g1", "t", 1, 0, max_groups=2),
               CommitOffset("g4", "t", 0, 0)]  # written before the limit: none
        assert [state.apply(i, commands.encode(c), 100 * i) for i, c in enumerate(log, 2)] == [0, 0, None, 0, 0]
        assert list(state.groups()) == ["g1", "g2", "g4"]
        assert state.group_keys == {"g1": 2, "g2": 1, "g4": 1}
        state.checkpoint()
    finally:
        state.close()
    again = BrokerState(tmp_path / "n", "g")
    try:
        assert again.load_checkpoint() == 6
        assert again.group_keys == {"g1": 2, "g2": 1, "g4": 1}
        assert again.apply(7, commands.encode(CommitOffset("g5", "t", 0, 0, max_groups=3)), 900) is None
    finally:
        again.close()


def test_the_limits_travel_in_the_commands_and_older_entries_decode_without() -> None:
    for cmd in (CreateTopic("t", 3, 7), CreateTopic("t", 3), CommitOffset("g", "t", 1, 5, True, 9),
                CommitOffset("g", "t", 1, 5)):
        assert commands.decode(commands.encode(cmd)) == cmd
    assert commands.decode(msgpack.packb([3, "t", 3])) == CreateTopic("t", 3, None)
    assert commands.decode(msgpack.packb([2, "g", "t", 1, 5, False])) == CommitOffset("g", "t", 1, 5, False, None)


def test_groups_with_members_or_locks_are_bounded_and_freed_when_silent() -> None:
    groups = ConsumerGroups(session_timeout_ms=1000, max_lease_ms=1000, max_groups=2)
    groups.heartbeat("g1", "t", "c", 0)
    groups.heartbeat("g1", "u", "c", 0)  # another topic of a known group
    assert groups.lock("g2", "t", "c", [0, 1], 1000, 0) == [0, 1]
    with pytest.raises(TooManyGroups, match="the limit is 2") as err:
        groups.heartbeat("g3", "t", "c", 500)
    assert (err.value.code, err.value.http_status) == ("too_many_groups", 409)
    with pytest.raises(TooManyGroups):
        groups.lock("g3", "t", "c", [0], 1000, 500)
    assert groups.unlock("g2", "t", "c", [0, 1]) == [0, 1]
    assert groups.heartbeat("g3", "t", "c", 600) == ["c"]  # g2 left with its locks
    assert groups.group_count() == 2
    assert groups.heartbeat("g4", "t", "c", 1600) == ["c"]  # g1's members fell silent: swept out
    assert groups.group_count() == 2


# -- a checkpoint paced by its size --------------------------------------------
class _SizedState:
    """A state whose every checkpoint writes ``size`` bytes, noting when."""

    def __init__(self, size: int) -> None:
        self.size, self.times = size, []  # type: ignore[var-annotated]

    def checkpoint(self) -> int:
        self.times.append(time.monotonic())
        return self.size


def _checkpoints_in(seconds: float, size: int, interval_ms: int, bytes_per_s: int) -> list[float]:
    broker = Broker.__new__(Broker)  # only what the checkpointer reads
    broker.config = SimpleNamespace(checkpoint_interval_ms=interval_ms, checkpoint_max_bytes_per_s=bytes_per_s,
                                    node_id="n1")  # type: ignore[assignment]
    broker.state = state = _SizedState(size)  # type: ignore[assignment]

    async def run() -> None:
        task = asyncio.create_task(broker._checkpointer())
        await asyncio.sleep(seconds)
        task.cancel()

    asyncio.run(run())
    return state.times


def test_a_large_checkpoint_is_written_no_faster_than_its_byte_budget() -> None:
    # 50,000-byte checkpoints at 100,000 bytes/s: one every 0.5 s, not every 20 ms.
    times = _checkpoints_in(1.2, 50_000, 20, 100_000)
    assert 2 <= len(times) <= 3, times
    assert all(b - a >= 0.45 for a, b in zip(times, times[1:])), times
    # A small one keeps the interval.
    assert len(_checkpoints_in(0.5, 100, 20, 100_000)) >= 10


def test_the_checkpoint_budget_is_validated() -> None:
    with pytest.raises(ValueError, match="checkpoint_max_bytes_per_s: must be at least 1"):
        BrokerConfig("n1", "g", {"n1": Member("n1", "http://127.0.0.1:1", "127.0.0.1:2")}, "d",
                     checkpoint_max_bytes_per_s=0)
