"""Real dledger node processes on 127.0.0.1 for the integration tests.

``node_group`` makes ``NodeGroup``s: three ``python -m dledger.tools.kvnode``
processes with allocated ports and data under the test's ``tmp_path``, run by
the local-group supervisor (client/local/supervisor.py). The fixture kills every process it started when the test ends, whether it passed
or failed, and prints the tail of each node's log (shown by pytest on failure).
"""

from __future__ import annotations

import asyncio
import signal
import sys
import time
from pathlib import Path
from typing import Any, Awaitable, Callable, Iterator, TypeVar

import pytest

from raftmq.client.local.supervisor import Supervisor
from tests.ports import free_ports
from raftmq.dledger.tools.kvnode import KvClient

T = TypeVar("T")


class NodeGroup:
    """A group of kvnode processes: start, SIGKILL, restart with the same data
    dir, and ask each node its status and state over its client port."""

    def __init__(self, base_dir: Path, size: int = 3, flush: str = "async", segment_bytes: int = 16 << 10) -> None:
        """Small segments by default, so that the logs roll over several
        segment files and a restart reopens more than one."""
        self.base_dir = base_dir
        self.flush = flush
        self.segment_bytes = segment_bytes
        self.group_name = "itest"
        ports = free_ports(2 * size)
        self.ids = [f"n{i + 1}" for i in range(size)]
        self.raft_addr = {nid: f"127.0.0.1:{ports[i]}" for i, nid in enumerate(self.ids)}
        self.client_addr = {nid: f"127.0.0.1:{ports[size + i]}" for i, nid in enumerate(self.ids)}
        self.supervisor = Supervisor(stop_timeout_s=5)

    # -- processes -----------------------------------------------------------
    def log_path(self, nid: str) -> Path:
        return self.base_dir / f"{nid}.log"

    def start(self, nid: str) -> None:
        assert not self.supervisor.alive(nid), f"{nid} is already running"
        self.base_dir.mkdir(parents=True, exist_ok=True)
        cmd = [sys.executable, "-m", "raftmq.dledger.tools.kvnode", "--id", nid, "--group", self.group_name,
               "--peers", ",".join(f"{p}={a}" for p, a in self.raft_addr.items()),
               "--client-addr", self.client_addr[nid], "--data-dir", str(self.base_dir / nid),
               "--flush", self.flush, "--segment-bytes", str(self.segment_bytes),
               *(["--bootstrap"] if nid not in self.supervisor.names() else [])]  # the group's first start
        self.supervisor.start(nid, cmd, self.log_path(nid), stdout_to_log=False,
                              banner=f"==== start {time.strftime('%H:%M:%S')} {' '.join(cmd)}")

    def start_all(self) -> None:
        for nid in self.ids:
            self.start(nid)

    def kill(self, nid: str, sig: int = signal.SIGKILL) -> None:
        """Send ``sig`` and wait (10 s at most) until the process has exited."""
        self.supervisor.send_signal(nid, sig)
        self.supervisor.process(nid).popen.wait(10)  # type: ignore[union-attr]

    def running(self) -> list[str]:
        return self.supervisor.running()

    def stop_all(self) -> None:
        """SIGTERM, then SIGKILL what is still running after 5 s. Never raises."""
        self.supervisor.close()

    def log_tails(self, chars: int = 3000) -> str:
        out = []
        for nid in self.ids:
            try:
                text = self.log_path(nid).read_text(errors="replace")
            except FileNotFoundError:
                continue
            out.append(f"----- {nid} ({self.log_path(nid)}) -----\n{text[-chars:]}")
        return "\n".join(out)

    # -- asking the nodes ---------------------------------------------------------
    async def ask(self, nid: str, what: str, **kw: Any) -> dict[str, Any] | None:
        """``status`` or ``state`` of one node, or None if it does not answer."""
        try:
            async with KvClient(self.client_addr[nid]) as c:
                if what == "status":
                    return await asyncio.wait_for(c.status(), 2.0)
                return await asyncio.wait_for(c.state(**kw), 5.0)
        except (OSError, asyncio.TimeoutError):
            return None

    async def leader(self, among: list[str] | None = None) -> str | None:
        """The node of ``among`` (default: running ones) that is leader with every
        other one of them following it in the same term, else None."""
        among = among if among is not None else self.running()
        sts = {nid: await self.ask(nid, "status") for nid in among}
        leaders = [nid for nid, st in sts.items() if st and st["role"] == "leader"]
        if len(leaders) != 1:
            return None
        lead = leaders[0]
        term = sts[lead]["term"]  # type: ignore[index]
        if all(st and st["leader_id"] == lead and st["term"] == term for st in sts.values()):
            return lead
        return None

    async def wait_leader(self, among: list[str] | None = None, timeout_s: float = 15.0) -> str:
        return await self.wait_for(lambda: self.leader(among), timeout_s, "a leader followed by every running node")

    async def wait_for(self, cond: Callable[[], Awaitable[T | None]], timeout_s: float, what: str,
                       interval_s: float = 0.05) -> T:
        """``wait_for`` that appends the nodes' log tails to a timeout."""
        return await wait_for(cond, timeout_s, what, interval_s, on_timeout=self.log_tails)


async def wait_for(cond: Callable[[], Awaitable[T | None]], timeout_s: float, what: str,
                   interval_s: float = 0.05, on_timeout: Callable[[], str] | None = None) -> T:
    """Poll ``cond`` until it returns something truthy; fail after ``timeout_s``."""
    deadline = time.monotonic() + timeout_s
    last: Any = None
    while True:
        last = await cond()
        if last:
            return last
        if time.monotonic() >= deadline:
            detail = on_timeout() if on_timeout else ""
            pytest.fail(f"timed out after {timeout_s} s waiting for {what}\n{detail}")
        await asyncio.sleep(interval_s)


@pytest.fixture
def node_group(tmp_path: Path) -> Iterator[Callable[..., NodeGroup]]:
    groups: list[NodeGroup] = []

    def make(**kw: Any) -> NodeGroup:
        g = NodeGroup(tmp_path / f"group{len(groups)}", **kw)
        groups.append(g)
        return g

    try:
        yield make
    finally:
        for g in groups:
            g.stop_all()
        for g in groups:
            print(g.log_tails())
