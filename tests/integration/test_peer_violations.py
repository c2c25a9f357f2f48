"""Frames no correct peer can send, forged with ``dledger.tools.forge`` against
real 3-node broker groups by a forger that holds the group's cluster secret
(it passes the authenticated hello: a buggy peer, not an outsider, whom
tests/integration/test_peer_auth.py keeps out): none stops a node, loses an
acknowledged message or moves the leadership (issue 11, defence in depth).

Each frame is refused: the node logs ``event=peer_violation`` (or, for a
frame the codec refuses, ``closing incoming connection``) and closes the
connection it came on.
"""

from __future__ import annotations

import time
from pathlib import Path
from typing import Any, Iterator

import pytest

from raftmq.dledger.core.messages import (
    AppendEntries,
    HardState,
    AppendEntriesReply,
    Entry,
    InstallSnapshot,
    RequestVote,
    Snapshot,
    SnapshotMeta,
    TimeoutNow,
)
from raftmq.dledger.core.raft import LEGACY_TERM_CLAMP
from raftmq.dledger.store.hard_state import FileHardStateStore
from raftmq.dledger.tools.forge import Forger, GroupView, view_of
from raftmq.dledger.peer_security import load_cluster_secret
from tests.integration.broker_group import BrokerGroup, BrokerNode, http, running_group

pytestmark = pytest.mark.integration

TOPIC = "pv"


@pytest.fixture
def group(tmp_path: Path) -> Iterator[BrokerGroup]:
    with running_group(tmp_path) as g:
        yield g


def produce(g: BrokerGroup, n: int, tag: str) -> list[dict[str, Any]]:
    """``n`` messages to queue 0 through the leader, acknowledged."""
    url = g.leader().http_url
    status, _, body = http("POST", f"{url}/v1/topics/{TOPIC}/messages",
                           {"messages": [{"body": f"{tag}-{i}", "queue_id": 0} for i in range(n)]})
    assert status == 200, body
    return list(body["results"])


def setup_topic(g: BrokerGroup) -> list[dict[str, Any]]:
    status, _, body = http("POST", g.leader().http_url + "/v1/topics", {"name": TOPIC, "queues": 1})
    assert status == 200, body
    acked = produce(g, 20, "before")
    quiet(g)
    return acked


def quiet(g: BrokerGroup) -> GroupView:
    """Wait until every node applied the leader's commit index: nothing in flight."""
    def settled() -> GroupView | None:
        v = view_of(g.leader().http_url)
        hs = [g.health(n.id) for n in g.nodes]
        ok = all(h and h["applied_index"] == v.commit_index and h["term"] == v.term for h in hs)
        return v if ok else None
    return g.wait_for(settled, 20, "every node applied the commit index")


def readable_everywhere(g: BrokerGroup, acked: list[dict[str, Any]]) -> None:
    want = [r["msg_id"] for r in acked]

    def every_node_has_them() -> bool:
        for node in g.nodes:
            status, _, got = http("GET", f"{node.http_url}/v1/topics/{TOPIC}/queues/0/messages?offset=0&max=1000")
            if status != 200 or [m["msg_id"] for m in got["messages"]][:len(want)] != want:
                return False
        return True
    g.wait_for(every_node_has_them, 20, "every acknowledged message readable on every node")


def forger(g: BrokerGroup, to: BrokerNode, as_node: str) -> Forger:
    """A peer holding the group's secret (it passes the authenticated hello) that
    then sends what no correct peer sends: a buggy insider, not an outsider."""
    host, _, port = to.raft_addr.rpartition(":")
    secret = load_cluster_secret(g.extra["cluster_secret_file"])
    f = Forger((host, int(port)), g.group, as_node, secret=secret, to_node=to.id)
    f.connect()
    return f


def send_refused(g: BrokerGroup, to: BrokerNode, as_node: str, msg: Any) -> None:
    """Send ``msg`` as ``as_node``; the node must close the connection."""
    f = forger(g, to, as_node)
    try:
        f.send(msg)
        assert f.closed_by_peer(3.0), f"{to.id} kept the connection open after {msg!r:.200}"
    finally:
        f.close()


def all_alive(g: BrokerGroup) -> None:
    for node in g.nodes:
        assert node.proc is not None and node.proc.poll() is None, f"{node.id} exited\n{g.logs()}"


def log_of(node: BrokerNode) -> str:
    return node.log_path.read_text(errors="replace")


def other(g: BrokerGroup, *not_these: str) -> BrokerNode:
    return next(n for n in g.nodes if n.id not in not_these)


def test_empty_append_entries_at_the_leaders_term_leaves_the_leader_leading(group: BrokerGroup) -> None:
    acked = setup_topic(group)
    v = quiet(group)
    lead = group.leader()
    peer = other(group, lead.id)
    send_refused(group, lead, peer.id, AppendEntries(v.term, peer.id, lead.id, 0, 0, (), 0))
    time.sleep(1.0)
    all_alive(group)
    assert group.leader().id == lead.id and view_of(lead.http_url).term == v.term
    assert "event=peer_violation" in log_of(lead)
    readable_everywhere(group, acked + produce(group, 5, "after"))


def test_forged_leader_entries_and_replies_are_refused(group: BrokerGroup) -> None:
    """A follower refuses entries from a node that is not its leader (it used to
    append them at commit+1), and the leader refuses a success reply beyond its
    log (it used to count it toward committing its own, different entry)."""
    acked = setup_topic(group)
    v = quiet(group)
    lead = group.leader()
    f1 = other(group, lead.id)
    f2 = other(group, lead.id, f1.id)
    c = v.commit_index
    forged = AppendEntries(v.term, f2.id, f1.id, c, v.term, (Entry(v.term, c + 1, b"forged"),), c + 1)
    send_refused(group, f1, f2.id, forged)
    send_refused(group, lead, f1.id, AppendEntriesReply(v.term, f1.id, lead.id, True, match_index=c + 1000))
    time.sleep(0.5)
    all_alive(group)
    after = quiet(group)
    assert (after.term, after.commit_index, group.leader().id) == (v.term, c, lead.id)
    readable_everywhere(group, acked + produce(group, 5, "after"))


def test_undecodable_committed_entry_is_a_noop_on_every_node(group: BrokerGroup) -> None:
    """A forged leader of the next term gets an undecodable entry committed on
    both followers: they used to exit (ValueError out of apply). Now every node
    applies it as a no-op with one ERROR line naming its index."""
    acked = setup_topic(group)
    v = quiet(group)
    lead = group.leader()
    c = v.commit_index
    bad = Entry(v.term + 1, c + 1, b"\xc1 not a command")
    for node in group.nodes:
        if node.id != lead.id:
            f = forger(group, node, lead.id)
            try:
                f.send(AppendEntries(v.term + 1, lead.id, node.id, c, v.term, (bad,), c + 1))
                time.sleep(0.3)
            finally:
                f.close()
    group.wait_for(lambda: all((h := group.health(n.id)) and h["applied_index"] > c for n in group.nodes), 30,
                   "every node applied past the forged entry")
    all_alive(group)
    readable_everywhere(group, acked + produce(group, 5, "after"))
    for node in group.nodes:
        assert f"index={c + 1} event=invalid_command action=applied_as_noop" in log_of(node), node.id


@pytest.mark.parametrize("term", [(1 << 64) - 1, 1 << 62])
def test_a_term_beyond_the_bound_is_refused_and_the_group_stays_electable(group: BrokerGroup, term: int) -> None:
    acked = setup_topic(group)
    v = quiet(group)
    lead = group.leader()
    for node in group.nodes:
        src = other(group, node.id).id
        send_refused(group, node, src, AppendEntries(term, src, node.id, 0, 0, (), 0))
    time.sleep(0.5)
    all_alive(group)
    assert quiet(group).term == v.term and group.leader().id == lead.id
    for node in group.nodes:  # restart every node: it must not come back with the forged term
        group.kill(node.id)
    for node in group.nodes:
        group.start(node.id)
    group.leader(timeout_s=30)
    after = quiet(group)
    assert v.term < after.term < 1 << 62
    readable_everywhere(group, acked + produce(group, 5, "after"))


def test_forged_install_snapshot_deletes_nothing(group: BrokerGroup) -> None:
    """From a non-leader at the current term, and at term+1, with empty or
    garbage data: refused before the log or the state is touched (a follower
    used to wipe every topic and message)."""
    acked = setup_topic(group)
    v = quiet(group)
    lead = group.leader()
    f1 = other(group, lead.id)
    f2 = other(group, lead.id, f1.id)
    c = v.commit_index
    for term, src in ((v.term, f2.id), (v.term + 1, f2.id), (v.term + 1, lead.id)):
        for data in (b"", b"\x00garbage"):
            send_refused(group, f1, src, InstallSnapshot(term, src, f1.id, Snapshot(SnapshotMeta(c + 50, term), data)))
    time.sleep(0.5)
    all_alive(group)
    after = quiet(group)
    assert (after.term, group.leader().id) == (v.term, lead.id)
    readable_everywhere(group, acked + produce(group, 5, "after"))


def test_ten_timeout_now_and_ten_vote_requests_change_no_leader(group: BrokerGroup) -> None:
    """Ten TimeoutNow from a node that is not the leader, then ten RequestVote
    for the next terms: no leader change (before: one per TimeoutNow)."""
    setup_topic(group)
    v = quiet(group)
    lead = group.leader()
    f1 = other(group, lead.id)
    f2 = other(group, lead.id, f1.id)
    for _ in range(10):
        send_refused(group, f1, f2.id, TimeoutNow(v.term, f2.id, f1.id))
        time.sleep(0.1)
    f = forger(group, f1, f2.id)
    try:
        for k in range(10):
            f.send(RequestVote(v.term + 1 + k, f2.id, f1.id, v.commit_index + 100, v.term))
            time.sleep(0.1)
    finally:
        f.close()
    time.sleep(2.0)
    all_alive(group)
    after = quiet(group)
    assert (after.term, group.leader().id) == (v.term, lead.id)


def test_a_saved_term_beyond_the_bound_is_clamped_on_restart(group: BrokerGroup) -> None:
    """Every node saved term 2**64-1 (as an older version did after one forged
    heartbeat): each restarts at term 2**61 with no vote, logs it, and the
    group elects a leader again (before: no election could ever be encoded)."""
    acked = setup_topic(group)
    for node in group.nodes:
        group.kill(node.id)
    for node in group.nodes:
        FileHardStateStore(node.data_dir / "dledger").save(HardState((1 << 64) - 1, "n2"))
    for node in group.nodes:
        group.start(node.id)
    group.leader(timeout_s=30)
    after = quiet(group)
    assert LEGACY_TERM_CLAMP < after.term < 1 << 62
    readable_everywhere(group, acked + produce(group, 5, "after"))
    for node in group.nodes:
        assert "is beyond the largest term" in log_of(node), node.id
