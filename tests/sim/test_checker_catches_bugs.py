"""The checker can fail: deliberately broken cores are caught.

Each variant subclasses ``RaftCore`` and breaks one rule of the paper; the
random simulation (or, for Figure 8, the scripted scenario) must report the
matching invariant within a bounded number of seeds. A checker that passes
everything would pass these cores too, so this is what gives the green runs
of ``test_simulation.py`` their meaning.
"""

from __future__ import annotations

import dataclasses
from typing import Any

import pytest

from raftmq.dledger.core import quorum
from raftmq.dledger.core.messages import AppendEntries, HardState, RequestVote, RequestVoteReply
from raftmq.dledger.core.raft import RaftCore, Ready
from raftmq.dledger.driver import ReadyDriver

from .cluster import SimFailure, run_seed
from .invariants import Violation
from .script import ScriptedCluster

MAX_SEEDS = 60
STEPS = 1500



# ---------------------------------------------------------------------------
# broken cores
# ---------------------------------------------------------------------------
class TruncatesOnAnyAppend(RaftCore):
    """A follower that rewrites its log from ``prev_log_index`` on for every
    AppendEntries whose prev matches, dropping what follows even when it
    matches: a stale or duplicated AppendEntries shortens its log (§5.3 says
    to truncate only at the first conflict)."""

    def _handle_append(self, m: AppendEntries) -> None:
        lg = self.log
        if (
            m.entries
            and m.prev_log_index >= lg.committed
            and m.entries[-1].index < lg.last_index()
            and lg.match_term(m.prev_log_index, m.prev_log_term)
        ):
            lg.append(m.entries)
        super()._handle_append(m)


class CommitsWithoutMajority(RaftCore):
    """A leader that commits whatever it has persisted itself (no majority)."""

    def _maybe_commit(self) -> bool:
        return self.log.maybe_commit(self.log.persisted_index(), self.term)


class CommitsOldTermsByCounting(RaftCore):
    """A leader that commits any index held by a majority, whatever its term
    (the mistake Figure 8, §5.4.2, warns about)."""

    def _maybe_commit(self) -> bool:
        match = {p: pr.match_index for p, pr in self.progress.items()}
        match[self.id] = self.log.persisted_index()
        idx = quorum.committed_index(match)
        if idx > self.log.committed:
            self.log.committed = idx
            return True
        return False


class VotesIgnoringLogs(RaftCore):
    """A voter that skips the election restriction (§5.4.1): it grants its (one)
    vote per term whatever the candidate's log."""

    def _handle_vote_request(self, m: RequestVote) -> None:
        can_vote = (
            self.voted_for == m.src
            or (self.voted_for is None and self.leader_id is None)
            or (m.pre_vote and m.term > self.term)
        )
        if can_vote:
            if m.pre_vote:
                self._send(RequestVoteReply(m.term, self.id, m.src, granted=True, pre_vote=True))
            else:
                self.election_elapsed = 0
                self.voted_for = m.src
                self._send(RequestVoteReply(self.term, self.id, m.src, granted=True))
        else:
            self._send(RequestVoteReply(self.term, self.id, m.src, granted=False, pre_vote=m.pre_vote))


class GrantsEveryVote(RaftCore):
    """A voter that grants every request, even a second candidate of a term it
    already voted in (§5.2: "at most one candidate per term"); it records
    only its first vote, so its hard state looks fine."""

    def _handle_vote_request(self, m: RequestVote) -> None:
        if not m.pre_vote:
            self.election_elapsed = 0
            if self.voted_for is None:
                self.voted_for = m.src
        self._send(RequestVoteReply(m.term if m.pre_vote else self.term, self.id, m.src, granted=True,
                                    pre_vote=m.pre_vote))


class CountsRefusalsAsVotes(RaftCore):
    """A candidate that counts every vote reply as granted: it "wins" with a
    minority, so two leaders can share a term (§5.2, election safety)."""

    def step(self, m: Any) -> None:
        if isinstance(m, RequestVoteReply) and not m.granted and m.term <= self.term:
            m = dataclasses.replace(m, granted=True)
        super().step(m)


class ForgetsToPersistItsVote(RaftCore):
    """A node whose hard state never records its vote: after a crash it could
    vote again in the same term (§5.1, Figure 2: votedFor is persistent)."""

    def _hard_state(self) -> HardState:
        return HardState(self.term, None)


# ---------------------------------------------------------------------------
# a broken Ready driver
# ---------------------------------------------------------------------------
class FollowerSendsBeforeAppending(ReadyDriver):
    """A driver that forgets that only a leader may send before its own write
    (thesis §10.2.1): a follower's Ready with new entries and no hard-state
    change sends its success reply first, naming entries not yet durable
    (§5.1, Figure 2), so the leader may count a copy a crash then loses."""

    def sends_first(self, rd: Ready) -> bool:
        return bool(rd.entries) and rd.hard_state is None and rd.snapshot is None


class SendsBeforePersisting(ReadyDriver):
    """A driver that sends every Ready's messages before its writes: votes
    too leave before (term, voted_for) is saved."""

    def sends_first(self, rd: Ready) -> bool:
        return bool(rd.messages)


# ---------------------------------------------------------------------------
def first_violation(core_cls: Any, expected: set[str], *, nodes: int | None = None,
                    mix: str | None = None, driver_cls: Any = ReadyDriver) -> tuple[int, str]:
    """Run seeds until one reports an invariant in ``expected``; returns (seed,
    invariant). Failures of other invariants are skipped (the real core's own
    liveness bugs, for instance, also show up with broken variants)."""
    others = []
    for seed in range(1, MAX_SEEDS + 1):
        try:
            run_seed(seed, nodes, STEPS, core_cls=core_cls, mix=mix, quiet=True, driver_cls=driver_cls)
        except SimFailure as f:
            if f.invariant in expected:
                return seed, f.invariant
            others.append((seed, f.invariant))
    raise AssertionError(
        f"{core_cls.__name__}/{driver_cls.__name__} was not caught as {sorted(expected)} in {MAX_SEEDS} seeds; other failures: {others}"
    )


@pytest.mark.parametrize(
    "core_cls, expected",
    [
        pytest.param(TruncatesOnAnyAppend, {"no-shortening-without-conflict"}, id="truncates-on-stale-append"),
        pytest.param(CommitsWithoutMajority, {"commit-needs-majority"}, id="commits-without-majority"),
        pytest.param(
            VotesIgnoringLogs,
            {"leader-completeness", "state-machine-safety", "commit-needs-majority", "no-truncating-applied",
             "acked-not-lost", "core-raised-AssertionError"},
            id="votes-ignoring-logs",
        ),
        pytest.param(
            GrantsEveryVote, {"vote-durable", "one-vote-per-term", "election-safety"}, id="grants-every-vote"
        ),
        pytest.param(CountsRefusalsAsVotes, {"election-safety"}, id="counts-refusals-as-votes"),
        pytest.param(ForgetsToPersistItsVote, {"vote-durable"}, id="vote-not-persisted"),
        pytest.param(CommitsOldTermsByCounting, {"commit-current-term"}, id="commits-old-terms-by-counting"),
    ],
)
def test_broken_core_is_caught(core_cls: Any, expected: set[str]) -> None:
    seed, invariant = first_violation(core_cls, expected)
    assert invariant in expected


@pytest.mark.parametrize(
    "driver_cls, expected",
    [
        pytest.param(FollowerSendsBeforeAppending, {"ack-durable"}, id="follower-acks-before-append"),
        pytest.param(SendsBeforePersisting, {"vote-durable", "term-durable", "ack-durable"}, id="sends-everything-first"),
    ],
)
def test_driver_sending_before_persisting_is_caught(driver_cls: Any, expected: set[str]) -> None:
    """The runtime's own Ready order is what the simulation runs, so a driver
    that lets a follower (or candidate) send before its write is caught: a
    success reply naming an entry not yet durable (ack-durable), a vote or a
    term sent before it is saved (vote-durable, term-durable)."""
    seed, invariant = first_violation(RaftCore, expected, driver_cls=driver_cls)
    assert invariant in expected


def test_correct_driver_passes_the_seeds_that_catch_the_broken_ones() -> None:
    """The control group for the broken drivers: the seeds on which they are
    caught show no safety violation with the real driver."""
    caught = {first_violation(RaftCore, {"ack-durable"}, driver_cls=FollowerSendsBeforeAppending)[0],
              first_violation(RaftCore, {"vote-durable"}, driver_cls=SendsBeforePersisting)[0]}
    for seed in sorted(caught):
        try:
            run_seed(seed, None, STEPS, quiet=True)
        except SimFailure as f:
            assert f.invariant == "liveness", f


def test_votes_ignoring_logs_breaks_leader_completeness_in_five_node_groups() -> None:
    """The election restriction matters most with 5 nodes and crashes: the
    checker names leader completeness (or what follows from its loss)."""
    seed, invariant = first_violation(
        VotesIgnoringLogs,
        {"leader-completeness", "state-machine-safety", "no-truncating-applied", "core-raised-AssertionError"},
        nodes=5,
        mix="crashes",
    )
    assert seed <= MAX_SEEDS


def test_figure8_mistake_is_caught() -> None:
    """§5.4.2: a leader that commits an entry of an earlier term by counting
    replicas commits x in Figure 8 (c), which the checker reports at once
    (commit-current-term); without that check, n5 winning in (d) and
    overwriting x would be reported (leader completeness, state machine safety)."""
    from .test_paper_scenarios import test_figure8_leader_never_commits_an_old_term_entry_by_counting_replicas as fig8

    original = ScriptedCluster.__init__

    def broken_init(self: ScriptedCluster, n: int = 3, **kw: Any) -> None:
        original(self, n, core_cls=CommitsOldTermsByCounting, **kw)

    ScriptedCluster.__init__ = broken_init  # type: ignore[method-assign]
    try:
        with pytest.raises(AssertionError) as info:
            fig8()
    finally:
        ScriptedCluster.__init__ = original  # type: ignore[method-assign]
    err = info.value
    assert isinstance(err, Violation) or "committed an entry of a previous term" in str(err), err
    if isinstance(err, Violation):
        assert err.invariant == "commit-current-term", err


def test_correct_core_passes_the_same_seeds() -> None:
    """The control group: the seeds that catch the broken cores find no safety
    violation in the real one (liveness is the real core's own matter)."""
    for seed in range(1, 11):
        try:
            run_seed(seed, None, STEPS, quiet=True)
        except SimFailure as f:
            assert f.invariant == "liveness", f
