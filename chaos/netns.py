"""Network partitions for chaos runs, inside a network namespace of the run's own.

Partitions need root, ``unshare`` (util-linux) and ``iptables``. When they
are asked for and possible, ``raftmq chaos run`` re-executes itself as
``unshare --net``: a fresh network namespace with only a loopback interface,
which the run brings up first (``loopback_up``). Every node binds its
own 127.0.0.x address (all of 127/8 is routed to ``lo``), and a partition is
a set of ``iptables -A INPUT -s A -d B -j DROP`` rules between node
addresses, in both directions. The run's clients stay on 127.0.0.1 and reach
every node, as Jepsen's clients do. The rules die with the namespace; the
host's namespace and its firewall are never touched: ``Firewall`` refuses to
run unless it is inside the namespace this module created.
"""

from __future__ import annotations

import asyncio
import fcntl
import os
import shutil
import signal
import socket
import struct
import subprocess
from typing import Final, Iterable

ENV: Final = "RAFTMQ_CHAOS_NETNS"  # set to the outer namespace's id when we re-execute ourselves
TOOLS: Final = ("unshare", "iptables")


def netns_id() -> str | None:
    try:
        return os.readlink("/proc/self/ns/net")
    except OSError:
        return None


def in_private_netns() -> bool:
    """True inside the namespace ``run_in_private_netns`` made (not just because the variable is set)."""
    outer = os.environ.get(ENV)
    here = netns_id()
    return bool(outer) and here is not None and here != outer


def partitions_possible() -> tuple[bool, str]:
    """Whether this run can partition nodes; if not, why (one line)."""
    if not hasattr(os, "geteuid") or os.geteuid() != 0:
        return False, "partitions need root (iptables inside a private network namespace); run as root to include them"
    missing = [t for t in TOOLS if shutil.which(t) is None]
    if missing:
        return False, f"partitions need {', '.join(missing)} (apt-get install iptables util-linux)"
    return True, ""


def run_in_private_netns(argv: list[str]) -> int:
    """Run ``argv`` in a new network namespace; its exit status.

    ``unshare --kill-child=TERM``: if we die, the child is told to stop (and
    cleans up its broker processes). A SIGTERM to us is passed on that way;
    Ctrl-C reaches the child directly (same process group)."""
    env = dict(os.environ, **{ENV: netns_id() or "?"})
    cmd = ["unshare", "--net", "--kill-child=TERM", "--", *argv]
    proc = subprocess.Popen(cmd, env=env)
    terminated = False

    def on_term(signum: int, frame: object) -> None:
        nonlocal terminated
        terminated = True
        proc.kill()  # unshare ignores SIGTERM while it waits; its death sends the child SIGTERM

    old_term = signal.signal(signal.SIGTERM, on_term)
    old_int = signal.signal(signal.SIGINT, signal.SIG_IGN)  # the child gets Ctrl-C itself and cleans up
    try:
        rc = proc.wait()
        return 128 + signal.SIGTERM if terminated else (128 - rc if rc < 0 else rc)
    finally:
        signal.signal(signal.SIGTERM, old_term)
        signal.signal(signal.SIGINT, old_int)


def loopback_up() -> None:
    """Bring ``lo`` up (a new network namespace starts with it down): the
    SIOCSIFFLAGS ioctl that ``ip link set lo up`` makes."""
    siocgifflags, siocsifflags, iff_up = 0x8913, 0x8914, 0x1
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as s:
        flags = struct.unpack("16sh", fcntl.ioctl(s, siocgifflags, struct.pack("16sh", b"lo", 0)))[1]
        if not flags & iff_up:
            fcntl.ioctl(s, siocsifflags, struct.pack("16sh", b"lo", flags | iff_up))


class Firewall:
    """DROP rules between node addresses, in the private namespace only."""

    def __init__(self) -> None:
        if not in_private_netns():
            raise RuntimeError("refusing to touch iptables outside the chaos run's own network namespace")
        self.rules = 0

    async def _iptables(self, *args: str) -> None:
        proc = await asyncio.create_subprocess_exec("iptables", "-w", *args, stdout=asyncio.subprocess.DEVNULL,
                                                    stderr=asyncio.subprocess.PIPE)
        _, err = await proc.communicate()
        if proc.returncode != 0:
            raise RuntimeError(f"iptables {' '.join(args)}: {err.decode(errors='replace').strip()}")

    async def block(self, pairs: Iterable[tuple[str, str]]) -> None:
        """Drop every packet from A to B and from B to A for each pair (A, B) of addresses."""
        done = set()
        for a, b in pairs:
            for src, dst in ((a, b), (b, a)):
                if (src, dst) not in done:
                    done.add((src, dst))
                    await self._iptables("-A", "INPUT", "-s", src, "-d", dst, "-j", "DROP")
                    self.rules += 1

    async def heal(self) -> None:
        if self.rules:
            await self._iptables("-F", "INPUT")
            self.rules = 0


def cut_pairs(hosts: list[str], groups: list[list[str]]) -> list[tuple[str, str]]:
    """The address pairs to cut so that nodes talk only to nodes they share a group with."""
    allowed = {(a, b) for g in groups for a in g for b in g}
    return [(a, b) for i, a in enumerate(hosts) for b in hosts[i + 1:] if (a, b) not in allowed]
