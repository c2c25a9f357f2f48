"""Free TCP ports on loopback for the tests' node processes.

Ports are picked at random below the kernel's ephemeral range (where source
ports of outgoing connections come from, so a node restarted late in a test
finds its port free), bound to check they are free and released before they
are returned; another process may in principle take one first. The ports of
one call are held together while they are chosen, so they are distinct.
"""

from __future__ import annotations

import random
import socket


def _ephemeral_range() -> tuple[int, int]:
    """The kernel's range for outgoing connections' source ports (Linux), or (32768, 60999)."""
    try:
        lo, hi = open("/proc/sys/net/ipv4/ip_local_port_range").read().split()
        return int(lo), int(hi)
    except (OSError, ValueError):
        return 32768, 60999


def free_ports(n: int, host: str = "127.0.0.1") -> list[int]:
    """``n`` distinct ports free on ``host`` right now, below the ephemeral range
    when there is room: a port the kernel hands out as the source port of an
    outgoing connection could be in use when a node (re)starts and binds it;
    one chosen from outside that range is free unless another listener took it.
    Random picks, held together while chosen, so none repeats."""
    eph_lo, _ = _ephemeral_range()
    lo = 10000
    socks: list[socket.socket] = []
    try:
        if eph_lo - lo >= 4 * n:
            for port in random.sample(range(lo, eph_lo), min(eph_lo - lo, 64 * n)):
                s = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
                try:
                    s.bind((host, port))
                except OSError:
                    s.close()
                    continue
                socks.append(s)
                if len(socks) == n:
                    return [int(s.getsockname()[1]) for s in socks]
        while len(socks) < n:  # no room below the ephemeral range: let the kernel pick
            s = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
            socks.append(s)
            s.bind((host, 0))
        return [int(s.getsockname()[1]) for s in socks]
    finally:
        for s in socks:
            s.close()


def free_port(host: str = "127.0.0.1") -> int:
    """One port free on ``host`` right now."""
    return free_ports(1, host)[0]
