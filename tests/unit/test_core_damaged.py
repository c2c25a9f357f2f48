"""A node whose store holds a damaged entry (found by the scrub or when read)
neither leads nor counts toward an election until the entry is repaired, and
applying waits at the damaged entry without spinning (protocol-aware
recovery; issue 9, cases 4 to 6)."""

from __future__ import annotations

import pytest

from raftmq.dledger.core.messages import Entry, RequestVote
from raftmq.dledger.core.raft import Role
from raftmq.dledger.errors import EntryDamaged
from raftmq.dledger.store.memory import MemoryLogStore
from tests.unit.test_core_lost_tail import IDS, Cluster


class DamageableStore(MemoryLogStore):
    """A memory store that can pretend some entries are damaged on disk."""

    def __init__(self) -> None:
        super().__init__()
        self.damaged: set[int] = set()

    def entries(self, lo: int, hi: int, max_bytes: int) -> list[Entry]:
        bad = [i for i in self.damaged if lo <= i < hi]
        if bad and min(bad) == lo:
            raise EntryDamaged(lo, "test")
        return super().entries(lo, min([hi, *bad]), max_bytes)


def cluster_with_damageable_stores() -> Cluster:
    cl = Cluster.__new__(Cluster)
    cl.preferred = None
    cl.stores = {i: DamageableStore() for i in IDS}
    from raftmq.dledger.store.memory import MemoryHardStateStore

    cl.hs = {i: MemoryHardStateStore() for i in IDS}
    cl.cores = {i: cl._boot(i) for i in IDS}
    cl.net = []
    return cl


def test_a_damaged_leader_steps_down_and_a_damaged_node_neither_votes_nor_campaigns() -> None:
    cl = cluster_with_damageable_stores()
    cl.run(40)
    lead = cl.leader()
    lead.set_damaged(True)
    assert lead.role is Role.FOLLOWER
    cl.run(80)
    assert cl.leader().id != lead.id  # the others elected one; the damaged node never campaigned
    other = next(c for c in cl.cores.values() if c.role is not Role.LEADER and c.id != lead.id)
    lead.step(RequestVote(cl.leader().term + 1, other.id, lead.id, other.last_index, other.term, pre_vote=True))
    assert not any(m.granted for m in lead.ready().messages if m.dst == other.id)  # type: ignore[union-attr]
    lead.set_damaged(False)
    assert not lead.damaged


@pytest.mark.timeout(20)  # a regression spins in the Ready loop forever
def test_applying_waits_at_a_damaged_entry_without_spinning_and_resumes_after_repair() -> None:
    cl = cluster_with_damageable_stores()
    cl.run(40)
    lead = cl.leader()
    follower = next(i for i in IDS if i != lead.id)
    core = cl.cores[follower]
    store: DamageableStore = cl.stores[follower]  # type: ignore[assignment]
    store.damaged.add(core.applied_index + 3)  # not yet applied there
    for k in range(10):
        lead.propose(b"p%d" % k)
    cl.process(lead.id)
    cl.run(3)
    blocked_at = min(store.damaged)
    assert core.commit_index > blocked_at
    assert core.applied_index == blocked_at - 1
    assert not core.has_ready()  # no Ready loop spinning on what it cannot read
    store.damaged.clear()  # repaired
    core.set_damaged(False)
    assert core.has_ready()
    cl.process(follower)
    assert core.applied_index == core.commit_index


def test_a_leader_that_cannot_read_an_entry_for_a_follower_sends_nothing_past_it() -> None:
    cl = cluster_with_damageable_stores()
    cl.run(40)
    lead = cl.leader()
    store: DamageableStore = cl.stores[lead.id]  # type: ignore[assignment]
    lagging = next(i for i in IDS if i != lead.id)
    for k in range(5):
        lead.propose(b"p%d" % k)
    cl.process(lead.id)
    sent = [m for m in cl.net if getattr(m, "dst", None) == lagging and getattr(m, "entries", ())]
    assert sent
    store.damaged.add(lead.last_index - 2)
    lead.log.entries(lead.last_index - 4, lead.last_index + 1, 1 << 20)  # stops before the damage
    assert [e.index for e in lead.log.entries(lead.last_index - 4, lead.last_index + 1, 1 << 20)] == \
        [lead.last_index - 4, lead.last_index - 3]
    assert lead.log.entries(lead.last_index - 2, lead.last_index + 1, 1 << 20) == []
