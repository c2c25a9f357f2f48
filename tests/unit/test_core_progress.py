"""Progress: match and next never move backwards on stale or reordered replies."""

from hypothesis import given, strategies as st

from raftmq.dledger.core.progress import Progress, ProgressState


def test_stale_success_does_not_move_match_back() -> None:
    pr = Progress(next_index=11, max_inflight=4)
    pr.become_replicate()
    assert pr.maybe_update(10)
    assert not pr.maybe_update(7)  # an older reply arriving late
    assert pr.match_index == 10 and pr.next_index == 11


def test_stale_rejection_in_replicate_is_ignored() -> None:
    pr = Progress(next_index=1, max_inflight=4)
    pr.maybe_update(20)
    pr.become_replicate()
    pr.optimistic_update(30)
    assert not pr.maybe_decrease_to(15, 0)  # rejected index already known to match
    assert pr.next_index == 31
    assert pr.maybe_decrease_to(25, 0)
    assert pr.next_index == 21  # back to match + 1, never below


def test_probe_rejection_uses_hint_but_not_below_match() -> None:
    pr = Progress(next_index=51, max_inflight=4)
    pr.maybe_update(5)
    pr.next_index = 51
    assert pr.maybe_decrease_to(50, 20)
    assert pr.next_index == 21
    assert not pr.maybe_decrease_to(50, 10)  # not the probe we sent last
    assert pr.maybe_decrease_to(20, 0)
    assert pr.next_index == 6  # match + 1


def test_inflights_bound_pipelining() -> None:
    pr = Progress(next_index=1, max_inflight=2)
    pr.become_replicate()
    pr.inflights.add(5)
    assert not pr.is_paused()
    pr.inflights.add(9)
    assert pr.is_paused()
    pr.inflights.free_le(5)
    assert not pr.is_paused()


@given(st.lists(st.tuples(st.booleans(), st.integers(min_value=0, max_value=100)), max_size=60))
def test_match_index_is_monotonic_under_any_reply_order(replies: list[tuple[bool, int]]) -> None:
    pr = Progress(next_index=1, max_inflight=8)
    pr.become_replicate()
    best = 0
    for success, index in replies:
        if success:
            pr.maybe_update(index)
            best = max(best, index)
        else:
            pr.maybe_decrease_to(index, 0)
            if pr.state is ProgressState.REPLICATE and index > pr.match_index:
                pr.become_probe()
        assert pr.match_index == best
        assert pr.next_index >= pr.match_index + 1
