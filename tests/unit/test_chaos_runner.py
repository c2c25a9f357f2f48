"""The chaos runner's timing: a leader fault never waits so long for the group
to be whole that it would end after the run (it would be counted as not
injected, failing a run that lost nothing)."""

from __future__ import annotations

from raftmq.chaos.runner import HEALTHY_WAIT_S, SETTLE_S, leader_fault_wait_s


def test_a_leader_fault_waits_for_the_group_at_most_until_it_would_still_end_in_time() -> None:
    assert leader_fault_wait_s(100.0, 600.0, 2.0) == HEALTHY_WAIT_S
    # Seed 101's kill-leader, planned at 585.2 s for 2.3 s, started 15 s later, at 602.9 s.
    assert leader_fault_wait_s(587.9, 600.0, 2.282) == 600.0 - SETTLE_S - 2.282 - 587.9
    assert leader_fault_wait_s(597.0, 600.0, 2.0) == 0.0
