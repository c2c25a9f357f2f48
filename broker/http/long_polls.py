"""The long-poll cap: at most ``[http] max_long_polls`` pulls wait at once.

A waiting pull holds a connection (an open file) and a task for up to
``max_wait_ms``; without a cap, idle long polls alone could use up a node's
open files and shut every other client out. A pull that finds every slot
taken is answered at once, as if it had asked ``wait_ms=0``: the answer is
the same as a long poll that timed out, only sooner, so every client keeps
working, and it polls again as it would have after the timeout.
"""

from __future__ import annotations

import contextlib
import logging
from typing import Iterator

log = logging.getLogger(__name__)


class LongPolls:
    """Counts the pulls waiting now; ``slot()`` takes one if one is free."""

    def __init__(self, limit: int) -> None:
        self.limit = limit
        self.waiting = 0
        self.refused = 0  # pulls answered at once because the cap was reached, since start

    @contextlib.contextmanager
    def slot(self) -> Iterator[bool]:
        """Yields True with a slot held for the block, False when none is free."""
        if self.waiting >= self.limit:
            if self.refused % 1000 == 0:  # one line per 1,000: a busy node must not flood its log
                log.warning("event=long_poll_cap_reached max_long_polls=%d refused=%d: pulls are answered at once "
                            "(as if wait_ms=0)", self.limit, self.refused + 1)
            self.refused += 1
            yield False
            return
        self.waiting += 1
        try:
            yield True
        finally:
            self.waiting -= 1
