"""A simulated dledger cluster: N pure Raft cores, a simulated network and
clock, one seeded ``random.Random`` driving everything.

A *step* is one event, processed fully: a tick of every live node, the
delivery of one message, or one client or fault action (a proposal, a
leadership transfer, a forced campaign, a partition or its healing, a crash,
a restart, a log compaction). After each event the affected node's
``Ready`` is handled by the runtime's own driver (``dledger.driver``: install
snapshot, save hard state, append and flush entries, send messages, apply
committed entries, advance; a leader's new entries sent before its own
write), on the node's memory stores and the simulated network, and
``invariants.Checker`` checks what changed. A crash may stop a Ready at any of
the driver's crash points (before anything, after a leader sent but before
its own write, between the hard-state and entry writes, after persisting
but before sending, after some messages, before advancing): what was
persisted survives in the node's memory stores, everything else is lost.

Peers of a crashed node are told, as the runtime tells them when a
connection closes (``leader_unreachable``, ``follower_restarted``).

``run_seed(seed)`` runs a fault phase of ``steps`` steps and then a liveness
phase (everything healed and restarted, no more loss, reordering and
duplicates go on): within 20 election timeouts (plus two ticks per entry a
follower has to catch up) a stable leader must emerge and fresh proposals
must be applied on every node. The same seed always gives the same run (and the same event trace);
a failure raises ``SimFailure`` naming the seed, the step and the invariant,
and prints the last events.

Replay one seed from the command line::

    .venv/bin/python -m tests.sim.cluster --seed 17 [--nodes 5] [--steps 2000] [--trace]
"""

from __future__ import annotations

import dataclasses
import random
import sys
from dataclasses import dataclass, field
from typing import Any, Callable

from raftmq.dledger.core.messages import Entry, EntryKind, HardState, Snapshot, SnapshotMeta
from raftmq.dledger.core.raft import CoreConfig, RaftCore, Role
from raftmq.dledger.driver import CrashPoint, ReadyDriver, ReadyIO
from raftmq.dledger.errors import NotLeader
from raftmq.dledger.store.memory import ENTRY_HEADER_BYTES, MemoryHardStateStore, MemoryLogStore

from .invariants import Checker, Violation, chain_hash, decode_snapshot_data, encode_snapshot_data
from .network import SimNetwork
from .trace import Trace

DEFAULT_STEPS = 2000
LIVENESS_TIMEOUTS = 20  # election timeouts the liveness phase may take
LIVENESS_PROPOSALS = 5
LIVENESS_RETRIES = 3
# Where a crash inside a Ready may stop the driver (all of them, drawn uniformly).
CRASH_POINTS: tuple[CrashPoint, ...] = tuple(CrashPoint)


@dataclass(frozen=True)
class FaultMix:
    """How hostile a run is. Probabilities are per step unless said otherwise."""

    name: str
    propose_p: float = 0.06
    drop_p: float = 0.0  # per message
    dup_p: float = 0.0  # per message
    reorder_p: float = 0.02  # per message: ignores the order of its link
    max_delay_ticks: int = 1  # usual delay: uniform in [0, max]
    long_delay_p: float = 0.0  # per message: a delay of up to two election timeouts
    busy_tick_p: float = 0.03  # a tick happens although messages (none overdue) are due
    partition_p: float = 0.0
    heal_p: float = 0.0
    crash_p: float = 0.0
    restart_p: float = 0.0
    mid_ready_crash: float = 0.0  # fraction of crashes that cut a Ready half-way
    compact_p: float = 0.0
    transfer_p: float = 0.0
    campaign_p: float = 0.0
    follower_propose_p: float = 0.005  # a proposal sent to a non-leader (must raise NotLeader)
    pause_p: float = 0.0  # per node per tick: the node misses the tick (a slow clock)


MIXES: tuple[FaultMix, ...] = (
    FaultMix("calm", max_delay_ticks=1, transfer_p=0.002, campaign_p=0.001),
    FaultMix("lossy", drop_p=0.12, dup_p=0.08, reorder_p=0.1, max_delay_ticks=2, long_delay_p=0.03, busy_tick_p=0.05),
    FaultMix("partitions", drop_p=0.02, partition_p=0.006, heal_p=0.006, transfer_p=0.001, pause_p=0.01),
    FaultMix(
        "crashes", crash_p=0.005, restart_p=0.012, mid_ready_crash=0.5, compact_p=0.004,
        dup_p=0.02, long_delay_p=0.01,
    ),
    FaultMix(
        "chaos", drop_p=0.06, dup_p=0.05, reorder_p=0.08, max_delay_ticks=2, long_delay_p=0.02, busy_tick_p=0.05,
        partition_p=0.004, heal_p=0.006, crash_p=0.003, restart_p=0.01, mid_ready_crash=0.5,
        compact_p=0.003, transfer_p=0.002, campaign_p=0.002, pause_p=0.02,
    ),
)
# Harsher mixes, run on their own seeds (they are not drawn by ``seed_plan``).
EXTRA_MIXES: tuple[FaultMix, ...] = (
    FaultMix(
        "hostile", drop_p=0.2, dup_p=0.1, reorder_p=0.3, max_delay_ticks=3, long_delay_p=0.05, busy_tick_p=0.1,
        partition_p=0.01, heal_p=0.01, crash_p=0.01, restart_p=0.02, mid_ready_crash=0.8, compact_p=0.01,
        transfer_p=0.005, campaign_p=0.005, pause_p=0.05,
    ),
    FaultMix(
        "crashstorm", crash_p=0.02, restart_p=0.03, mid_ready_crash=1.0, compact_p=0.02, dup_p=0.05, reorder_p=0.1,
    ),
    FaultMix(
        "transfers", transfer_p=0.02, campaign_p=0.01, reorder_p=0.1, dup_p=0.05, drop_p=0.05, compact_p=0.005,
    ),
)
MIX_BY_NAME = {m.name: m for m in MIXES + EXTRA_MIXES}
HEALED = FaultMix("healed", propose_p=0.0, dup_p=0.02, max_delay_ticks=1, follower_propose_p=0.0)


def seed_plan(seed: int) -> tuple[int, str]:
    """(node count, fault mix name) that ``seed`` runs with unless overridden:
    the first two draws of the run's random source (see ``Cluster.__init__``)."""
    rng = random.Random(seed)
    n = rng.choice((3, 5))
    return n, rng.choice(MIXES).name


class SimFailure(AssertionError):
    """A run broke an invariant (or the core raised): names seed, step and invariant."""

    def __init__(self, message: str, invariant: str, seed: int, step: int, trace_lines: list[str]) -> None:
        super().__init__(message)
        self.invariant = invariant
        self.seed = seed
        self.step = step
        self.trace_lines = trace_lines


@dataclass
class SimNode:
    """One simulated node: its "disk" (the memory stores) survives a crash; the
    core, pending proposals and applied state do not."""

    id: str
    cfg: CoreConfig
    storage: MemoryLogStore = field(default_factory=MemoryLogStore)
    hs_store: MemoryHardStateStore = field(default_factory=MemoryHardStateStore)
    core: Any = None
    driver: Any = None  # the Ready driver of the current core
    incarnation: int = 0
    snapshot: Snapshot | None = None  # durable: the last snapshot taken or installed
    sm_index: int = 0  # applied index of the state machine
    sm_chain: int = 0  # chain hash of everything applied
    sm_normal: int = 0  # NORMAL entries applied this incarnation
    pending: dict[int, tuple[int, bytes]] = field(default_factory=dict)  # index -> (term, data) proposed here
    lead_term: int | None = None  # term in which it was last seen leading
    seen_role: Any = None
    seen_term: int = -1
    seen_commit: int = 0


@dataclass
class SimResult:
    seed: int
    nodes: int
    mix: str
    steps: int
    ticks: int
    trace: list[str]
    stats: dict[str, int]


class Cluster:
    def __init__(
        self,
        seed: int,
        nodes: int | None = None,
        *,
        mix: FaultMix | str | None = None,
        core_cls: Callable[..., Any] = RaftCore,
        full_trace: bool = False,
        config: dict[str, Any] | None = None,
        net_cls: Callable[..., SimNetwork] = SimNetwork,
        driver_cls: Callable[[ReadyIO], ReadyDriver] = ReadyDriver,
    ) -> None:
        self.seed = seed
        rng = self.rng = random.Random(seed)
        # The plan draws from the rng in a fixed order, whatever is overridden,
        # so that forcing one knob does not reshuffle the rest of the run.
        n_drawn = rng.choice((3, 5))
        mix_drawn = rng.choice(MIXES)
        et = rng.choice((6, 10, 10))
        hb = rng.choice((1, 1, 2))
        inflight = rng.choice((1, 2, 8))
        batch = rng.choice((4, 16, 64 * 1024))
        pre_vote = rng.random() < 0.9
        check_quorum = rng.random() < 0.9
        pref_draw = rng.random()
        self.n = nodes or n_drawn
        if isinstance(mix, str):
            mix = MIX_BY_NAME[mix]
        self.mix: FaultMix = mix or mix_drawn
        self.fault_mix = self.mix
        ids = [f"n{i}" for i in range(1, self.n + 1)]
        preferred = ids[rng.randrange(self.n)] if pref_draw < 0.1 else None
        base = dict(
            voters=tuple(ids),
            election_timeout_ticks=et,
            heartbeat_ticks=hb,
            max_inflight_msgs=inflight,
            max_batch_bytes=batch,
            pre_vote=pre_vote,
            check_quorum=check_quorum,
            preferred_leader=preferred,
        )
        base.update(config or {})
        self.core_cls = core_cls
        self.driver_cls = driver_cls
        self.notify_connection_close = True
        self.trace = Trace(full=full_trace)
        self.net = net_cls(rng, self._on_net_drop)
        self.nodes: dict[str, SimNode] = {}
        for nid in ids:
            cfg = CoreConfig(node_id=nid, seed=rng.randrange(1 << 32), **base)
            self.nodes[nid] = SimNode(nid, cfg)
        self.ids = ids
        self.et = base["election_timeout_ticks"]
        self.checker = Checker(self.nodes)
        self.step_no = 0
        self.proposal_no = 0
        self.stats: dict[str, int] = dict(
            proposals=0, acked=0, crashes=0, restarts=0, partitions=0, compactions=0,
            snapshots_installed=0, transfers=0, campaigns=0, not_leader=0,
        )
        self._set_mix(self.mix)
        self._ev("plan", f"seed={seed}", f"nodes={self.n}", f"mix={self.mix.name}",
                 *(f"{k}={v}" for k, v in base.items() if k != "voters"))
        for node in self.nodes.values():
            self._start(node)

    # ------------------------------------------------------------------
    # plumbing
    # ------------------------------------------------------------------
    def _ev(self, kind: str, *args: Any) -> None:
        self.trace.add((self.step_no, self.net.now, kind, *args))

    def _on_net_drop(self, why: str, m: Any) -> None:
        self.trace.add((self.step_no, self.net.now, "drop:" + why, m))

    def _set_mix(self, mix: FaultMix) -> None:
        self.mix = mix
        net = self.net
        net.drop_p = mix.drop_p
        net.dup_p = mix.dup_p
        net.max_delay_ticks = mix.max_delay_ticks
        net.long_delay_p = mix.long_delay_p
        net.long_delay_ticks = 2 * self.et
        net.reorder_p = mix.reorder_p
        table: list[tuple[float, Callable[[], bool]]] = [
            (mix.propose_p, self._act_propose),
            (mix.follower_propose_p, self._act_propose_to_follower),
            (mix.partition_p, self._act_partition),
            (mix.heal_p, self._act_heal),
            (mix.crash_p, self._act_crash),
            (mix.restart_p, self._act_restart),
            (mix.compact_p, self._act_compact),
            (mix.transfer_p, self._act_transfer),
            (mix.campaign_p, self._act_campaign),
        ]
        self._actions = [(p, f) for p, f in table if p > 0]

    def live(self) -> list[SimNode]:
        return [n for n in self.nodes.values() if n.core is not None]

    def leaders(self) -> list[SimNode]:
        return [n for n in self.nodes.values() if n.core is not None and n.core.role is Role.LEADER]

    # ------------------------------------------------------------------
    # node lifecycle
    # ------------------------------------------------------------------
    def _start(self, node: SimNode) -> None:
        node.incarnation += 1
        if node.incarnation > 1:
            node.cfg = dataclasses.replace(node.cfg, seed=self.rng.randrange(1 << 32))
        hs = node.hs_store.load()
        snap = node.snapshot
        if snap is not None:
            node.core = self.core_cls(node.cfg, node.storage, hs, snap.meta.index)
            node.core.set_snapshot(snap)
            node.sm_index, node.sm_chain = decode_snapshot_data(snap.data)
        else:
            node.core = self.core_cls(node.cfg, node.storage, hs)
            node.sm_index, node.sm_chain = 0, 0
        node.sm_normal = 0
        node.pending = {}
        node.lead_term = None
        node.seen_role, node.seen_term = None, -1
        node.seen_commit = node.core.commit_index
        node.driver = self._make_driver(node)
        self._process_ready(node)
        self._observe(node)

    def _crash(self, node: SimNode, how: str) -> None:
        node.core = None
        node.driver = None
        node.pending = {}
        node.lead_term = None
        lost = self.net.purge(node.id, inbound=True, outbound=self.rng.random() < 0.5)
        self.stats["crashes"] += 1
        self._ev("crash", node.id, how, f"lost_msgs={lost}", f"log={node.storage.last_index()}",
                 f"hs={node.hs_store.load().term}/{node.hs_store.load().voted_for}")
        if self.notify_connection_close:
            self._connection_closed(node)

    def _connection_closed(self, gone: SimNode) -> None:
        """What the runtime does when a peer's connection closes (here: it crashed;
        each peer notices at once with probability 0.7): a follower of that
        leader stops waiting for it (``leader_unreachable``), a leader re-probes
        that follower (``follower_restarted``)."""
        for other in self.nodes.values():
            core = other.core
            if core is None or other is gone or self.rng.random() >= 0.7:
                continue
            if core.role is Role.LEADER:
                name = "follower_restarted"
                args: tuple[Any, ...] = (gone.id,)
            elif core.leader_id == gone.id:
                name, args = "leader_unreachable", ()
            else:
                continue
            fn = getattr(core, name, None)
            if fn is None:  # an older core without that hook
                continue
            self._ev("conn-closed", other.id, f"{name}({', '.join(args)})")
            fn(*args)
            self._process_ready(other)
            self._observe(other)

    # ------------------------------------------------------------------
    # the Ready loop: the runtime's driver on memory stores, checks hooked in
    # ------------------------------------------------------------------
    def _make_driver(self, node: SimNode) -> ReadyDriver:
        """The runtime's Ready driver (``dledger.driver``) for ``node``'s current
        core, on its memory stores and the simulated network, with the
        invariant checks hooked into each write, send and apply."""
        core = node.core
        chk = self.checker

        def install_snapshot(snap: Snapshot) -> None:
            chk.on_storage_reset(node, snap)
            node.storage.reset(snap.meta)
            node.snapshot = snap
            node.sm_index, node.sm_chain = decode_snapshot_data(snap.data)
            core.set_snapshot(snap)  # as the runtime does: it may serve it as leader later
            self.stats["snapshots_installed"] += 1
            self._ev("install", node.id, f"upto={snap.meta.index}/{snap.meta.term}")

        def save_hard_state(hs: HardState) -> None:
            chk.on_hard_state(node, node.hs_store.load(), hs)
            node.hs_store.save(hs)

        def append(entries: tuple[Entry, ...]) -> None:
            lt = node.lead_term
            was_leader = lt if (lt is not None and core.role is Role.LEADER and core.term == lt) else None
            chk.before_append(node, entries, was_leader)
            node.storage.append(entries)  # durable at once: the memory store is this node's "disk"
            chk.after_append(node, entries)

        def send(m: Any) -> None:
            chk.on_send(node, m)
            self._send(m)

        def apply(entries: tuple[Entry, ...]) -> None:
            term_now = core.term
            for e in entries:
                self._apply(node, e, term_now)

        return self.driver_cls(ReadyIO(
            is_leader=lambda: core.role is Role.LEADER,
            install_snapshot=install_snapshot,
            save_hard_state=save_hard_state,
            append=append,
            flush=node.storage.flush,
            send=send,
            flush_transport=lambda: None,
            apply=apply,
            advance=core.advance,
        ))

    def _process_ready(self, node: SimNode, cut: CrashPoint | None = None) -> None:
        """Handle ``node``'s Readies until it has none. With ``cut``, the node
        crashes inside its first Ready at that point (or, if that Ready never
        reaches it, right after that Ready): what its stores hold survives."""
        core = node.core
        handle = node.driver.handle
        for _ in range(1000):
            if not core.has_ready():
                break
            rd = core.ready()
            if cut is None:
                handle(rd)
                continue
            stop_at, how = self._stopper(cut, len(rd.messages))
            stopped = handle(rd, stop_at)
            return self._crash(node, how() if stopped is not None else "after-ready")
        else:
            raise Violation("ready-converges", f"{node.id} still has a Ready after 1000 rounds")
        if cut is not None:
            self._crash(node, "after-ready")

    def _stopper(self, cut: CrashPoint, n_msgs: int) -> tuple[Callable[[CrashPoint], bool], Callable[[], str]]:
        """A ``stop_at`` for the driver that stops at ``cut`` (for ``DURING_SEND``:
        after a random number of the Ready's ``n_msgs`` messages, all of them
        included, then before applying), and a function naming where it stopped."""
        if cut is not CrashPoint.DURING_SEND:
            return (lambda p: p is cut), lambda: cut.value
        keep = self.rng.randint(0, n_msgs)
        sent = [0]

        def stop_at(p: CrashPoint) -> bool:
            if p is CrashPoint.DURING_SEND:
                if sent[0] == keep:
                    return True
                sent[0] += 1
            return p is CrashPoint.AFTER_SEND

        return stop_at, lambda: f"after-{sent[0]}-of-{n_msgs}-msgs"

    def _send(self, m: Any) -> None:
        dst = self.nodes.get(m.dst)
        if dst is None or dst.core is None:
            self._ev("drop:down", m)
            return
        self.net.send(m)

    def _apply(self, node: SimNode, e: Any, term_now: int) -> None:
        self.checker.on_apply(node, e, term_now)
        node.sm_index = e.index
        node.sm_chain = chain_hash(node.sm_chain, e)
        if e.kind == EntryKind.NORMAL:
            node.sm_normal += 1
        if node.pending:
            p = node.pending.pop(e.index, None)
            if p is not None:
                term, data = p
                if term == e.term:
                    if data != e.data:
                        raise Violation(
                            "leader-append-only",
                            f"{node.id} proposed {data!r} at ({e.index}, term {term}) but applied {e.data!r}",
                        )
                    self.checker.on_ack(e.index, term, data)
                    self.stats["acked"] += 1
                    self._ev("ack", node.id, f"{e.index}/{term}", data.decode())

    def _observe(self, node: SimNode) -> None:
        core = node.core
        if core is None:
            return
        role, term = core.role, core.term
        if role is Role.LEADER:
            if self.checker.on_leader(node, term):
                self._ev("leader", node.id, f"term={term}", f"last={core.last_index}", f"commit={core.commit_index}")
            node.lead_term = term
        else:
            node.lead_term = None
        if role is not node.seen_role or term != node.seen_term:
            self._ev("role", node.id, role.value, f"term={term}", f"leader={core.leader_id}")
            node.seen_role, node.seen_term = role, term
        ci = core.commit_index
        if ci < node.seen_commit:
            raise Violation("commit-monotonic", f"{node.id} commit index went {node.seen_commit} -> {ci}")
        if ci > node.seen_commit and role is Role.LEADER:
            # §5.4.2: a leader moves its commit index only onto an entry of its own term.
            st = node.storage
            t = st.term(ci) if st.first_index() - 1 <= ci <= st.last_index() else None
            if t != term:
                raise Violation(
                    "commit-current-term",
                    f"{node.id}, leader of term {term}, advanced its commit index {node.seen_commit} -> {ci} "
                    f"onto an entry of term {t}",
                )
        node.seen_commit = ci
        hs = node.hs_store.load()
        if hs.term != term:
            raise Violation(
                "term-durable", f"{node.id} runs in term {term} but its durable term is {hs.term} after its Ready"
            )

    # ------------------------------------------------------------------
    # steps
    # ------------------------------------------------------------------
    def step(self) -> None:
        self.step_no += 1
        x = self.rng.random()
        for p, act in self._actions:
            if x < p:
                if act():
                    return
                break
            x -= p
        net = self.net
        if net.has_due() and (self.rng.random() >= self.mix.busy_tick_p or not net.busy_tick_ok()):
            self._deliver()
        else:
            self._tick_all()

    def _tick_all(self) -> None:
        self.net.advance()
        self._ev("tick")
        pause = self.mix.pause_p
        rng = self.rng
        for node in self.nodes.values():
            core = node.core
            if core is None:
                continue
            if pause and rng.random() < pause:
                self._ev("pause", node.id)
                continue
            core.tick()
            self._process_ready(node)
            self._observe(node)

    def _deliver(self, cut: CrashPoint | None = None, m: Any = None) -> None:
        if m is None:
            m = self.net.pop_due()
        node = self.nodes[m.dst]
        if node.core is None:
            self._ev("drop:down", m)
            return
        if self.net.blocked(m.src, m.dst):
            self._ev("drop:cut", m)
            return
        self.net.delivered += 1
        self._ev("deliver", m)
        node.core.step(m)
        self._process_ready(node, cut)
        self._observe(node)

    # -- client and fault actions: return False when they do not apply now --
    def _act_propose(self) -> bool:
        leaders = self.leaders()
        if not leaders:
            return False
        node = leaders[self.rng.randrange(len(leaders))] if len(leaders) > 1 else leaders[0]
        self.propose_to(node)
        return True

    def propose_to(self, node: SimNode, cut: CrashPoint | None = None) -> int | None:
        """Propose fresh unique data at ``node``; returns the index, None on NotLeader.
        With ``cut``, ``node`` crashes at that point of the Ready that follows."""
        self.proposal_no += 1
        data = b"p%d" % self.proposal_no
        core = node.core
        try:
            idx = core.propose(data)
        except NotLeader as e:
            self.stats["not_leader"] += 1
            self._ev("propose", node.id, data.decode(), f"NotLeader({e.leader_id})")
            return None
        self.stats["proposals"] += 1
        node.pending[idx] = (core.term, data)
        self._ev("propose", node.id, data.decode(), f"-> {idx}/{core.term}")
        self._process_ready(node, cut)
        self._observe(node)
        return idx

    def _act_propose_to_follower(self) -> bool:
        others = [n for n in self.live() if n.core.role is not Role.LEADER]
        if not others:
            return False
        node = others[self.rng.randrange(len(others))]
        try:
            idx = node.core.propose(b"x")
        except NotLeader:
            self._ev("propose", node.id, "x", "NotLeader (as it must)")
            return True
        raise Violation("propose-needs-leader", f"{node.id} ({node.core.role.value}) accepted a proposal at {idx}")

    def _act_partition(self) -> bool:
        rng, ids, net = self.rng, list(self.ids), self.net
        kind = rng.choice(("halves", "isolate-leader", "ring", "bridge", "one-way"))
        rng.shuffle(ids)
        if kind == "halves":
            k = rng.randint(1, self.n // 2)
            net.isolate_groups([ids[:k], ids[k:]])
            desc = f"{ids[:k]}|{ids[k:]}"
        elif kind == "isolate-leader":
            leaders = self.leaders()
            x = leaders[0].id if leaders else ids[0]
            net.isolate_groups([[x], [i for i in self.ids if i != x]])
            desc = f"[{x}]|rest"
        elif kind == "ring" and self.n >= 5:
            links = [(ids[i], ids[(i + 1) % self.n]) for i in range(self.n)]
            net.only_links(self.ids, links)
            desc = "-".join(ids + ids[:1])
        elif kind in ("ring", "bridge"):
            kind = "bridge"
            hub, rest = ids[0], ids[1:]
            k = rng.randint(1, len(rest) - 1)
            a, b = rest[:k], rest[k:]
            links = [(hub, x) for x in rest]
            links += [(x, y) for x in a for y in a if x < y] + [(x, y) for x in b for y in b if x < y]
            net.only_links(self.ids, links)
            desc = f"{a}<-{hub}->{b}"
        else:
            x = ids[0]
            if rng.random() < 0.5:
                net.cut = {(x, y) for y in self.ids if y != x}
                desc = f"{x} cannot send"
            else:
                net.cut = {(y, x) for y in self.ids if y != x}
                desc = f"{x} cannot receive"
        self.stats["partitions"] += 1
        self._ev("partition", kind, desc)
        return True

    def _act_heal(self) -> bool:
        if not self.net.cut:
            return False
        self.net.heal()
        self._ev("heal")
        return True

    def _act_crash(self) -> bool:
        live = self.live()
        limit = self.n // 2 if self.rng.random() < 0.85 else self.n
        if self.n - len(live) >= limit or not live:
            return False
        node = live[self.rng.randrange(len(live))]
        if self.rng.random() < self.mix.mid_ready_crash:
            # Crash while handling a message (or, at a leader, a proposal: the
            # Ready that sends new entries before writing them): stop the
            # driver at a random one of its crash points.
            cut = CRASH_POINTS[self.rng.randrange(len(CRASH_POINTS))]
            if node.core.role is Role.LEADER and self.rng.random() < 0.5:
                self._ev("crash-in", node.id, "propose", f"cut={cut.value}")
                self.propose_to(node, cut=cut)
                if node.core is not None:  # NotLeader (a transfer under way): crash anyway
                    self._crash(node, "idle")
                return True
            m = self.net.take_due_for(node.id, self.rng.randrange)
            if m is not None:
                self._ev("crash-in", node.id, f"cut={cut.value}")
                self._deliver(cut=cut, m=m)
                if node.core is not None:  # dropped on the way: crash anyway
                    self._crash(node, "idle")
                return True
        self._crash(node, "idle")
        return True

    def _act_restart(self) -> bool:
        down = [n for n in self.nodes.values() if n.core is None]
        if not down:
            return False
        node = down[self.rng.randrange(len(down))]
        self.restart(node)
        return True

    def restart(self, node: SimNode) -> None:
        self.stats["restarts"] += 1
        self._ev("restart", node.id, f"log={node.storage.first_index()}..{node.storage.last_index()}",
                 f"hs={node.hs_store.load().term}/{node.hs_store.load().voted_for}")
        self._start(node)

    def _act_compact(self) -> bool:
        cands = [n for n in self.live() if n.sm_index >= n.storage.first_index()]
        if not cands:
            return False
        node = cands[self.rng.randrange(len(cands))]
        self._compact(node, self.rng.choice((0, 0, 3, 10)))
        return True

    def _compact(self, node: SimNode, keep: int) -> None:
        """As the runtime does: snapshot the state machine at its applied index,
        hand the snapshot to the core, then drop the log up to ``keep`` entries
        before it."""
        k = node.sm_index
        st = node.storage
        next_pos = st.body_position(k + 1) - ENTRY_HEADER_BYTES if k < st.last_index() else (
            st.body_position(k) + len(st.entries(k, k + 1, 1 << 30)[0].data)
        )
        snap = Snapshot(SnapshotMeta(k, st.term(k), next_pos), encode_snapshot_data(k, node.sm_chain))
        node.snapshot = snap
        node.core.set_snapshot(snap)
        st.compact(max(0, k - keep))
        self.stats["compactions"] += 1
        self._ev("compact", node.id, f"snap={k}/{snap.meta.term}", f"log={st.first_index()}..{st.last_index()}")

    def _act_transfer(self) -> bool:
        leaders = self.leaders()
        if not leaders:
            return False
        node = leaders[self.rng.randrange(len(leaders))]
        target = self.ids[self.rng.randrange(self.n)]
        self.stats["transfers"] += 1
        self._ev("transfer", node.id, f"to={target}")
        node.core.transfer_leadership(target)
        self._process_ready(node)
        self._observe(node)
        return True

    def _act_campaign(self) -> bool:
        others = [n for n in self.live() if n.core.role is not Role.LEADER]
        if not others:
            return False
        node = others[self.rng.randrange(len(others))]
        self.stats["campaigns"] += 1
        self._ev("campaign", node.id)
        node.core.campaign()
        self._process_ready(node)
        self._observe(node)
        return True

    # ------------------------------------------------------------------
    # phases
    # ------------------------------------------------------------------
    def run_faults(self, steps: int) -> None:
        for _ in range(steps):
            self.step()

    def heal_all(self) -> None:
        """End of the fault phase: heal partitions, restart crashed nodes, stop losses."""
        self.step_no += 1
        self._set_mix(HEALED)
        self.net.heal()
        self._ev("heal-all")
        for node in self.nodes.values():
            if node.core is None:
                self.restart(node)

    def stable_leader(self) -> SimNode | None:
        """A leader every node follows in its term, with its whole log committed."""
        leaders = self.leaders()
        if len(leaders) != 1:
            return None
        lead = leaders[0]
        lc = lead.core
        for n in self.nodes.values():
            c = n.core
            if c is None or c.term != lc.term or c.leader_id != lead.id:
                return None
        if lc.commit_index != lc.last_index:
            return None
        return lead

    def run_liveness(self, timeouts: int = LIVENESS_TIMEOUTS, proposals: int = LIVENESS_PROPOSALS) -> None:
        """Heal everything, then within ``timeouts`` election timeouts a stable
        leader must emerge and ``proposals`` fresh proposals must be applied on
        every node. A proposal whose entry is replaced by another leader's (the
        leader changed right after accepting it: the client would be told the
        outcome is unknown and retry) is proposed again, at most
        ``LIVENESS_RETRIES`` times in all."""
        self.heal_all()
        start = self.net.now
        # Plus time for the slowest follower to fetch its backlog at worst one
        # entry per round trip (max_inflight_msgs=1 with one entry per message).
        backlog = max(n.storage.last_index() for n in self.nodes.values()) - min(
            n.sm_index for n in self.nodes.values()
        )
        deadline = start + timeouts * self.et + 2 * backlog
        wanted: list[tuple[int, bytes]] = []  # (index, data) accepted by a leader, not yet lost
        to_propose = proposals
        retries = LIVENESS_RETRIES
        max_steps = 1_000_000
        committed = self.checker.committed
        while True:
            if self.net.now > deadline or not max_steps:
                self._liveness_failed(start, wanted, to_propose)
            lost = [(i, d) for i, d in wanted if i < len(committed) and committed[i][2] != d]
            if lost:
                if len(lost) > retries:
                    raise Violation("liveness", f"proposals keep being replaced by other leaders' entries: {lost}")
                retries -= len(lost)
                self._ev("retry", f"replaced: {lost}")
                wanted = [w for w in wanted if w not in lost]
                to_propose += len(lost)
            if to_propose:
                lead = self.stable_leader()
                if lead is not None:
                    idx = self.propose_to(lead)
                    if idx is not None:
                        wanted.append((idx, b"p%d" % self.proposal_no))
                        to_propose -= 1
                        continue
                    # NotLeader (a transfer is under way): let time pass, retry
            elif all(self._applied_everywhere(i, d) for i, d in wanted):
                self._ev("live", f"{len(wanted)} proposals applied everywhere within {self.net.now - start} ticks")
                return
            self.step_no += 1
            if self.net.has_due() and (self.rng.random() >= self.mix.busy_tick_p or not self.net.busy_tick_ok()):
                self._deliver()
            else:
                self._tick_all()
            max_steps -= 1

    def _applied_everywhere(self, idx: int, data: bytes) -> bool:
        for n in self.nodes.values():
            if n.sm_index < idx:
                return False
        c = self.checker.committed
        return idx < len(c) and c[idx][2] == data

    def _liveness_failed(self, start: int, wanted: list[tuple[int, bytes]], left: int) -> None:
        state = "; ".join(
            f"{n.id}:{n.core.role.value} t{n.core.term} lead={n.core.leader_id} "
            f"commit={n.core.commit_index} last={n.core.last_index} applied={n.sm_index}"
            for n in self.nodes.values()
        )
        for n in self.leaders():
            prog = n.core.status().get("progress") if hasattr(n.core, "status") else None
            state += f"; leader {n.id} log={n.storage.first_index()}..{n.storage.last_index()} progress={prog}"
        raise Violation(
            "liveness",
            f"healed at tick {start}, {self.net.now - start} ticks later ({LIVENESS_TIMEOUTS} election timeouts "
            f"+ 2 ticks per entry of backlog): "
            f"proposals accepted {wanted}, {left} not yet proposed; nodes: {state}",
        )

    def final_check(self) -> None:
        self.checker.final_check()
        frontier = self.checker.commit_frontier
        for n in self.nodes.values():
            if n.sm_index > frontier:
                raise Violation("state-machine-safety", f"{n.id} applied beyond the committed log")

    def result(self, steps: int) -> SimResult:
        st = dict(self.stats)
        st.update(
            leaders=len(self.checker.leaders),
            max_term=max((n.hs_store.load().term for n in self.nodes.values()), default=0),
            committed=self.checker.commit_frontier,
            sent=self.net.sent,
            delivered=self.net.delivered,
            dropped=self.net.dropped,
        )
        return SimResult(self.seed, self.n, self.fault_mix.name, steps, self.net.now, self.trace.lines(), st)


def replay_command(seed: int, nodes: int | None, steps: int, mix: str | None = None) -> str:
    env = f"RAFTMQ_SIM_SEED={seed} RAFTMQ_SIM_STEPS={steps}"
    if nodes is not None:
        env += f" RAFTMQ_SIM_NODES={nodes}"
    if mix is not None:
        env += f" RAFTMQ_SIM_MIX={mix}"
    return f"{env} .venv/bin/python -m pytest tests/sim/test_simulation.py -k test_replay -s"


def run_seed(
    seed: int,
    nodes: int | None = None,
    steps: int = DEFAULT_STEPS,
    *,
    mix: FaultMix | str | None = None,
    core_cls: Callable[..., Any] = RaftCore,
    full_trace: bool = False,
    liveness: bool = True,
    config: dict[str, Any] | None = None,
    quiet: bool = False,
    driver_cls: Callable[[ReadyIO], ReadyDriver] = ReadyDriver,
) -> SimResult:
    """Run one seed: ``steps`` fault steps, then (``liveness``) the liveness phase.

    Raises ``SimFailure`` on any violation (or exception from the core) with the
    seed, step and invariant in its message; the last events are printed."""
    cluster = None
    try:
        cluster = Cluster(seed, nodes, mix=mix, core_cls=core_cls, full_trace=full_trace, config=config,
                          driver_cls=driver_cls)
        cluster.run_faults(steps)
        if liveness:
            cluster.run_liveness()
        cluster.final_check()
    except Exception as exc:  # noqa: BLE001 - every failure becomes a seeded report
        invariant = exc.invariant if isinstance(exc, Violation) else f"core-raised-{type(exc).__name__}"
        detail = exc.detail if isinstance(exc, Violation) else repr(exc)
        step = cluster.step_no if cluster is not None else 0
        n = cluster.n if cluster is not None else nodes
        mixname = cluster.fault_mix.name if cluster is not None else None
        lines = cluster.trace.lines(last=200) if cluster is not None else []
        forced_mix = mix if isinstance(mix, str) else (mix.name if mix is not None else None)
        msg = (
            f"seed={seed} nodes={n} mix={mixname} step={step} invariant={invariant}: {detail}\n"
            f"replay: {replay_command(seed, nodes, steps, forced_mix)}"
        )
        if not quiet:
            print(f"=== simulation failure: {msg}")
            print(f"=== last {len(lines)} events of seed {seed}:")
            print("\n".join(lines))
        raise SimFailure(msg, invariant, seed, step, lines) from exc
    return cluster.result(steps)


def main(argv: list[str] | None = None) -> int:
    import argparse

    ap = argparse.ArgumentParser(description="replay one simulation seed")
    ap.add_argument("--seed", type=int, required=True)
    ap.add_argument("--nodes", type=int, default=None)
    ap.add_argument("--steps", type=int, default=DEFAULT_STEPS)
    ap.add_argument("--mix", choices=sorted(MIX_BY_NAME), default=None)
    ap.add_argument("--trace", action="store_true", help="print the full event trace")
    args = ap.parse_args(argv)
    try:
        res = run_seed(args.seed, args.nodes, args.steps, mix=args.mix, full_trace=args.trace)
    except SimFailure:
        return 1
    if args.trace:
        print("\n".join(res.trace))
    print(f"seed={res.seed} nodes={res.nodes} mix={res.mix} steps={res.steps} ticks={res.ticks} ok {res.stats}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
