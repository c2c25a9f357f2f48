"""Chaos runs against real broker processes: a short smoke in the default
suite, proof that a lost majority is caught, and the long run (opt-in)."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest

from chaos.nemesis import partitions_possible

pytestmark = pytest.mark.integration
REPO = Path(__file__).resolve().parents[2]


def chaos_run(tmp_path: Path, *args: str, timeout_s: float) -> tuple[int, dict[str, Any], str]:
    """Run ``raftmq chaos run`` in its own process group, so that whatever it
    started (broker processes, its network namespace) is killed with it if the
    test fails or times out."""
    proc = subprocess.Popen([sys.executable, "-m", "chaos", "run", "--quiet", "--out", str(tmp_path / "out"),
                             "--base-dir", str(tmp_path / "data"), *args],
                            stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True, cwd=REPO,
                            start_new_session=True)
    try:
        out, _ = proc.communicate(timeout=timeout_s)
    finally:
        try:
            os.killpg(proc.pid, signal.SIGKILL)  # a no-op when everything already exited
        except ProcessLookupError:
            pass
    report = json.loads((tmp_path / "out" / "chaos-report.json").read_text())
    return proc.returncode, report, out


def test_chaos_smoke_leader_kills_pauses_and_partitions_lose_nothing(tmp_path: Path) -> None:
    faults = "kill-leader,pause-leader,partition"
    code, rep, out = chaos_run(tmp_path, "--duration", "40", "--interval", "4", "--faults", faults, "--cycle",
                               timeout_s=240)
    assert code == 0, out
    assert rep["check"]["anomalies"] == 0 and rep["acknowledged"] > 1000
    kinds = {f["fault"] for f in rep["faults"]}
    assert {"kill-leader", "pause-leader"} <= kinds
    if partitions_possible()[0]:
        assert "partition" in kinds
    else:
        assert rep["partitions_skipped"]
    assert all(f["seconds"] is not None for f in rep["failover_after_leader_kill_s"]["each"])
    assert (tmp_path / "out" / "chaos-report.html").read_text().count("PASS") >= 1


def test_losing_a_majoritys_data_is_reported_as_lost_messages(tmp_path: Path) -> None:
    """No Raft group survives this; the run must say so (the checker can fail)."""
    code, rep, out = chaos_run(tmp_path, "--duration", "16", "--faults", "kill", "--wipe-majority", timeout_s=180)
    assert code == 1, out
    assert rep["check"]["lost"]["count"] > 0, rep["check"]


@pytest.mark.slow
def test_long_chaos_run_every_fault_type(tmp_path: Path) -> None:
    code, rep, out = chaos_run(tmp_path, "--duration", "600", "--faults", "all", timeout_s=900)
    assert code == 0, out
