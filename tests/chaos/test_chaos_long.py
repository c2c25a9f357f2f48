"""The long chaos run, on demand (``pytest -m slow``): ten minutes of every
fault type, the same as ``raftmq chaos run --duration 600 --faults all``."""

from __future__ import annotations

from typing import Callable

import pytest

pytestmark = [pytest.mark.integration, pytest.mark.slow]


@pytest.mark.timeout(1500)
def test_ten_minutes_of_every_fault_type_lose_nothing(chaos_run: Callable) -> None:
    run = chaos_run("--duration", "600", "--faults", "all", timeout_s=1400)
    rep = run.report
    assert run.code == 0, run.explain()
    assert rep["anomalies"] == 0, run.explain()
    assert set(rep["faults_by_kind"]) >= {"kill-leader", "kill", "pause-leader", "pause", "torn-tail", "wipe"}
    assert rep["failover_after_leader_kill"]["goal_met"], rep["failover_after_leader_kill"]
