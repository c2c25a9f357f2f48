"""Free TCP ports on loopback for the tests' node processes.

Every port is bound to port 0 (the kernel picks one) and released before it
is returned, so another process may in principle take it first; the ports of
one call are held together while they are chosen, so they are distinct.
"""

from __future__ import annotations

import socket


def free_ports(n: int, host: str = "127.0.0.1") -> list[int]:
    """``n`` distinct ports free on ``host`` right now."""
    socks = []
    try:
        for _ in range(n):
            s = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
            s.bind((host, 0))
            socks.append(s)
        return [s.getsockname()[1] for s in socks]
    finally:
        for s in socks:
            s.close()


def free_port(host: str = "127.0.0.1") -> int:
    """One port free on ``host`` right now."""
    return free_ports(1, host)[0]
