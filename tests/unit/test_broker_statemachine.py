"""BrokerState: deterministic apply, producer dedup, checkpoint + re-apply."""

from __future__ import annotations

import hashlib
import os
import shutil
import zlib
from pathlib import Path

import msgpack
import pytest

from raftmq.broker import commands
from raftmq.broker.commands import CommitOffset, CreateTopic, Produce
from raftmq.broker.message import Message, encode_records, format_msg_id, tag_hash
from raftmq.broker.statemachine import BrokerState, expand


def produce(topic: str, q: int, bodies: list[bytes], pid: str | None = None, seq: int | None = None,
            keys: list[str] | None = None) -> bytes:
    msgs = [Message(topic=topic, queue_id=q, body=b, tags="t", keys=tuple(keys or ()), born_ts_ms=1, store_ts_ms=2)
            for b in bodies]
    return commands.encode(Produce(topic, q, 2, pid, seq, 0, [tag_hash("t")] * len(msgs),
                                   [list(m.keys) for m in msgs], encode_records(msgs)))


def log_of() -> list[bytes]:
    out = [commands.encode(CreateTopic("t", 2))]
    for i in range(30):
        out.append(produce("t", i % 2, [b"m%d-%d" % (i, k) for k in range(3)], pid="p", seq=i, keys=[f"k{i}"]))
    out.append(commands.encode(CommitOffset("g", "t", 1, 4)))
    return out


class Positions:
    """Entry body positions as a log would assign them: consecutive, 32-byte headers."""

    def __init__(self, entries: list[bytes]) -> None:
        self.pos = {}
        p = 0
        for i, e in enumerate(entries, 1):
            self.pos[i] = p + 32
            p += 32 + len(e)

    def __call__(self, index: int) -> int:
        return self.pos[index]


def digest(root: Path) -> dict[str, str]:
    return {str(p.relative_to(root)): hashlib.sha256(p.read_bytes()).hexdigest()
            for p in sorted((root / "consumequeue").rglob("*")) if p.is_file() and p.name != "min_offset"}


def apply_all(state: BrokerState, entries: list[bytes], start: int = 1) -> list[object]:
    pos = Positions(entries)
    return [state.apply(i, entries[i - 1], pos(i)) for i in range(start, len(entries) + 1)]


def test_replicas_applying_the_same_log_are_byte_identical(tmp_path: Path) -> None:
    entries = log_of()
    pos = Positions(entries)
    a, b = BrokerState(tmp_path / "a", "g1"), BrokerState(tmp_path / "b", "g1")
    ra, rb = apply_all(a, entries), apply_all(b, entries)
    assert ra == rb
    a.checkpoint(), b.checkpoint()
    assert digest(tmp_path / "a") == digest(tmp_path / "b") != {}
    assert a.offsets == b.offsets == {("g", "t", 1): 4}
    assert a.queue_range("t", 0) == (0, 45)


def test_retried_produce_is_answered_with_the_original_result(tmp_path: Path) -> None:
    entries = log_of()
    retry = entries[5]  # the same (producer, sequence) again, as after a failover
    entries.append(retry)
    st = BrokerState(tmp_path, "g1")
    results = apply_all(st, entries)
    assert results[-1] == results[5]
    assert st.queue_range("t", 0) == (0, 45)  # stored once


def test_restart_from_checkpoint_reapplies_to_the_same_state(tmp_path: Path) -> None:
    entries = log_of()
    pos = Positions(entries)
    whole = BrokerState(tmp_path / "whole", "g1")
    apply_all(whole, entries)
    whole.checkpoint()

    st = BrokerState(tmp_path / "crash", "g1")
    for i in range(1, 15):
        st.apply(i, entries[i - 1], pos(i))
    st.checkpoint()
    for i in range(15, 25):  # applied but not checkpointed, then the process dies
        st.apply(i, entries[i - 1], pos(i))
    st.close()

    again = BrokerState(tmp_path / "crash", "g1")
    assert again.load_checkpoint() == 14
    apply_all(again, entries, start=15)
    again.checkpoint()
    assert digest(tmp_path / "crash") == digest(tmp_path / "whole")
    assert again.offsets == whole.offsets and again.topics == whole.topics
    assert again.dedup == whole.dedup


def test_wipe_forgets_everything(tmp_path: Path) -> None:
    entries = log_of()
    st = BrokerState(tmp_path, "g1")
    apply_all(st, entries)
    st.checkpoint()
    st.wipe()
    assert st.topics == {} and st.applied_index == 0
    st2 = BrokerState(tmp_path, "g1")
    assert st2.load_checkpoint() == 0


def test_a_produce_result_is_compact_and_expands_to_ids_at_the_records_positions(tmp_path: Path) -> None:
    entries = log_of()
    pos = Positions(entries)
    st = BrokerState(tmp_path, "g1")
    results = apply_all(st, entries)
    q, first, positions = results[3]  # entry 4: the third produce, queue 0, three messages
    assert (q, first) == (0, 3) and len(positions) == 3
    body_end = pos(4) + len(entries[3])
    assert pos(4) < positions[0] < positions[1] < positions[2] < body_end
    assert expand("g1", results[3]) == [(format_msg_id("g1", p), 0, 3 + i) for i, p in enumerate(positions)]


def test_a_checkpoint_holding_results_in_the_long_form_loads_to_the_same_dedup(tmp_path: Path) -> None:
    """Checkpoints written before results were compact held every message's id."""
    entries = log_of()
    pos = Positions(entries)
    st = BrokerState(tmp_path, "g1")
    apply_all(st, entries)
    st.checkpoint()
    path = tmp_path / "broker" / "checkpoint"
    # A version-1 checkpoint: the bare msgpack map (the snapshot's form), no framing.
    doc = msgpack.unpackb(st.snapshot(), raw=False, strict_map_key=False)
    doc["dedup"] = [[p, [[s, part, [list(x) for x in expand("g1", tuple(r))]] for s, part, r in seen]]
                    for p, seen in doc["dedup"]]
    path.write_bytes(msgpack.packb(doc, use_bin_type=True))
    st.close()
    again = BrokerState(tmp_path, "g1")
    assert again.load_checkpoint() == len(entries)
    assert again.dedup == st.dedup and len(again.dedup["p"]) == 30


# ----------------------------------------------------------------------
# damaged checkpoint or derived files: rebuilt from the log, never loaded
# ----------------------------------------------------------------------
def checkpointed(root: Path, upto: int = 20) -> tuple[list[bytes], Positions]:
    """A state dir that applied entries 1..upto, checkpointed, then applied
    the rest without a checkpoint and stopped as a crash would leave it."""
    entries = log_of()
    pos = Positions(entries)
    st = BrokerState(root, "g1")
    for i in range(1, upto + 1):
        st.apply(i, entries[i - 1], pos(i))
    st.checkpoint()
    for i in range(upto + 1, len(entries) + 1):
        st.apply(i, entries[i - 1], pos(i))
    st.close()
    return entries, pos


def restart(root: Path, entries: list[bytes], pos: Positions) -> tuple[BrokerState, int]:
    """Load the checkpoint and re-apply the log after it, as a node's start does."""
    st = BrokerState(root, "g1")
    applied = st.load_checkpoint()
    apply_all(st, entries, start=applied + 1)
    st.checkpoint()
    return st, applied


def reference(root: Path) -> BrokerState:
    entries = log_of()
    st = BrokerState(root, "g1")
    apply_all(st, entries)
    st.checkpoint()
    return st


def same_state(st: BrokerState, ref: BrokerState, root: Path, ref_root: Path) -> bool:
    return (digest(root) == digest(ref_root) and st.offsets == ref.offsets and st.topics == ref.topics
            and st.dedup == ref.dedup and all(st.index.query(f"k{i}") == ref.index.query(f"k{i}") for i in range(30)))


def cq_file(root: Path, q: int = 0) -> Path:
    return root / "consumequeue" / "t" / str(q) / f"{0:020d}"


def flip(path: Path, at: int, mask: int = 1) -> None:
    raw = bytearray(path.read_bytes())
    raw[at] ^= mask
    path.write_bytes(bytes(raw))


def body_offset_of(raw: bytes, key: str) -> int:
    """Where the value of ``key`` starts in a checkpoint file (framed or not)."""
    return raw.index(msgpack.packb(key)) + len(msgpack.packb(key))


DAMAGES = {
    "checkpoint: applied index 20 -> 16": lambda root: flip(
        root / "broker" / "checkpoint", body_offset_of((root / "broker" / "checkpoint").read_bytes(), "index"), 4),
    "checkpoint: a bit of the body": lambda root: flip(root / "broker" / "checkpoint", 40, 0x10),
    "checkpoint: cut short": lambda root: os.truncate(root / "broker" / "checkpoint", 30),
    "checkpoint: garbage": lambda root: (root / "broker" / "checkpoint").write_bytes(b"\xde\xad" * 50),
    "consume queue: entry bit flipped": lambda root: flip(cq_file(root), 20 * 3 + 7, 0x20),
    "consume queue: cut by two entries": lambda root: os.truncate(cq_file(root), 20 * 3),
    "consume queue: torn": lambda root: os.truncate(cq_file(root), 20 * 3 + 11),
    "consume queue: deleted": lambda root: cq_file(root).unlink(),
    "consume queue: min_offset file garbage": lambda root: (cq_file(root).parent / "min_offset").write_bytes(b"x" * 12),
    "index file: deleted": lambda root: (root / "index" / f"{0:020d}").unlink(),
    "index file: entry bit flipped": lambda root: flip(root / "index" / f"{0:020d}", 40 + 4 * 500_000 + 28 * 5 + 9),
}


@pytest.mark.parametrize("damage", DAMAGES)
def test_damaged_derived_state_is_rebuilt_from_the_log_to_the_same_state(tmp_path: Path, damage: str) -> None:
    entries, pos = checkpointed(tmp_path / "node")
    DAMAGES[damage](tmp_path / "node")
    st, applied = restart(tmp_path / "node", entries, pos)
    assert applied == 0 and st.rebuild_reason
    ref = reference(tmp_path / "ref")
    assert same_state(st, ref, tmp_path / "node", tmp_path / "ref")


def test_an_undamaged_restart_verifies_and_reapplies_only_after_the_checkpoint(tmp_path: Path) -> None:
    entries, pos = checkpointed(tmp_path / "node")
    st, applied = restart(tmp_path / "node", entries, pos)
    assert applied == 20 and st.rebuild_reason is None
    assert same_state(st, reference(tmp_path / "ref"), tmp_path / "node", tmp_path / "ref")


def test_damaged_index_slots_are_repaired_in_place_without_a_rebuild(tmp_path: Path) -> None:
    entries, pos = checkpointed(tmp_path / "node")
    flip(tmp_path / "node" / "index" / f"{0:020d}", 40 + 4 * (zlib.crc32(b"k3") % 500_000) + 3, 0x04)
    st, applied = restart(tmp_path / "node", entries, pos)
    assert applied == 20 and st.rebuild_reason is None
    assert same_state(st, reference(tmp_path / "ref"), tmp_path / "node", tmp_path / "ref")


def test_damage_found_while_serving_makes_the_next_start_rebuild(tmp_path: Path) -> None:
    entries, pos = checkpointed(tmp_path / "node", upto=len(log_of()))
    st = BrokerState(tmp_path / "node", "g1")
    assert st.load_checkpoint() == len(entries)
    st.note_damage("consume queue t/0 near offset 3: out of order")
    st.checkpoint()
    st.close()
    st, applied = restart(tmp_path / "node", entries, pos)
    assert applied == 0 and "out of order" in (st.rebuild_reason or "")
    assert same_state(st, reference(tmp_path / "ref"), tmp_path / "node", tmp_path / "ref")
    st.close()
    st, applied = restart(tmp_path / "node", entries, pos)  # and only once
    assert applied == len(entries)


def test_no_checkpoint_with_derived_files_on_disk_rebuilds(tmp_path: Path) -> None:
    entries, pos = checkpointed(tmp_path / "node")
    (tmp_path / "node" / "broker" / "checkpoint").unlink()
    st, applied = restart(tmp_path / "node", entries, pos)
    assert applied == 0 and st.rebuild_reason
    assert same_state(st, reference(tmp_path / "ref"), tmp_path / "node", tmp_path / "ref")


def test_a_version_1_checkpoint_loads_and_the_next_one_is_framed_and_verified(tmp_path: Path) -> None:
    entries, pos = checkpointed(tmp_path / "node")
    st = BrokerState(tmp_path / "node", "g1")
    assert st.load_checkpoint() == 20
    (tmp_path / "node" / "broker" / "checkpoint").write_bytes(st.snapshot())  # the version-1 form
    st.close()
    st = BrokerState(tmp_path / "node", "g1")
    assert st.load_checkpoint() == 20 and st.rebuild_reason is None
    apply_all(st, entries, start=21)
    st._dirty = True
    st.checkpoint()
    st.close()
    assert (tmp_path / "node" / "broker" / "checkpoint").read_bytes()[:4] == b"RMCP"
    st, applied = restart(tmp_path / "node", entries, pos)
    assert applied == len(entries) and st.rebuild_reason is None
    assert same_state(st, reference(tmp_path / "ref"), tmp_path / "node", tmp_path / "ref")


def test_a_version_1_checkpoint_naming_missing_files_rebuilds_instead_of_refusing(tmp_path: Path) -> None:
    entries, pos = checkpointed(tmp_path / "node")
    st = BrokerState(tmp_path / "node", "g1")
    st.load_checkpoint()
    (tmp_path / "node" / "broker" / "checkpoint").write_bytes(st.snapshot())
    st.close()
    cq_file(tmp_path / "node").unlink()
    st, applied = restart(tmp_path / "node", entries, pos)
    assert applied == 0 and st.rebuild_reason
    assert same_state(st, reference(tmp_path / "ref"), tmp_path / "node", tmp_path / "ref")


def test_wipe_removes_the_checkpoint_before_the_files_it_names(tmp_path: Path,
                                                               monkeypatch: pytest.MonkeyPatch) -> None:
    """A crash in the middle of a rebuild's wipe must not leave a checkpoint
    naming files that are gone: the checkpoint goes first."""
    entries, pos = checkpointed(tmp_path / "node")
    st = BrokerState(tmp_path / "node", "g1")
    seen: list[bool] = []
    real_rmtree = shutil.rmtree

    def rmtree(path: Path, *a: object, **k: object) -> None:
        seen.append((tmp_path / "node" / "broker" / "checkpoint").exists())
        real_rmtree(path, *a, **k)  # type: ignore[arg-type]

    monkeypatch.setattr(shutil, "rmtree", rmtree)
    st.wipe()
    assert seen == [False, False]
