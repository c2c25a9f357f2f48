"""BrokerState: deterministic apply, producer dedup, checkpoint + re-apply."""

from __future__ import annotations

import hashlib
from pathlib import Path

import msgpack

from broker import commands
from broker.commands import CommitOffset, CreateTopic, Produce
from broker.message import Message, encode_records, format_msg_id, tag_hash
from broker.statemachine import BrokerState, expand


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
    return [state.apply(i, entries[i - 1]) for i in range(start, len(entries) + 1)]


def test_replicas_applying_the_same_log_are_byte_identical(tmp_path: Path) -> None:
    entries = log_of()
    pos = Positions(entries)
    a, b = BrokerState(tmp_path / "a", "g1", pos), BrokerState(tmp_path / "b", "g1", pos)
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
    st = BrokerState(tmp_path, "g1", Positions(entries))
    results = apply_all(st, entries)
    assert results[-1] == results[5]
    assert st.queue_range("t", 0) == (0, 45)  # stored once


def test_restart_from_checkpoint_reapplies_to_the_same_state(tmp_path: Path) -> None:
    entries = log_of()
    pos = Positions(entries)
    whole = BrokerState(tmp_path / "whole", "g1", pos)
    apply_all(whole, entries)
    whole.checkpoint()

    st = BrokerState(tmp_path / "crash", "g1", pos)
    for i in range(1, 15):
        st.apply(i, entries[i - 1])
    st.checkpoint()
    for i in range(15, 25):  # applied but not checkpointed, then the process dies
        st.apply(i, entries[i - 1])
    st.close()

    again = BrokerState(tmp_path / "crash", "g1", pos)
    assert again.load_checkpoint() == 14
    apply_all(again, entries, start=15)
    again.checkpoint()
    assert digest(tmp_path / "crash") == digest(tmp_path / "whole")
    assert again.offsets == whole.offsets and again.topics == whole.topics
    assert again.dedup == whole.dedup


def test_wipe_forgets_everything(tmp_path: Path) -> None:
    entries = log_of()
    st = BrokerState(tmp_path, "g1", Positions(entries))
    apply_all(st, entries)
    st.checkpoint()
    st.wipe()
    assert st.topics == {} and st.applied_index == 0
    st2 = BrokerState(tmp_path, "g1", Positions(entries))
    assert st2.load_checkpoint() == 0


def test_a_produce_result_is_compact_and_expands_to_ids_at_the_records_positions(tmp_path: Path) -> None:
    entries = log_of()
    pos = Positions(entries)
    st = BrokerState(tmp_path, "g1", pos)
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
    st = BrokerState(tmp_path, "g1", pos)
    apply_all(st, entries)
    st.checkpoint()
    path = tmp_path / "broker" / "checkpoint"
    doc = msgpack.unpackb(path.read_bytes(), raw=False, strict_map_key=False)
    doc["dedup"] = [[p, [[s, part, [list(x) for x in expand("g1", tuple(r))]] for s, part, r in seen]]
                    for p, seen in doc["dedup"]]
    path.write_bytes(msgpack.packb(doc, use_bin_type=True))
    st.close()
    again = BrokerState(tmp_path, "g1", pos)
    assert again.load_checkpoint() == len(entries)
    assert again.dedup == st.dedup and len(again.dedup["p"]) == 30
