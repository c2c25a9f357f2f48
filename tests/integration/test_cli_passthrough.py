"""``raftmq broker``, ``raftmq bench log`` and ``raftmq chaos`` hand their
arguments to another program of RaftMQ. Run from a directory outside the
repository, with the environment a user has (no PYTHONPATH pointing into the
repository), so that a program named by a bare folder name (``python -m
chaos``, as before the one import name) is not found by accident."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

pytestmark = pytest.mark.integration
REPO = Path(__file__).resolve().parents[2]


def user_env() -> dict[str, str]:
    env = dict(os.environ)
    # Keep a PYTHONPATH that maps the import name elsewhere (a worktree), drop one into the repository.
    if env.get("PYTHONPATH", "").rstrip("/") == str(REPO):
        del env["PYTHONPATH"]
    return env


@pytest.mark.parametrize(("command", "program"), [
    (["broker"], "raftmq broker"),
    (["bench", "log"], "bench"),
    (["chaos"], "chaos"),
])
def test_each_passthrough_reaches_its_program(tmp_path: Path, command: list[str], program: str) -> None:
    r = subprocess.run([sys.executable, "-m", "raftmq.client.cli", *command, "--help"], cwd=tmp_path,
                       env=user_env(), capture_output=True, text=True, timeout=60)
    assert r.returncode == 0, r.stderr
    assert "Usage:" in r.stdout and program in r.stdout, r.stdout
