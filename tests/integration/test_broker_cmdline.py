"""``raftmq broker`` / ``python -m raftmq.broker`` as a user runs it: a node
TOML file with a value of the wrong type, or a bad flag, is one line on stderr
naming the file and the key and a non-zero exit, before anything starts (no
traceback, no node running on a wrong value); ``--help`` explains every
option. Each run is its own process, bounded in time."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

pytestmark = [pytest.mark.integration, pytest.mark.timeout(120)]
NODE = [sys.executable, "-m", "raftmq.broker"]
CONSOLE = Path(sys.executable).parent / "raftmq"  # the console script installed beside this Python
OPTIONS = ["--config", "--node-id", "--group", "--data-dir", "--flush", "--member", "--retention-hours",
           "--segment-bytes", "--rejoin", "--bootstrap", "--log-level", "--help"]


def run(cmd: list[str], cwd: Path) -> subprocess.CompletedProcess[str]:
    # A bad config must be refused at once; a node that started anyway would be stopped by the timeout.
    return subprocess.run(cmd, capture_output=True, text=True, timeout=30, cwd=cwd,
                          env={**os.environ, "RAFTMQ_EVENT_LOOP": "asyncio"}, stdin=subprocess.DEVNULL)


def node_toml(data_dir: Path, line: str, http_url: str = '"http://127.0.0.1:1"') -> str:
    # Ports 1 and 2: never bound, the node must not get that far.
    return (f'node_id = "n1"\ngroup = "g"\ndata_dir = "{data_dir}"\n{line}\n\n'
            f'[members.n1]\nhttp_url = {http_url}\nraft_addr = "127.0.0.1:2"\n')


@pytest.mark.parametrize("line, error", [
    ('tick_ms = "50"', 'tick_ms: expected an integer, got "50"'),
    ("flush = 1", "flush: expected a string, got 1"),
    ('rejoin = "yes"', 'rejoin: expected true or false, got "yes"'),
    ("retention_hours = true", "retention_hours: expected a number, got true"),
    ('[limits]\nmax_wait_ms = "5"', 'limits.max_wait_ms: expected an integer, got "5"'),
])
def test_a_wrong_type_in_node_toml_is_one_line_naming_the_key(tmp_path: Path, line: str, error: str) -> None:
    (tmp_path / "bad.toml").write_text(node_toml(tmp_path / "data", line))
    r = run([*NODE, "--config", "bad.toml"], tmp_path)
    assert r.returncode != 0
    assert r.stderr == f"raftmq broker: bad.toml: {error}\n"
    assert not (tmp_path / "data").exists()  # refused before anything was opened


def test_a_member_url_of_the_wrong_type_is_one_line_naming_the_member(tmp_path: Path) -> None:
    (tmp_path / "bad.toml").write_text(node_toml(tmp_path / "data", "", http_url="8081"))
    r = run([*NODE, "--config", "bad.toml"], tmp_path)
    assert (r.returncode, r.stderr) == (2, "raftmq broker: bad.toml: members.n1.http_url: expected a string, got 8081\n")


@pytest.mark.parametrize("args, error", [
    (["--flush", "fast"], "Invalid value for '--flush'"),
    (["--no-such-flag"], "No such option"),
    (["--config", "missing.toml"], "missing.toml"),
])
def test_a_bad_flag_is_one_line_and_a_non_zero_exit(tmp_path: Path, args: list[str], error: str) -> None:
    r = run([*NODE, *args], tmp_path)
    assert r.returncode != 0 and r.stdout == ""
    assert len(r.stderr.splitlines()) == 1 and r.stderr.startswith("raftmq broker: ") and error in r.stderr


@pytest.mark.parametrize("via", ["python -m raftmq.broker", "raftmq broker"])
def test_help_describes_every_option(tmp_path: Path, via: str) -> None:
    if via == "raftmq broker" and not CONSOLE.exists():
        pytest.skip(f"no console script at {CONSOLE}")
    r = run([*NODE, "--help"] if via.startswith("python") else [str(CONSOLE), "broker", "--help"], tmp_path)
    assert r.returncode == 0 and r.stderr == ""
    assert r.stdout.startswith("Usage: raftmq broker [OPTIONS]")
    lines = r.stdout.splitlines()
    for opt in OPTIONS:  # each option's line, then its help text (on that line or the next)
        at = next(i for i, line in enumerate(lines) if line.lstrip().startswith((opt + " ", "-h, " + opt)))
        words = " ".join(lines[at:at + 2]).split()
        assert len([w for w in words if w.isalpha()]) >= 3, (opt, r.stdout)
