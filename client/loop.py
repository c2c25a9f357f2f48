"""The event loop the client's own threads and commands run on: uvloop where it
is installed (a dependency on Linux and macOS), else asyncio's. uvloop runs the
same asyncio code with its transports and scheduler in C: measured with
``raftmq bench produce``, a third more messages per second per core.
``RAFTMQ_EVENT_LOOP=asyncio`` picks asyncio's loop (for debugging, or to compare).

Code that brings its own loop (an application using ``Producer``) keeps it: the
library never changes the caller's event loop policy.
"""

from __future__ import annotations

import asyncio
import os
from typing import Any, Callable, Coroutine, TypeVar

T = TypeVar("T")


def loop_factory() -> Callable[[], asyncio.AbstractEventLoop]:
    if os.environ.get("RAFTMQ_EVENT_LOOP", "").lower() != "asyncio":
        try:
            import uvloop
        except ImportError:
            pass
        else:
            return uvloop.new_event_loop
    return asyncio.new_event_loop


def new_event_loop() -> asyncio.AbstractEventLoop:
    return loop_factory()()


def run(coro: Coroutine[Any, Any, T]) -> T:
    """``asyncio.run`` on the loop above."""
    with asyncio.Runner(loop_factory=loop_factory()) as runner:
        return runner.run(coro)
