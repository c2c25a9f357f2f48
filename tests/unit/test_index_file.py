"""IndexFile: key -> physical offsets with store times; chains, time ranges,
rollover, restart truncation, retention, torn batches, determinism."""

from __future__ import annotations

import logging
import os
import struct
import tempfile
import zlib
from pathlib import Path
from typing import Any, Callable

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from raftmq.broker.store import CorruptStore
from raftmq.broker.store.index_file import ENTRY_BYTES, HEADER_BYTES, IndexStore, key_hash

# A classic CRC32 collision: different keys, same 32-bit key hash.
COLLIDING = ("plumless", "buckeroo")


def items(n: int, keys: int = 3, start: int = 0) -> list[tuple[str, int, int, int]]:
    """n index items over ``keys`` keys; phys and time grow with the item number."""
    return [(f"k{i % keys}", i * 100, 10 + i, 1_000 + i) for i in range(start, start + n)]


def hits(n: int, key: int, keys: int = 3) -> list[tuple[int, int, int]]:
    """What a query for k<key> over ``items(n, keys)`` returns, newest first."""
    return [(i * 100, 10 + i, 1_000 + i) for i in reversed(range(n)) if i % keys == key]


def snapshot_dir(d: Path) -> dict[str, bytes]:
    return {n: (d / n).read_bytes() for n in sorted(os.listdir(d))}


# ----------------------------------------------------------------------
# queries
# ----------------------------------------------------------------------
def test_query_returns_every_offset_of_a_key_newest_first(tmp_path: Path) -> None:
    ix = IndexStore(tmp_path, slots=7, max_entries=100)
    ix.add_batch(items(20))
    assert ix.query("k1") == hits(20, 1)
    assert ix.query("k0") == hits(20, 0)
    assert ix.query("absent") == []


def test_query_respects_the_time_range_inclusively(tmp_path: Path) -> None:
    ix = IndexStore(tmp_path, slots=7, max_entries=100)
    ix.add_batch(items(30))
    got = ix.query("k2", begin_ts=1_005, end_ts=1_020)
    assert got == [h for h in hits(30, 2) if 1_005 <= h[2] <= 1_020]
    assert [h[2] for h in got] == [1_020, 1_017, 1_014, 1_011, 1_008, 1_005]
    assert ix.query("k2", begin_ts=5_000) == []
    assert ix.query("k2", end_ts=999) == []


def test_query_stops_at_max_results(tmp_path: Path) -> None:
    ix = IndexStore(tmp_path, slots=7, max_entries=4)
    ix.add_batch(items(30))
    assert ix.query("k0", max_results=4) == hits(30, 0)[:4]
    assert ix.query("k0", max_results=0) == []


def test_every_key_of_a_batch_is_found_with_tiny_slot_counts(tmp_path: Path) -> None:
    ix = IndexStore(tmp_path, slots=1, max_entries=1000)  # every key in one chain
    ix.add_batch(items(50, keys=10))
    for k in range(10):
        assert ix.query(f"k{k}") == hits(50, k, keys=10)


def test_hash_collisions_return_both_keys_as_candidates(tmp_path: Path) -> None:
    a, b = COLLIDING
    assert key_hash(a) == key_hash(b)
    ix = IndexStore(tmp_path, slots=3, max_entries=100)
    ix.add_batch([(a, 100, 1, 1), ("other", 200, 1, 2), (b, 300, 1, 3), (a, 400, 1, 4)])
    # Nothing lost: every entry of `a` is there; the caller drops `b` by reading the message.
    assert ix.query(a) == [(400, 1, 4), (300, 1, 3), (100, 1, 1)]
    assert ix.query(b) == ix.query(a)


# ----------------------------------------------------------------------
# files
# ----------------------------------------------------------------------
def test_files_roll_over_when_full_and_are_named_by_global_entry_number(tmp_path: Path) -> None:
    ix = IndexStore(tmp_path, slots=5, max_entries=4)
    ix.add_batch(items(6))
    ix.add_batch(items(5, start=6))
    assert ix.file_names == ["00000000000000000000", "00000000000000000004", "00000000000000000008"]
    assert ix.marker() == ix.entry_count_total == 11
    assert ix.query("k1") == hits(11, 1)  # across all three files


def test_file_layout_header_slots_then_entries(tmp_path: Path) -> None:
    ix = IndexStore(tmp_path, slots=5, max_entries=4)
    ix.add_batch([("a", 700, 30, 5_000), ("b", 500, 31, 4_000), ("a", 900, 32, 4_500)])
    ix.flush()
    raw = (tmp_path / "00000000000000000000").read_bytes()
    assert len(raw) == HEADER_BYTES + 4 * 5 + ENTRY_BYTES * 4
    # begin_ts, end_ts, begin_phys, end_phys, slot_count, entry_count
    assert struct.unpack_from(">QQQQII", raw) == (4_000, 5_000, 500, 900, 5, 3)
    ha, hb = zlib.crc32(b"a"), zlib.crc32(b"b")
    slots = struct.unpack_from(">5I", raw, HEADER_BYTES)
    assert slots[ha % 5] == 3 and slots[hb % 5] == (2 if hb % 5 != ha % 5 else 3)
    base = HEADER_BYTES + 4 * 5
    assert struct.unpack_from(">IQIQI", raw, base) == (ha, 700, 30, 5_000, 0)
    assert struct.unpack_from(">IQIQI", raw, base + 2 * ENTRY_BYTES) == (ha, 900, 32, 4_500, 1)
    assert raw[base + 3 * ENTRY_BYTES:] == bytes(ENTRY_BYTES)


def test_files_outside_the_time_range_are_skipped(tmp_path: Path) -> None:
    ix = IndexStore(tmp_path, slots=5, max_entries=4)
    ix.add_batch([("k", 1, 1, 10), ("k", 2, 1, 20), ("k", 3, 1, 30), ("k", 4, 1, 40)])
    ix.add_batch([("k", 5, 1, 50), ("k", 6, 1, 60)])
    assert ix.query("k", 45, 55) == [(5, 1, 50)]
    assert ix.query("k", 15, 35) == [(3, 1, 30), (2, 1, 20)]


def test_reopen_keeps_every_entry(tmp_path: Path) -> None:
    ix = IndexStore(tmp_path, slots=5, max_entries=4)
    ix.add_batch(items(10))
    ix.close()
    ix = IndexStore(tmp_path, slots=5, max_entries=4)
    assert ix.marker() == 10
    assert ix.query("k1") == hits(10, 1)
    ix.add_batch(items(3, start=10))
    assert ix.query("k1") == hits(13, 1)
    ix.close()


def test_two_stores_fed_the_same_batches_are_byte_identical(tmp_path: Path) -> None:
    a = IndexStore(tmp_path / "a", slots=5, max_entries=4)
    b = IndexStore(tmp_path / "b", slots=5, max_entries=4)
    for n, start in ((3, 0), (6, 3), (1, 9)):
        a.add_batch(items(n, start=start))
        b.add_batch(items(n, start=start))
    a.close()
    b.close()
    assert snapshot_dir(tmp_path / "a") == snapshot_dir(tmp_path / "b")


def test_non_contiguous_files_are_reported(tmp_path: Path) -> None:
    ix = IndexStore(tmp_path, slots=5, max_entries=4)
    ix.add_batch(items(10))
    ix.close()
    (tmp_path / "00000000000000000004").unlink()
    with pytest.raises(CorruptStore, match="contiguous"):
        IndexStore(tmp_path, slots=5, max_entries=4)


# ----------------------------------------------------------------------
# restart truncation
# ----------------------------------------------------------------------
def test_truncate_to_drops_later_entries_within_a_file(tmp_path: Path, caplog: pytest.LogCaptureFixture) -> None:
    ix = IndexStore(tmp_path, slots=3, max_entries=100)
    ix.add_batch(items(10))
    marker = ix.marker()
    ix.add_batch(items(5, start=10))
    with caplog.at_level(logging.WARNING):
        ix.truncate_to(marker)
    assert "rebuilding" not in caplog.text  # undone entry by entry, not by the full rebuild
    assert ix.marker() == 10
    assert ix.query("k1") == hits(10, 1)
    ix.close()
    ix = IndexStore(tmp_path, slots=3, max_entries=100)
    assert ix.query("k1") == hits(10, 1)


def test_truncate_to_across_files_then_reapply_is_byte_identical(tmp_path: Path) -> None:
    a = IndexStore(tmp_path / "a", slots=3, max_entries=4)
    b = IndexStore(tmp_path / "b", slots=3, max_entries=4)
    a.add_batch(items(6))
    marker = a.marker()
    a.add_batch([("x", 10**6, 1, 9_999)] * 7)  # after the checkpoint; spans two more files
    a.truncate_to(marker)
    assert a.file_names == ["00000000000000000000", "00000000000000000004"]
    assert a.query("x") == []
    b.add_batch(items(6))
    for s in (a, b):
        s.add_batch(items(5, start=6))  # the log, re-applied
    a.close()
    b.close()
    assert snapshot_dir(tmp_path / "a") == snapshot_dir(tmp_path / "b")


def test_truncate_to_the_empty_marker_empties_the_index(tmp_path: Path) -> None:
    ix = IndexStore(tmp_path, slots=3, max_entries=4)
    ix.add_batch(items(9))
    ix.truncate_to(ix.empty_marker())
    assert ix.marker() == 0
    assert ix.file_names == ["00000000000000000000"]
    assert ix.query("k0") == []
    fresh = IndexStore(tmp_path / "fresh", slots=3, max_entries=4)
    ix.flush()
    fresh.flush()
    assert (tmp_path / "00000000000000000000").read_bytes() == (tmp_path / "fresh" / "00000000000000000000").read_bytes()


def test_truncate_beyond_the_end_is_refused(tmp_path: Path) -> None:
    ix = IndexStore(tmp_path, slots=3, max_entries=4)
    ix.add_batch(items(3))
    with pytest.raises(CorruptStore):
        ix.truncate_to(4)
    with pytest.raises(ValueError):
        ix.truncate_to(-1)


def test_a_torn_batch_past_the_header_count_is_undone_on_open(tmp_path: Path) -> None:
    """A crash after entries and slots were written but before the header's
    entry_count: on open the extra entries vanish without a trace."""
    ix = IndexStore(tmp_path / "a", slots=3, max_entries=100)
    ix.add_batch(items(5))
    ix.add_batch(items(4, start=5))
    ix.close()
    path = tmp_path / "a" / "00000000000000000000"
    raw = bytearray(path.read_bytes())
    struct.pack_into(">I", raw, 36, 5)  # header says 5 entries: the second batch never "finished"
    path.write_bytes(bytes(raw))
    ix = IndexStore(tmp_path / "a", slots=3, max_entries=100)
    assert ix.marker() == 5
    assert ix.query("k1") == hits(5, 1)
    ix.add_batch(items(2, start=5))
    ref = IndexStore(tmp_path / "b", slots=3, max_entries=100)
    ref.add_batch(items(7))
    ix.close()
    ref.close()
    assert path.read_bytes() == (tmp_path / "b" / "00000000000000000000").read_bytes()


def test_slots_pointing_past_the_end_are_rebuilt(tmp_path: Path, caplog: pytest.LogCaptureFixture) -> None:
    ix = IndexStore(tmp_path, slots=3, max_entries=100)
    ix.add_batch(items(9))
    ix.close()
    path = tmp_path / "00000000000000000000"
    raw = bytearray(path.read_bytes())
    h = key_hash("k1") % 3
    struct.pack_into(">I", raw, HEADER_BYTES + 4 * h, 50)  # torn by a power loss
    path.write_bytes(bytes(raw))
    with caplog.at_level(logging.WARNING):
        ix = IndexStore(tmp_path, slots=3, max_entries=100)
    assert "rebuilding" in caplog.text
    assert ix.query("k1") == hits(9, 1)


@pytest.mark.parametrize("torn", [b"", bytes(HEADER_BYTES + 4 * 3 + ENTRY_BYTES * 4)])
def test_a_file_torn_while_being_created_is_replaced(tmp_path: Path, torn: bytes) -> None:
    ix = IndexStore(tmp_path, slots=3, max_entries=4)
    ix.add_batch(items(4))
    ix.delete_before(10**9)  # the only file left is the empty one numbered 4
    ix.add_batch(items(4, start=4))
    ix.close()
    (tmp_path / "00000000000000000008").write_bytes(torn)  # as if the roll to 8 crashed midway
    ix = IndexStore(tmp_path, slots=3, max_entries=4)
    assert ix.marker() == 8
    assert ix.query("k1") == [h for h in hits(8, 1) if h[0] >= 400]
    ix.add_batch(items(1, start=8))
    assert ix.file_names == ["00000000000000000004", "00000000000000000008"]
    ix.close()
    (tmp_path / "00000000000000000004").unlink()
    (tmp_path / "00000000000000000008").write_bytes(torn)  # the torn file is the only one
    ix = IndexStore(tmp_path, slots=3, max_entries=4)
    assert ix.file_names == ["00000000000000000008"] and ix.marker() == 8


# ----------------------------------------------------------------------
# checksums: checkpoint records and verification on start
# ----------------------------------------------------------------------
S, CAP = 5, 6  # slots and entries per file in these tests


def regions(path: Path, count: int) -> tuple[int, int, tuple[int, ...]]:
    """(entries crc up to count, slots crc, header bounds) computed from the file's bytes."""
    raw = path.read_bytes()
    base = HEADER_BYTES + 4 * S
    bounds = struct.unpack_from(">QQQQ", raw)
    return zlib.crc32(raw[base:base + ENTRY_BYTES * count]), zlib.crc32(raw[HEADER_BYTES:base]), bounds


def test_checkpoint_record_holds_crcs_of_the_entries_and_slots_as_on_disk(tmp_path: Path) -> None:
    ix = IndexStore(tmp_path, slots=S, max_entries=CAP)
    ix.add_batch(items(4))
    ix.add_batch(items(5, start=4))  # rolls into a second file
    records = ix.checkpoint_record()
    ix.close()
    assert [r[:4] for r in records] == [[0, S, CAP, 6], [6, S, CAP, 3]]
    for r in records:
        entries_crc, slots_crc, bounds = regions(tmp_path / f"{r[0]:020d}", r[3])
        assert (r[4], r[5], tuple(r[6:])) == (entries_crc, slots_crc, bounds)
    ix = IndexStore(tmp_path, slots=S, max_entries=CAP)  # reopened: CRCs computed once from the files
    assert ix.checkpoint_record() == records
    ix.add_batch(items(2, start=9))
    last = ix.checkpoint_record()[-1]
    assert (last[4], last[5]) == regions(tmp_path / f"{6:020d}", 5)[:2]
    ix.close()


def test_a_checkpoint_reads_no_slots_of_a_file_that_took_no_entries(tmp_path: Path) -> None:
    ix = IndexStore(tmp_path, slots=S, max_entries=CAP)
    ix.add_batch(items(4))
    records = ix.checkpoint_record()
    path = tmp_path / f"{0:020d}"
    with open(path, "r+b") as f:  # the mmap sees this: a read of the slots would change the CRC
        f.seek(HEADER_BYTES)
        f.write(b"\xff" * 4 * S)
    assert ix.checkpoint_record() == records
    ix.close()


def checkpointed_store(tmp_path: Path) -> tuple[list[list[int]], bytes, bytes]:
    """A store checkpointed after 9 items (two files), then given 5 more (a third
    file) and closed as a crash would leave it; also the bytes of both
    checkpointed files."""
    ix = IndexStore(tmp_path, slots=S, max_entries=CAP)
    ix.add_batch(items(4))
    ix.add_batch(items(5, start=4))
    ix.flush()
    records = ix.checkpoint_record()
    first = (tmp_path / f"{0:020d}").read_bytes()
    second = (tmp_path / f"{6:020d}").read_bytes()
    ix.add_batch(items(5, start=9))
    ix.close()
    return records, first, second


def test_restore_checkpoint_undoes_later_entries_and_files_exactly(tmp_path: Path) -> None:
    records, first, second = checkpointed_store(tmp_path)
    ix = IndexStore(tmp_path, slots=S, max_entries=CAP)
    assert ix.restore_checkpoint(records) is None
    assert ix.file_names == [f"{0:020d}", f"{6:020d}"] and ix.marker() == 9
    assert all(ix.query(f"k{k}") == hits(9, k) for k in range(3))
    assert ix.checkpoint_record() == records
    ix.close()
    assert (tmp_path / f"{0:020d}").read_bytes() == first
    assert (tmp_path / f"{6:020d}").read_bytes() == second


def test_damaged_slots_alone_are_rebuilt_from_the_entries(tmp_path: Path, caplog: pytest.LogCaptureFixture) -> None:
    records, first, second = checkpointed_store(tmp_path)
    for name, good in ((f"{0:020d}", first), (f"{6:020d}", second)):
        path = tmp_path / name
        raw = bytearray(path.read_bytes())
        at = HEADER_BYTES + 4 * (key_hash("k1") % S)
        (v,) = struct.unpack_from(">I", raw, at)
        struct.pack_into(">I", raw, at, 1 if v != 1 else 2)  # k1's chain now starts at another entry
        path.write_bytes(bytes(raw))
        ix = IndexStore(tmp_path, slots=S, max_entries=CAP)
        with caplog.at_level(logging.WARNING):
            assert ix.restore_checkpoint(records) is None
        assert "hash slots damaged" in caplog.text
        assert ix.query("k1") == hits(9, 1)
        ix.close()
        assert path.read_bytes() == good


def test_damaged_header_bounds_are_rewritten_from_the_checkpoint(tmp_path: Path) -> None:
    records, first, _ = checkpointed_store(tmp_path)
    path = tmp_path / f"{0:020d}"
    raw = bytearray(path.read_bytes())
    raw[7] ^= 0x40  # begin_ts: the file would be skipped by queries of its real time range
    path.write_bytes(bytes(raw))
    ix = IndexStore(tmp_path, slots=S, max_entries=CAP)
    assert ix.restore_checkpoint(records) is None
    assert ix.query("k1", 1_000, 1_003) == [(100, 11, 1_001)]
    ix.close()
    assert path.read_bytes() == first


def test_any_damage_to_checkpointed_entries_or_files_is_found(tmp_path: Path) -> None:
    import shutil

    src = tmp_path / "src"
    records, first, second = checkpointed_store(src)
    entries_at = HEADER_BYTES + 4 * S
    cases: list[tuple[str, Callable[[Path], None]]] = []
    for name, count in ((f"{0:020d}", 6), (f"{6:020d}", 3)):
        for byte in range(entries_at, entries_at + ENTRY_BYTES * count):
            def flip(d: Path, name: str = name, byte: int = byte) -> None:
                raw = bytearray((d / name).read_bytes())
                raw[byte] ^= 1 << (byte % 8)
                (d / name).write_bytes(bytes(raw))
            cases.append((f"{name} byte {byte}", flip))
        cases.append((f"{name} deleted", lambda d, name=name: (d / name).unlink()))
    cases.append(("every file deleted", lambda d: [p.unlink() for p in d.iterdir()]))
    for what, damage in cases:
        d = tmp_path / "copy"
        shutil.rmtree(d, ignore_errors=True)
        shutil.copytree(src, d)
        damage(d)
        try:
            ix = IndexStore(d, slots=S, max_entries=CAP)
        except CorruptStore:
            continue  # refused at open: the broker rebuilds too
        assert ix.restore_checkpoint(records) is not None, what
        ix.close()


# ----------------------------------------------------------------------
# retention
# ----------------------------------------------------------------------
def test_delete_before_removes_files_wholly_before_the_offset(tmp_path: Path) -> None:
    ix = IndexStore(tmp_path, slots=3, max_entries=4)
    ix.add_batch(items(10))  # phys 0..900; files end at phys 300, 700, 900
    assert ix.delete_before(300) == 0  # the first file ends at 300: not wholly before
    assert ix.delete_before(301) == 1
    assert ix.file_names == ["00000000000000000004", "00000000000000000008"]
    assert ix.query("k1") == [h for h in hits(10, 1) if h[0] >= 400]
    ix.close()
    ix = IndexStore(tmp_path, slots=3, max_entries=4)
    assert ix.marker() == 10
    assert ix.query("k1") == [h for h in hits(10, 1) if h[0] >= 400]


def test_delete_before_everything_keeps_numbering_on(tmp_path: Path) -> None:
    ix = IndexStore(tmp_path, slots=3, max_entries=4)
    ix.add_batch(items(6))
    assert ix.delete_before(10**9) == 2
    assert ix.file_names == ["00000000000000000006"]
    assert ix.marker() == 6 and ix.query("k0") == []
    ix.add_batch(items(2, start=6))
    assert ix.query("k0") == [(600, 16, 1_006)]
    ix.close()
    ix = IndexStore(tmp_path, slots=3, max_entries=4)
    assert ix.marker() == 8


def test_invalid_configuration_is_refused(tmp_path: Path) -> None:
    with pytest.raises(ValueError, match="slots"):
        IndexStore(tmp_path, slots=0)
    with pytest.raises(ValueError, match="max_entries"):
        IndexStore(tmp_path, max_entries=0)


# ----------------------------------------------------------------------
# against a model
# ----------------------------------------------------------------------
keys = st.sampled_from(["a", "b", "c", "d", *COLLIDING])
ops = st.lists(st.one_of(
    st.tuples(st.just("add"), st.lists(st.tuples(keys, st.integers(0, 50)), max_size=6)),
    st.tuples(st.just("truncate"), st.integers(0, 40)),
    st.tuples(st.just("reopen"), st.just([])),
), max_size=20)


@given(ops)
@settings(max_examples=100, deadline=None)
def test_index_matches_a_list_model(script: list[tuple[str, Any]]) -> None:
    with tempfile.TemporaryDirectory() as tmp:
        d = Path(tmp)
        ix = IndexStore(d, slots=2, max_entries=3)
        model: list[tuple[str, int, int, int]] = []
        for op, arg in script:
            if op == "add":
                batch = [(k, len(model) + i, 1, ts) for i, (k, ts) in enumerate(arg)]
                ix.add_batch(batch)
                model.extend(batch)
            elif op == "truncate":
                n = arg
                if n > len(model):
                    with pytest.raises(CorruptStore):
                        ix.truncate_to(n)
                    continue
                ix.truncate_to(n)
                del model[n:]
            else:
                ix.close()
                ix = IndexStore(d, slots=2, max_entries=3)
            assert ix.marker() == len(model)
            for k in ("a", "b", COLLIDING[0]):
                want = [(p, s, t) for kk, p, s, t in reversed(model) if key_hash(kk) == key_hash(k)]
                assert ix.query(k, max_results=1000) == want
                assert ix.query(k, 10, 20, 1000) == [w for w in want if 10 <= w[2] <= 20]
        ix.close()
