"""The long chaos run, on demand (``pytest -m slow``): ten minutes of every
fault type with small segments (rolls and boundary snapshots every few
seconds), the run issue 9 asks to pass:
``raftmq chaos run --duration 600 --faults all --segment-bytes 65536 --seed 101``."""

from __future__ import annotations

from typing import Callable

import pytest

pytestmark = [pytest.mark.integration, pytest.mark.slow]


@pytest.mark.timeout(1500)
def test_ten_minutes_of_every_fault_type_lose_nothing(chaos_run: Callable) -> None:
    run = chaos_run("--duration", "600", "--faults", "all", "--segment-bytes", "65536", "--seed", "101",
                    timeout_s=1400)
    rep = run.report
    assert run.code == 0, run.explain()
    assert rep["anomalies"] == 0, run.explain()
    assert set(rep["faults_by_kind"]) >= {"kill-leader", "kill", "pause-leader", "pause", "torn-tail", "wipe",
                                          "corrupt", "corrupt-derived", "kill-all"}, run.explain()
    assert all(p["read"] and p["acked_missing"] == 0 for p in rep["check"]["per_node"].values()), run.explain()
    assert rep["failover_after_leader_kill"]["goal_met"], rep["failover_after_leader_kill"]
