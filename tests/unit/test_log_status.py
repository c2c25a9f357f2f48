"""``DLedger.status()`` is a typed ``LogStatus``; its ``to_dict()`` is the
plain map the demo KV node sends over its wire protocol, with the keys the
untyped status had (tools and tests read them)."""

from __future__ import annotations

import dataclasses

import pytest

from raftmq.dledger import LogStatus, PeerStatus

FOLLOWER = LogStatus(node_id="n2", group="g", role="follower", term=3, leader_id="n1", leader_addr="127.0.0.1:1",
                     commit_index=7, applied_index=6, first_index=1, last_index=8, recovering=False, damaged=False)
LEADER = dataclasses.replace(FOLLOWER, node_id="n1", role="leader", peers={
    "n2": PeerStatus(match_index=5, next_index=6, state="replicate", inflight=1, lag=3)})


def test_a_follower_status_has_the_untyped_keys_and_no_peers() -> None:
    d = FOLLOWER.to_dict()
    assert set(d) == {"id", "role", "term", "leader_id", "commit_index", "applied_index", "last_index", "recovering",
                      "damaged", "group", "leader_addr", "node_id", "first_index"}
    assert (d["id"], d["node_id"], d["term"], d["leader_addr"]) == ("n2", "n2", 3, "127.0.0.1:1")


def test_a_leader_status_carries_its_peers_progress() -> None:
    d = LEADER.to_dict()
    assert d["peers"] == {"n2": {"match_index": 5, "lag": 3, "state": "replicate", "next_index": 6, "inflight": 1}}
    assert "lead_transferee" in d and LEADER.is_leader and not FOLLOWER.is_leader


def test_a_status_cannot_be_changed_after_it_was_taken() -> None:
    with pytest.raises(dataclasses.FrozenInstanceError):
        FOLLOWER.term = 4  # type: ignore[misc]
