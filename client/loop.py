"""The event loop the client's own threads and commands run on: the one
:func:`raftmq.eventloop.loop_factory` picks (uvloop where installed, else
asyncio's; ``RAFTMQ_EVENT_LOOP=asyncio`` forces asyncio's), shared with the
broker node.

Code that brings its own loop (an application using ``Producer``) keeps it: the
library never changes the caller's event loop policy.
"""

from __future__ import annotations

import asyncio
from typing import Any, Coroutine, TypeVar

from raftmq.eventloop import loop_factory

T = TypeVar("T")


def new_event_loop() -> asyncio.AbstractEventLoop:
    return loop_factory()()


def run(coro: Coroutine[Any, Any, T]) -> T:
    """``asyncio.run`` on the loop above."""
    with asyncio.Runner(loop_factory=loop_factory()) as runner:
        return runner.run(coro)
