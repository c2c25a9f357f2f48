"""The event trace of a simulation run: what happened, step by step.

Events are stored as plain tuples and formatted only when someone reads them
(a failing seed, the replay test), so recording costs next to nothing on the
hot path. The last ``TAIL`` events are always kept; the full trace only when
asked for (``Trace(full=True)``).
"""

from __future__ import annotations

from collections import deque
from typing import Any

from raftmq.dledger.core.messages import (
    AppendEntries,
    AppendEntriesReply,
    InstallSnapshot,
    InstallSnapshotReply,
    RequestVote,
    RequestVoteReply,
    TimeoutNow,
)

TAIL = 200


def describe_message(m: Any) -> str:
    """One short line per message, e.g. ``AE n1>n2 t3 prev=4/2 [5:3..7:3] lc=4``."""
    t = type(m)
    if t is AppendEntries:
        if m.entries:
            a, b = m.entries[0], m.entries[-1]
            ents = f"[{a.index}:{a.term}]" if a is b else f"[{a.index}:{a.term}..{b.index}:{b.term}]"
        else:
            ents = "hb"
        return f"AE {m.src}>{m.dst} t{m.term} prev={m.prev_log_index}/{m.prev_log_term} {ents} lc={m.leader_commit}"
    if t is AppendEntriesReply:
        if m.success:
            return f"AER {m.src}>{m.dst} t{m.term} ok match={m.match_index}"
        return (
            f"AER {m.src}>{m.dst} t{m.term} reject ri={m.reject_index} "
            f"hint={m.hint_index}/{m.hint_term}"
        )
    if t is RequestVote:
        kind = "PreVote" if m.pre_vote else "Vote"
        extra = " transfer" if m.transfer else ""
        return f"{kind} {m.src}>{m.dst} t{m.term} last={m.last_log_index}/{m.last_log_term}{extra}"
    if t is RequestVoteReply:
        kind = "PreVoteR" if m.pre_vote else "VoteR"
        return f"{kind} {m.src}>{m.dst} t{m.term} {'granted' if m.granted else 'denied'}"
    if t is TimeoutNow:
        return f"TimeoutNow {m.src}>{m.dst} t{m.term}"
    if t is InstallSnapshot:
        meta = m.snapshot.meta
        return f"Snap {m.src}>{m.dst} t{m.term} upto={meta.index}/{meta.term}"
    if t is InstallSnapshotReply:
        return f"SnapR {m.src}>{m.dst} t{m.term} match={m.match_index}"
    return repr(m)


def format_event(ev: tuple) -> str:
    step, now, kind, *args = ev
    parts = []
    for a in args:
        if isinstance(a, (str, int)):
            parts.append(str(a))
        elif a is None:
            parts.append("-")
        else:
            parts.append(describe_message(a))
    return f"{step:6d} t={now:<5d} {kind:<10s} {' '.join(parts)}"


class Trace:
    """Keeps the last ``TAIL`` events, and every event if ``full``."""

    __slots__ = ("tail", "all", "full")

    def __init__(self, full: bool = False) -> None:
        self.full = full
        self.tail: deque[tuple] = deque(maxlen=TAIL)
        self.all: list[tuple] | None = [] if full else None

    def add(self, ev: tuple) -> None:
        self.tail.append(ev)
        if self.all is not None:
            self.all.append(ev)

    def lines(self, last: int | None = None) -> list[str]:
        events = self.all if self.all is not None else self.tail
        evs = list(events)
        if last is not None:
            evs = evs[-last:]
        return [format_event(e) for e in evs]
