"""The chaos ``forge`` fault: an outsider who knows everything public about the
group but not its cluster secret forges peer traffic to one node.

From the public view (``GET /v1/cluster`` and ``/v1/health`` of a live node,
``dledger.tools.forge.view_of``) it sends, each on a connection of its own and
pretending to be the leader (or, to the leader, another node): an
AppendEntries at commit+1 in the current term, an InstallSnapshot with empty
data at term+1, a TimeoutNow, a RequestVote at term 2**64-1, garbage bytes,
and a connection that never says hello (``forge.forgeries``). The fault's
detail records how many the node refused (closed the connection) and the term
and leader before and after: with a secret on the group every forgery is
refused and the term does not move because of them. The checker then checks
the run as for any other fault.
"""

from __future__ import annotations

from typing import Any

from raftmq.dledger.tools.forge import GroupView, attack, view_of


def _view(urls: list[str]) -> GroupView | None:
    for url in urls:
        try:
            return view_of(url)
        except (OSError, ValueError, KeyError):
            continue
    return None


def forge_once(urls: list[str], target: str) -> dict[str, Any]:
    """Forge every kind of frame to node ``target``; ``urls``: HTTP addresses of live nodes.
    Blocking (a few seconds): run it in a thread."""
    before = _view(urls)
    if before is None:
        return {"error": "no node answered /v1/cluster"}
    others = sorted(n for n in before.raft_addrs if n != target)
    as_node = before.leader_id if before.leader_id not in (None, target) else (others[0] if others else target)
    rows = attack(before, target, as_node)
    after = _view(urls)
    return {
        "as_node": as_node,
        "sent": len(rows),
        "refused": sum(1 for r in rows if r.get("closed")),
        "not_refused": [r["forgery"] for r in rows if not r.get("closed")],
        "term_before": before.term,
        "term_after": after.term if after is not None else None,
        "leader_before": before.leader_id,
        "leader_after": after.leader_id if after is not None else None,
    }


def forgery_totals(details: list[dict[str, Any]]) -> dict[str, int]:
    """Over a run's forge faults: forgeries sent and refused, and faults during which the term moved."""
    return {
        "faults": len(details),
        "sent": sum(int(d.get("sent", 0)) for d in details),
        "refused": sum(int(d.get("refused", 0)) for d in details),
        "term_moved": sum(1 for d in details if d.get("term_after") not in (None, d.get("term_before"))),
    }
