"""``raftmq cluster up|status|restart-node|down`` as a user runs them."""

from __future__ import annotations

import json
import os
import shutil
import signal
import subprocess
import sys
from pathlib import Path

import pytest

pytestmark = pytest.mark.integration

RAFTMQ = [sys.executable, "-m", "raftmq.client.cli"]


def run(*args: str, timeout_s: float = 60) -> subprocess.CompletedProcess[str]:
    return subprocess.run([*RAFTMQ, *args], capture_output=True, text=True, timeout=timeout_s,
                          cwd=Path(__file__).resolve().parents[2])


def test_detached_group_lifecycle(tmp_path: Path) -> None:
    base = str(tmp_path / "grp")
    try:
        up = run("cluster", "up", "--nodes", "3", "--base-dir", base, "--detach")
        assert up.returncode == 0, up.stderr
        assert up.stdout.count("http://127.0.0.1:") == 3 and "<- leader" in up.stdout
        st = run("cluster", "status", "--base-dir", base, "--json")
        nodes = json.loads(st.stdout)["nodes"]
        assert sorted(n["role"] for n in nodes) == ["follower", "follower", "leader"]
        victim = next(n for n in nodes if n["role"] == "follower")
        os.kill(victim["pid"], signal.SIGKILL)
        again = run("cluster", "up", "--nodes", "3", "--base-dir", base, "--detach")
        assert again.returncode != 0 and "already running" in again.stderr  # one line, non-zero exit
        rs = run("cluster", "restart-node", victim["id"], "--base-dir", base)
        assert rs.returncode == 0, rs.stderr
        nodes = json.loads(run("cluster", "status", "--base-dir", base, "--json").stdout)["nodes"]
        assert all(n["pid"] for n in nodes)
    finally:
        down = run("cluster", "down", "--base-dir", base)
        state = json.loads((tmp_path / "grp" / "cluster.json").read_text()) if (tmp_path / "grp" / "cluster.json").exists() else {"nodes": []}
        for n in state["nodes"]:  # belt and braces: nothing outlives the test
            if n.get("pid"):
                try:
                    os.kill(n["pid"], signal.SIGKILL)
                except ProcessLookupError:
                    pass
    assert down.returncode == 0 and "stopped 3 node(s)" in down.stdout


def test_up_on_an_existing_group_lets_a_wiped_node_rejoin_without_a_vote(tmp_path: Path) -> None:
    """Only the group's first ``up`` bootstraps: an ``up`` over a base directory
    where one node's data directory was wiped brings that node back as a
    non-voter until it has caught up, and the others elect a leader."""
    base = tmp_path / "grp"
    try:
        up = run("cluster", "up", "--nodes", "3", "--base-dir", str(base), "--detach")
        assert up.returncode == 0, up.stderr
        assert json.loads((base / "cluster.json").read_text())["bootstrapped"] is True
        assert run("cluster", "down", "--base-dir", str(base)).returncode == 0
        first_start = (base / "n1" / "broker.log").read_text()
        assert "rejoining with lost data" not in first_start  # the new group's nodes vote
        shutil.rmtree(base / "n1" / "data")
        again = run("cluster", "up", "--nodes", "3", "--base-dir", str(base), "--detach")
        assert again.returncode == 0 and "<- leader" in again.stdout, again.stderr
        restart = (base / "n1" / "broker.log").read_text()[len(first_start):]
        assert "rejoining with lost data: no votes until caught up" in restart, restart[-3000:]
    finally:
        run("cluster", "down", "--base-dir", str(base))
        state = json.loads((base / "cluster.json").read_text()) if (base / "cluster.json").exists() else {"nodes": []}
        for n in state["nodes"]:  # belt and braces: nothing outlives the test
            if n.get("pid"):
                try:
                    os.kill(n["pid"], signal.SIGKILL)
                except ProcessLookupError:
                    pass


def test_cluster_errors_are_one_line_and_non_zero(tmp_path: Path) -> None:
    r = run("cluster", "down", "--base-dir", str(tmp_path / "nothing"))
    assert r.returncode == 1
    assert r.stderr.strip().count("\n") == 0 and "no cluster found" in r.stderr
    r = run("cluster", "restart-node", "n9", "--base-dir", str(tmp_path / "nothing"))
    assert r.returncode == 1 and "no cluster found" in r.stderr


def test_up_in_a_base_dir_with_a_quote_a_backslash_and_a_space(tmp_path: Path) -> None:
    """The node TOML is written with a TOML library: any path reads back the same."""
    import tomllib

    base = tmp_path / 'a "quoted" back\\slash dir'
    try:
        up = run("cluster", "up", "--nodes", "1", "--base-dir", str(base), "--detach")
        assert up.returncode == 0 and "<- leader" in up.stdout, up.stderr
        conf = tomllib.loads((base / "n1" / "node.toml").read_text())
        assert conf["data_dir"] == str(base / "n1" / "data")
        assert any((base / "n1" / "data").iterdir())  # the node wrote its data there
    finally:
        run("cluster", "down", "--base-dir", str(base))
        state = json.loads((base / "cluster.json").read_text()) if (base / "cluster.json").exists() else {"nodes": []}
        for n in state["nodes"]:  # belt and braces: nothing outlives the test
            if n.get("pid"):
                try:
                    os.kill(n["pid"], signal.SIGKILL)
                except ProcessLookupError:
                    pass
