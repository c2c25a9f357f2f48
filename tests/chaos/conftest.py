"""Chaos runs as a user starts them: ``python -m chaos run ...`` in a process
group of its own, so that whatever it started (broker processes, its network
namespace) is killed with it if the test fails or times out."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable

import pytest

REPO = Path(__file__).resolve().parents[2]


@dataclass
class ChaosRun:
    code: int
    report: dict[str, Any]
    output: str

    def explain(self) -> str:
        """What a failing assertion shows: the output, the reasons and the anomalies."""
        chk = self.report.get("check", {})
        bad = {k: chk[k] for k in chk.get("counts", {}) if chk["counts"][k]}
        return (f"exit {self.code}\n{self.output[-4000:]}\nreasons: {self.report.get('reasons')}\n"
                f"anomalies: {json.dumps(bad, default=str)[:6000]}\nfaults: {json.dumps(self.report.get('faults'))[:3000]}")


@pytest.fixture
def chaos_run(tmp_path: Path) -> Callable[..., ChaosRun]:
    def run(*args: str, timeout_s: float) -> ChaosRun:
        out_dir = tmp_path / "out"
        proc = subprocess.Popen([sys.executable, "-m", "raftmq.chaos", "run", "--quiet", "--out", str(out_dir),
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
            proc.wait()
        path = out_dir / "chaos-report.json"
        assert path.exists(), f"no report; exit {proc.returncode}\n{out[-4000:]}"
        return ChaosRun(proc.returncode, json.loads(path.read_text()), out)

    return run
