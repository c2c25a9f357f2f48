"""One supervisor for a local group of node processes.

Every tool that runs a group on this machine (``raftmq cluster``, ``raftmq
bench log``, the chaos nemesis, the integration tests' broker and kvnode
groups) starts its processes through a ``Supervisor``: it knows each process
by a name (the node id), starts it from an argv list with its output appended
to a log file, waits until a caller's probe says it answers, stops it
gracefully (SIGTERM, then SIGKILL after a timeout), SIGKILLs, pauses
(SIGSTOP) and resumes (SIGCONT) it, and restarts it with the arguments it was
last started with. What is particular to each user (the broker's TOML, the
kvnode's arguments, the chaos faults) stays with that user.

``close()`` (or leaving the ``with`` block, also on an exception) stops every
process the supervisor started and still runs, paused ones included, unless
it was handed over with ``release()``: ``raftmq cluster up --detach`` starts
nodes meant to outlive the command. The standard library is enough for this
(``subprocess`` and signals); no process library is needed.
"""

from __future__ import annotations

import shutil
import signal
import subprocess
import time
from dataclasses import dataclass, field
from pathlib import Path
from types import TracebackType
from typing import Callable, Iterable, Mapping

STOP_TIMEOUT_S = 10.0  # how long a process gets to exit after SIGTERM before SIGKILL


class SupervisorError(Exception):
    """A process did not start, exited early, or did not answer in time (one line)."""


@dataclass
class Process:
    """One supervised process: how it was started and its current ``Popen``."""

    name: str
    argv: list[str]
    log_path: Path
    stdout_to_log: bool = True  # False: stdout goes to /dev/null, only stderr to the log
    env: Mapping[str, str] | None = None
    detach: bool = False  # its own session: Ctrl-C in the terminal does not reach it
    popen: subprocess.Popen[bytes] | None = None
    paused: bool = False
    history: list[subprocess.Popen[bytes]] = field(default_factory=list)  # every incarnation, for close()

    @property
    def pid(self) -> int | None:
        return self.popen.pid if self.popen is not None else None

    def alive(self) -> bool:
        return self.popen is not None and self.popen.poll() is None

    def returncode(self) -> int | None:
        return self.popen.poll() if self.popen is not None else None


class Supervisor:
    """Named local processes, all stopped on ``close()`` (see the module docstring).

    ``die_with_parent``: run each process under ``setpriv --pdeathsig KILL``
    (where available), so that it gets SIGKILL if the supervising process dies
    without cleaning up (call ``start`` from the main thread then: the signal
    is tied to the thread that forks)."""

    def __init__(self, *, die_with_parent: bool = False, stop_timeout_s: float = STOP_TIMEOUT_S) -> None:
        self.stop_timeout_s = stop_timeout_s
        self._prefix = ["setpriv", "--pdeathsig", "KILL", "--"] if die_with_parent and shutil.which("setpriv") else []
        self._procs: dict[str, Process] = {}

    # -- starting ---------------------------------------------------------------------
    def start(self, name: str, argv: list[str], log_path: Path, *, stdout_to_log: bool = True,
              env: Mapping[str, str] | None = None, detach: bool = False, banner: str | None = None) -> Process:
        """Start ``argv`` as process ``name``, appending its output to ``log_path``
        (not waiting for it to serve). ``banner``: a line written to the log
        first. Starting a name that is already running is an error."""
        if not argv:
            raise SupervisorError(f"{name}: empty command")
        old = self._procs.get(name)
        if old is not None and old.alive():
            raise SupervisorError(f"{name} is already running (pid {old.pid})")
        proc = Process(name, list(argv), Path(log_path), stdout_to_log, env, detach,
                       history=old.history if old is not None else [])
        self._procs[name] = proc
        self._spawn(proc, banner)
        return proc

    def restart(self, name: str, *, banner: str | None = None) -> Process:
        """Start ``name`` again with the arguments it was last started with (it must not run)."""
        proc = self.process(name)
        if proc.alive():
            raise SupervisorError(f"{name} is already running (pid {proc.pid})")
        self._spawn(proc, banner)
        return proc

    def _spawn(self, proc: Process, banner: str | None) -> None:
        proc.log_path.parent.mkdir(parents=True, exist_ok=True)
        with open(proc.log_path, "ab") as logf:
            if banner is not None:
                logf.write(banner.rstrip("\n").encode() + b"\n")
                logf.flush()
            try:
                popen = subprocess.Popen(
                    [*self._prefix, *proc.argv], stdin=subprocess.DEVNULL,
                    stdout=logf if proc.stdout_to_log else subprocess.DEVNULL,
                    stderr=subprocess.STDOUT if proc.stdout_to_log else logf,
                    env=None if proc.env is None else dict(proc.env), start_new_session=proc.detach)
            except OSError as exc:
                raise SupervisorError(f"cannot start {proc.name} ({proc.argv[0]}): {exc}") from exc
        proc.popen = popen
        proc.paused = False
        proc.history.append(popen)

    # -- looking ----------------------------------------------------------------------
    def process(self, name: str) -> Process:
        try:
            return self._procs[name]
        except KeyError:
            raise SupervisorError(f"no process {name!r}; known: {', '.join(self._procs) or 'none'}") from None

    def names(self) -> list[str]:
        return list(self._procs)

    def alive(self, name: str) -> bool:
        proc = self._procs.get(name)
        return proc is not None and proc.alive()

    def running(self) -> list[str]:
        """Names of the processes running now (paused ones included)."""
        return [n for n, p in self._procs.items() if p.alive()]

    def check_alive(self, names: Iterable[str] | None = None) -> None:
        """Raise ``SupervisorError`` naming the first of ``names`` (default: all)
        that has exited, with its exit code and log file."""
        for name in self._procs if names is None else names:
            proc = self.process(name)
            code = proc.returncode()
            if proc.popen is not None and code is not None:
                raise SupervisorError(f"node {name} exited with code {code}; see {proc.log_path}")

    def wait_ready(self, names: Iterable[str], probe: Callable[[str], object], timeout_s: float,
                   interval_s: float = 0.1) -> None:
        """Wait until ``probe(name)`` is truthy for every one of ``names``; fail
        at once if one exits, or after ``timeout_s``. A probe that raises
        ``OSError`` counts as not ready yet."""
        pending = list(names)
        deadline = time.monotonic() + timeout_s
        while True:
            self.check_alive(pending)
            still = []
            for name in pending:
                try:
                    ok = probe(name)
                except OSError:
                    ok = False
                if not ok:
                    still.append(name)
            pending = still
            if not pending:
                return
            if time.monotonic() >= deadline:
                logs = ", ".join(str(self.process(n).log_path) for n in pending)
                raise SupervisorError(f"node {', '.join(pending)} did not answer within {timeout_s:g}s; see {logs}")
            time.sleep(interval_s)

    # -- signals ----------------------------------------------------------------------
    def send_signal(self, name: str, sig: int) -> bool:
        """Send ``sig`` to ``name`` if it runs; whether it was sent."""
        proc = self.process(name)
        if not proc.alive():
            return False
        proc.popen.send_signal(sig)  # type: ignore[union-attr]
        return True

    def kill(self, name: str, *, wait: bool = True, timeout_s: float = 15.0) -> None:
        """SIGKILL ``name`` (paused or not) and, with ``wait``, reap it."""
        proc = self.process(name)
        if proc.alive():
            proc.popen.kill()  # type: ignore[union-attr]
            if wait:
                proc.popen.wait(timeout_s)  # type: ignore[union-attr]
        proc.paused = False

    def pause(self, name: str) -> bool:
        """SIGSTOP ``name``; whether it was running and not yet paused."""
        proc = self.process(name)
        if proc.alive() and not proc.paused:
            proc.popen.send_signal(signal.SIGSTOP)  # type: ignore[union-attr]
            proc.paused = True
            return True
        return False

    def resume(self, name: str) -> None:
        """SIGCONT ``name`` if it was paused."""
        proc = self.process(name)
        if proc.paused and proc.alive():
            proc.popen.send_signal(signal.SIGCONT)  # type: ignore[union-attr]
        proc.paused = False

    def stop(self, names: Iterable[str] | None = None, timeout_s: float | None = None) -> None:
        """Stop ``names`` (default: all) gracefully: SIGCONT the paused ones,
        SIGTERM, then SIGKILL whatever still runs after ``timeout_s``. Never raises."""
        self._stop_popens([p for n in (self._procs if names is None else names)
                           for p in self._popens(self._procs.get(n))], timeout_s)

    def _popens(self, proc: Process | None) -> list[subprocess.Popen[bytes]]:
        if proc is None:
            return []
        proc.paused = False
        return [p for p in proc.history if p.poll() is None]

    def _stop_popens(self, popens: list[subprocess.Popen[bytes]], timeout_s: float | None) -> None:
        for p in popens:
            try:
                p.send_signal(signal.SIGCONT)  # a stopped process cannot act on SIGTERM
                p.terminate()
            except OSError:
                pass
        deadline = time.monotonic() + (self.stop_timeout_s if timeout_s is None else timeout_s)
        for p in popens:
            try:
                p.wait(max(0.1, deadline - time.monotonic()))
            except subprocess.TimeoutExpired:
                p.kill()
                try:
                    p.wait(5)
                except subprocess.TimeoutExpired:
                    pass

    def kill_all(self, timeout_s: float = 10.0) -> None:
        """SIGKILL every process started and not released, and reap them (a
        crash of the whole group, or a last resort). Never raises."""
        popens = [p for proc in self._procs.values() for p in self._popens(proc)]
        for p in popens:
            try:
                p.kill()
            except OSError:
                pass
        for p in popens:
            try:
                p.wait(timeout_s)
            except subprocess.TimeoutExpired:
                pass

    # -- handing over and cleaning up -----------------------------------------------------
    def release(self, names: Iterable[str] | None = None) -> None:
        """Forget ``names`` (default: all): ``close()`` leaves them running (detached groups)."""
        for name in list(self._procs if names is None else names):
            self._procs.pop(name, None)

    def close(self, timeout_s: float | None = None) -> None:
        """Stop every process started and not released (see ``stop``)."""
        self.stop(None, timeout_s)

    def __enter__(self) -> Supervisor:
        return self

    def __exit__(self, exc_type: type[BaseException] | None, exc: BaseException | None,
                 tb: TracebackType | None) -> None:
        self.close()
