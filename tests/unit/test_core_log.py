"""RaftLog: truncation only at the first conflict; a stale AppendEntries never shortens the log."""

import pytest

from raftmq.dledger.core.log import RaftLog
from raftmq.dledger.core.messages import Entry
from raftmq.dledger.store.memory import MemoryLogStore


def entries(*terms: int, start: int = 1) -> list[Entry]:
    return [Entry(t, start + i, b"%d-%d" % (t, start + i)) for i, t in enumerate(terms)]


def test_matching_entries_are_kept_and_only_conflict_is_truncated() -> None:
    lg = RaftLog(MemoryLogStore())
    assert lg.maybe_append(0, 0, 0, entries(1, 1, 1, 2)) == 4
    # Same first two entries, conflict at index 3 (term 3 instead of 1).
    assert lg.maybe_append(1, 1, 0, [Entry(1, 2, b"1-2"), Entry(3, 3, b"new")]) == 3
    assert [lg.term(i) for i in range(1, 4)] == [1, 1, 3]
    assert lg.last_index() == 3


def test_stale_append_never_shortens_log() -> None:
    lg = RaftLog(MemoryLogStore())
    lg.maybe_append(0, 0, 0, entries(1, 1, 1, 1, 1))
    # An old AppendEntries carrying only entries 1..2 arrives again.
    assert lg.maybe_append(0, 0, 0, entries(1, 1)) == 2
    assert lg.last_index() == 5


def test_mismatched_prev_is_rejected() -> None:
    lg = RaftLog(MemoryLogStore())
    lg.maybe_append(0, 0, 0, entries(1, 1))
    assert lg.maybe_append(2, 2, 0, entries(2, start=3)) is None
    assert lg.maybe_append(5, 1, 0, entries(1, start=6)) is None
    assert lg.last_index() == 2


def test_commit_only_for_current_term() -> None:
    lg = RaftLog(MemoryLogStore())
    lg.maybe_append(0, 0, 0, entries(1, 1, 2))
    assert not lg.maybe_commit(2, 2)  # index 2 is of term 1: not committed by counting in term 2 (§5.4.2)
    assert lg.maybe_commit(3, 2)
    assert lg.committed == 3


def test_truncating_committed_entry_is_refused() -> None:
    lg = RaftLog(MemoryLogStore())
    lg.maybe_append(0, 0, 2, entries(1, 1, 1))
    with pytest.raises(AssertionError):
        lg.append([Entry(2, 2, b"x")])


def test_entries_span_storage_and_unstable() -> None:
    store = MemoryLogStore()
    lg = RaftLog(store)
    lg.append(entries(1, 1, 1, 1))
    store.append(lg.unstable[:2])
    lg.stable_to(2, 1)
    assert [e.index for e in lg.entries(1, 5, 1 << 20)] == [1, 2, 3, 4]
    assert [e.index for e in lg.entries(1, 5, 1)] == [1]  # byte limit, but at least one


def test_find_conflict_by_term() -> None:
    lg = RaftLog(MemoryLogStore())
    lg.maybe_append(0, 0, 0, entries(1, 1, 2, 2, 4, 4))
    assert lg.find_conflict_by_term(6, 3) == 4
    assert lg.find_conflict_by_term(6, 4) == 6
    assert lg.find_conflict_by_term(6, 0) == 0


def test_up_to_date_rule() -> None:
    lg = RaftLog(MemoryLogStore())
    lg.maybe_append(0, 0, 0, entries(1, 2, 2))
    assert lg.is_up_to_date(3, 2)
    assert lg.is_up_to_date(1, 3)  # higher last term wins
    assert not lg.is_up_to_date(2, 2)  # same term, shorter
    assert not lg.is_up_to_date(10, 1)  # longer but older term
