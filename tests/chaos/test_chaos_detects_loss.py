"""The checker can fail on a real run: losing the data of a majority of nodes
(a fault no Raft group survives) must be reported as lost messages."""

from __future__ import annotations

from typing import Callable

import pytest

pytestmark = pytest.mark.integration


def test_wiping_a_majoritys_data_is_reported_as_lost_messages(chaos_run: Callable) -> None:
    run = chaos_run("--duration", "20", "--wipe-majority", "--faults", "kill", "--seed", "5", timeout_s=180)
    rep = run.report
    assert run.code == 1 and rep["verdict"] == "FAIL", run.explain()
    assert rep["faults_by_kind"] == {"wipe-majority": 1}, run.explain()
    lost = rep["check"]["lost"]
    assert lost["count"] > 100, run.explain()
    # What was acknowledged before the wipe is gone; what came after survived: a lost prefix.
    assert rep["check"]["lost_by_position"]["prefix"] > 0, run.explain()
    assert any("anomalies" in r for r in rep["reasons"])
