"""The simulated network between the cores of a simulated cluster.

Time is the cluster's tick counter. Every message sent gets a random delay
in ticks and may be dropped or duplicated at send time; it is dropped at
delivery time if a partition cuts its link then. Most messages keep the
order of their link (like a TCP connection: a message is never due before
the previous one on the same link); a fraction ``reorder_p`` (and every
duplicate, and every "long" delay of up to two election timeouts) ignores
that order and may overtake, or be overtaken by, others. Due messages are
delivered one per step in order of their due tick. Reordering is thus real
but bounded: a reordering that is unbounded (every message shuffled with
every other) drowns any pipelined protocol in stale replies and says
nothing about the core. All randomness comes from the cluster's one
``random.Random``.
"""

from __future__ import annotations

import heapq
import random
from typing import Any, Callable


class SimNetwork:
    __slots__ = (
        "rng",
        "now",
        "_seq",
        "queue",
        "cut",
        "drop_p",
        "dup_p",
        "max_delay_ticks",
        "long_delay_p",
        "long_delay_ticks",
        "reorder_p",
        "_link_tail",
        "on_drop",
        "sent",
        "dropped",
        "delivered",
    )

    def __init__(self, rng: random.Random, on_drop: Callable[[str, Any], None]) -> None:
        self.rng = rng
        self.now = 0
        self._seq = 0
        # heap of (due tick, order within the tick, seq, message); order is 0 for
        # in-order messages, -1 or 1 for reordered ones (before/after them)
        self.queue: list[tuple[int, int, int, Any]] = []
        self._link_tail: dict[tuple[str, str], int] = {}  # due tick of the last in-order message per link
        self.reorder_p = 0.0
        self.cut: set[tuple[str, str]] = set()  # (src, dst) links that lose everything
        self.drop_p = 0.0
        self.dup_p = 0.0
        self.max_delay_ticks = 0
        self.long_delay_p = 0.0
        self.long_delay_ticks = 0
        self.on_drop = on_drop
        self.sent = self.dropped = self.delivered = 0

    # -- sending ------------------------------------------------------------
    def send(self, m: Any) -> None:
        self.sent += 1
        rng = self.rng
        if self.drop_p and rng.random() < self.drop_p:
            self.dropped += 1
            self.on_drop("lost", m)
            return
        copies = 2 if self.dup_p and rng.random() < self.dup_p else 1
        for copy in range(copies):
            if self.long_delay_p and rng.random() < self.long_delay_p:
                due, order = self.now + rng.randint(1, self.long_delay_ticks), 1
            elif copy or (self.reorder_p and rng.random() < self.reorder_p):
                due = self.now + rng.randint(0, self.max_delay_ticks + 1)
                order = -1 if rng.random() < 0.5 else 1
            else:
                link = (m.src, m.dst)
                due = self.now + (rng.randint(0, self.max_delay_ticks) if self.max_delay_ticks else 0)
                tail = self._link_tail.get(link, 0)
                if due < tail:
                    due = tail
                self._link_tail[link] = due
                order = 0
            self._seq += 1
            heapq.heappush(self.queue, (due, order, self._seq, m))

    # -- time and delivery --------------------------------------------------
    def advance(self) -> None:
        """One tick passes: messages whose delay ran out become due."""
        self.now += 1

    def has_due(self) -> bool:
        q = self.queue
        return bool(q) and q[0][0] <= self.now

    def busy_tick_ok(self) -> bool:
        """A tick may pass before the due messages are delivered only if none of
        them is overdue: processing is slowed down, never starved (a backlog
        that grows without bound would be a simulator artefact, not a fault)."""
        q = self.queue
        return not q or q[0][0] >= self.now

    def pop_due(self) -> Any:
        """The next due message, removed from the network."""
        return heapq.heappop(self.queue)[3]

    def take_due_for(self, node_id: str, pick: Callable[[int], int]) -> Any:
        """Remove and return one due message to ``node_id`` (``pick(n)`` chooses), or None."""
        mine = [i for i, x in enumerate(self.queue) if x[0] <= self.now and x[3].dst == node_id]
        if not mine:
            return None
        i = mine[pick(len(mine))]
        m = self.queue[i][3]
        self.queue[i] = self.queue[-1]
        self.queue.pop()
        heapq.heapify(self.queue)
        return m

    def blocked(self, src: str, dst: str) -> bool:
        return (src, dst) in self.cut

    def in_flight(self) -> int:
        return len(self.queue)

    def purge(self, node_id: str, inbound: bool, outbound: bool) -> int:
        """Forget messages to (``inbound``) and/or from (``outbound``) a node; returns how many."""
        before = len(self.queue)
        self.queue = [
            x for x in self.queue
            if not ((inbound and x[3].dst == node_id) or (outbound and x[3].src == node_id))
        ]
        heapq.heapify(self.queue)
        return before - len(self.queue)

    # -- partitions -----------------------------------------------------------
    def isolate_groups(self, groups: list[list[str]]) -> None:
        """Nodes talk only within their own group (both directions cut between groups)."""
        self.cut.clear()
        where = {n: gi for gi, g in enumerate(groups) for n in g}
        for a in where:
            for b in where:
                if a != b and where[a] != where[b]:
                    self.cut.add((a, b))

    def only_links(self, nodes: list[str], links: list[tuple[str, str]]) -> None:
        """Only the given undirected links work; everything else is cut."""
        ok = set(links) | {(b, a) for a, b in links}
        self.cut = {(a, b) for a in nodes for b in nodes if a != b and (a, b) not in ok}

    def heal(self) -> None:
        self.cut.clear()
