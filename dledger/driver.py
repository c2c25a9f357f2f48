"""The Ready driver: carries out one ``Ready`` of the consensus core in the
order Raft allows. The asyncio runtime (``dledger.runtime``) and the
simulation (``tests/sim``) both call it, so the order the simulation searches
is the order that ships.

For one ``Ready`` the step is::

    install rd.snapshot (if any)       # reset the store, restore the state machine
    [leader path: send rd.messages, flush the transport]
    save rd.hard_state (if any)        # durable before any vote message leaves
    append rd.entries, flush           # durable before any reply counts them
    send rd.messages, flush the transport
    apply rd.committed (in index order)
    advance(rd)

The *leader path* (Raft thesis §10.2.1): a leader whose Ready carries new
entries and neither a hard-state change nor a snapshot sends its messages
before its own write. Its own copy counts toward a majority only once durable
(the core counts it in ``advance``), and nothing it sends depends on its own
disk, so the followers' writes overlap the leader's (under the ``sync`` flush
policy, its fdatasync) instead of following it. Every other Ready, and every
Ready of a follower or candidate, sends only after its hard state and entries
are durable: a vote is never requested or granted, and a success reply never
names an entry, before it is on disk (§5.1, Figure 2). ``ReadyDriver.sends_first``
is that rule, in one place.

Everything the step touches is passed in as a plain callable, so each caller
gives its own: file stores and the TCP transport in the runtime, memory
stores with invariant checks and a simulated network in the simulation.

The step is synchronous. Saving the hard state (term and vote) is one small
file replaced atomically: about 0.7 ms median, 3 ms at worst on this machine,
and it happens only when the term or the vote changes (elections), so it runs
on the caller's thread instead of a worker thread.

Fault points: ``handle`` may be given a ``stop_at`` callable, asked at each
``CrashPoint`` the step reaches; when it answers True the step stops right
there, as if the process had died (the simulation then drops the node's
memory and keeps what its stores hold). Production passes none.
"""

from __future__ import annotations

import enum
from dataclasses import dataclass
from typing import Any, Callable, Sequence

from raftmq.dledger.core.messages import Entry, HardState, Message, Snapshot
from raftmq.dledger.core.raft import Ready


class CrashPoint(str, enum.Enum):
    """Where ``ReadyDriver.handle`` can be stopped, in the order a Ready reaches them."""

    BEFORE_PERSIST = "before-persist"  # nothing of the Ready done
    AFTER_LEADER_SEND = "after-leader-send"  # leader path: sent, its own write not made
    AFTER_HARD_STATE = "after-hard-state"  # hard state saved (if any), entries not written
    AFTER_PERSIST = "after-persist"  # hard state and entries durable, nothing sent (follower path)
    DURING_SEND = "during-send"  # asked before each message: some sent, the rest not
    AFTER_SEND = "after-send"  # everything sent, nothing applied
    BEFORE_ADVANCE = "before-advance"  # applied, the core not told


@dataclass(slots=True, frozen=True)
class ReadyIO:
    """The collaborators of one node's Ready step, each a plain callable.

    - ``is_leader()``: whether the core that made the Ready leads (asked once
      per Ready with entries, right after ``core.ready()``);
    - ``install_snapshot(snap)``: reset the log store to the snapshot,
      restore the state machine from it, hand it back to the core;
    - ``save_hard_state(hs)``: durable before it returns (a failure raises:
      a node that cannot persist must stop);
    - ``append(entries)`` then ``flush()``: the entries are durable under the
      node's flush policy once ``flush`` returns (one flush per Ready: group
      commit);
    - ``send(msg)`` queues one message; ``flush_transport()`` puts what was
      queued on the wire;
    - ``apply(entries)``: apply committed entries, in index order;
    - ``advance(rd)``: tell the core the Ready is done.
    """

    is_leader: Callable[[], bool]
    install_snapshot: Callable[[Snapshot], None]
    save_hard_state: Callable[[HardState], None]
    append: Callable[[Sequence[Entry]], Any]
    flush: Callable[[], Any]
    send: Callable[[Message], Any]
    flush_transport: Callable[[], Any]
    apply: Callable[[Sequence[Entry]], Any]
    advance: Callable[[Ready], None]


class ReadyDriver:
    """Carries out Readies for one node through its ``ReadyIO``."""

    __slots__ = ("io",)

    def __init__(self, io: ReadyIO) -> None:
        self.io = io

    def sends_first(self, rd: Ready) -> bool:
        """The leader path (thesis §10.2.1): only a leader's Ready with new
        entries, no hard-state change and no snapshot may send before its own
        write. Anything else, a follower's above all, sends after it."""
        return bool(rd.entries) and rd.hard_state is None and rd.snapshot is None and self.io.is_leader()

    def handle(self, rd: Ready, stop_at: Callable[[CrashPoint], bool] | None = None) -> CrashPoint | None:
        """Carry out ``rd`` (module docstring). Returns None when done, or the
        ``CrashPoint`` at which ``stop_at`` stopped it (the rest left undone)."""
        io = self.io
        if stop_at is not None and stop_at(CrashPoint.BEFORE_PERSIST):
            return CrashPoint.BEFORE_PERSIST
        if rd.snapshot is not None:
            io.install_snapshot(rd.snapshot)
        messages = rd.messages
        if messages and self.sends_first(rd):
            if self._send(messages, stop_at):
                return CrashPoint.DURING_SEND
            io.flush_transport()  # on the wire before our own (maybe fdatasync'd) write
            messages = ()
            if stop_at is not None and stop_at(CrashPoint.AFTER_LEADER_SEND):
                return CrashPoint.AFTER_LEADER_SEND
        if rd.hard_state is not None:
            io.save_hard_state(rd.hard_state)
        if stop_at is not None and stop_at(CrashPoint.AFTER_HARD_STATE):
            return CrashPoint.AFTER_HARD_STATE
        if rd.entries:
            io.append(rd.entries)
            io.flush()
        if stop_at is not None and stop_at(CrashPoint.AFTER_PERSIST):
            return CrashPoint.AFTER_PERSIST
        if self._send(messages, stop_at):
            return CrashPoint.DURING_SEND
        io.flush_transport()  # also what others queued since (cheap when nothing is)
        if stop_at is not None and stop_at(CrashPoint.AFTER_SEND):
            return CrashPoint.AFTER_SEND
        if rd.committed:
            io.apply(rd.committed)
        if stop_at is not None and stop_at(CrashPoint.BEFORE_ADVANCE):
            return CrashPoint.BEFORE_ADVANCE
        io.advance(rd)
        return None

    def _send(self, messages: Sequence[Message], stop_at: Callable[[CrashPoint], bool] | None) -> bool:
        """Send ``messages``; True if ``stop_at`` stopped it before one of them."""
        send = self.io.send
        if stop_at is None:
            for m in messages:
                send(m)
            return False
        for m in messages:
            if stop_at(CrashPoint.DURING_SEND):
                return True
            send(m)
        return False
