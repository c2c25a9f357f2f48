"""A node that lost its data (a wiped or replaced disk) must not count toward an
election until it holds what a leader committed (issue 9, case 8).

The runtime learns it from its peers' transport hellos ("I know you under
another data-directory id", ``dledger.store.identity``) before it delivers any
of their messages, and calls ``RaftCore.lost_data()``; these scripts do the
same at the point the first message from a remembering peer would arrive.
Each scenario runs under the simulation's invariant checker, and each is also
run against a core with the guard removed, to show the checker catches the
loss (in the manner of ``test_checker_catches_bugs``).
"""

from __future__ import annotations

from typing import Any, Callable

import pytest

from raftmq.dledger.core.raft import RaftCore, Role
from raftmq.dledger.store.memory import MemoryHardStateStore, MemoryLogStore

from .invariants import Violation
from .script import AE, ScriptedCluster, both, to

ET = 10  # election timeout (ticks) of every script


def settle(c: ScriptedCluster, ticks: int = 2) -> None:
    for _ in range(ticks):
        c.tick()
        c.stabilize()


def wipe(c: ScriptedCluster, nid: str) -> None:
    """The crashed node ``nid`` loses its whole disk: log, hard state, snapshot."""
    node = c.node(nid)
    assert node.core is None, f"{nid} must be down"
    node.storage = MemoryLogStore()
    node.hs_store = MemoryHardStateStore()
    node.snapshot = None
    c._ev("wipe", nid)


def committed_with_n3_behind(c: ScriptedCluster, n: int = 5) -> list[bytes]:
    """n1 leads and commits ``n`` entries with n2 while n3 misses them all."""
    c.elect("n1")
    settle(c)
    c.partition(["n3"])
    data = [b"c%d" % k for k in range(n)]
    for d in data:
        c.propose("n1", d)
    c.stabilize()
    settle(c)
    assert c.core("n1").commit_index == c.core("n1").last_index
    assert not set(data) & set(c.datas("n3"))
    return data


def scenario_wiped_node_with_a_lagging_one(core_cls: Callable[..., Any] = RaftCore) -> ScriptedCluster:
    """The issue's case 8 as a script: n2 holds the committed entries with n1,
    n3 lags; n1 and n2 die, n2's disk is wiped, n2 comes back (as if its config
    still said ``bootstrap``: a voter) and is told by n3's hello that it lost
    its data. n3 must not become leader with n2's vote while n1 is down; once
    n1 is back, everything committed is on every node."""
    c = ScriptedCluster(3, core_cls=core_cls)
    data = committed_with_n3_behind(c)
    c.crash("n1")
    c.crash("n2")
    wipe(c, "n2")
    c.heal()
    c.restart_node("n2")
    c.core("n2").lost_data()  # n3's hello: "I know you as <n2's old id>"
    for _ in range(4 * ET):
        c.tick("n2", "n3")
        c.stabilize()
        assert c.leader() is None, f"a leader without n1, which alone holds the committed entries\n{c.dump()}"
    c.restart_node("n1")
    c.elect("n1")
    settle(c, 3)
    assert not c.core("n2").recovering
    for nid in ("n1", "n2", "n3"):
        assert [d for d in c.datas(nid) if d in data] == data, (nid, c.datas(nid))
    return c


def scenario_recovering_node_and_a_new_leaders_old_commit_index(
        core_cls: Callable[..., Any] = RaftCore) -> ScriptedCluster:
    """Recovery must not end on a commit index from before the leader's own term.
    n1 restarts knowing nothing committed (commit index 0), wins with n3, and
    sends the wiped n2 its first entries with leader_commit 0 before its no-op
    commits. n2 must stay recovering: it still lacks committed entries, and if
    it voted again, n3 (as far behind) could win with it once n1 dies."""
    c = ScriptedCluster(3, core_cls=core_cls, max_batch_bytes=1)  # about one entry per AppendEntries
    data = committed_with_n3_behind(c)
    c.crash("n2")
    wipe(c, "n2")
    c.crash("n1")
    c.restart_node("n1")
    c.restart_node("n2")
    c.core("n2").lost_data()
    c.heal()
    for _ in range(2 * ET):  # n3 stops waiting for the dead leader
        c.tick("n3")
        c.drop()
    c.campaign("n1")
    for _ in range(10):  # the election, with everything to n2 held back
        c.deliver(lambda m: m.dst != "n2" and not (AE(m) and m.dst == "n3"))
        c.drop(to("n2"))
    assert c.core("n1").role is Role.LEADER and c.core("n1").commit_index == 0, c.dump()
    # n2 gets its first entries, one AppendEntries at a time, with leader_commit 0
    # (the no-op of n1's term, last in n1's log, not among them yet).
    noop = c.core("n1").last_index
    for _ in range(100):
        if c.node("n2").storage.last_index() >= 2:
            break
        c.drop(both(AE, to("n3")))
        if not c.deliver(lambda m: m.src == "n2" or m.dst == "n2", limit=1):
            c.tick("n1")
    assert 2 <= c.node("n2").storage.last_index() < noop and c.core("n1").commit_index == 0, c.dump()
    c.drop()
    c.crash("n1")
    for _ in range(4 * ET):
        c.tick("n2", "n3")
        c.stabilize()
        assert c.leader() is None, f"n3 won with a node that had not caught up\n{c.dump()}"
    c.restart_node("n1")
    c.elect("n1")
    settle(c, 4)
    for nid in ("n1", "n2", "n3"):
        assert [d for d in c.datas(nid) if d in data] == data, (nid, c.datas(nid))
    return c


def test_a_wiped_node_refuses_votes_until_a_leader_with_the_committed_entries_returns() -> None:
    scenario_wiped_node_with_a_lagging_one()


def test_recovery_ends_only_on_a_commit_index_of_the_leaders_own_term() -> None:
    scenario_recovering_node_and_a_new_leaders_old_commit_index()


# --- the checker catches the bug when the guards are removed --------------------------------


class IgnoresLostData(RaftCore):
    """A core that carries on voting after being told it lost its data (the
    behaviour before issue 9: a wiped node restarted without ``--rejoin``)."""

    def lost_data(self) -> None:
        pass


class EndsRecoveryOnAnyCommitIndex(RaftCore):
    """A core that stops recovering as soon as it holds the leader's commit index,
    whatever its term (the rule before issue 9)."""

    def _maybe_end_recovery(self, leader_commit: int) -> None:
        if self.recovering and self.log.committed >= leader_commit:
            self.recovering = False


@pytest.mark.parametrize("scenario, core_cls", [
    pytest.param(scenario_wiped_node_with_a_lagging_one, IgnoresLostData, id="wiped-node-votes"),
    pytest.param(scenario_recovering_node_and_a_new_leaders_old_commit_index, EndsRecoveryOnAnyCommitIndex,
                 id="recovery-ends-early"),
])
def test_without_the_guard_the_checker_reports_lost_committed_entries(scenario: Callable[..., Any],
                                                                     core_cls: Any) -> None:
    with pytest.raises(AssertionError) as info:
        scenario(core_cls)
    err = info.value
    assert isinstance(err, Violation) and err.invariant == "leader-completeness", err
