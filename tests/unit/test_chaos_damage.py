"""The chaos run's storage damage (``chaos.damage``): its parser reads the real
on-disk formats (files written by dledger's ``FileLogStore`` and the broker's
``BrokerState``), and every damage function does exactly what it reports: one
bit flipped at the computed offset inside a committed entry's frame, or a
derived file truncated, torn or deleted."""

from __future__ import annotations

import random
import zlib
from pathlib import Path

import pytest

from raftmq.broker import commands
from raftmq.broker.commands import CreateTopic, Produce
from raftmq.broker.message import Message, encode_records, tag_hash
from raftmq.broker.statemachine import BrokerState
from raftmq.broker.store.index_file import IndexStore
from raftmq.chaos import damage
from raftmq.dledger.core.messages import Entry, EntryKind
from raftmq.dledger.store.entry_format import HEADER_BYTES, check_frame
from raftmq.dledger.store.file_store import FileLogStore, StoreConfig

SEG = 4096
ENTRIES = 120


def body(i: int) -> bytes:
    return (f"<entry {i}>".encode() * 40)[: 50 + (i * 37) % 300]


def write_log(data_dir: Path, n: int = ENTRIES, compact_to: int | None = None) -> list[Entry]:
    """A real log under ``<data>/dledger``: small segments and index files, so that
    entries span several of each; noops (empty bodies) among them."""
    entries = [Entry(1 + i // 40, i, b"" if i % 25 == 1 else body(i), EntryKind.NOOP if i % 25 == 1 else
                     EntryKind.NORMAL) for i in range(1, n + 1)]
    store = FileLogStore(data_dir / "dledger", StoreConfig(segment_bytes=SEG, index_file_entries=32))
    try:
        store.append(entries)
        if compact_to is not None:
            store.compact(compact_to)
    finally:
        store.close()
    return entries


def snapshot_files(root: Path) -> dict[Path, bytes]:
    return {p: p.read_bytes() for p in sorted(root.rglob("*")) if p.is_file()}


def bit_differences(before: dict[Path, bytes], after: dict[Path, bytes]) -> list[tuple[Path, int, int]]:
    """(file, byte offset, xor) of every byte that differs; files must be the same set and sizes."""
    assert before.keys() == after.keys()
    out = []
    for p in before:
        a, b = before[p], after[p]
        assert len(a) == len(b), p
        for c in range(0, len(a), 4096):
            if a[c:c + 4096] != b[c:c + 4096]:
                out += [(p, c + i, x ^ y) for i, (x, y) in enumerate(zip(a[c:c + 4096], b[c:c + 4096])) if x != y]
    return out


# -- the Raft log --------------------------------------------------------------------------
def test_the_parser_finds_every_entry_where_the_real_store_put_it(tmp_path: Path) -> None:
    entries = write_log(tmp_path)
    log_dir = tmp_path / "dledger"
    assert damage.index_range(log_dir) == (1, ENTRIES)
    start = damage.read_log_start(log_dir)
    assert start is not None and start.segment_bytes == SEG and start.index == 0
    segments = sorted(p.name for p in (log_dir / "commitlog").iterdir())
    assert len(segments) > 3 and len(list((log_dir / "index").iterdir())) == 4  # 120 records, 32 per file
    store = FileLogStore(log_dir, StoreConfig(segment_bytes=SEG, index_file_entries=32))
    try:
        for e in entries:
            loc = damage.locate(log_dir, e.index)
            assert loc is not None
            assert (loc.term, loc.kind, loc.size) == (e.term, int(e.kind), HEADER_BYTES + len(e.data))
            assert loc.position + HEADER_BYTES == store.body_position(e.index)
            assert int(loc.segment.name) == loc.position - loc.position % SEG
            assert loc.segment.read_bytes()[loc.segment_offset + HEADER_BYTES:loc.segment_offset + loc.size] == e.data
            assert damage.frame_problem(loc) is None
    finally:
        store.close()


@pytest.mark.parametrize("seed", range(12))
def test_corrupt_flips_exactly_one_bit_inside_a_committed_entrys_frame(tmp_path: Path, seed: int) -> None:
    entries = write_log(tmp_path)
    before = snapshot_files(tmp_path)
    res = damage.corrupt_log_entry(tmp_path, random.Random(seed), max_index=90)
    diffs = bit_differences(before, snapshot_files(tmp_path))
    assert res["damaged"] and len(diffs) == 1, (res, diffs)
    path, offset, xor = diffs[0]
    assert path == tmp_path / res["file"] and offset == res["offset"] and xor == 1 << res["bit"]
    e = entries[res["entry_index"] - 1]
    assert 1 <= e.index <= 90  # committed: at or below the commit index given
    loc = damage.locate(tmp_path / "dledger", e.index)
    assert loc is not None and offset == loc.segment_offset + res["byte_in_frame"]
    assert 0 <= res["byte_in_frame"] < loc.size
    if res["region"] == "body":
        assert res["byte_in_frame"] >= HEADER_BYTES and e.data
    else:
        assert res["byte_in_frame"] < HEADER_BYTES and not 25 <= res["byte_in_frame"] < 28  # never reserved bytes
    # dledger's own frame check sees the damage.
    frame = path.read_bytes()[loc.segment_offset:loc.segment_offset + loc.size]
    assert check_frame(frame, e.index, e.term, loc.size, int(e.kind)) is not None
    assert damage.frame_problem(loc) is not None


def test_the_same_seed_damages_the_same_byte_and_both_regions_are_drawn(tmp_path: Path) -> None:
    write_log(tmp_path / "a")
    write_log(tmp_path / "b")
    a = damage.corrupt_log_entry(tmp_path / "a", random.Random(7), max_index=ENTRIES)
    b = damage.corrupt_log_entry(tmp_path / "b", random.Random(7), max_index=ENTRIES)
    assert {k: v for k, v in a.items()} == b
    regions = set()
    for seed in range(20):
        write_log(tmp_path / f"r{seed}")
        regions.add(damage.corrupt_log_entry(tmp_path / f"r{seed}", random.Random(seed), max_index=ENTRIES)["region"])
    assert regions == {"header", "body"}


def test_corrupt_picks_only_retained_committed_sound_entries(tmp_path: Path) -> None:
    write_log(tmp_path, compact_to=60)
    log_dir = tmp_path / "dledger"
    lo, hi = damage.index_range(log_dir)
    assert 1 < lo <= 61 and hi == ENTRIES
    window = range(lo, lo + 4)

    def sound() -> set[int]:
        return {i for i in window if damage.frame_problem(damage.locate(log_dir, i)) is None}  # type: ignore[arg-type]

    outcomes = set()
    for seed in range(40):  # flips accumulate: in the end no frame of the window is sound
        was_sound, before = sound(), snapshot_files(tmp_path)
        res = damage.corrupt_log_entry(tmp_path, random.Random(seed), max_index=lo + 3)
        outcomes.add(res["damaged"])
        if was_sound:
            assert res["damaged"] and res["entry_index"] in was_sound, res
        else:  # nothing sound left to damage: nothing is touched, and the result says why
            assert not res["damaged"] and "no sound frame" in res["why"], res
            assert snapshot_files(tmp_path) == before
    assert outcomes == {True, False}


def test_an_empty_body_gets_a_header_flip_and_no_committed_entry_means_no_damage(tmp_path: Path) -> None:
    write_log(tmp_path)
    res = damage.corrupt_log_entry(tmp_path, random.Random(1), max_index=ENTRIES, region="body", index=26)  # a noop
    assert res["damaged"] and res["region"] == "header" and res["entry_index"] == 26
    res = damage.corrupt_log_entry(tmp_path / "nowhere", random.Random(1), max_index=10)
    assert res == {"damaged": False, "why": "no committed entry on disk (retained 1..0, commit 10)"}
    assert damage.corrupt_log_entry(tmp_path, random.Random(1), max_index=0)["damaged"] is False


# -- derived files -------------------------------------------------------------------------
def write_broker_state(data_dir: Path) -> None:
    """ConsumeQueues, an IndexFile and a checkpoint as the broker writes them: a
    topic of two queues, 30 produce entries of 3 keyed messages each."""
    entries = [commands.encode(CreateTopic("t", 2))]
    for i in range(30):
        msgs = [Message(topic="t", queue_id=i % 2, body=b"m%d-%d" % (i, k), tags="t", keys=(f"k{i}-{k}",),
                        born_ts_ms=1, store_ts_ms=2) for k in range(3)]
        entries.append(commands.encode(Produce("t", i % 2, 2, "p", i, 0, [tag_hash("t")] * 3,
                                               [list(m.keys) for m in msgs], encode_records(msgs))))
    positions, p = {}, 0
    for index, e in enumerate(entries, 1):  # entry body positions as a log assigns them
        positions[index] = p + HEADER_BYTES
        p += HEADER_BYTES + len(e)
    state = BrokerState(data_dir, "g1")
    for index, e in enumerate(entries, 1):
        state.apply(index, e, positions[index])
    state.checkpoint()
    state.close()


def test_consume_queue_files_are_found_with_their_topic_queue_and_first_offset(tmp_path: Path) -> None:
    write_broker_state(tmp_path)
    files = damage.consume_queue_files(tmp_path)
    assert [(t, q, first) for t, q, first, _ in files] == [("t", 0, 0), ("t", 1, 0)]
    assert all(p.stat().st_size == 45 * 20 for *_, p in files)  # 15 produce entries of 3 messages per queue


@pytest.mark.parametrize("how", ["truncate", "tear", "delete"])
def test_a_consume_queue_is_truncated_torn_or_deleted_as_reported(tmp_path: Path, how: str) -> None:
    write_broker_state(tmp_path)
    res = damage.damage_consume_queue(tmp_path, random.Random(3), how)
    path = tmp_path / res["file"]
    assert res["damaged"] and res["how"] == how and res["size_before"] == 900
    if how == "delete":
        assert not path.exists()
        return
    size = path.stat().st_size
    assert size == res["size_after"] < 900
    assert (size % 20 == 0) == (how == "truncate")


def test_a_consume_queue_flip_is_one_bit_of_one_readable_entry(tmp_path: Path) -> None:
    write_broker_state(tmp_path)
    fields = set()
    cq = tmp_path / "consumequeue"
    for seed in range(30):
        before = snapshot_files(cq)
        res = damage.damage_consume_queue(tmp_path, random.Random(seed), "flip")
        [(path, offset, xor)] = bit_differences(before, snapshot_files(cq))
        assert path == tmp_path / res["file"] and offset == res["offset"] and xor == 1 << res["bit"]
        assert offset // 20 == res["queue_offset"] and offset % 20 == res["byte_in_entry"]
        fields.add(res["field"])
        damage.flip_bit(path, offset, res["bit"])  # undo, for the next draw
    assert fields == {"phys_offset", "size", "tag_hash"}


def test_an_index_file_flip_lands_in_its_header_a_used_slot_or_a_used_entry(tmp_path: Path) -> None:
    index = IndexStore(tmp_path / "index", slots=64, max_entries=100)  # a small file, the broker's format
    index.add_batch([(f"key-{i}", 1000 + 80 * i, 80, 1_700_000_000_000 + i) for i in range(40)])
    index.close()
    [(_, path)] = damage._numbered(tmp_path / "index")
    raw = path.read_bytes()
    *_, slots, count = damage.IDX_HEADER.unpack_from(raw)
    assert (slots, count) == (64, 40) and len(raw) == 40 + 4 * 64 + 28 * 100
    entries_at = 40 + 4 * slots
    parts = set()
    for seed in range(30):
        before = snapshot_files(tmp_path)
        res = damage.damage_index_file(tmp_path, random.Random(seed), "flip")
        [(p, offset, xor)] = bit_differences(before, snapshot_files(tmp_path))
        assert p == path and offset == res["offset"] and xor == 1 << res["bit"]
        parts.add(res["part"])
        if res["part"] != "header":  # the keys it may spoil: the entry's hash, and its slot
            assert res["key_hash"] in {zlib.crc32(f"key-{i}".encode()) for i in range(40)}
            assert res["slot"] == res["key_hash"] % 64 and res["slot_count"] == 64
        if res["part"] == "header":
            assert offset < 40
        elif res["part"] == "slot":
            assert 40 <= offset < entries_at
            slot = (offset - 40) // 4
            assert damage.struct.unpack_from(">I", raw, 40 + 4 * slot)[0] != 0  # a slot in use
        else:
            assert entries_at <= offset < entries_at + 28 * count
        damage.flip_bit(path, offset, res["bit"])
    assert parts == {"header", "slot", "entry"}
    res = damage.damage_index_file(tmp_path, random.Random(0), "delete")
    assert res["damaged"] and not path.exists()


@pytest.mark.parametrize("how", ["truncate", "garbage", "flip"])
def test_the_checkpoint_is_truncated_garbled_or_flipped_as_reported(tmp_path: Path, how: str) -> None:
    write_broker_state(tmp_path)
    path = tmp_path / "broker" / "checkpoint"
    before = path.read_bytes()
    res = damage.damage_checkpoint(tmp_path, random.Random(5), how)
    after = path.read_bytes()
    assert res["damaged"] and res["file"] == "broker/checkpoint" and res["size_before"] == len(before)
    if how == "truncate":
        assert after == before[:res["size_after"]] and len(after) < len(before)
    elif how == "garbage":
        assert len(after) == len(before) and after != before
    else:
        diffs = [(i, a ^ b) for i, (a, b) in enumerate(zip(before, after)) if a != b]
        assert diffs == [(res["offset"], 1 << res["bit"])]


def test_a_missing_derived_file_is_replaced_by_the_next_kind_and_said_so(tmp_path: Path) -> None:
    write_broker_state(tmp_path)
    for _, p in damage._numbered(tmp_path / "index"):
        p.unlink()
    res = damage.damage_derived(tmp_path, random.Random(1), "indexfile", "flip")
    assert res["damaged"] and res["target"] == "checkpoint" and res["instead_of"] == "indexfile"
    assert res["how"] == "flip" and res["skipped"] == ["indexfile: no IndexFile"]
    empty = tmp_path / "empty"
    empty.mkdir()
    res = damage.damage_derived(empty, random.Random(1), "checkpoint", "garbage")
    assert res["damaged"] is False and "no checkpoint" in res["why"]
    with pytest.raises(ValueError):
        damage.damage_derived(tmp_path, random.Random(1), "indexfile", "tear")


def test_log_entries_reads_every_committed_entry_and_tells_a_damaged_frame(tmp_path: Path) -> None:
    entries = write_log(tmp_path / "a")
    write_log(tmp_path / "b")
    a = damage.log_entries(tmp_path / "a" / "dledger", 100)
    assert sorted(a) == list(range(1, 101))
    assert a == damage.log_entries(tmp_path / "b" / "dledger", 100)
    e = entries[41]
    assert a[42] == (e.term, int(e.kind), HEADER_BYTES + len(e.data), zlib.crc32(e.data))
    res = damage.corrupt_log_entry(tmp_path / "b", random.Random(2), max_index=100, index=42, region="body")
    assert res["entry_index"] == 42
    b = damage.log_entries(tmp_path / "b" / "dledger", 100)
    assert b[42] == "body crc mismatch" and {i: v for i, v in b.items() if i != 42} == {
        i: v for i, v in a.items() if i != 42}


def test_a_term_flipped_in_both_frame_and_index_shows_as_another_term(tmp_path: Path) -> None:
    # What a recovery that trusts a damaged header leaves: frame and index agree on a wrong term.
    write_log(tmp_path)
    log_dir = tmp_path / "dledger"
    loc = damage.locate(log_dir, 70)
    assert loc is not None
    damage.flip_bit(loc.segment, loc.segment_offset + 10, 6)  # the frame's term, byte 10 of 8..15
    first, index_file = [(f, p) for f, p in damage._numbered(log_dir / "index") if f <= 70][-1]
    damage.flip_bit(index_file, (70 - first) * 24 + 8 + 2, 6)  # the record's term, bytes 8..15
    term, *_ = damage.log_entries(log_dir, 100)[70]  # type: ignore[misc]
    assert term == loc.term + (1 << 46)
