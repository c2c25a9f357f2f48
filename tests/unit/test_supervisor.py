"""The local-group supervisor (client/local/supervisor.py) on tiny Python
child processes, and the node TOML writer (client/local/node_toml.py)."""

from __future__ import annotations

import os
import signal
import sys
import time
import tomllib
from pathlib import Path

import pytest

from raftmq.client.local.node_toml import node_toml
from raftmq.client.local.supervisor import Supervisor, SupervisorError

# A child that says it started, notes SIGTERM in its log, and exits 0 on it.
POLITE = """
import signal, sys, time
print("up", flush=True)
def bye(*_):
    print("got SIGTERM", flush=True)
    sys.exit(0)
signal.signal(signal.SIGTERM, bye)
while True:
    time.sleep(0.05)
"""
# A child that ignores SIGTERM: only SIGKILL ends it.
STUBBORN = """
import signal, time
signal.signal(signal.SIGTERM, signal.SIG_IGN)
print("up", flush=True)
while True:
    time.sleep(0.05)
"""


def said_up(path: Path) -> bool:
    return path.exists() and "up" in path.read_text()


def state(pid: int) -> str:
    """The process state letter from /proc (``T`` = stopped)."""
    return Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0]


def eventually(cond, timeout_s: float = 5.0) -> bool:  # type: ignore[no-untyped-def]
    """Signals arrive asynchronously: wait (with a deadline) for what they do."""
    deadline = time.monotonic() + timeout_s
    while not cond():
        if time.monotonic() > deadline:
            return False
        time.sleep(0.01)
    return True


def gone(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return True
    return state(pid) == "Z"


def test_start_waits_for_the_probe_and_stop_is_graceful(tmp_path: Path) -> None:
    log = tmp_path / "a.log"
    with Supervisor() as sup:
        sup.start("a", [sys.executable, "-c", POLITE], log, banner="---- start a")
        sup.wait_ready(["a"], lambda _: said_up(log), timeout_s=10)
        assert sup.running() == ["a"]
        sup.stop(["a"])
        assert sup.process("a").returncode() == 0  # it exited by itself on SIGTERM
    assert log.read_text().splitlines() == ["---- start a", "up", "got SIGTERM"]


def test_stop_escalates_to_sigkill_after_the_timeout(tmp_path: Path) -> None:
    log = tmp_path / "s.log"
    with Supervisor(stop_timeout_s=0.5) as sup:
        sup.start("s", [sys.executable, "-c", STUBBORN], log)
        sup.wait_ready(["s"], lambda _: said_up(log), timeout_s=10)
        t0 = time.monotonic()
        sup.stop()
        assert sup.process("s").returncode() == -signal.SIGKILL
        assert time.monotonic() - t0 < 5


def test_pause_resume_kill_and_restart_with_the_same_arguments(tmp_path: Path) -> None:
    log = tmp_path / "p.log"
    with Supervisor() as sup:
        argv = [sys.executable, "-c", POLITE]
        first = sup.start("p", argv, log).pid
        assert first is not None
        sup.wait_ready(["p"], lambda _: said_up(log), timeout_s=10)
        assert sup.pause("p") and not sup.pause("p")  # a second pause is a no-op
        assert eventually(lambda: state(first) == "T")
        sup.resume("p")
        assert eventually(lambda: state(first) != "T")
        sup.kill("p")
        assert not sup.alive("p") and sup.process("p").returncode() == -signal.SIGKILL
        second = sup.restart("p").pid
        assert second != first and sup.process("p").argv == argv
        sup.wait_ready(["p"], lambda _: log.read_text().count("up") == 2, timeout_s=10)
        with pytest.raises(SupervisorError, match="already running"):
            sup.restart("p")


def test_close_on_an_exception_stops_every_process_also_paused_ones(tmp_path: Path) -> None:
    pids = []
    with pytest.raises(RuntimeError, match="the caller failed"):
        with Supervisor(stop_timeout_s=2) as sup:
            for name in ("x", "y"):
                pids.append(sup.start(name, [sys.executable, "-c", POLITE], tmp_path / f"{name}.log").pid)
            sup.wait_ready(["x", "y"], lambda n: said_up(tmp_path / f"{n}.log"), timeout_s=10)
            sup.pause("y")
            raise RuntimeError("the caller failed")
    assert all(gone(p) for p in pids)
    assert "got SIGTERM" in (tmp_path / "y.log").read_text()  # resumed, then stopped gracefully


def test_a_released_process_outlives_close(tmp_path: Path) -> None:
    with Supervisor() as sup:
        pid = sup.start("d", [sys.executable, "-c", POLITE], tmp_path / "d.log", detach=True).pid
        sup.release()
    assert pid is not None
    try:
        assert not gone(pid)
    finally:
        os.kill(pid, signal.SIGKILL)
        os.waitpid(pid, 0)


def test_wait_ready_fails_at_once_when_a_node_exits(tmp_path: Path) -> None:
    with Supervisor() as sup:
        sup.start("e", [sys.executable, "-c", "import sys; sys.exit(3)"], tmp_path / "e.log")
        t0 = time.monotonic()
        with pytest.raises(SupervisorError, match=r"node e exited with code 3; see .*e\.log"):
            sup.wait_ready(["e"], lambda _: False, timeout_s=30)
        assert time.monotonic() - t0 < 10


def test_wait_ready_times_out_naming_the_silent_node(tmp_path: Path) -> None:
    with Supervisor() as sup:
        sup.start("q", [sys.executable, "-c", POLITE], tmp_path / "q.log")
        with pytest.raises(SupervisorError, match="node q did not answer within 0.3s"):
            sup.wait_ready(["q"], lambda _: False, timeout_s=0.3)


def test_bad_commands_and_names_are_clear_errors(tmp_path: Path) -> None:
    with Supervisor() as sup:
        with pytest.raises(SupervisorError, match="cannot start z"):
            sup.start("z", [str(tmp_path / "no-such-program")], tmp_path / "z.log")
        with pytest.raises(SupervisorError, match="no process 'w'"):
            sup.kill("w")


AWKWARD = 'base "quoted" back\\slash and space'


def test_node_toml_survives_quotes_backslashes_and_spaces(tmp_path: Path) -> None:
    data_dir = str(tmp_path / AWKWARD / "n1" / "data")
    members = {"n1": ("http://127.0.0.1:1", "127.0.0.1:2"), "n2": ("http://127.0.0.1:3", "127.0.0.1:4")}
    text = node_toml("n1", 'g"1', data_dir, "async", members,
                     {"segment_bytes": 65536, "bootstrap": True, "log": {"level": "INFO"}})
    assert tomllib.loads(text) == {
        "node_id": "n1", "group": 'g"1', "data_dir": data_dir, "flush": "async", "segment_bytes": 65536,
        "bootstrap": True, "log": {"level": "INFO"},
        "members": {"n1": {"http_url": "http://127.0.0.1:1", "raft_addr": "127.0.0.1:2"},
                    "n2": {"http_url": "http://127.0.0.1:3", "raft_addr": "127.0.0.1:4"}}}


def test_node_toml_refuses_values_toml_cannot_hold() -> None:
    with pytest.raises(ValueError, match="'tick_ms' has no value"):
        node_toml("n1", "g", "/d", "async", {}, {"tick_ms": None})
    with pytest.raises(ValueError, match="'data_dir' is set by the tool"):
        node_toml("n1", "g", "/d", "async", {}, {"data_dir": "/elsewhere"})


def test_kill_all_sigkills_every_incarnation_at_once(tmp_path: Path) -> None:
    with Supervisor() as sup:
        log = tmp_path / "k.log"
        sup.start("k", [sys.executable, "-c", POLITE], log)
        sup.start("m", [sys.executable, "-c", STUBBORN], tmp_path / "m.log")
        sup.wait_ready(["k", "m"], lambda n: said_up(tmp_path / f"{n}.log"), timeout_s=10)
        sup.kill_all()
        assert sup.running() == []
        assert {sup.process(n).returncode() for n in ("k", "m")} == {-signal.SIGKILL}
        assert "got SIGTERM" not in log.read_text()  # no graceful stop: a crash
