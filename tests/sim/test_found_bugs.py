"""Bugs the simulation found in the dledger core, each as the smallest script
that shows it. These tests fail until the core is fixed; they are not to be
weakened to pass.

All three are liveness bugs of the leader's replication (Raft §5.3: "the
leader retries AppendEntries RPCs indefinitely ... until all followers
eventually store all log entries"): a single lost message leaves a follower
behind, for as long as no new entry is proposed (bug 1) or for ever (bugs 2
and 3), while the leader keeps leading with the other nodes. The random
simulation hits them in its liveness phase (see regression_seeds.txt).
"""

from __future__ import annotations



from raftmq.dledger.core.messages import InstallSnapshot
from raftmq.dledger.core.raft import Role

from .script import AE, ScriptedCluster, VOTE, both, carries, kind, to



def _idle(c: ScriptedCluster, ticks: int) -> None:
    for _ in range(ticks):
        c.tick()
        c.stabilize()


def test_lost_append_entries_is_retransmitted_while_idle() -> None:
    """Bug 1: in REPLICATE state the leader advances ``next_index`` optimistically
    when it sends. If that AppendEntries is lost, heartbeats (which name
    ``prev = match_index``) are answered "ok, match_index" which the leader
    treats as "nothing new": it neither resends nor falls back to probing,
    and ``_send_append`` finds nothing to send past ``next_index``. The follower
    stays behind until some later proposal happens to expose the gap; in an
    idle cluster, for ever (and it never learns the commit index either)."""
    c = ScriptedCluster(3)
    c.elect("n1")
    _idle(c, 2)
    i = c.propose("n1", b"a")
    lost = c.drop(both(to("n2"), carries(i)))
    assert lost, "the AppendEntries carrying the entry to n2 was sent"
    c.stabilize()
    assert c.core("n1").commit_index == i  # n1 + n3 are a majority
    _idle(c, 5 * 10)  # five election timeouts of heartbeats
    assert c.core("n2").last_index == i, (
        f"n2 never got entry {i} back after one lost AppendEntries: "
        f"leader progress for n2 = {c.progress('n1', 'n2')}\n{c.dump()}"
    )
    assert c.core("n2").commit_index == i


def test_follower_behind_a_compacted_log_gets_a_snapshot_after_a_lost_probe() -> None:
    """Bug 2: a new leader's first AppendEntries (a probe) to n3 is lost, so n3's
    progress is PROBE, paused, match 0. The leader then compacts its log. From
    then on no heartbeat can be built (``term(match_index)`` is compacted, so
    ``_broadcast_heartbeat`` calls ``_send_append``, which is paused) and nothing
    unpauses the probe: n3 is never contacted again, not even after new
    proposals, and pre-campaigns for ever against a healthy leader."""
    c = ScriptedCluster(3)
    c.campaign("n1")
    c.deliver(VOTE)
    c.drop(both(AE, to("n3")))  # the first probe to n3 is lost
    c.stabilize()
    for k in range(3):
        c.propose("n1", b"v%d" % k)
        c.stabilize()
    c.compact("n1", keep=0)
    _idle(c, 3 * 10)
    c.propose("n1", b"later")
    _idle(c, 3 * 10)
    last = c.core("n1").last_index
    assert c.core("n3").last_index == last, (
        f"n3 stuck at {c.core('n3').last_index} (leader at {last}); "
        f"leader progress for n3 = {c.progress('n1', 'n3')}\n{c.dump()}"
    )


def test_restarted_follower_behind_a_compacted_log_catches_up() -> None:
    """Bug 2, as it happens in production: n3 is down while the leader commits
    and compacts its log past n3's match index. After n3 restarts, the leader
    sends it nothing at all (no heartbeat can name ``prev = match_index`` any
    more, and in REPLICATE ``next_index`` is already past the end), so n3 never
    hears of the leader, never catches up, and keeps pre-campaigning."""
    c = ScriptedCluster(3)
    c.elect("n1")
    _idle(c, 2)
    c.crash("n3")
    for k in range(5):
        c.propose("n1", b"v%d" % k)
        c.stabilize()
    c.compact("n1", keep=0)
    c.restart_node("n3")
    _idle(c, 5 * 10)
    last = c.core("n1").last_index
    assert c.core("n3").last_index == last, (
        f"n3 stuck at {c.core('n3').last_index} (leader at {last}); "
        f"leader progress for n3 = {c.progress('n1', 'n3')}\n{c.dump()}"
    )
    assert c.core("n3").leader_id == "n1"


def test_lost_install_snapshot_is_resent() -> None:
    """Bug 3: once the leader sent an InstallSnapshot, the follower's progress is
    SNAPSHOT (always paused). Only a reply gets it out of that state, and
    heartbeats, which could provoke one, are not sent because the follower's
    match index lies in the compacted prefix. A single lost InstallSnapshot
    leaves the follower behind for ever, new proposals or not."""
    c = ScriptedCluster(3)
    c.elect("n1")
    _idle(c, 2)
    c.crash("n3")
    for k in range(5):
        c.propose("n1", b"v%d" % k)
        c.stabilize()
    c.compact("n1", keep=0)
    c.restart_node("n3")
    c.propose("n1", b"after")  # n3 rejects it; the leader falls back to a snapshot
    c.deliver(lambda m: not isinstance(m, InstallSnapshot))
    assert c.drop(kind(InstallSnapshot)), "the leader sent n3 a snapshot"
    _idle(c, 5 * 10)
    c.propose("n1", b"later")
    _idle(c, 3 * 10)
    last = c.core("n1").last_index
    assert c.core("n3").last_index == last, (
        f"n3 stuck at {c.core('n3').last_index} (leader at {last}); "
        f"leader progress for n3 = {c.progress('n1', 'n3')}\n{c.dump()}"
    )


def test_leadership_transfer_to_a_follower_that_lost_an_append_completes() -> None:
    """Bug 1 again, through leadership transfer (thesis §3.10): the target missed
    an AppendEntries (lost), so ``transfer_leadership`` must first catch it up.
    It calls ``_send_append``, which sends nothing (``next_index`` is already
    past the lost entries), heartbeat replies change nothing, and the transfer
    times out after an election timeout: the target never becomes leader and
    proposals were refused meanwhile."""
    c = ScriptedCluster(3)
    c.elect("n1")
    _idle(c, 2)
    for k in range(3):
        c.propose("n1", b"e%d" % k)
    c.drop(to("n3"))  # lost
    c.stabilize()
    c.transfer("n1", "n3")
    for _ in range(2 * 10):
        c.tick()
        c.stabilize()
        if c.core("n3").role is Role.LEADER:
            break
    assert c.core("n3").role is Role.LEADER, (
        f"transfer to n3 never completed: leader progress for n3 = {c.progress('n1', 'n3')}\n{c.dump()}"
    )
