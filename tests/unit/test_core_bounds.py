"""Terms are bounded (issue 11): a node whose saved term is beyond MAX_TERM
(written by a version that adopted any term a peer named, 2**64-1 say) still
starts and can be elected, and a node never campaigns into a term that could
not be encoded."""

from __future__ import annotations

from raftmq.dledger import codec
from raftmq.dledger.core.messages import MAX_TERM, HardState, RequestVote
from raftmq.dledger.core.raft import LEGACY_TERM_CLAMP, CoreConfig, RaftCore, Role
from raftmq.dledger.store.memory import MemoryLogStore

VOTERS = ("n1", "n2", "n3")


def core(term: int, voted_for: str | None = None) -> RaftCore:
    return RaftCore(CoreConfig("n1", VOTERS, pre_vote=False), MemoryLogStore(), HardState(term, voted_for))


def test_a_saved_term_beyond_the_bound_is_clamped_and_the_node_can_campaign() -> None:
    c = core((1 << 64) - 1, "n2")
    assert (c.term, c.voted_for) == (LEGACY_TERM_CLAMP, None)
    rd = c.ready()
    assert rd.hard_state == HardState(LEGACY_TERM_CLAMP, None)  # the clamp is persisted
    c.advance(rd)
    c.campaign()
    assert c.role is Role.CANDIDATE and c.term == LEGACY_TERM_CLAMP + 1
    votes = [m for m in c.ready().messages if isinstance(m, RequestVote)]
    assert len(votes) == 2
    for m in votes:  # was: "cannot encode RequestVote: Integer value out of range"
        assert codec.decode(codec.encode(m)) == m


def test_a_node_at_the_largest_term_does_not_campaign() -> None:
    c = core(MAX_TERM)
    c.campaign()
    assert c.role is Role.FOLLOWER and c.term == MAX_TERM
    assert not c.ready().messages
