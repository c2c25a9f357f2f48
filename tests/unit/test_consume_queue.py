"""ConsumeQueue: fixed 20-byte entries per topic and queue, file naming,
restart truncation, retention, and byte-identical replicas."""

from __future__ import annotations

import os
import struct
import tempfile
import zlib
from pathlib import Path

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from raftmq.broker.store import CorruptStore
from raftmq.broker.store.consume_queue import ENTRY_BYTES, ConsumeQueue, ConsumeQueueStore, DamagedEntry

EPF = 4  # entries per file: small, to cross file boundaries


def expected(lo: int, hi: int) -> list[tuple[int, int, int, int]]:
    """What ``fill`` wrote at offsets lo..hi: (queue offset, phys, size, tag hash)."""
    return [(i, i * 1000, 100 + i, i * 7 - 3) for i in range(lo, hi)]


def fill(q: ConsumeQueue, n: int, batch: int = 3) -> None:
    """Append entries 0..n in batches of ``batch``, values a function of the offset."""
    pos = q.max_offset
    while pos < n:
        k = min(batch, n - pos)
        q.append_batch([(i * 1000, 100 + i, i * 7 - 3) for i in range(pos, pos + k)])
        pos += k


def files(d: Path) -> list[str]:
    return sorted(n for n in os.listdir(d) if n.isdigit())


def snapshot_dir(d: Path) -> dict[str, bytes]:
    return {n: (d / n).read_bytes() for n in sorted(os.listdir(d))}


# ----------------------------------------------------------------------
# append and read
# ----------------------------------------------------------------------
def test_append_returns_first_offset_and_read_crosses_file_boundaries(tmp_path: Path) -> None:
    q = ConsumeQueue(tmp_path / "q", entries_per_file=EPF)
    assert q.append_batch([(0, 100, -3), (1000, 101, 4)]) == 0
    assert q.append_batch([(i * 1000, 100 + i, i * 7 - 3) for i in range(2, 11)]) == 2  # spans 3 files
    assert (q.min_offset, q.max_offset) == (0, 11)
    assert q.read(0, 100) == expected(0, 11)
    assert q.read(3, 6) == expected(3, 9)  # 3 | 4..7 | 8
    assert q.read(10, 5) == expected(10, 11)


def test_reading_at_or_beyond_max_returns_empty(tmp_path: Path) -> None:
    q = ConsumeQueue(tmp_path / "q", entries_per_file=EPF)
    assert q.read(0, 10) == []
    fill(q, 6)
    assert q.read(6, 10) == []
    assert q.read(600, 10) == []
    assert q.read(2, 0) == []


def test_empty_batch_appends_nothing(tmp_path: Path) -> None:
    q = ConsumeQueue(tmp_path / "q", entries_per_file=EPF)
    fill(q, 2)
    assert q.append_batch([]) == 2
    assert q.max_offset == 2


def test_files_are_named_by_first_offset_in_20_digits_with_fixed_20_byte_entries(tmp_path: Path) -> None:
    d = tmp_path / "q"
    q = ConsumeQueue(d, entries_per_file=EPF)
    fill(q, 10)
    q.flush()
    assert files(d) == ["00000000000000000000", "00000000000000000004", "00000000000000000008"]
    assert [(d / n).stat().st_size for n in files(d)] == [4 * ENTRY_BYTES, 4 * ENTRY_BYTES, 2 * ENTRY_BYTES]
    raw = (d / "00000000000000000004").read_bytes()
    # entry 5 is the second of file 4: u64 phys | u32 size | i64 tag hash, big-endian
    assert raw[20:40] == struct.pack(">QIq", 5000, 105, 32)
    assert struct.unpack(">QIq", (d / "00000000000000000000").read_bytes()[:20]) == (0, 100, -3)


def test_default_entries_per_file_is_300000(tmp_path: Path) -> None:
    q = ConsumeQueue(tmp_path / "q")
    assert q.entries_per_file == 300_000


def test_out_of_range_entry_is_a_value_error(tmp_path: Path) -> None:
    q = ConsumeQueue(tmp_path / "q", entries_per_file=EPF)
    with pytest.raises(ValueError):
        q.append_batch([(-1, 10, 0)])
    with pytest.raises(ValueError):
        q.append_batch([(0, 2**32, 0)])
    assert q.max_offset == 0


# ----------------------------------------------------------------------
# restart
# ----------------------------------------------------------------------
def test_reopen_keeps_entries_and_offsets(tmp_path: Path) -> None:
    d = tmp_path / "q"
    q = ConsumeQueue(d, entries_per_file=EPF)
    fill(q, 9)
    q.close()
    q = ConsumeQueue(d, entries_per_file=EPF)
    assert (q.min_offset, q.max_offset) == (0, 9)
    assert q.read(0, 20) == expected(0, 9)
    assert q.append_batch([(9000, 109, 60)]) == 9
    assert q.read(0, 20) == expected(0, 10)


def test_torn_tail_is_cut_on_open(tmp_path: Path) -> None:
    d = tmp_path / "q"
    q = ConsumeQueue(d, entries_per_file=EPF)
    fill(q, 6)
    q.close()
    with open(d / "00000000000000000004", "ab") as f:
        f.write(b"\x01" * 7)  # a partial entry
    q = ConsumeQueue(d, entries_per_file=EPF)
    assert q.max_offset == 6
    assert (d / "00000000000000000004").stat().st_size == 2 * ENTRY_BYTES


def test_missing_middle_file_is_reported_not_papered_over(tmp_path: Path) -> None:
    d = tmp_path / "q"
    q = ConsumeQueue(d, entries_per_file=EPF)
    fill(q, 10)
    q.close()
    (d / "00000000000000000004").unlink()
    with pytest.raises(CorruptStore, match="missing"):
        ConsumeQueue(d, entries_per_file=EPF)


def test_truncate_to_cuts_entries_at_and_after(tmp_path: Path) -> None:
    d = tmp_path / "q"
    q = ConsumeQueue(d, entries_per_file=EPF)
    fill(q, 11)
    q.truncate_to(6)
    assert q.max_offset == 6
    assert q.read(0, 20) == expected(0, 6)
    assert files(d) == ["00000000000000000000", "00000000000000000004"]
    q.truncate_to(4)  # at a file boundary: the file starting at 4 goes
    assert files(d) == ["00000000000000000000"]
    assert q.read(0, 20) == expected(0, 4)
    q.close()
    q = ConsumeQueue(d, entries_per_file=EPF)
    assert (q.min_offset, q.max_offset) == (0, 4)
    fill(q, 7)  # the re-applied entries land where they were
    assert q.read(0, 20) == expected(0, 7)


def test_truncate_then_reapply_is_byte_identical_to_never_having_written(tmp_path: Path) -> None:
    a = ConsumeQueue(tmp_path / "a", entries_per_file=EPF)
    b = ConsumeQueue(tmp_path / "b", entries_per_file=EPF)
    fill(a, 11)
    a.append_batch([(99_000, 1, 1)] * 5)  # written after the "checkpoint" at 11
    a.truncate_to(11)
    fill(b, 11, batch=5)
    a.append_batch([(20_000, 3, 3)])
    b.append_batch([(20_000, 3, 3)])
    a.flush()
    b.flush()
    assert snapshot_dir(tmp_path / "a") == snapshot_dir(tmp_path / "b")


def test_truncate_to_zero_and_beyond_max(tmp_path: Path) -> None:
    d = tmp_path / "q"
    q = ConsumeQueue(d, entries_per_file=EPF)
    fill(q, 5)
    with pytest.raises(CorruptStore):
        q.truncate_to(6)
    q.truncate_to(0)
    assert (q.min_offset, q.max_offset) == (0, 0)
    assert files(d) == []
    fill(q, 2)
    assert q.read(0, 10) == expected(0, 2)


# ----------------------------------------------------------------------
# retention
# ----------------------------------------------------------------------
def test_delete_before_removes_whole_files_and_advances_min_offset(tmp_path: Path) -> None:
    d = tmp_path / "q"
    q = ConsumeQueue(d, entries_per_file=EPF)
    fill(q, 11)  # phys = offset * 1000
    assert q.delete_before(5500) == 6  # entries 0..5 point before 5500
    assert (q.min_offset, q.max_offset) == (6, 11)
    assert files(d) == ["00000000000000000004", "00000000000000000008"]
    assert q.read(0, 3) == expected(6, 9)  # below min reads from min
    q.close()
    q = ConsumeQueue(d, entries_per_file=EPF)
    assert (q.min_offset, q.max_offset) == (6, 11)  # min kept across restart
    assert q.read(6, 20) == expected(6, 11)


def test_delete_before_an_earlier_offset_changes_nothing(tmp_path: Path) -> None:
    d = tmp_path / "q"
    q = ConsumeQueue(d, entries_per_file=EPF)
    fill(q, 6)
    assert q.delete_before(0) == 0
    assert q.delete_before(-5) == 0
    assert files(d) == ["00000000000000000000", "00000000000000000004"]


def test_deleting_every_file_keeps_the_offsets_and_appends_resume_at_max(tmp_path: Path) -> None:
    d = tmp_path / "q"
    q = ConsumeQueue(d, entries_per_file=EPF)
    fill(q, 6)
    assert q.delete_before(10**9) == 6
    assert (q.min_offset, q.max_offset) == (6, 6)
    assert files(d) == []
    q.close()
    q = ConsumeQueue(d, entries_per_file=EPF)
    assert (q.min_offset, q.max_offset) == (6, 6)
    assert q.read(0, 10) == []
    assert q.append_batch([(6000, 106, 39), (7000, 107, 46), (8000, 108, 53)]) == 6
    assert files(d) == ["00000000000000000004", "00000000000000000008"]  # file names stay aligned
    q.close()
    q = ConsumeQueue(d, entries_per_file=EPF)
    assert (q.min_offset, q.max_offset) == (6, 9)
    assert q.read(0, 10) == expected(6, 9)


def test_truncate_below_min_offset_leaves_an_empty_queue_resuming_there(tmp_path: Path) -> None:
    d = tmp_path / "q"
    q = ConsumeQueue(d, entries_per_file=EPF)
    fill(q, 10)
    q.delete_before(7000)
    q.truncate_to(5)
    assert (q.min_offset, q.max_offset) == (5, 5)
    q.close()
    q = ConsumeQueue(d, entries_per_file=EPF)
    assert (q.min_offset, q.max_offset) == (5, 5)


def test_reset_resumes_an_empty_queue_mid_file(tmp_path: Path) -> None:
    d = tmp_path / "q"
    q = ConsumeQueue(d, entries_per_file=EPF)
    fill(q, 3)
    q.reset(6)
    assert (q.min_offset, q.max_offset) == (6, 6)
    fill(q, 9)
    assert q.read(0, 10) == expected(6, 9)
    q.close()
    q = ConsumeQueue(d, entries_per_file=EPF)
    assert (q.min_offset, q.max_offset) == (6, 9)
    assert q.read(0, 10) == expected(6, 9)


# ----------------------------------------------------------------------
# determinism
# ----------------------------------------------------------------------
def test_two_queues_fed_the_same_entries_are_byte_identical(tmp_path: Path) -> None:
    a = ConsumeQueue(tmp_path / "a", entries_per_file=EPF)
    b = ConsumeQueue(tmp_path / "b", entries_per_file=EPF)
    fill(a, 13, batch=3)
    fill(b, 13, batch=5)  # batch boundaries do not matter either
    a.close()
    b.close()
    assert snapshot_dir(tmp_path / "a") == snapshot_dir(tmp_path / "b")
    assert len(snapshot_dir(tmp_path / "a")) == 4


# ----------------------------------------------------------------------
# the store
# ----------------------------------------------------------------------
def test_store_lays_queues_out_by_topic_and_queue_id_and_lists_them_on_reopen(tmp_path: Path) -> None:
    s = ConsumeQueueStore(tmp_path, entries_per_file=EPF)
    fill(s.queue("orders", 0), 5)
    fill(s.queue("orders", 3), 2)
    fill(s.queue("pay", 1), 1)
    assert s.queue("orders", 0) is s.queue("orders", 0)
    s.flush()
    s.close()
    assert files(tmp_path / "consumequeue" / "orders" / "0") == ["00000000000000000000", "00000000000000000004"]
    s = ConsumeQueueStore(tmp_path, entries_per_file=EPF)
    assert s.queues() == [("orders", 0), ("orders", 3), ("pay", 1)]
    assert s.queue("orders", 0).read(0, 10) == expected(0, 5)
    assert s.queue("pay", 1).max_offset == 1
    assert s.queue("new", 0).max_offset == 0  # created lazily, nothing on disk yet
    s.close()


def test_store_truncate_all_cuts_known_queues_and_drops_newer_ones(tmp_path: Path) -> None:
    s = ConsumeQueueStore(tmp_path, entries_per_file=EPF)
    fill(s.queue("a", 0), 7)
    fill(s.queue("b", 0), 3)  # created after the checkpoint
    s.truncate_all({("a", 0): 5})
    assert s.queues() == [("a", 0)]
    assert s.queue("a", 0).max_offset == 5
    assert not (tmp_path / "consumequeue" / "b").exists()
    with pytest.raises(CorruptStore):
        s.truncate_all({("a", 0): 5, ("gone", 0): 3})
    s.close()


def test_store_reset_all_restarts_queues_at_snapshot_offsets(tmp_path: Path) -> None:
    s = ConsumeQueueStore(tmp_path, entries_per_file=EPF)
    fill(s.queue("a", 0), 7)
    fill(s.queue("b", 0), 3)
    s.reset_all({("a", 0): 10, ("c", 1): 2})
    assert s.queues() == [("a", 0), ("c", 1)]
    assert (s.queue("a", 0).min_offset, s.queue("a", 0).max_offset) == (10, 10)
    s.close()
    s = ConsumeQueueStore(tmp_path, entries_per_file=EPF)
    assert (s.queue("c", 1).min_offset, s.queue("c", 1).max_offset) == (2, 2)
    s.close()


def test_store_rejects_topic_names_that_escape_the_directory(tmp_path: Path) -> None:
    s = ConsumeQueueStore(tmp_path)
    for bad in ("", "..", "a/b"):
        with pytest.raises(ValueError):
            s.queue(bad, 0)
    with pytest.raises(ValueError):
        s.queue("t", -1)


def test_store_survives_more_queues_than_open_files(tmp_path: Path) -> None:
    s = ConsumeQueueStore(tmp_path, entries_per_file=EPF, max_open_files=2)
    for q in range(6):
        fill(s.queue("t", q), 5)
    s.flush()
    assert all(s.queue("t", q).read(0, 10) == expected(0, 5) for q in range(6))
    s.close()


# ----------------------------------------------------------------------
# checksums: checkpoint records, verification on start, checks on read
# ----------------------------------------------------------------------
def file_crcs(d: Path) -> list[list[int]]:
    """[start, entries, crc32] of every file, computed from the bytes on disk."""
    out = []
    for name in files(d):
        raw = (d / name).read_bytes()
        out.append([int(name), len(raw) // ENTRY_BYTES, zlib.crc32(raw)])
    return out


def test_checkpoint_record_holds_each_files_length_and_crc_as_on_disk(tmp_path: Path) -> None:
    d = tmp_path / "q"
    q = ConsumeQueue(d, entries_per_file=EPF)
    fill(q, 10, batch=3)  # batches straddle file boundaries
    assert q.checkpoint_record() == [0, 10, file_crcs(d)]
    q.reset(13)  # a hole: the next file starts with zeros
    fill(q, 15)
    assert q.checkpoint_record() == [13, 15, file_crcs(d)] and file_crcs(d)[0][:2] == [12, 3]
    q.close()


def test_a_reopened_queue_computes_unknown_crcs_once_then_carries_them(tmp_path: Path) -> None:
    d = tmp_path / "q"
    q = ConsumeQueue(d, entries_per_file=EPF)
    fill(q, 6)
    q.close()
    q = ConsumeQueue(d, entries_per_file=EPF)
    fill(q, 11)  # appends to a file whose CRC was not known
    assert q.checkpoint_record() == [0, 11, file_crcs(d)]
    q.close()


def test_a_checkpoint_record_does_not_read_files_whose_crc_is_known(tmp_path: Path) -> None:
    d = tmp_path / "q"
    q = ConsumeQueue(d, entries_per_file=EPF)
    fill(q, 10)
    record = q.checkpoint_record()
    for name in files(d):
        (d / name).write_bytes(b"\xff" * (d / name).stat().st_size)  # if it read them, the CRCs would change
    assert q.checkpoint_record() == record
    q.close()


def test_restore_checkpoint_cuts_entries_written_after_it_and_keeps_counting(tmp_path: Path) -> None:
    d = tmp_path / "q"
    q = ConsumeQueue(d, entries_per_file=EPF)
    fill(q, 6)
    record = q.checkpoint_record()
    fill(q, 14)  # after the checkpoint, across two new files
    q.close()
    q = ConsumeQueue(d, entries_per_file=EPF)
    assert q.restore_checkpoint(record) is None
    assert (q.max_offset, files(d)) == (6, ["00000000000000000000", "00000000000000000004"])
    fill(q, 9)
    assert q.checkpoint_record() == [0, 9, file_crcs(d)]
    q.close()


def test_restore_checkpoint_of_an_empty_queue_drops_files_created_after_it(tmp_path: Path) -> None:
    d = tmp_path / "q"
    q = ConsumeQueue(d, entries_per_file=EPF)
    q.reset(6)
    record = q.checkpoint_record()
    fill(q, 9)
    q.close()
    q = ConsumeQueue(d, entries_per_file=EPF)
    assert q.restore_checkpoint(record) is None
    assert (q.min_offset, q.max_offset, files(d)) == (6, 6, [])
    q.close()


def damaged_copies(d: Path) -> list[tuple[str, Path]]:
    """(what, directory) for each kind of damage to a copy of queue dir ``d``."""
    import shutil

    out = []

    def copy(what: str) -> Path:
        c = d.parent / f"copy-{len(out)}"
        shutil.copytree(d, c)
        out.append((what, c))
        return c

    names = files(d)
    for name in names:
        size = (d / name).stat().st_size
        for byte in range(size):
            c = copy(f"bit flipped in {name} byte {byte}")
            raw = bytearray((c / name).read_bytes())
            raw[byte] ^= 1 << (byte % 8)
            (c / name).write_bytes(bytes(raw))
        c = copy(f"{name} deleted")
        (c / name).unlink()
    c = copy("last file cut by one entry")
    os.truncate(c / names[-1], (c / names[-1]).stat().st_size - ENTRY_BYTES)
    c = copy("last file torn")
    os.truncate(c / names[-1], (c / names[-1]).stat().st_size - 7)
    c = copy("min_offset file written")
    (c / "min_offset").write_bytes(struct.pack(">QI", 2, zlib.crc32(struct.pack(">Q", 2))))
    return out


def test_any_damage_to_the_checkpointed_entries_is_found_on_restore(tmp_path: Path) -> None:
    d = tmp_path / "q"
    q = ConsumeQueue(d, entries_per_file=EPF)
    fill(q, 10)
    record = q.checkpoint_record()
    q.close()
    for what, copy in damaged_copies(d):
        try:
            c = ConsumeQueue(copy, entries_per_file=EPF)
        except CorruptStore:
            continue  # refused at open: the broker rebuilds too
        problem = c.restore_checkpoint(record)
        assert problem is not None, what
        c.close()


def test_a_damaged_min_offset_file_is_refused_at_open(tmp_path: Path) -> None:
    d = tmp_path / "q"
    q = ConsumeQueue(d, entries_per_file=EPF)
    fill(q, 10)
    q.delete_before(5000)
    q.close()
    raw = bytearray((d / "min_offset").read_bytes())
    raw[7] ^= 1
    (d / "min_offset").write_bytes(bytes(raw))
    with pytest.raises(CorruptStore, match="CRC"):
        ConsumeQueue(d, entries_per_file=EPF)


def test_read_refuses_an_entry_pointing_at_its_neighbours_message(tmp_path: Path) -> None:
    """The issue's case: a damaged physical offset that lands on the next
    message served that message, with a 200, at the acknowledged offset."""
    d = tmp_path / "q"
    q = ConsumeQueue(d, entries_per_file=EPF)
    fill(q, 10)
    for victim, source in ((5, 6), (5, 4), (4, 3), (3, 9), (0, 1), (9, 8)):  # within and across files
        path = d / f"{victim - victim % EPF:020d}"
        raw = bytearray(path.read_bytes())
        saved = bytes(raw)
        at = (victim % EPF) * ENTRY_BYTES
        raw[at:at + 8] = (source * 1000).to_bytes(8, "big")
        path.write_bytes(bytes(raw))
        for first in range(10):
            for n in range(1, 11 - first):
                if first <= victim < first + n:  # a read that would return the damaged entry
                    with pytest.raises(DamagedEntry):
                        q.read(first, n)
                    continue
                try:  # any other read is either right or refused, never wrong
                    assert q.read(first, n) == expected(first, first + n)
                except DamagedEntry:
                    pass
        path.write_bytes(saved)
        assert q.read(0, 10) == expected(0, 10)
    q.close()


# ----------------------------------------------------------------------
# against a model
# ----------------------------------------------------------------------
ops = st.lists(st.one_of(
    st.tuples(st.just("append"), st.integers(0, 9)),
    st.tuples(st.just("truncate"), st.integers(0, 40)),
    st.tuples(st.just("retain"), st.integers(0, 40)),
    st.tuples(st.just("reopen"), st.just(0)),
), max_size=25)


@given(ops)
@settings(max_examples=120, deadline=None)
def test_queue_matches_a_list_model(script: list[tuple[str, int]]) -> None:
    with tempfile.TemporaryDirectory() as tmp:
        d = Path(tmp) / "q"
        q = ConsumeQueue(d, entries_per_file=3)
        model: list[tuple[int, int, int]] = []  # every entry ever at its offset
        lo = 0
        for op, arg in script:
            if op == "append":
                base = len(model)
                # In log order, as the broker writes them: each message ends before the next starts.
                new = [((base + i) * 10, (base + i) % 10 + 1, -(base + i)) for i in range(arg)]
                assert q.append_batch(new) == base
                model.extend(new)
            elif op == "truncate":
                if arg > len(model):
                    with pytest.raises(CorruptStore):
                        q.truncate_to(arg)
                    continue
                q.truncate_to(arg)
                del model[arg:]
                lo = min(lo, arg)  # cut below min: empty, resuming at arg
            elif op == "retain":
                phys = arg * 10
                if lo < len(model) and model[lo][0] < phys:
                    lo = next((i for i in range(lo, len(model)) if model[i][0] >= phys), len(model))
                q.delete_before(phys)
            else:
                q.close()
                q = ConsumeQueue(d, entries_per_file=3)
            assert (q.min_offset, q.max_offset) == (lo, len(model))
            assert q.read(0, 100) == [(i, *model[i]) for i in range(lo, len(model))]
        q.close()
