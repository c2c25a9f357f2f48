"""At most one log line per source and interval for refused peer connections.

A port scanner, a forger or a misconfigured node can open connections as fast
as the network allows; logging each refusal would fill the disk (152,715
hello-less connections once wrote 152,250 WARNING lines). ``RefusalLog.note``
says whether this refusal is logged, and how many from the same source were
not since the last line. Pure: the caller passes the time.
"""

from __future__ import annotations

from typing import Final

INTERVAL_S: Final = 60.0
MAX_SOURCES: Final = 4096


class RefusalLog:
    """Per source key (an IP address, a peer id): the time of its last logged line and
    the refusals since, kept for at most ``max_sources`` keys (stale ones are forgotten
    first; when all are fresh, all are, which only costs a few extra lines)."""

    __slots__ = ("interval_s", "max_sources", "_last", "_suppressed")

    def __init__(self, interval_s: float = INTERVAL_S, max_sources: int = MAX_SOURCES) -> None:
        self.interval_s = interval_s
        self.max_sources = max_sources
        self._last: dict[str, float] = {}
        self._suppressed: dict[str, int] = {}

    def note(self, key: str, now: float) -> int | None:
        """Record one refusal from ``key`` at ``now`` (seconds, monotonic). Returns the number
        suppressed since the last line when this one is to be logged, None when it is not."""
        last = self._last.get(key)
        if last is not None and now - last < self.interval_s:
            self._suppressed[key] = self._suppressed.get(key, 0) + 1
            return None
        if last is None and len(self._last) >= self.max_sources:
            self._forget_stale(now)
        self._last[key] = now
        return self._suppressed.pop(key, 0)

    def _forget_stale(self, now: float) -> None:
        stale = [k for k, t in self._last.items() if now - t >= self.interval_s]
        for k in stale if stale else list(self._last):
            del self._last[k]
            self._suppressed.pop(k, None)
