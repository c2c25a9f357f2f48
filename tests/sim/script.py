"""A cluster driven by hand, for scripted scenarios (in the manner of etcd/raft's
``rafttest`` interactions): nothing happens unless the test says so.

Messages wait in a FIFO outbox until the test delivers, drops, takes (to
deliver later, reordered or duplicated) or injects them. Time passes only
through ``tick``. The invariant checker of the random simulation runs on
every event here too, so a scripted scenario also fails on any safety
violation, not only on its own assertions.
"""

from __future__ import annotations

from typing import Any, Callable, Iterable

from raftmq.dledger.core.messages import AppendEntries, AppendEntriesReply, RequestVote, RequestVoteReply
from raftmq.dledger.core.raft import RaftCore, Role

from .cluster import Cluster, FaultMix, SimNode
from .network import SimNetwork

Pred = Callable[[Any], bool]

SCRIPTED = FaultMix("scripted", propose_p=0.0, follower_propose_p=0.0)


class ManualNetwork(SimNetwork):
    """The outbox of a scripted cluster: every message waits, in send order."""

    __slots__ = ("pending",)

    def __init__(self, rng: Any, on_drop: Callable[[str, Any], None]) -> None:
        super().__init__(rng, on_drop)
        self.pending: list[Any] = []

    def send(self, m: Any) -> None:
        self.sent += 1
        self.pending.append(m)

    def has_due(self) -> bool:
        return bool(self.pending)

    def pop_due(self) -> Any:
        return self.pending.pop(0)

    def in_flight(self) -> int:
        return len(self.pending)

    def purge(self, node_id: str, inbound: bool, outbound: bool) -> int:
        before = len(self.pending)
        self.pending = [
            m for m in self.pending
            if not ((inbound and m.dst == node_id) or (outbound and m.src == node_id))
        ]
        return before - len(self.pending)


# -- message predicates ----------------------------------------------------------
def to(*ids: str) -> Pred:
    return lambda m: m.dst in ids


def frm(*ids: str) -> Pred:
    return lambda m: m.src in ids


def kind(*types: type) -> Pred:
    return lambda m: isinstance(m, types)


def both(*preds: Pred) -> Pred:
    return lambda m: all(p(m) for p in preds)


def carries(index: int) -> Pred:
    """An AppendEntries whose entries include ``index``."""
    return lambda m: isinstance(m, AppendEntries) and any(e.index == index for e in m.entries)


def everything(m: Any) -> bool:
    return True


class ScriptedCluster(Cluster):
    """``n`` nodes ``n1``..``nN``; ``config`` overrides CoreConfig fields.

    Defaults suit scripts: no random election before ``election_timeout_ticks``
    ticks (so nothing happens unless the script ticks that far), pre-vote and
    check-quorum on, large batches, 8 messages in flight per follower.
    """

    def __init__(self, n: int = 3, *, core_cls: Callable[..., Any] = RaftCore, **config: Any) -> None:
        base = dict(
            election_timeout_ticks=10,
            heartbeat_ticks=1,
            max_inflight_msgs=8,
            max_batch_bytes=64 * 1024,
            pre_vote=True,
            check_quorum=True,
            preferred_leader=None,
        )
        base.update(config)
        super().__init__(0, n, mix=SCRIPTED, core_cls=core_cls, full_trace=True, config=base, net_cls=ManualNetwork)
        self.net: ManualNetwork
        self.notify_connection_close = False  # scripts say explicitly what each node learns

    # -- looking ---------------------------------------------------------------
    def node(self, nid: str) -> SimNode:
        return self.nodes[nid]

    def core(self, nid: str) -> Any:
        core = self.nodes[nid].core
        assert core is not None, f"{nid} is down"
        return core

    def log(self, nid: str) -> list[tuple[int, int, bytes]]:
        """(index, term, data) of every entry in the node's durable log."""
        st = self.nodes[nid].storage
        if st.last_index() < st.first_index():
            return []
        return [(e.index, e.term, e.data) for e in st.entries(st.first_index(), st.last_index() + 1, 1 << 40)]

    def terms(self, nid: str) -> list[int]:
        return [t for _, t, _ in self.log(nid)]

    def datas(self, nid: str) -> list[bytes]:
        return [d for _, _, d in self.log(nid) if d]

    def leader(self) -> str | None:
        leaders = [n.id for n in self.leaders()]
        assert len(leaders) <= 1 or len({self.core(x).term for x in leaders}) == len(leaders)
        if not leaders:
            return None
        return max(leaders, key=lambda x: self.core(x).term)

    def pending(self, pred: Pred = everything) -> list[Any]:
        return [m for m in self.net.pending if pred(m)]

    def progress(self, leader: str, follower: str) -> dict[str, Any]:
        return self.core(leader).status()["progress"][follower]

    def dump(self, last: int = 60) -> str:
        """The last ``last`` events of the script, for assertion messages."""
        return "\n".join(self.trace.lines(last=last))

    # -- acting ----------------------------------------------------------------
    def tick(self, *ids: str, times: int = 1) -> None:
        """``times`` ticks of the given live nodes (all live nodes if none given).
        Messages produced wait in the outbox."""
        for _ in range(times):
            self.step_no += 1
            self.net.advance()
            self._ev("tick", ",".join(ids) if ids else "all")
            for node in self.nodes.values():
                if node.core is None or (ids and node.id not in ids):
                    continue
                node.core.tick()
                self._process_ready(node)
                self._observe(node)

    def inject(self, m: Any) -> None:
        """Deliver ``m`` now (it need not be in the outbox: a stale copy, a forged message)."""
        self.step_no += 1
        self._deliver(m=m)

    def deliver(self, pred: Pred = everything, *, limit: int | None = None) -> list[Any]:
        """Deliver waiting messages matching ``pred``, in send order, including the
        matching ones they cause, until none is left (or ``limit`` were delivered).
        Returns what was delivered."""
        done: list[Any] = []
        cap = limit if limit is not None else 100_000
        while len(done) < cap:
            for i, m in enumerate(self.net.pending):
                if pred(m):
                    del self.net.pending[i]
                    break
            else:
                return done
            done.append(m)
            self.inject(m)
        if limit is not None:
            return done
        raise AssertionError(f"messages still flowing after {cap} deliveries")

    def stabilize(self) -> list[Any]:
        return self.deliver(everything)

    def take(self, pred: Pred = everything) -> list[Any]:
        """Remove matching messages from the outbox and return them (to deliver later)."""
        got = [m for m in self.net.pending if pred(m)]
        self.net.pending = [m for m in self.net.pending if not pred(m)]
        return got

    def drop(self, pred: Pred = everything) -> list[Any]:
        got = self.take(pred)
        for m in got:
            self._ev("drop:script", m)
        return got

    def campaign(self, nid: str) -> None:
        self.step_no += 1
        self._ev("campaign", nid)
        self.core(nid).campaign()
        self._process_ready(self.nodes[nid])
        self._observe(self.nodes[nid])

    def elect(self, nid: str) -> None:
        """``nid`` campaigns and every message is delivered; it must win."""
        self.campaign(nid)
        self.stabilize()
        core = self.core(nid)
        assert core.role is Role.LEADER, f"{nid} did not win: {core.role} term {core.term}\n{self.dump()}"

    def propose(self, nid: str, data: bytes) -> int:
        """Propose at ``nid`` (NotLeader propagates); returns the index."""
        self.step_no += 1
        node = self.nodes[nid]
        idx = node.core.propose(data)
        node.pending[idx] = (node.core.term, data)
        self._ev("propose", nid, data.decode(errors="replace"), f"-> {idx}/{node.core.term}")
        self._process_ready(node)
        self._observe(node)
        return idx

    def transfer(self, leader: str, target: str) -> None:
        self.step_no += 1
        self._ev("transfer", leader, f"to={target}")
        self.core(leader).transfer_leadership(target)
        self._process_ready(self.nodes[leader])
        self._observe(self.nodes[leader])

    def compact(self, nid: str, keep: int = 0) -> None:
        """``nid`` snapshots its state machine at its applied index and drops its
        log up to ``keep`` entries before that (what the runtime does)."""
        self.step_no += 1
        node = self.nodes[nid]
        self._compact(node, keep)

    def partition(self, *groups: Iterable[str]) -> None:
        """Nodes talk only within their group; messages across are dropped on delivery."""
        gs = [list(g) for g in groups]
        rest = [i for i in self.ids if not any(i in g for g in gs)]
        if rest:
            gs.append(rest)
        self.net.isolate_groups(gs)
        self._ev("partition", "|".join(",".join(g) for g in gs))

    def heal(self) -> None:
        self.net.heal()
        self._ev("heal")

    def crash(self, nid: str) -> None:
        self.step_no += 1
        self._crash(self.nodes[nid], "scripted")

    def restart_node(self, nid: str) -> None:
        self.step_no += 1
        self.restart(self.nodes[nid])


AE = kind(AppendEntries)
AER = kind(AppendEntriesReply)
VOTE = kind(RequestVote, RequestVoteReply)
