"""FileLogStore: the durable segmented log (round trips, rollover, truncation,
compaction, snapshot reset, flush policy) and FileHardStateStore."""

from __future__ import annotations

import os
import re
from pathlib import Path
from typing import Iterator

import pytest

from raftmq.dledger.core.messages import Entry, EntryKind, HardState, NodeId, SnapshotMeta
from raftmq.dledger.errors import CorruptLog, EntryDamaged, StorageFailure
from raftmq.dledger.store.entry_format import BLANK_BYTES, HEADER_BYTES, place
from raftmq.dledger.store.file_store import FileHardStateStore, FileLogStore, StoreConfig
from raftmq.dledger.store.index_file import RECORD_BYTES
from raftmq.dledger.store.memory import MemoryLogStore

SEG = 4096


def data_of(index: int, term: int, size: int) -> bytes:
    seed = f"<{term}:{index}>".encode()
    return (seed * (size // len(seed) + 1))[:size]


def entry(index: int, term: int = 1, size: int = 300, kind: EntryKind = EntryKind.NORMAL) -> Entry:
    return Entry(term, index, data_of(index, term, size), kind)


def batch(lo: int, hi: int, term: int = 1, size: int = 300) -> list[Entry]:
    return [entry(i, term, size + (i * 37) % 200) for i in range(lo, hi)]


_opened: list[FileLogStore] = []


@pytest.fixture(autouse=True)
def _close_stores() -> Iterator[None]:
    """Close every store a test opened (their descriptors outlive the object)."""
    yield
    while _opened:
        _opened.pop().close()


def open_store(path: Path, **kw: object) -> FileLogStore:
    cfg = {"segment_bytes": SEG, **kw}
    store = FileLogStore(path, StoreConfig(**cfg))  # type: ignore[arg-type]
    _opened.append(store)
    return store


def segments(path: Path) -> list[str]:
    return sorted(os.listdir(path / "commitlog"))


def expected_positions(entries: list[Entry], start: int = 0, seg: int = SEG) -> list[int]:
    """Frame positions by the documented rule, computed independently of the store."""
    out = []
    end = start
    for e in entries:
        size = HEADER_BYTES + len(e.data)
        room = seg - end % seg
        pos = end if size <= room else end + room
        out.append(pos)
        end = pos + size
    return out


def assert_same_log(store: FileLogStore, entries: list[Entry], positions: list[int]) -> None:
    first = entries[0].index
    assert store.first_index() == first
    assert store.last_index() == entries[-1].index
    assert store.entries(first, store.last_index() + 1, 1 << 40) == entries
    for e, p in zip(entries, positions):
        assert store.term(e.index) == e.term
        assert store.body_position(e.index) == p + HEADER_BYTES
        assert store.read_at(p + HEADER_BYTES, len(e.data)) == e.data
    bodies = [p + HEADER_BYTES for p in positions]
    last = entries[-1].index
    assert store.body_positions(first, last) == bodies  # the runtime's one call per applied batch
    assert store.body_positions(last, last) == bodies[-1:]
    if len(entries) > 2:
        assert store.body_positions(first + 1, last - 1) == bodies[1:-1]


# -- round trips and layout ------------------------------------------------------


@pytest.mark.parametrize("cache_bytes", [0, 64 << 20])
def test_round_trip_across_segments_and_reopen(tmp_path: Path, cache_bytes: int) -> None:
    entries = batch(1, 30) + [entry(30, 2, 0, EntryKind.NOOP)] + batch(31, 60, term=2)
    store = open_store(tmp_path, cache_bytes=cache_bytes)
    for i in range(0, len(entries), 7):
        store.append(entries[i : i + 7])
    positions = expected_positions(entries)
    assert_same_log(store, entries, positions)
    assert len(segments(tmp_path)) > 3
    store.close()

    reopened = open_store(tmp_path, cache_bytes=0)
    assert_same_log(reopened, entries, positions)
    assert reopened.entries(30, 31, 0)[0].kind is EntryKind.NOOP
    reopened.append(batch(60, 65, term=3))  # appends continue at the right place after a reopen
    assert_same_log(reopened, entries + batch(60, 65, term=3), expected_positions(entries + batch(60, 65, term=3)))


def test_entries_honour_max_bytes_like_the_memory_store(tmp_path: Path) -> None:
    entries = batch(1, 40)
    mem = MemoryLogStore()
    mem.append(entries)
    for cache_bytes in (0, 3000, 1 << 20):  # all on disk, split between disk and cache, all cached
        store = open_store(tmp_path / str(cache_bytes), cache_bytes=cache_bytes)
        store.append(entries)
        for lo, hi, max_bytes in [(1, 40, 0), (1, 40, 1000), (5, 30, 2500), (3, 4, 10), (1, 40, 1 << 30), (20, 40, 999)]:
            assert store.entries(lo, hi, max_bytes) == mem.entries(lo, hi, max_bytes)
        assert store.entries(5, 5, 100) == []
        with pytest.raises(IndexError):
            store.entries(0, 3, 100)
        with pytest.raises(IndexError):
            store.entries(1, 42, 100)
        store.close()


def test_file_names_are_twenty_digit_start_positions_and_first_indexes(tmp_path: Path) -> None:
    store = open_store(tmp_path, index_file_entries=10)
    store.append(batch(1, 26, size=1000))
    store.close()
    names = segments(tmp_path)
    assert all(re.fullmatch(r"\d{20}", n) for n in names)
    assert [int(n) for n in names] == [i * SEG for i in range(len(names))]
    assert names[:2] == ["00000000000000000000", "00000000000000004096"]
    assert sorted(os.listdir(tmp_path / "index")) == [f"{i:020d}" for i in (1, 11, 21)]
    sizes = [(tmp_path / "index" / f"{i:020d}").stat().st_size for i in (1, 11, 21)]
    assert sizes == [10 * RECORD_BYTES, 10 * RECORD_BYTES, 5 * RECORD_BYTES]


def test_rollover_puts_an_entry_that_does_not_fit_at_the_next_segment_start(tmp_path: Path) -> None:
    store = open_store(tmp_path)
    entries = [entry(i, size=1000) for i in range(1, 6)]  # 1032-byte frames: 3 per 4096-byte segment
    store.append(entries)
    assert [store.body_position(i) - HEADER_BYTES for i in range(1, 6)] == [0, 1032, 2064, 4096, 5128]
    raw = (tmp_path / "commitlog" / "00000000000000000000").read_bytes()
    assert len(raw) == 3096 + BLANK_BYTES  # three frames and the end-of-segment marker
    store.close()


def test_entry_larger_than_a_segment_is_refused_without_changing_anything(tmp_path: Path) -> None:
    store = open_store(tmp_path)
    store.append([entry(1)])
    with pytest.raises(ValueError):
        store.append([entry(2, size=SEG - HEADER_BYTES + 1)])
    assert store.last_index() == 1
    store.append([entry(2, size=SEG - HEADER_BYTES)])  # exactly a segment: fits alone
    assert store.body_position(2) == SEG + HEADER_BYTES
    assert store.entries(2, 3, 0)[0] == entry(2, size=SEG - HEADER_BYTES)


def test_gap_non_consecutive_and_snapshot_rewrite_are_value_errors(tmp_path: Path) -> None:
    store = open_store(tmp_path)
    store.append(batch(1, 5))
    with pytest.raises(ValueError):
        store.append([entry(7)])
    with pytest.raises(ValueError):
        store.append([entry(5), entry(7)])
    store.reset(SnapshotMeta(10, 2, 5000))
    with pytest.raises(ValueError):
        store.append([entry(10, 2)])
    assert store.last_index() == 10


def test_config_is_validated_and_errors_name_the_field() -> None:
    with pytest.raises(ValueError, match="flush"):
        StoreConfig(flush="sometimes")
    with pytest.raises(ValueError, match="segment_bytes"):
        StoreConfig(segment_bytes=10)
    with pytest.raises(ValueError, match="index_file_entries"):
        StoreConfig(index_file_entries=0)
    with pytest.raises(ValueError, match="cache_bytes"):
        StoreConfig(cache_bytes=-1)


def test_reopening_with_another_segment_size_is_refused(tmp_path: Path) -> None:
    open_store(tmp_path).close()
    with pytest.raises(ValueError, match="segment_bytes"):
        open_store(tmp_path, segment_bytes=2 * SEG)


# -- truncation -------------------------------------------------------------------


def test_conflict_truncation_then_reappend_matches_a_store_that_never_had_the_conflict(tmp_path: Path) -> None:
    clean = open_store(tmp_path / "clean")
    clean.append(batch(1, 20))
    clean.append(batch(20, 40, term=3, size=100))

    store = open_store(tmp_path / "conflicted")
    store.append(batch(1, 20))
    store.append(batch(20, 45, term=2, size=700))  # a deposed leader's entries, spanning more segments
    store.append(batch(20, 30, term=3, size=100))  # conflict at 20: everything from 20 goes
    store.append(batch(30, 40, term=3, size=100))
    for s in (store, clean):
        assert s.last_index() == 39
    for i in range(1, 40):
        assert store.body_position(i) == clean.body_position(i)
        assert store.term(i) == clean.term(i)
    assert store.entries(1, 40, 1 << 30) == clean.entries(1, 40, 1 << 30)
    assert segments(tmp_path / "conflicted") == segments(tmp_path / "clean")
    store.close()
    clean.close()
    assert_same_log(open_store(tmp_path / "conflicted", cache_bytes=0), batch(1, 20) + batch(20, 40, term=3, size=100),
                    expected_positions(batch(1, 20) + batch(20, 40, term=3, size=100)))


def test_truncating_everything_after_the_snapshot_restarts_at_the_log_start(tmp_path: Path) -> None:
    store = open_store(tmp_path)
    store.reset(SnapshotMeta(5, 1, 1000))
    store.append(batch(6, 20))
    store.append(batch(6, 8, term=2))
    assert store.last_index() == 7
    assert store.body_position(6) == 1000 + HEADER_BYTES
    assert store.entries(6, 8, 1 << 20) == batch(6, 8, term=2)


# -- compaction and snapshot reset ------------------------------------------------


def test_compact_deletes_whole_segments_and_survives_reopen(tmp_path: Path) -> None:
    entries = [entry(i, term=i) for i in range(1, 60)]  # distinct terms: the snapshot term is checked
    positions = expected_positions(entries)
    store = open_store(tmp_path, index_file_entries=8)
    store.append(entries)
    before = segments(tmp_path)
    store.compact(30)
    first = store.first_index()
    assert first <= 31
    # the oldest kept segment starts with the new first entry; every older segment went
    assert store.body_position(first) - HEADER_BYTES == int(segments(tmp_path)[0])
    assert positions[first - 1] % SEG == 0
    assert len(segments(tmp_path)) < len(before)
    assert store.term(first - 1) == entries[first - 2].term
    assert store.snapshot_meta() == SnapshotMeta(first - 1, entries[first - 2].term, positions[first - 1])
    with pytest.raises(IndexError):
        store.term(first - 2)
    assert min(int(n) for n in os.listdir(tmp_path / "index")) > 1  # index files wholly compacted went too
    store.close()

    reopened = open_store(tmp_path, cache_bytes=0)
    assert reopened.first_index() == first
    assert reopened.term(first - 1) == entries[first - 2].term
    assert_same_log(reopened, entries[first - 1 :], positions[first - 1 :])


def test_compact_never_deletes_the_segment_holding_the_last_entry(tmp_path: Path) -> None:
    store = open_store(tmp_path)
    entries = [entry(i, size=1000) for i in range(1, 8)]
    store.append(entries)
    store.compact(100)
    assert store.last_index() == 7
    assert store.first_index() <= 7
    assert store.entries(7, 8, 0) == [entries[-1]]
    store.append([entry(8, size=1000)])
    assert store.body_position(8) == store.body_position(7) + 1032


def test_reset_then_append_at_the_snapshot_next_position(tmp_path: Path) -> None:
    store = open_store(tmp_path)
    store.append(batch(1, 30))
    meta = SnapshotMeta(100, 4, 3 * SEG + 100)
    store.reset(meta)
    assert (store.first_index(), store.last_index(), store.term(100)) == (101, 100, 4)
    assert store.snapshot_meta() == meta
    assert segments(tmp_path) == []
    assert os.listdir(tmp_path / "index") == []
    store.append([entry(101, 4), entry(102, 5)])
    assert store.body_position(101) == meta.next_position + HEADER_BYTES
    assert segments(tmp_path) == [f"{3 * SEG:020d}"]
    store.close()

    reopened = open_store(tmp_path, cache_bytes=0)
    assert reopened.snapshot_meta() == meta
    assert reopened.term(100) == 4
    assert_same_log(reopened, [entry(101, 4), entry(102, 5)], [meta.next_position, meta.next_position + 332])


@pytest.mark.parametrize("room", [3, 8, 100])
def test_reset_near_a_segment_end_rolls_the_first_entry_over(tmp_path: Path, room: int) -> None:
    store = open_store(tmp_path)
    meta = SnapshotMeta(7, 2, 2 * SEG - room)
    store.reset(meta)
    store.append([entry(8, 2), entry(9, 2)])
    assert store.body_position(8) == 2 * SEG + HEADER_BYTES
    assert store.body_position(8) == place(meta.next_position, 332, SEG) + HEADER_BYTES
    store.close()
    reopened = open_store(tmp_path, cache_bytes=0)
    assert_same_log(reopened, [entry(8, 2), entry(9, 2)], [2 * SEG, 2 * SEG + 332])


def test_interrupted_reset_is_finished_on_open(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    store = open_store(tmp_path)
    store.append(batch(1, 30))
    calls = []
    from raftmq.dledger.store import log_start as log_start_mod

    real_save = log_start_mod.save

    def crash_after_first_checkpoint(path: Path, start: log_start_mod.LogStart) -> None:
        calls.append(start)
        if len(calls) == 1:
            real_save(path, start)  # the "reset in progress" checkpoint lands...
            return
        raise StorageFailure("simulated crash")  # ...and the process dies before clearing it

    monkeypatch.setattr(log_start_mod, "save", crash_after_first_checkpoint)
    monkeypatch.setattr("raftmq.dledger.store.segment.SegmentFiles.delete_all", lambda self: None)  # no file deleted yet
    with pytest.raises(StorageFailure):
        store.reset(SnapshotMeta(50, 3, 9000))
    store.close()
    monkeypatch.undo()

    reopened = open_store(tmp_path)
    assert (reopened.first_index(), reopened.last_index(), reopened.term(50)) == (51, 50, 3)
    assert segments(tmp_path) == []
    reopened.append([entry(51, 3)])
    assert reopened.body_position(51) == 9000 + HEADER_BYTES


# -- recovery of a torn or corrupt tail --------------------------------------------


def last_segment(path: Path) -> Path:
    return path / "commitlog" / segments(path)[-1]


def written_store(path: Path, n: int = 25) -> list[Entry]:
    entries = batch(1, n + 1)
    store = open_store(path)
    store.append(entries)
    store.close()
    return entries


@pytest.mark.parametrize("cut", [1, 5, HEADER_BYTES - 1, HEADER_BYTES, HEADER_BYTES + 1, 150])
def test_torn_tail_is_cut_to_the_last_complete_entry(tmp_path: Path, cut: int) -> None:
    entries = written_store(tmp_path)
    positions = expected_positions(entries)
    seg = last_segment(tmp_path)
    last_frame = positions[-1] - int(seg.name)
    # keep only ``cut`` bytes of the last frame (mid-header, mid-body)
    os.truncate(seg, last_frame + cut)

    store = open_store(tmp_path, cache_bytes=0)
    assert store.last_index() == len(entries) - 1
    assert_same_log(store, entries[:-1], positions[:-1])
    assert seg.stat().st_size == last_frame  # the torn bytes are gone from the file
    replacement = [entry(len(entries), 2, 77), entry(len(entries) + 1, 2, 77)]
    store.append(replacement)
    assert store.body_position(len(entries)) == positions[-1] + HEADER_BYTES
    store.close()
    assert_same_log(open_store(tmp_path, cache_bytes=0), entries[:-1] + replacement,
                    expected_positions(entries[:-1] + replacement))


def test_corrupt_last_body_byte_cuts_the_last_entry(tmp_path: Path) -> None:
    entries = written_store(tmp_path)
    seg = last_segment(tmp_path)
    raw = bytearray(seg.read_bytes())
    raw[-1] ^= 0xFF
    seg.write_bytes(bytes(raw))
    store = open_store(tmp_path, cache_bytes=0)
    assert store.last_index() == len(entries) - 1
    assert store.entries(1, len(entries), 1 << 30) == entries[:-1]


def test_zeros_after_the_last_entry_are_cut(tmp_path: Path) -> None:
    entries = written_store(tmp_path)
    seg = last_segment(tmp_path)
    size = seg.stat().st_size
    with open(seg, "ab") as f:
        f.write(b"\0" * 500)  # pages the OS extended but never wrote
    store = open_store(tmp_path)
    assert store.last_index() == len(entries)
    assert seg.stat().st_size == size


def test_empty_last_segment_is_dropped_and_the_one_before_checked(tmp_path: Path) -> None:
    entries = written_store(tmp_path)
    seg = last_segment(tmp_path)
    os.truncate(seg, 0)  # the newest segment's data never reached the disk
    store = open_store(tmp_path, cache_bytes=0)
    gone = [e for e in entries if store.last_index() < e.index]
    assert gone and store.last_index() == len(entries) - len(gone)
    assert store.entries(1, store.last_index() + 1, 1 << 30) == entries[: store.last_index()]
    store.append([entry(store.last_index() + 1)])
    assert store.body_position(store.last_index()) == expected_positions(entries)[store.last_index() - 1] + HEADER_BYTES


def test_corrupt_entry_in_an_older_segment_is_found_on_open_and_never_served(tmp_path: Path) -> None:
    entries = written_store(tmp_path)
    positions = expected_positions(entries)
    first_seg = tmp_path / "commitlog" / segments(tmp_path)[0]
    raw = bytearray(first_seg.read_bytes())
    raw[positions[1] + HEADER_BYTES + 10] ^= 0x01  # a body byte of entry 2
    first_seg.write_bytes(bytes(raw))
    store = open_store(tmp_path, cache_bytes=0)
    assert store.last_index() == len(entries)  # an older segment is not silently cut
    assert store.damaged() == [(2, 1)]  # the scrub on open found it before any reader
    assert store.entries(1, 5, 1 << 20) == entries[:1]  # served up to the damage, never past it
    with pytest.raises(CorruptLog):
        store.entries(2, 3, 0)
    assert store.entries(3, 5, 1 << 20) == entries[2:4]


def test_a_sound_frame_out_of_sequence_after_the_tail_is_cut(tmp_path: Path) -> None:
    entries = written_store(tmp_path)
    positions = expected_positions(entries)
    seg = last_segment(tmp_path)
    frame = seg.read_bytes()[positions[-2] - int(seg.name) : positions[-1] - int(seg.name)]
    with open(seg, "ab") as f:
        f.write(frame)  # stale bytes with a valid CRC but the index of an earlier entry
    store = open_store(tmp_path, cache_bytes=0)
    assert store.last_index() == len(entries)
    store.append([entry(len(entries) + 1, 2)])
    assert store.body_position(len(entries) + 1) == positions[-1] + 32 + len(entries[-1].data) + HEADER_BYTES
    assert store.entries(len(entries) + 1, len(entries) + 2, 0) == [entry(len(entries) + 1, 2)]


def test_a_damaged_entry_followed_by_sound_ones_is_kept_reported_and_repaired_not_cut(tmp_path: Path) -> None:
    """A flipped bit inside the log is damage, not a torn tail: cutting there would
    drop every sound entry after it (committed ones among them). The entry is kept,
    reported, never served, and repaired in place from a peer's copy."""
    entries = written_store(tmp_path)
    positions = expected_positions(entries)
    names = segments(tmp_path)
    prev_start = int(names[-2])
    boundary = max(i for i, p in enumerate(positions) if prev_start <= p < prev_start + SEG)
    prev = tmp_path / "commitlog" / names[-2]
    raw = bytearray(prev.read_bytes())
    raw[positions[boundary] - prev_start + HEADER_BYTES + 3] ^= 0x10
    prev.write_bytes(bytes(raw))
    store = open_store(tmp_path, cache_bytes=0)
    damaged = entries[boundary]
    assert store.last_index() == len(entries)
    assert store.damaged() == [(damaged.index, damaged.term)]
    assert not store.lost_entries_on_open
    assert segments(tmp_path) == names
    assert store.entries(1, len(entries) + 1, 1 << 30) == entries[:boundary]  # stops before it
    with pytest.raises(EntryDamaged):
        store.entries(damaged.index, damaged.index + 1, 1 << 30)
    with pytest.raises(EntryDamaged):
        store.read_at(store.body_position(damaged.index), 8)
    assert store.entries(damaged.index + 1, len(entries) + 1, 1 << 30) == entries[boundary + 1 :]
    assert not store.repair(Entry(damaged.term + 1, damaged.index, damaged.data))  # not the same entry
    assert not store.repair(Entry(damaged.term, damaged.index, damaged.data + b"x"))
    forged = bytes([damaged.data[0] ^ 0xFF]) + damaged.data[1:]
    assert not store.repair(Entry(damaged.term, damaged.index, forged))  # right size, not the body the header records
    assert store.repair(damaged)
    assert store.damaged() == []
    assert store.entries(1, len(entries) + 1, 1 << 30) == entries
    store.close()
    store = open_store(tmp_path, cache_bytes=0)
    assert store.damaged() == [] and store.entries(1, len(entries) + 1, 1 << 30) == entries


def test_a_damaged_entry_found_when_read_is_reported_and_never_served(tmp_path: Path) -> None:
    store = open_store(tmp_path, cache_bytes=0)
    entries = batch(1, 12)
    store.append(entries)
    positions = expected_positions(entries)
    seg0 = tmp_path / "commitlog" / segments(tmp_path)[0]
    with open(seg0, "r+b") as f:  # damage it behind the open store's back
        f.seek(positions[2] + HEADER_BYTES + 5)
        b = f.read(1)
        f.seek(positions[2] + HEADER_BYTES + 5)
        f.write(bytes([b[0] ^ 1]))
    assert store.entries(1, 12, 1 << 30) == entries[:2]
    assert store.damaged() == [(3, 1)]
    with pytest.raises(EntryDamaged):
        store.entries(3, 12, 1 << 30)
    assert store.repair(entries[2])
    assert store.entries(1, 12, 1 << 30) == entries


def test_hole_in_an_unflushed_batch_is_damage_in_place_when_sound_entries_follow(tmp_path: Path) -> None:
    """Unsynced pages reach the disk in any order: a page of the last batch that
    never reached the disk, with sound entries after it, is kept as damaged (to
    be repaired from a peer, or overwritten by a leader) rather than cut."""
    store = open_store(tmp_path, flush="sync")
    flushed = [entry(i, size=600) for i in range(1, 5)]  # 632-byte frames: 6 per segment
    store.append(flushed)
    store.flush()
    unflushed = [entry(i, size=600) for i in range(5, 11)]  # entries 5, 6 in segment 0; 7.. in segment 1
    store.append(unflushed)
    store.close()
    positions = expected_positions(flushed + unflushed)
    assert positions[4] < SEG <= positions[6]
    seg0 = tmp_path / "commitlog" / segments(tmp_path)[0]
    raw = bytearray(seg0.read_bytes())
    raw[positions[4] + 100 : positions[4] + 400] = bytes(300)  # a page of entry 5 never written
    seg0.write_bytes(bytes(raw))

    store = open_store(tmp_path, cache_bytes=0)
    assert store.last_index() == 10
    assert store.damaged() == [(5, 1)]
    assert store.entries(1, 11, 1 << 30) == flushed


def test_a_torn_tail_with_nothing_sound_after_it_is_cut(tmp_path: Path) -> None:
    store = open_store(tmp_path, flush="sync")
    entries = [entry(i, size=600) for i in range(1, 9)]
    store.append(entries)
    store.close()
    positions = expected_positions(entries)
    last = tmp_path / "commitlog" / segments(tmp_path)[-1]
    os.truncate(last, positions[7] - int(last.name) + 40)  # entry 8 torn
    store = open_store(tmp_path, cache_bytes=0)
    assert store.last_index() == 7 and store.damaged() == [] and not store.lost_entries_on_open
    assert store.entries(1, 8, 1 << 30) == entries[:7]


def test_a_torn_end_of_segment_marker_is_rewritten_when_the_next_segment_is_sound(tmp_path: Path) -> None:
    store = open_store(tmp_path)
    entries = [entry(i, size=1000) for i in range(1, 6)]  # 3 frames of 1032 bytes and a marker per segment
    store.append(entries)
    store.close()
    seg0 = tmp_path / "commitlog" / segments(tmp_path)[0]
    os.truncate(seg0, 3 * 1032 + 4)  # the marker at the end of segment 0 is torn
    store = open_store(tmp_path, cache_bytes=0)
    assert store.last_index() == 5 and store.damaged() == []
    assert store.entries(1, 6, 1 << 30) == entries
    store.close()
    assert os.path.getsize(seg0) == 3 * 1032 + BLANK_BYTES  # the marker is whole again


def test_a_torn_rollover_with_nothing_after_it_ends_the_log_before_it(tmp_path: Path) -> None:
    store = open_store(tmp_path)
    entries = [entry(i, size=1000) for i in range(1, 5)]
    store.append(entries)
    store.close()
    names = segments(tmp_path)
    seg0 = tmp_path / "commitlog" / names[0]
    os.truncate(seg0, 3 * 1032 + 4)  # torn marker
    os.truncate(tmp_path / "commitlog" / names[1], 10)  # and the next segment's first frame torn
    store = open_store(tmp_path, cache_bytes=0)
    assert store.last_index() == 3
    assert segments(tmp_path) == [seg0.name]
    store.append([entries[3]])  # and the rollover is redone identically
    assert store.body_position(4) == SEG + HEADER_BYTES


def test_damage_that_cannot_be_bounded_in_an_old_segment_is_cut_and_reported_as_lost(tmp_path: Path) -> None:
    """Segments older than the newest two are durable: a frame there whose bounds
    neither its header nor the index can give is cut, and the store says it dropped
    durable entries (the node must then not vote until a leader gives them back)."""
    store = open_store(tmp_path)
    entries = [entry(i, size=1000) for i in range(1, 10)]  # segments 0, 1, 2
    store.append(entries)
    store.close()
    seg0 = tmp_path / "commitlog" / segments(tmp_path)[0]
    raw = bytearray(seg0.read_bytes())
    raw[1032 : 1032 + 8] = bytes(8)  # entry 2's magic and size gone
    seg0.write_bytes(bytes(raw))
    index0 = tmp_path / "index" / sorted(os.listdir(tmp_path / "index"))[0]
    iraw = bytearray(index0.read_bytes())
    iraw[RECORD_BYTES : 2 * RECORD_BYTES] = bytes(RECORD_BYTES)  # and its index record
    index0.write_bytes(bytes(iraw))
    store = open_store(tmp_path, cache_bytes=0)
    assert store.last_index() == 1
    assert store.lost_entries_on_open


def test_a_missing_log_start_checkpoint_is_refused_when_log_files_exist(tmp_path: Path) -> None:
    written_store(tmp_path)
    (tmp_path / "meta" / "log_start").unlink()
    with pytest.raises(CorruptLog):
        open_store(tmp_path)
    assert segments(tmp_path)


def test_lost_index_is_rebuilt_from_the_data(tmp_path: Path) -> None:
    entries = written_store(tmp_path)
    for name in os.listdir(tmp_path / "index"):
        os.unlink(tmp_path / "index" / name)
    store = open_store(tmp_path, cache_bytes=0)
    assert_same_log(store, entries, expected_positions(entries))


def test_index_ahead_of_or_behind_the_data_is_repaired(tmp_path: Path) -> None:
    entries = written_store(tmp_path)
    index_file = tmp_path / "index" / f"{1:020d}"
    os.truncate(index_file, (len(entries) - 3) * RECORD_BYTES + 5)  # behind, with a torn record
    store = open_store(tmp_path, cache_bytes=0)
    assert_same_log(store, entries, expected_positions(entries))
    store.close()

    seg = last_segment(tmp_path)
    os.truncate(seg, expected_positions(entries)[-2] - int(seg.name))  # data behind the index
    store = open_store(tmp_path, cache_bytes=0)
    assert store.last_index() == len(entries) - 2
    assert index_file.stat().st_size == (len(entries) - 2) * RECORD_BYTES


def test_reopen_after_reopen_is_stable(tmp_path: Path) -> None:
    entries = written_store(tmp_path)
    for _ in range(3):
        store = open_store(tmp_path, cache_bytes=0)
        assert store.last_index() == len(entries)
        store.close()


# -- flush policy and failures ------------------------------------------------------


def test_sync_flush_fdatasyncs_each_written_file_once_per_batch(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    store = open_store(tmp_path, segment_bytes=1 << 20, flush="sync")
    synced: list[int] = []
    real = os.fdatasync

    def counting(fd: int) -> None:
        synced.append(fd)
        real(fd)

    monkeypatch.setattr(os, "fdatasync", counting)
    store.append(batch(1, 101))  # 100 entries
    store.flush()
    assert len(synced) == 2  # one data segment and one index file, not one per entry
    store.append(batch(101, 201))
    store.flush()
    assert len(synced) == 4
    store.flush()  # nothing written since
    assert len(synced) == 4


def test_async_flush_never_fdatasyncs(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    store = open_store(tmp_path, segment_bytes=1 << 20, flush="async")
    synced: list[int] = []
    monkeypatch.setattr(os, "fdatasync", synced.append)
    for lo in range(1, 500, 50):
        store.append(batch(lo, lo + 50))
        store.flush()
    assert synced == []


def test_creating_a_segment_makes_all_but_the_newest_two_durable_even_when_async(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    store = open_store(tmp_path, flush="async")
    synced: list[str] = []
    real = os.fdatasync

    def record(fd: int) -> None:
        synced.append(os.path.basename(os.readlink(f"/proc/self/fd/{fd}")))
        real(fd)

    monkeypatch.setattr(os, "fdatasync", record)
    entries = [entry(i, size=1000) for i in range(1, 13)]  # 3 per segment
    for e in entries[:6]:
        store.append([e])
    assert synced == []  # two segments: nothing forced yet
    store.append([entries[6]])  # creates the third segment: the first one is sealed
    assert synced == [f"{0:020d}", f"{1:020d}"]  # segment 0 and the index file
    store.append(entries[7:10])  # creates the fourth: segment 1 (and the index) next
    assert synced[2:] == [f"{SEG:020d}", f"{1:020d}"]


def test_conflict_truncation_is_made_durable_at_once(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    store = open_store(tmp_path, segment_bytes=1 << 20, flush="async")
    store.append(batch(1, 20))
    synced: list[int] = []
    monkeypatch.setattr(os, "fdatasync", synced.append)
    store.append(batch(20, 25))  # no conflict: nothing forced
    assert synced == []
    store.append(batch(10, 12, term=2))
    assert len(synced) == 2  # the cut data segment and index file, before the new entries go over them


def test_one_data_write_per_segment_touched_per_batch(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    store = open_store(tmp_path, segment_bytes=1 << 20)
    writes: list[int] = []
    real = os.pwrite

    def counting(fd: int, data: bytes, offset: int) -> int:
        writes.append(fd)
        return real(fd, data, offset)

    monkeypatch.setattr(os, "pwrite", counting)
    store.append(batch(1, 101))
    assert len(writes) == 2  # one for the data, one for the index records


def test_write_failure_raises_storage_failure_and_the_store_stops(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    store = open_store(tmp_path, flush="sync")
    store.append(batch(1, 5))

    def fail(*_: object) -> int:
        raise OSError(28, "No space left on device")

    monkeypatch.setattr(os, "pwrite", fail)
    with pytest.raises(StorageFailure):
        store.append(batch(5, 10))
    monkeypatch.undo()
    with pytest.raises(StorageFailure):
        store.append(batch(5, 10))  # no carrying on after a failed write


def test_fsync_failure_raises_storage_failure(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    store = open_store(tmp_path, flush="sync")
    store.append(batch(1, 5))

    def fail(_: int) -> None:
        raise OSError(5, "Input/output error")

    monkeypatch.setattr(os, "fdatasync", fail)
    with pytest.raises(StorageFailure):
        store.flush()


def test_tail_reads_come_from_the_cache_without_touching_the_disk(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    store = open_store(tmp_path, cache_bytes=10_000)
    entries = batch(1, 100)
    store.append(entries)

    def no_disk(*_: object) -> bytes:
        raise AssertionError("read from disk")

    monkeypatch.setattr(os, "pread", no_disk)
    tail = entries[-10:]
    assert store.entries(90, 100, 1 << 20) == tail
    assert [store.term(e.index) for e in tail] == [e.term for e in tail]
    p = store.body_position(99)
    assert store.read_at(p + 5, 20) == entries[-1].data[5:25]
    with pytest.raises(AssertionError):
        store.entries(1, 2, 0)  # an old entry does need the disk


# -- hard state -----------------------------------------------------------------------


def test_hard_state_round_trip(tmp_path: Path) -> None:
    hs = FileHardStateStore(tmp_path)
    assert hs.load() == HardState()
    hs.save(HardState(7, NodeId("n2")))
    assert FileHardStateStore(tmp_path).load() == HardState(7, NodeId("n2"))
    hs.save(HardState(8, None))
    assert FileHardStateStore(tmp_path).load() == HardState(8, None)
    hs.save(HardState(9, NodeId("nœud-3")))
    assert FileHardStateStore(tmp_path).load() == HardState(9, NodeId("nœud-3"))


@pytest.mark.parametrize("failing", ["write", "fsync", "replace"])
def test_hard_state_failed_save_keeps_the_old_state_whole(tmp_path: Path, monkeypatch: pytest.MonkeyPatch,
                                                          failing: str) -> None:
    hs = FileHardStateStore(tmp_path)
    hs.save(HardState(3, NodeId("n1")))

    def fail(*_: object) -> None:
        raise OSError(5, "Input/output error")

    monkeypatch.setattr(os, failing, fail)
    with pytest.raises(StorageFailure):
        hs.save(HardState(4, NodeId("n2")))
    monkeypatch.undo()
    assert FileHardStateStore(tmp_path).load() == HardState(3, NodeId("n1"))


def test_hard_state_ignores_a_torn_temp_file_and_rejects_a_damaged_file(tmp_path: Path) -> None:
    hs = FileHardStateStore(tmp_path)
    hs.save(HardState(5, NodeId("n3")))
    path = tmp_path / "meta" / "hardstate"
    (tmp_path / "meta" / "hardstate.tmp").write_bytes(path.read_bytes()[:7])  # a crash mid-save
    assert FileHardStateStore(tmp_path).load() == HardState(5, NodeId("n3"))
    raw = bytearray(path.read_bytes())
    raw[10] ^= 0xFF
    path.write_bytes(bytes(raw))
    with pytest.raises(CorruptLog):
        FileHardStateStore(tmp_path).load()


def test_open_descriptors_stay_bounded_on_a_long_log(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr("raftmq.dledger.store.segment.MAX_OPEN_SEGMENTS", 4)
    store = open_store(tmp_path, segment_bytes=1024, cache_bytes=0)
    entries = [entry(i, size=900) for i in range(1, 41)]  # one segment each
    for e in entries:
        store.append([e])
    assert store.entries(1, 41, 1 << 30) == entries  # reading every segment reopens the closed ones
    assert len(store._segments._fds) <= 4


@pytest.mark.parametrize("byte", [8, 12, 15, 16, 23, 24, 26])  # term high and low, index, kind, the check itself
def test_a_flipped_bit_in_a_header_field_the_body_crc_does_not_cover_is_damage(tmp_path: Path, byte: int) -> None:
    """Found by the chaos run: a bit flipped in an entry's term passed the scan
    (the body CRC does not cover the header), and the node believed a wrong term.
    The header check catches it; the entry is repaired with the index's term."""
    store = open_store(tmp_path)
    entries = [entry(i, size=200) for i in range(1, 12)]
    store.append(entries)
    store.close()
    positions = expected_positions(entries)
    seg0 = tmp_path / "commitlog" / segments(tmp_path)[0]
    raw = bytearray(seg0.read_bytes())
    raw[positions[4] + byte] ^= 0x01
    seg0.write_bytes(bytes(raw))
    store = open_store(tmp_path, cache_bytes=0)
    assert store.last_index() == 11
    assert store.damaged() == [(5, 1)]
    assert store.term(5) == 1
    assert store.repair(entries[4])
    assert store.entries(1, 12, 1 << 30) == entries


@pytest.mark.parametrize("cache_bytes", [0, 3 * 1100, 1 << 20])
def test_body_positions_of_a_range_match_each_entrys_whether_cached_or_not(tmp_path: Path, cache_bytes: int) -> None:
    store = open_store(tmp_path, cache_bytes=cache_bytes)  # none, the last few, or all entries cached
    entries = [entry(i, size=1000) for i in range(1, 13)]
    store.append(entries)
    each = [store.body_position(i) for i in range(1, 13)]
    assert each == [p + HEADER_BYTES for p in expected_positions(entries)]
    for lo, hi in [(1, 12), (1, 1), (5, 9), (10, 12), (12, 12)]:
        assert store.body_positions(lo, hi) == each[lo - 1 : hi], (lo, hi)
    for lo, hi in [(0, 3), (11, 13)]:
        with pytest.raises(IndexError):
            store.body_positions(lo, hi)
