"""The leader's view of one follower's replication (Figure 2's nextIndex and
matchIndex, plus flow control), in the manner of etcd/raft's ``Progress``.

A follower is in one of three states:

- ``PROBE``: the leader does not know where the follower's log matches its
  own. It sends one AppendEntries at a time and waits for the answer (or the
  next heartbeat) before sending another; rejections walk ``next_index`` back,
  using the follower's conflict hint to skip a whole term at once.
- ``REPLICATE``: the logs match up to ``match_index``. The leader streams
  entries optimistically: ``next_index`` jumps past what was sent and up to
  ``max_inflight`` AppendEntries may be unanswered at once (pipelining).
- ``SNAPSHOT``: the follower needs entries the leader no longer has; the
  leader sent a snapshot and waits for it to be installed.

``match_index`` only grows; ``next_index`` never drops below ``match_index + 1``,
so a stale or reordered reply can never move either backwards.
"""

from __future__ import annotations

import enum
from collections import deque


class ProgressState(enum.Enum):
    PROBE = "probe"
    REPLICATE = "replicate"
    SNAPSHOT = "snapshot"


class Inflights:
    """The last index of each unanswered AppendEntries, oldest first, bounded in count."""

    __slots__ = ("_limit", "_q")

    def __init__(self, limit: int) -> None:
        self._limit = limit
        self._q: deque[int] = deque()

    def add(self, last_index: int) -> None:
        self._q.append(last_index)

    def free_le(self, index: int) -> None:
        """Forget every message whose entries are all at or below ``index`` (acked)."""
        q = self._q
        while q and q[0] <= index:
            q.popleft()

    def free_first(self) -> None:
        if self._q:
            self._q.popleft()

    def full(self) -> bool:
        return len(self._q) >= self._limit

    def reset(self) -> None:
        self._q.clear()

    def __len__(self) -> int:
        return len(self._q)


class Progress:
    __slots__ = ("match_index", "next_index", "state", "paused", "inflights", "recent_active", "pending_snapshot",
                 "progress_tick", "snapshot_tick", "sent_index")

    def __init__(self, next_index: int, max_inflight: int) -> None:
        self.match_index = 0
        self.next_index = next_index
        self.state = ProgressState.PROBE
        self.paused = False  # PROBE: a probe is out, wait for its answer
        self.inflights = Inflights(max_inflight)
        self.recent_active = False  # heard from since the last check-quorum round
        self.pending_snapshot = 0
        # Leader ticks at which match_index last moved (or replication began) and
        # at which the last snapshot was sent: how the leader notices lost messages.
        self.progress_tick = 0
        self.snapshot_tick = 0
        # The highest index this leader ever sent the follower (last entry of an
        # AppendEntries, or a snapshot's index): a success reply beyond it is
        # impossible from a correct follower and must never count.
        self.sent_index = 0

    def become_probe(self) -> None:
        # After a snapshot, resume right after it; otherwise right after what matches.
        if self.state is ProgressState.SNAPSHOT:
            self.next_index = max(self.match_index + 1, self.pending_snapshot + 1)
        else:
            self.next_index = self.match_index + 1
        self.state = ProgressState.PROBE
        self.paused = False
        self.pending_snapshot = 0
        self.inflights.reset()

    def become_replicate(self) -> None:
        self.state = ProgressState.REPLICATE
        self.next_index = self.match_index + 1
        self.paused = False
        self.pending_snapshot = 0
        self.inflights.reset()

    def become_snapshot(self, snapshot_index: int) -> None:
        self.state = ProgressState.SNAPSHOT
        self.pending_snapshot = snapshot_index
        self.paused = False
        self.inflights.reset()

    def maybe_update(self, index: int) -> bool:
        """A success reply says the follower durably holds everything up to ``index``.
        Returns False for a stale reply (one that tells nothing new)."""
        updated = False
        if self.match_index < index:
            self.match_index = index
            updated = True
            self.paused = False
        if self.next_index < index + 1:
            self.next_index = index + 1
        return updated

    def note_sent(self, last_index: int) -> None:
        """An AppendEntries ending at ``last_index`` (or a snapshot of it) went out."""
        if last_index > self.sent_index:
            self.sent_index = last_index

    def optimistic_update(self, last_sent: int) -> None:
        self.next_index = last_sent + 1

    def maybe_decrease_to(self, rejected: int, probe_hint: int) -> bool:
        """A rejection of the AppendEntries whose prev_log_index was ``rejected``.

        Returns False when the rejection is stale: in REPLICATE, one for an
        index already known to match; in PROBE, one for another probe than the
        last one sent. ``probe_hint`` is the leader's next guess, derived from
        the follower's conflict hint.
        """
        if self.state is ProgressState.REPLICATE:
            if rejected <= self.match_index:
                return False
            self.next_index = self.match_index + 1
            return True
        if self.next_index - 1 != rejected:
            return False
        self.next_index = max(min(rejected, probe_hint + 1), self.match_index + 1)
        self.paused = False
        return True

    def is_paused(self) -> bool:
        if self.state is ProgressState.PROBE:
            return self.paused
        if self.state is ProgressState.REPLICATE:
            return self.inflights.full()
        return True

    def describe(self) -> dict[str, object]:
        return {
            "match_index": self.match_index,
            "next_index": self.next_index,
            "state": self.state.value,
            "inflight": len(self.inflights),
        }
