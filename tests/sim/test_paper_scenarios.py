"""The Raft paper's tricky cases as scripted scenarios: every message delivered,
dropped, delayed or duplicated by hand, time passing only by ``tick``.

Besides each test's own assertions, the simulation's invariant checker
(election safety, log matching, leader completeness, state machine safety,
durability before effect, ...) runs on every event of every script.
"""

from __future__ import annotations


import pytest

from raftmq.dledger.core.messages import (
    AppendEntries,
    AppendEntriesReply,
    EntryKind,
    RequestVote,
    RequestVoteReply,
    TimeoutNow,
)
from raftmq.dledger.core.raft import Role
from raftmq.dledger.errors import NotLeader

from .script import AE, AER, VOTE, ScriptedCluster, both, carries, frm, kind, to

ET = 10  # election timeout (ticks) of every script
X = b"x-of-term-1"  # Figure 8's entry; longer than max_batch_bytes=1, so it travels alone



def settle(c: ScriptedCluster, ticks: int = 2) -> None:
    """Let heartbeats carry the commit index everywhere."""
    for _ in range(ticks):
        c.tick()
        c.stabilize()


def forget_leader(c: ScriptedCluster, *ids: str) -> None:
    """An election timeout passes on ``ids`` with every message lost, so none of
    them still believes in a leader (a voter in contact with a leader ignores
    candidates: thesis §4.2.3)."""
    c.tick(*ids, times=ET)
    c.drop()


def win(c: ScriptedCluster, nid: str, among: tuple[str, ...], attempts: int = 4) -> None:
    """``nid`` campaigns, only vote traffic between ``among`` flows, until it wins.
    (A first pre-vote can fail and only teach it the current term.)"""
    for _ in range(attempts):
        c.campaign(nid)
        c.deliver(both(VOTE, frm(*among), to(*among)))
        c.drop(VOTE)
        if c.core(nid).role is Role.LEADER:
            return
    raise AssertionError(f"{nid} could not win among {among}\n{c.dump()}")


# ---------------------------------------------------------------------------
# §5.4.2, Figure 8
# ---------------------------------------------------------------------------
def _figure8_until_c(c: ScriptedCluster) -> tuple[int, int]:
    """Figure 8 (a)-(c), with the no-op every leader appends (§8). Returns the
    index of the term-1 entry x and the index of n1's new-term no-op."""
    c.elect("n1")
    settle(c)
    # (a) n1 leads term 1; x reaches n2 only.
    x = c.propose("n1", X)
    c.drop(both(AE, to("n3", "n4", "n5")))
    c.stabilize()
    assert c.core("n1").commit_index < x
    # (b) n1 crashes; n5 wins term 2 with n3, n4 and writes its own no-op at x's index,
    #     which reaches nobody; n5 crashes.
    c.crash("n1")
    forget_leader(c, "n2", "n3", "n4", "n5")
    win(c, "n5", ("n3", "n4", "n5"))
    assert c.log("n5")[x - 1][1] == c.core("n5").term
    c.drop(frm("n5"))
    c.crash("n5")
    # (c) n1 restarts and wins term 3 with n2, n3 (its log ends with x, of term 1).
    c.restart_node("n1")
    forget_leader(c, "n1", "n2", "n3", "n4")
    win(c, "n1", ("n1", "n2", "n3", "n4"))
    c.drop(AE)
    noop = c.core("n1").last_index
    assert c.log("n1")[noop - 1][1] == c.core("n1").term
    return x, noop


def test_figure8_leader_never_commits_an_old_term_entry_by_counting_replicas() -> None:
    """§5.4.2, Figure 8 (c)-(d): n1, leader of term 3, brings x (of term 1) to a
    majority (n1, n2, n3) but must not commit it: x is not of its term. Indeed
    n5 can still win term 4 (its last entry, of term 2, is more up to date than
    x) and replace x everywhere, which is safe only because x never committed."""
    c = ScriptedCluster(5, max_batch_bytes=1)  # one entry per AppendEntries
    x, noop = _figure8_until_c(c)
    # n1 talks to n2 and n3 only. n2 (which has x) takes n1's new-term no-op
    # too: that is two copies of five, not a majority. n3 gets x but never the
    # no-op: n1 backs up to x and hands it to n3 (a probe with the no-op that
    # n3 must reject, lacking x, may pass).
    c.net.only_links(c.ids, [("n1", "n3"), ("n1", "n2")])
    c.tick("n1")  # a heartbeat gets the (lost) probes going again

    def would_append_noop(m: object) -> bool:
        return carries(noop)(m) and len(c.log("n3")) >= x

    for _ in range(50):
        c.drop(would_append_noop)
        if not c.deliver(lambda m: not would_append_noop(m), limit=1):
            break
    holders = [n for n in ("n1", "n2", "n3", "n4") if len(c.log(n)) >= x and c.log(n)[x - 1][2] == X]
    assert sorted(holders) == ["n1", "n2", "n3"], holders  # x is on a majority of 5
    assert c.progress("n1", "n3")["match_index"] == x  # and n1 knows it
    assert c.progress("n1", "n2")["match_index"] >= x
    assert [n for n in ("n2", "n3", "n4") if len(c.log(n)) >= noop] == ["n2"]
    assert c.core("n1").commit_index < x, "committed an entry of a previous term by counting replicas"
    # (d) n1 crashes; n5 restarts and wins with n3, n4; x is overwritten everywhere.
    c.crash("n1")
    c.heal()
    c.restart_node("n5")
    forget_leader(c, "n2", "n3", "n4", "n5")
    win(c, "n5", ("n2", "n3", "n4", "n5"))
    c.stabilize()
    settle(c)
    for n in ("n2", "n3", "n4", "n5"):
        assert c.log(n)[x - 1][1] == c.log("n5")[x - 1][1] != 1, (n, c.log(n))
        assert X not in c.datas(n)


def test_figure8_old_term_entry_commits_with_a_current_term_entry() -> None:
    """§5.4.2, Figure 8 (e): once n1's own term-3 entry (its no-op, after x) is on
    a majority, both commit, and n5 (whose log ends in term 2) can no longer
    win an election: x is kept for good."""
    c = ScriptedCluster(5, max_batch_bytes=1)
    x, noop = _figure8_until_c(c)
    c.partition(["n1", "n2", "n3"])
    c.tick("n1")  # heartbeats restart the (lost) probes
    c.stabilize()
    assert c.core("n1").commit_index >= noop > x
    c.crash("n1")
    c.heal()
    c.restart_node("n5")
    forget_leader(c, "n2", "n3", "n4", "n5")
    for _ in range(3):
        c.campaign("n5")
        c.deliver(VOTE)
        assert c.core("n5").role is not Role.LEADER
    forget_leader(c, "n2", "n3", "n4", "n5")
    win(c, "n2", ("n2", "n3", "n4", "n5"))
    c.stabilize()
    settle(c)
    for n in ("n2", "n3", "n4", "n5"):
        assert c.log(n)[x - 1][2] == X, (n, c.log(n))


# ---------------------------------------------------------------------------
# §5.3 / §5.4: a stale leader rejoins
# ---------------------------------------------------------------------------
def test_stale_leader_rejoining_steps_down_and_loses_only_uncommitted_entries() -> None:
    """§5.3, §5.4.1: n1, cut off while leading (check-quorum off, so it keeps
    believing it leads), appends u1, u2 that can never commit. The majority
    elects a new leader and goes on. When the partition heals, n1 sees the
    newer term, steps down, and its log becomes the new leader's: the
    uncommitted u1, u2 are replaced, the committed c1, c2 kept at their index."""
    c = ScriptedCluster(5, check_quorum=False)
    c.elect("n1")
    c1 = c.propose("n1", b"c1")
    c2 = c.propose("n1", b"c2")
    c.stabilize()
    settle(c)
    assert c.core("n1").commit_index >= c2
    old_term = c.core("n1").term
    c.partition(["n1"])
    c.propose("n1", b"u1")
    c.propose("n1", b"u2")
    new = None
    for _ in range(3 * ET):
        c.tick("n2", "n3", "n4", "n5")
        c.stabilize()
        new = c.leader()
        if new not in (None, "n1"):
            break
    assert new not in (None, "n1"), c.dump()
    assert c.core("n1").role is Role.LEADER and c.core("n1").term == old_term  # stale, unaware
    na = c.propose(new, b"na")
    c.stabilize()
    c.heal()
    settle(c, 3)
    assert c.core("n1").role is Role.FOLLOWER
    assert c.core("n1").term == c.core(new).term > old_term
    assert c.core("n1").leader_id == new
    assert c.log("n1") == c.log(new)
    assert b"u1" not in c.datas("n1") and b"u2" not in c.datas("n1")
    assert c.log("n1")[c1 - 1][2] == b"c1" and c.log("n1")[c2 - 1][2] == b"c2"
    assert c.log("n1")[na - 1][2] == b"na"


# ---------------------------------------------------------------------------
# thesis §9.6: pre-vote
# ---------------------------------------------------------------------------
def test_partitioned_follower_rejoins_without_deposing_the_leader() -> None:
    """Thesis §9.6: n3, cut off for ten election timeouts, keeps pre-campaigning
    but never wins a pre-vote, so its term does not grow; when it rejoins, the
    leader stays leader in the same term and n3 catches up."""
    c = ScriptedCluster(3)
    c.elect("n1")
    settle(c)
    term = c.core("n1").term
    c.partition(["n3"])
    for _ in range(10 * ET):
        c.tick()
        c.stabilize()
    c.propose("n1", b"while-away")
    c.stabilize()
    assert c.core("n3").term == term, "pre-vote let an isolated node inflate its term"
    c.heal()
    settle(c, 3)
    # A new entry makes the leader notice the gap (an idle leader does not:
    # see test_found_bugs.test_lost_append_entries_is_retransmitted_while_idle).
    c.propose("n1", b"back")
    c.stabilize()
    settle(c, 2)
    assert c.core("n1").role is Role.LEADER and c.core("n1").term == term
    assert c.core("n3").leader_id == "n1" and c.core("n3").term == term
    assert c.log("n3") == c.log("n1")


def test_without_pre_vote_the_rejoining_follower_would_depose_the_leader() -> None:
    """The same script without pre-vote, to show what §9.6 prevents (and that the
    previous test can tell the difference): n3's term grows while it is cut
    off, and its return forces the leader out."""
    c = ScriptedCluster(3, pre_vote=False)
    c.elect("n1")
    settle(c)
    term = c.core("n1").term
    c.partition(["n3"])
    for _ in range(10 * ET):
        c.tick()
        c.stabilize()
    assert c.core("n3").term > term
    c.heal()
    settle(c, 3)
    assert c.core("n1").term > term


# ---------------------------------------------------------------------------
# §5.4.1: election restriction
# ---------------------------------------------------------------------------
def test_vote_granted_only_to_a_candidate_whose_log_is_up_to_date() -> None:
    """§5.4.1: n3 missed a committed entry; n2 refuses n3 its vote (n3's log is
    less up to date), so n3 cannot win; n2, whose log is complete, can."""
    c = ScriptedCluster(3)
    c.elect("n1")
    settle(c)
    a = c.propose("n1", b"a")
    c.drop(both(AE, to("n3")))
    c.stabilize()
    assert c.core("n1").commit_index == a
    c.crash("n1")
    forget_leader(c, "n2", "n3")
    for _ in range(3):
        c.campaign("n3")
        replies = [m for m in c.deliver(VOTE) if isinstance(m, RequestVoteReply) and m.src == "n2"]
        assert replies and not any(m.granted for m in replies)
        assert c.core("n3").role is not Role.LEADER
    hs = c.node("n2").hs_store.load()
    assert hs.voted_for != "n3"
    forget_leader(c, "n2", "n3")
    win(c, "n2", ("n2", "n3"))
    c.stabilize()
    assert c.log("n3")[a - 1][2] == b"a"


def test_vote_request_from_shorter_or_older_log_is_denied() -> None:
    """§5.4.1, directly: "if the logs have last entries with different terms, the
    log with the later term is more up to date; if they end with the same term,
    the longer log is more up to date"."""
    c = ScriptedCluster(3)
    c.elect("n1")
    c.propose("n1", b"a")
    c.propose("n1", b"b")
    c.stabilize()
    settle(c)
    c.crash("n1")
    forget_leader(c, "n2")
    n2 = c.core("n2")
    last, last_term = n2.last_index, c.log("n2")[-1][1]
    c.drop()
    for li, lt, ok in ((last - 1, last_term, False), (last + 5, last_term - 1, False), (last, last_term, True)):
        term = c.core("n2").term + 1
        c.inject(RequestVote(term, "n3", "n2", li, lt))
        (reply,) = c.take(kind(RequestVoteReply))
        assert reply.granted is ok, (li, lt, reply)
        assert (c.node("n2").hs_store.load().voted_for == "n3") is ok


# ---------------------------------------------------------------------------
# thesis §6.2: check-quorum
# ---------------------------------------------------------------------------
def test_leader_cut_off_from_the_majority_steps_down_within_two_election_timeouts() -> None:
    """Thesis §6.2 (check-quorum): a leader that has not heard from a majority for
    an election timeout steps down, so clients stop talking to a leader that
    cannot commit. Between one and two timeouts after the cut (depending on
    where in its check period it was cut)."""
    c = ScriptedCluster(3)
    c.elect("n1")
    settle(c, 5)
    c.partition(["n1"])
    stepped = None
    for t in range(1, 2 * ET + 2):
        c.tick()
        c.stabilize()
        if c.core("n1").role is not Role.LEADER:
            stepped = t
            break
    assert stepped is not None and stepped <= 2 * ET, c.dump()
    with pytest.raises(NotLeader):
        c.core("n1").propose(b"late")


def test_leader_with_a_majority_keeps_leading() -> None:
    """Check-quorum must not depose a leader that hears from a majority (one
    follower down of three)."""
    c = ScriptedCluster(3)
    c.elect("n1")
    c.crash("n3")
    for _ in range(5 * ET):
        c.tick()
        c.stabilize()
    assert c.core("n1").role is Role.LEADER


# ---------------------------------------------------------------------------
# thesis §3.10: leadership transfer
# ---------------------------------------------------------------------------
def test_leadership_transfer_catches_the_target_up_then_hands_over() -> None:
    """Thesis §3.10: transfer_leadership(n3) first brings the lagging n3 up to
    date, then sends it TimeoutNow; n3 wins at once (no election timeout
    needed) with every entry. Proposals during the transfer raise NotLeader."""
    c = ScriptedCluster(3)
    c.elect("n1")
    settle(c)
    for k in range(3):
        c.propose("n1", b"e%d" % k)
    held = c.take(to("n3"))  # n3 is slow: its AppendEntries are still on the way
    c.stabilize()
    assert held and c.core("n3").last_index < c.core("n1").last_index
    term = c.core("n1").term
    c.transfer("n1", "n3")
    assert not c.pending(kind(TimeoutNow)), "TimeoutNow sent before the target caught up"
    with pytest.raises(NotLeader):
        c.propose("n1", b"during")
    for m in held:
        c.inject(m)
    # TimeoutNow only once n3 holds everything.
    seen_timeout_now = False
    for _ in range(200):
        if not c.net.pending:
            break
        m = c.net.pending[0]
        if isinstance(m, TimeoutNow):
            assert c.core("n3").last_index == c.core("n1").last_index
            seen_timeout_now = True
        c.deliver(lambda x, m=m: x is m, limit=1)
    assert seen_timeout_now
    assert c.core("n3").role is Role.LEADER and c.core("n3").term == term + 1
    assert c.core("n1").role is Role.FOLLOWER
    for k in range(3):
        assert b"e%d" % k in c.datas("n3")
    assert b"during" not in c.datas("n3")
    c.propose("n3", b"after")
    c.stabilize()
    settle(c)
    assert c.log("n1") == c.log("n2") == c.log("n3")


# ---------------------------------------------------------------------------
# §5.3: stale and duplicated AppendEntries
# ---------------------------------------------------------------------------
def test_stale_append_never_shortens_log() -> None:
    """§5.3 ("if an existing entry conflicts ... delete it and all that follow"):
    only a conflict truncates. An old AppendEntries delivered again, after
    newer entries were appended, matches what the follower has and must leave
    the entries after it in place."""
    c = ScriptedCluster(3)
    c.elect("n1")
    settle(c)
    a = c.propose("n1", b"a")
    (old,) = c.take(both(to("n2"), carries(a)))
    c.inject(old)
    c.stabilize()
    for d in (b"b", b"c", b"d"):
        c.propose("n1", d)
    c.stabilize()
    settle(c)
    before = c.log("n2")
    assert len(before) == c.core("n1").last_index
    c.inject(old)  # duplicated, and stale
    c.inject(old)
    old_hb = AppendEntries(old.term, "n1", "n2", old.prev_log_index, old.prev_log_term, (), 0)
    c.inject(old_hb)
    c.stabilize()
    assert c.log("n2") == before
    assert c.core("n2").commit_index == c.core("n1").commit_index


# ---------------------------------------------------------------------------
# pipelining: reordered replies
# ---------------------------------------------------------------------------
def test_reordered_append_replies_never_move_match_index_backwards() -> None:
    """Figure 2 (matchIndex "increases monotonically") with pipelining: n2's
    success replies arrive newest first, then again (duplicated), then a stale
    rejection; the leader's match index for n2 only grows and next index never
    drops to or below it."""
    c = ScriptedCluster(3, max_batch_bytes=1, max_inflight_msgs=8)
    c.elect("n1")
    settle(c)
    idx = [c.propose("n1", b"e%d" % k) for k in range(4)]
    sent = c.take(both(AE, to("n2")))
    assert len(sent) == 4, sent  # one entry per message, all in flight at once
    for m in sent:
        c.inject(m)
    replies = c.take(both(AER, frm("n2")))
    assert [r.match_index for r in replies] == idx
    seen = []
    for r in reversed(replies + replies):
        c.inject(r)
        p = c.progress("n1", "n2")
        assert p["next_index"] > p["match_index"]
        seen.append(p["match_index"])
    assert seen == sorted(seen) and seen[-1] == idx[-1], seen
    c.inject(AppendEntriesReply(c.core("n1").term, "n2", "n1", success=False, reject_index=idx[0]))
    assert c.progress("n1", "n2")["match_index"] == idx[-1]
    c.stabilize()
    settle(c)
    assert c.log("n2") == c.log("n1")


# ---------------------------------------------------------------------------
# §8: a no-op per term
# ---------------------------------------------------------------------------
def test_each_new_leader_first_appends_a_noop_of_its_term() -> None:
    """§8 (and §5.4.2): a leader appends a no-op at the start of its term so that
    entries of earlier terms commit without waiting for a client."""
    c = ScriptedCluster(3)
    for leader in ("n1", "n2", "n3", "n1"):
        before = c.core(leader).last_index
        if c.leader() is not None:
            forget_leader(c, *c.ids)
        win(c, leader, tuple(c.ids))
        first = c.log(leader)[before]
        assert first[0] == before + 1 and first[1] == c.core(leader).term and first[2] == b""
        kinds = c.node(leader).storage.entries(before + 1, before + 2, 1 << 20)
        assert kinds[0].kind == EntryKind.NOOP
        c.propose(leader, b"by-" + leader.encode())
        c.stabilize()
        settle(c)
    # Every term present in the final log starts with a no-op.
    entries = c.node("n1").storage.entries(1, c.core("n1").last_index + 1, 1 << 20)
    first_of_term = {}
    for e in entries:
        first_of_term.setdefault(e.term, e)
    assert all(e.kind == EntryKind.NOOP for e in first_of_term.values()), first_of_term
