"""Messages no correct peer can send (a buggy peer, or a forger that has the
secret), scripted against a 3-node group: each is refused with a
``PeerViolation`` and changes nothing: no crash, no term adopted, nothing
appended, committed or counted, no election (issue 11, defence in depth).

Before these rules the core crashed (an AppendEntries of the leader's own term
raised an AssertionError), adopted any term (2**64-1 spread to every node and
ended every election), appended a forged leader's entries and counted forged
replies toward commitment, and campaigned on any TimeoutNow. The invariant
checker of the simulation runs on every event of every script.
"""

from __future__ import annotations

import pytest

from raftmq.dledger.core.messages import (
    MAX_TERM,
    AppendEntries,
    AppendEntriesReply,
    Entry,
    InstallSnapshot,
    InstallSnapshotReply,
    RequestVote,
    RequestVoteReply,
    Snapshot,
    SnapshotMeta,
    TimeoutNow,
)
from raftmq.dledger.core.raft import Role
from raftmq.dledger.errors import PeerViolation

from .script import ScriptedCluster

ET = 10


def settled() -> ScriptedCluster:
    """n1 leads a 3-node group, two entries committed everywhere."""
    c = ScriptedCluster(3)
    c.elect("n1")
    c.propose("n1", b"a")
    c.propose("n1", b"b")
    c.stabilize()
    for _ in range(2):
        c.tick()
        c.stabilize()
    return c


def state(c: ScriptedCluster) -> list[tuple[object, ...]]:
    return [(n, c.core(n).role, c.core(n).term, c.core(n).commit_index, tuple(c.log(n)))
            for n in ("n1", "n2", "n3")]


def refused(c: ScriptedCluster, m: object) -> None:
    before = state(c)
    with pytest.raises(PeerViolation):
        c.inject(m)
    c.stabilize()
    assert state(c) == before, c.dump()


def test_append_entries_of_the_leaders_own_term_is_refused_by_the_leader() -> None:
    c = settled()
    term = c.core("n1").term
    refused(c, AppendEntries(term, "n2", "n1", 0, 0, (), 0))  # was: AssertionError, the leader exited
    refused(c, InstallSnapshot(term, "n3", "n1", Snapshot(SnapshotMeta(9, term), b"x")))
    assert c.core("n1").role is Role.LEADER


def test_a_second_leader_in_the_term_is_refused_by_a_follower() -> None:
    """The forged entries at commit+1 that followers used to append."""
    c = settled()
    term, last = c.core("n1").term, c.core("n1").last_index
    forged = AppendEntries(term, "n3", "n2", last, term, (Entry(term, last + 1, b"forged"),), last + 1)
    refused(c, forged)
    refused(c, InstallSnapshot(term, "n3", "n2", Snapshot(SnapshotMeta(last + 5, term), b"")))


def test_a_success_reply_beyond_what_the_leader_sent_is_not_counted() -> None:
    c = settled()
    term, last = c.core("n1").term, c.core("n1").last_index
    for match in (last + 1, last + 100):  # beyond what n1 sent n2, beyond n1's log
        refused(c, AppendEntriesReply(term, "n2", "n1", True, match_index=match))
        refused(c, InstallSnapshotReply(term, "n2", "n1", match))
    assert c.core("n1").commit_index == last
    refused(c, AppendEntriesReply(term + 1, "n2", "n1", True, match_index=1))  # success from a future term


def test_a_term_beyond_the_bound_is_never_adopted() -> None:
    c = settled()
    for term in (MAX_TERM + 1, (1 << 64) - 1):
        refused(c, AppendEntries(term, "n1", "n2", 0, 0, (), 0))
        refused(c, RequestVote(term, "n3", "n2", 99, 99))
        refused(c, AppendEntriesReply(term, "n2", "n1", False))


def test_entries_above_the_leaders_term_are_refused() -> None:
    c = settled()
    term, last = c.core("n1").term, c.core("n1").last_index
    refused(c, AppendEntries(term, "n1", "n2", last, term, (Entry(term + 7, last + 1, b"x"),), 0))
    refused(c, AppendEntries(term, "n1", "n2", last, term + 1, (), 0))


def test_timeout_now_is_obeyed_only_from_the_leader_of_the_term() -> None:
    c = settled()
    term = c.core("n1").term
    for _ in range(10):
        refused(c, TimeoutNow(term, "n3", "n2"))  # was: ten elections
        refused(c, TimeoutNow(term + 1, "n1", "n2"))
    refused(c, TimeoutNow(term, "n2", "n1"))  # to the leader itself
    c.transfer("n1", "n2")  # the real thing still works
    c.stabilize()
    assert c.leader() == "n2"


def test_vote_requests_do_not_disturb_a_healthy_leader() -> None:
    c = settled()
    term, last = c.core("n1").term, c.core("n1").last_index
    for k in range(10):
        c.inject(RequestVote(term + 1 + k, "n3", "n2", last + 100, term, pre_vote=False))
        c.inject(RequestVote(term + 1 + k, "n3", "n2", last + 100, term, pre_vote=True))
        c.stabilize()
    assert c.leader() == "n1" and c.core("n2").term == term
    with pytest.raises(PeerViolation):  # a vote granted in a term n1 never campaigned in
        c.inject(RequestVoteReply(term + 3, "n2", "n1", True))
    assert c.core("n1").role is Role.LEADER and c.core("n1").term == term


def test_a_snapshot_at_or_below_the_commit_index_changes_nothing() -> None:
    c = settled()
    term, commit = c.core("n1").term, c.core("n2").commit_index
    before = state(c)
    c.inject(InstallSnapshot(term, "n1", "n2", Snapshot(SnapshotMeta(commit - 1, term), b"")))
    assert state(c) == before
    # Acknowledged at the snapshot's index: the leader refuses a match index
    # beyond what it sent (before: n2's commit index).
    assert c.take()[-1] == InstallSnapshotReply(term, "n2", "n1", commit - 1)


def test_a_success_reply_beyond_what_was_sent_but_inside_the_log_is_not_counted() -> None:
    """One entry per message, one message in flight: n1 has sent n3 only the
    first of three new entries; a reply claiming the third must not commit it."""
    c = ScriptedCluster(3, max_batch_bytes=1, max_inflight_msgs=1)
    c.elect("n1")
    for _ in range(2):
        c.tick()
        c.stabilize()
    term, commit = c.core("n1").term, c.core("n1").commit_index
    c.partition(["n1"], ["n2"], ["n3"])
    last = [c.propose("n1", b"entry-%d" % i) for i in range(3)][-1]
    c.drop()
    c.heal()
    assert c.progress("n1", "n3")["next_index"] <= last
    refused(c, AppendEntriesReply(term, "n3", "n1", True, match_index=last))
    assert c.core("n1").commit_index == commit
