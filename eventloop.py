"""The event loop every RaftMQ process runs on: uvloop where it is installed (a
dependency on Linux and macOS), else asyncio's. uvloop runs the same asyncio
code with its transports and scheduler in C, which cuts the cost of every
request and peer message (measured with ``raftmq bench produce``: a third more
messages per second per core). ``RAFTMQ_EVENT_LOOP=asyncio`` forces asyncio's
loop, for debugging or to compare.

It lives at the root of the ``raftmq`` package because both the broker node
and the client use it, and neither may import the other.
"""

from __future__ import annotations

import asyncio
import os
from typing import Callable


def loop_factory() -> Callable[[], asyncio.AbstractEventLoop]:
    """The function that makes a new event loop, for ``asyncio.Runner(loop_factory=...)``."""
    if os.environ.get("RAFTMQ_EVENT_LOOP", "").lower() != "asyncio":
        try:
            import uvloop
        except ImportError:
            pass
        else:
            return uvloop.new_event_loop
    return asyncio.new_event_loop
