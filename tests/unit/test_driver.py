"""The Ready driver's order (dledger.driver): what it does, and in which order,
for a follower, a leader with new entries, and a snapshot; and that a crash
point stops the step exactly there."""

from __future__ import annotations

from typing import Any

import pytest

from raftmq.dledger.core.messages import (
    AppendEntries,
    AppendEntriesReply,
    Entry,
    EntryKind,
    HardState,
    Snapshot,
    SnapshotMeta,
)
from raftmq.dledger.core.raft import Ready
from raftmq.dledger.driver import CrashPoint, ReadyDriver, ReadyIO


def entry(index: int, term: int = 2) -> Entry:
    return Entry(term, index, b"x%d" % index, EntryKind.NORMAL)


def recording_driver(leader: bool, calls: list[tuple[Any, ...]]) -> ReadyDriver:
    """A driver whose collaborators only record their calls, in order."""

    def rec(name: str) -> Any:
        return lambda *args: calls.append((name, *args))

    return ReadyDriver(ReadyIO(
        is_leader=lambda: leader,
        install_snapshot=rec("install"),
        save_hard_state=rec("hard_state"),
        append=rec("append"),
        flush=rec("flush"),
        send=rec("send"),
        flush_transport=rec("flush_transport"),
        apply=rec("apply"),
        advance=rec("advance"),
    ))


APPEND = AppendEntries(term=2, src="n1", dst="n2", prev_log_index=3, prev_log_term=2, entries=(entry(4),),
                       leader_commit=3)
REPLY = AppendEntriesReply(term=2, src="n2", dst="n1", success=True, match_index=4)
SNAP = Snapshot(SnapshotMeta(index=3, term=1, next_position=100), b"state")


def names(calls: list[tuple[Any, ...]]) -> list[str]:
    return [c[0] for c in calls]


def test_follower_sends_only_after_its_hard_state_and_entries_are_durable() -> None:
    calls: list[tuple[Any, ...]] = []
    rd = Ready(HardState(2, "n1"), (entry(4),), (REPLY,), (entry(3),), None)
    assert recording_driver(False, calls).handle(rd) is None
    assert names(calls) == ["hard_state", "append", "flush", "send", "flush_transport", "apply", "advance"]
    assert calls[3] == ("send", REPLY)
    assert calls[-1] == ("advance", rd)


def test_leader_sends_new_entries_before_its_own_write() -> None:
    """Thesis §10.2.1: the followers' writes overlap the leader's."""
    calls: list[tuple[Any, ...]] = []
    rd = Ready(None, (entry(4),), (APPEND,), (entry(3),), None)
    driver = recording_driver(True, calls)
    assert driver.sends_first(rd)
    driver.handle(rd)
    assert names(calls) == ["send", "flush_transport", "append", "flush", "flush_transport", "apply", "advance"]


@pytest.mark.parametrize(
    "rd, order",
    [
        pytest.param(Ready(HardState(3, "n1"), (entry(4, 3),), (APPEND,)),
                     ["hard_state", "append", "flush", "send", "flush_transport", "advance"], id="hard-state-changed"),
        pytest.param(Ready(None, (entry(4),), (APPEND,), (), SNAP),
                     ["install", "append", "flush", "send", "flush_transport", "advance"], id="snapshot"),
        pytest.param(Ready(None, (), (APPEND,), (entry(3),)),
                     ["send", "flush_transport", "apply", "advance"], id="no-new-entries"),
    ],
)
def test_leader_persists_first_when_the_ready_is_not_only_new_entries(rd: Ready, order: list[str]) -> None:
    """A leader whose Ready changes its hard state (or carries a snapshot, or
    nothing to write) takes the follower's order: a term or vote must be
    durable before any message that carries it leaves."""
    calls: list[tuple[Any, ...]] = []
    driver = recording_driver(True, calls)
    assert not driver.sends_first(rd)
    driver.handle(rd)
    assert names(calls) == order


def test_follower_with_only_new_entries_still_persists_before_sending() -> None:
    calls: list[tuple[Any, ...]] = []
    rd = Ready(None, (entry(4),), (REPLY,))
    driver = recording_driver(False, calls)
    assert not driver.sends_first(rd)
    driver.handle(rd)
    assert names(calls) == ["append", "flush", "send", "flush_transport", "advance"]


def test_snapshot_is_installed_before_anything_else() -> None:
    calls: list[tuple[Any, ...]] = []
    rd = Ready(HardState(2, "n1"), (entry(4),), (REPLY,), (), SNAP)
    recording_driver(False, calls).handle(rd)
    assert names(calls) == ["install", "hard_state", "append", "flush", "send", "flush_transport", "advance"]
    assert calls[0] == ("install", SNAP)


FULL = Ready(HardState(2, "n1"), (entry(4),), (REPLY, REPLY), (entry(3),), None)
LEADER = Ready(None, (entry(4),), (APPEND, APPEND), (entry(3),), None)


@pytest.mark.parametrize(
    "leader, rd, point, done",
    [
        (False, FULL, CrashPoint.BEFORE_PERSIST, []),
        (False, FULL, CrashPoint.AFTER_HARD_STATE, ["hard_state"]),
        (False, FULL, CrashPoint.AFTER_PERSIST, ["hard_state", "append", "flush"]),
        (False, FULL, CrashPoint.AFTER_SEND, ["hard_state", "append", "flush", "send", "send", "flush_transport"]),
        (False, FULL, CrashPoint.BEFORE_ADVANCE,
         ["hard_state", "append", "flush", "send", "send", "flush_transport", "apply"]),
        (True, LEADER, CrashPoint.AFTER_LEADER_SEND, ["send", "send", "flush_transport"]),
        (True, LEADER, CrashPoint.AFTER_HARD_STATE, ["send", "send", "flush_transport"]),
        (True, LEADER, CrashPoint.AFTER_PERSIST, ["send", "send", "flush_transport", "append", "flush"]),
    ],
    ids=lambda v: v.value if isinstance(v, CrashPoint) else None,
)
def test_a_crash_point_stops_the_step_exactly_there(leader: bool, rd: Ready, point: CrashPoint,
                                                    done: list[str]) -> None:
    calls: list[tuple[Any, ...]] = []
    asked: list[CrashPoint] = []

    def stop_at(p: CrashPoint) -> bool:
        asked.append(p)
        return p is point

    assert recording_driver(leader, calls).handle(rd, stop_at) is point
    assert names(calls) == done
    assert asked[-1] is point and asked.count(point) == 1


@pytest.mark.parametrize("leader, rd", [(False, FULL), (True, LEADER)], ids=["follower", "leader"])
def test_a_crash_during_send_leaves_the_rest_unsent(leader: bool, rd: Ready) -> None:
    """Stopped before the second message: exactly one was sent, the transport
    was not flushed, nothing applied, the core not advanced."""
    calls: list[tuple[Any, ...]] = []
    seen = [0]

    def stop_at(p: CrashPoint) -> bool:
        if p is CrashPoint.DURING_SEND:
            seen[0] += 1
            return seen[0] == 2
        return False

    assert recording_driver(leader, calls).handle(rd, stop_at) is CrashPoint.DURING_SEND
    order = names(calls)
    assert order.count("send") == 1
    assert "flush_transport" not in order and "apply" not in order and "advance" not in order
    if leader:
        assert "append" not in order  # the leader had not written yet
    else:
        assert order[:3] == ["hard_state", "append", "flush"]


def test_stop_at_answering_false_everywhere_changes_nothing() -> None:
    plain: list[tuple[Any, ...]] = []
    watched: list[tuple[Any, ...]] = []
    recording_driver(True, plain).handle(LEADER)
    assert recording_driver(True, watched).handle(LEADER, lambda p: False) is None
    assert plain == watched


def test_a_failed_write_stops_the_step_before_anything_is_sent() -> None:
    """A node that cannot persist must stop: the storage error propagates and
    nothing that depends on the write leaves the node."""
    sent: list[Any] = []

    def fail(_: Any) -> None:
        raise OSError("disk full")

    driver = ReadyDriver(ReadyIO(
        is_leader=lambda: False, install_snapshot=lambda s: None, save_hard_state=lambda h: None,
        append=fail, flush=lambda: None, send=sent.append, flush_transport=lambda: None,
        apply=lambda e: None, advance=lambda rd: None,
    ))
    with pytest.raises(OSError, match="disk full"):
        driver.handle(Ready(None, (entry(4),), (REPLY,)))
    assert sent == []
