"""A follower that comes back with less log than it acknowledged (torn tail
under async flush) is caught up again once the leader is told it restarted."""

from __future__ import annotations

from raftmq.dledger.core.messages import EntryKind, HardState, Message
from raftmq.dledger.core.raft import CoreConfig, RaftCore, Role
from raftmq.dledger.store.memory import MemoryHardStateStore, MemoryLogStore

IDS = ("n1", "n2", "n3")


class Cluster:
    def __init__(self, preferred: str | None = None) -> None:
        self.preferred = preferred
        self.stores = {i: MemoryLogStore() for i in IDS}
        self.hs = {i: MemoryHardStateStore() for i in IDS}
        self.cores = {i: self._boot(i) for i in IDS}
        self.net: list[Message] = []

    def _boot(self, i: str) -> RaftCore:
        cfg = CoreConfig(i, IDS, seed=IDS.index(i), preferred_leader=self.preferred)  # type: ignore[arg-type]
        return RaftCore(cfg, self.stores[i], self.hs[i].load())

    def process(self, i: str) -> None:
        c = self.cores[i]
        while c.has_ready():
            rd = c.ready()
            if rd.hard_state:
                self.hs[i].save(rd.hard_state)
            if rd.entries:
                self.stores[i].append(rd.entries)
            self.net.extend(rd.messages)
            c.advance(rd)

    def run(self, ticks: int) -> None:
        for _ in range(ticks):
            for i in IDS:
                self.cores[i].tick()
                self.process(i)
            while self.net:
                m = self.net.pop(0)
                self.cores[m.dst].step(m)
                self.process(m.dst)

    def leader(self) -> RaftCore:
        return next(c for c in self.cores.values() if c.role is Role.LEADER)


def test_follower_with_a_cut_tail_catches_up_after_restart_notice() -> None:
    cl = Cluster()
    cl.run(40)
    lead = cl.leader()
    victim = next(i for i in IDS if i != lead.id)
    for k in range(50):
        lead.propose(b"p%d" % k)
    cl.process(lead.id)
    cl.run(3)
    full = cl.stores[victim].last_index()
    assert full == lead.last_index
    # The victim restarts with its last 10 entries gone (a torn tail).
    kept = cl.stores[victim].entries(1, full - 9, 1 << 30)
    cl.stores[victim] = MemoryLogStore()
    cl.stores[victim].append(kept)
    cl.cores[victim] = cl._boot(victim)
    lead.follower_restarted(victim)  # what the runtime does when the victim's connection closes
    cl.run(10)
    assert cl.stores[victim].last_index() == lead.last_index
    assert cl.stores[victim].term(full) == cl.stores[lead.id].term(full)


def test_leadership_moves_to_the_preferred_leader_once_it_is_caught_up() -> None:
    """DLedger's preferred leader: whoever wins the first election hands over."""
    for preferred in IDS:
        cl = Cluster(preferred)
        cl.run(40)
        first = cl.leader()
        first.propose(b"x")
        cl.process(first.id)
        cl.run(4 * 10)  # a few election timeouts
        assert cl.leader().id == preferred
        assert [c.role for c in cl.cores.values()].count(Role.LEADER) == 1


def test_a_wiped_node_rejoining_neither_votes_nor_campaigns_until_caught_up() -> None:
    """A node that lost its disk may have acknowledged committed entries it no
    longer holds: with a lagging peer it could otherwise form a majority
    without them (the lost writes the chaos run found)."""
    cl = Cluster()
    cl.run(40)
    lead = cl.leader()
    for k in range(20):
        lead.propose(b"c%d" % k)
    cl.process(lead.id)
    cl.run(3)
    wiped = next(i for i in IDS if i != lead.id)
    cl.stores[wiped] = MemoryLogStore()
    cl.hs[wiped] = MemoryHardStateStore()
    cfg = CoreConfig(wiped, IDS, seed=9)  # type: ignore[arg-type]
    cl.cores[wiped] = RaftCore(cfg, cl.stores[wiped], cl.hs[wiped].load(), recovering=True)
    w = cl.cores[wiped]
    from raftmq.dledger.core.messages import RequestVote

    other = next(i for i in IDS if i not in (lead.id, wiped))
    w.step(RequestVote(lead.term, other, wiped, 0, 0))  # type: ignore[arg-type]
    cl.process(wiped)
    assert all(not getattr(m, "granted", False) for m in cl.net)  # refused while recovering
    cl.net.clear()
    for _ in range(30):
        w.tick()
    assert w.role is Role.FOLLOWER  # never campaigned
    cl.run(40)  # the leader's heartbeats and entries reach it
    assert not w.recovering and w.commit_index >= lead.commit_index - 1
