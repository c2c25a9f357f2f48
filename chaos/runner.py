"""A chaos run from start to verdict (``raftmq chaos run``).

1. Lay out and start a local group (``chaos.nemesis.Group``), wait for a
   leader, create the topic.
2. Start the workload (``chaos.workload``) and the nemesis, which injects the
   seeded schedule (``chaos.schedule``) one fault at a time; a progress line
   on stderr says how it goes.
3. At the end: heal (resume, drop the partition rules, restart every node that
   is down), stop sending, wait until every node reports the same applied and
   commit index, wait until the push group has consumed everything, read
   every group's committed offsets and drain every queue from every node (a
   node that cannot be read is reported as such, with the reason), and look
   up by key, on every node, a seeded sample of the acknowledged messages plus
   every one whose key an IndexFile fault may have spoiled.
4. Check the history against what the nodes hold (``chaos.checker``), and
   decide: exit status 0 only if no anomaly was found and every planned fault
   was injected.

Every process the run started is stopped at the end, also on an error or
Ctrl-C (SIGINT) or SIGTERM.
"""

from __future__ import annotations

import asyncio
import logging
import random
import shutil
import signal
import sys
import tempfile
import time
import zlib
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Mapping

from raftmq.chaos import damage, forge_fault
from raftmq.chaos.checker import CheckResult, availability, check
from raftmq.chaos.history import CONVERGE, CRASH, FAIL, FAULT, OK, SEND, History
from raftmq.chaos.nemesis import SEGMENT_BYTES, Group, Node
from raftmq.chaos.netns import in_private_netns, partitions_possible
from raftmq.chaos.schedule import DEFAULT_FAULTS, LEADER_FAULTS, PlannedFault, pick, plan
from raftmq.chaos.workload import QUEUES, TOPIC, Workload, WorkloadConfig, create_topic

log = logging.getLogger(__name__)


HEALTHY_LAG_ENTRIES = 500  # a node this close to the leader's commit index counts as caught up
HEALTHY_WAIT_S = 15.0  # how long a leader fault waits for the group to be whole
SETTLE_S = 2.0  # the last fault ends this long before the run does (chaos.schedule.plan)
# corrupt: when the target does not answer before it is stopped, entries this far
# below its last one are taken as committed.
UNKNOWN_COMMIT_MARGIN_ENTRIES = 1000
LOOKUP_SAMPLE = 200  # acknowledged messages looked up by key on every node at the end
LOOKUP_TARGETED_MAX = 500  # at most this many more, whose keys an IndexFile fault may have spoiled
KILL_FAULTS = frozenset({"kill-leader", "kill", "torn-tail", "wipe", "corrupt", "corrupt-derived"})


def leader_fault_wait_s(now_s: float, run_end_s: float, fault_duration_s: float) -> float:
    """How long a leader fault starting at ``now_s`` may wait for the group to be
    whole: ``HEALTHY_WAIT_S``, but never so long that the fault would end after
    the run's settling time. A slow recovery (a node re-applying its whole log)
    may make the group late to be whole; the fault then still happens, with
    ``group_whole_after_s`` None, instead of being pushed past the run's end and
    counted as not injected."""
    return max(0.0, min(HEALTHY_WAIT_S, run_end_s - SETTLE_S - fault_duration_s - now_s))


class RunError(Exception):
    """The run itself could not be carried out (not an anomaly of the group)."""


@dataclass(slots=True, frozen=True)
class RunConfig:
    duration_s: float = 60.0  # of the workload under faults (healing and checking come after)
    interval_s: float = 6.0  # between the starts of two faults
    fault_s: float = 2.0  # how long a pause or partition lasts, or a killed node stays down
    faults: Mapping[str, float] = field(default_factory=lambda: {f: 1.0 for f in DEFAULT_FAULTS})
    schedule: str = "random"  # "random" (weighted draws) or "cycle" (in turn)
    nodes: int = 3
    flush: str = "async"
    segment_bytes: int = SEGMENT_BYTES  # of the nodes' Raft log segments
    seed: int = 0
    workload: WorkloadConfig = field(default_factory=WorkloadConfig)
    base_dir: str | None = None  # nodes' configs, data and logs (default: a temporary directory)
    out_dir: str = "."
    progress: bool = True
    wipe_majority: bool = False  # a fault no Raft group survives: the run must report loss
    keep_data: bool = False  # keep the temporary directory even when the run passes
    rejoin_wiped: bool = False  # restart a wiped node with --rejoin (default: no flag; the broker must notice)
    warmup_s: float = 3.0
    converge_timeout_s: float = 60.0
    consume_timeout_s: float = 45.0

    def __post_init__(self) -> None:
        if self.nodes not in (3, 5):
            raise ValueError("nodes: 3 or 5")
        if self.flush not in ("async", "sync"):
            raise ValueError("flush: 'async' or 'sync'")
        if self.duration_s < 10:
            raise ValueError("duration_s: at least 10 seconds")
        if self.interval_s <= 0 or self.fault_s <= 0:
            raise ValueError("interval_s and fault_s: must be positive")
        if self.segment_bytes < 4096:
            raise ValueError("segment_bytes: at least 4096")
        if self.schedule not in ("random", "cycle"):
            raise ValueError("schedule: 'random' or 'cycle'")


@dataclass(slots=True)
class RunResult:
    config: RunConfig
    plan: list[PlannedFault]
    history: History
    check: CheckResult
    availability: dict[str, Any]
    partitions: dict[str, Any]
    nodes: list[dict[str, Any]]
    base_dir: str
    reasons: list[str]
    started_at: float
    elapsed_s: float
    history_path: str | None = None

    @property
    def exit_code(self) -> int:
        return 0 if not self.reasons else 1


class Run:
    def __init__(self, cfg: RunConfig) -> None:
        self.cfg = cfg
        self.t0 = time.monotonic()
        self.h = History(clock=lambda: time.monotonic() - self.t0)
        self.started_at = time.time()
        ok, why = partitions_possible()
        wants = cfg.faults.get("partition", 0) > 0
        self.can_partition = wants and ok and in_private_netns()
        skipped = None
        if wants and not self.can_partition:
            skipped = why or "partitions need the run inside its own network namespace (raftmq chaos run does that)"
        self.partitions = {"asked": wants, "included": self.can_partition, "skipped": skipped}
        mix = dict(cfg.faults)
        if wants and not self.can_partition:
            mix.pop("partition", None)
        self.plan = [] if cfg.wipe_majority else plan(
            cfg.seed, mix, duration_s=cfg.duration_s, interval_s=cfg.interval_s, fault_s=cfg.fault_s,
            mode=cfg.schedule, warmup_s=cfg.warmup_s, settle_s=SETTLE_S)
        self.own_base = cfg.base_dir is None
        self.base = Path(cfg.base_dir) if cfg.base_dir else Path(tempfile.mkdtemp(prefix="raftmq-chaos-"))
        self.group = Group(self.base, cfg.nodes, cfg.flush, distinct_hosts=self.can_partition,
                           segment_bytes=cfg.segment_bytes, rejoin_wiped=cfg.rejoin_wiped)
        self.left_down: set[str] = set()
        self.last_fault = "-"
        self.injected = 0
        self.workload: Workload | None = None

    # -- helpers ----------------------------------------------------------------------
    def now(self) -> float:
        return time.monotonic() - self.t0

    async def _sleep_until(self, t: float) -> None:
        await asyncio.sleep(max(0.0, t - self.now()))

    def targets(self) -> list[tuple[str, str, int]]:
        return [(n.id, n.http_url, n.incarnation) for n in self.group.nodes if n.alive() and not n.paused]

    def live(self) -> list[Node]:
        return [n for n in self.group.nodes if n.alive() and not n.paused]

    # -- the nemesis ---------------------------------------------------------------------
    async def nemesis(self) -> None:
        for pf in self.plan:
            await self._sleep_until(pf.at_s)
            await self.inject(pf)

    async def inject(self, pf: PlannedFault) -> None:
        g = self.group
        target: Node | None = None
        healthy_after: float | None = None
        if pf.fault in LEADER_FAULTS:
            # A leader fault measures a failover: first let the group be whole (every node up and
            # caught up; a node rejoining after a wipe cannot vote), so the time measured is one
            # fault's. Faults on any node still land whatever state the group is in.
            t = self.now()
            if await g.wait_caught_up(HEALTHY_LAG_ENTRIES, leader_fault_wait_s(t, self.cfg.duration_s,
                                                                                pf.duration_s)):
                healthy_after = round(self.now() - t, 3)
        if pf.fault in LEADER_FAULTS or (pf.fault == "partition" and pf.shape == "isolate-leader"):
            target = await g.wait_leader(5.0)
            why = "no leader within 5 s"
        else:
            live = self.live()
            if pf.fault == "kill-all":  # every node is the target; op.node lists those killed
                live = [n for n in g.nodes if n.alive()]
            target = g.by_id[pick([n.id for n in live], pf.pick)] if live else None
            why = "no live node"
        if target is None:
            self.h.event("nemesis", FAULT, FAIL, value=pf.fault, detail={"why": why, "planned_at": pf.at_s})
            return
        op = self.h.invoke("nemesis", FAULT, value=pf.fault, node=target.id, detail={"planned_at": pf.at_s})
        if pf.fault in LEADER_FAULTS:
            op.detail["group_whole_after_s"] = healthy_after  # type: ignore[index]  # None: not within the wait
        self.last_fault = f"{pf.fault}({target.id})"
        detail: dict[str, Any] = {}
        try:
            if pf.fault in KILL_FAULTS:
                commit: int | None = None
                if pf.fault == "corrupt":  # what the node says is committed, asked just before the kill
                    h = await g.health(target)
                    commit = int(h["commit_index"]) if h and h.get("commit_index") is not None else None
                await g.kill(target)
                if pf.fault == "torn-tail":
                    detail["torn"] = await asyncio.to_thread(g.tear_tail, target, pf.tear_bytes, pf.corrupt,
                                                             int(pf.pick * 1e6))
                elif pf.fault == "wipe":
                    await asyncio.to_thread(g.wipe, target)
                    detail["rejoin_flag"] = g.rejoin_wiped
                elif pf.fault == "corrupt":
                    if commit is None:
                        last = damage.index_range(target.data_dir / "dledger")[1]
                        commit = last - UNKNOWN_COMMIT_MARGIN_ENTRIES
                        detail["committed_by"] = f"last index {last} - {UNKNOWN_COMMIT_MARGIN_ENTRIES}"
                    else:
                        detail["committed_by"] = "the node's commit index before the kill"
                    detail["damage"] = await asyncio.to_thread(g.corrupt_entry, target, commit, pf.how,
                                                               pf.damage_seed)
                elif pf.fault == "corrupt-derived":
                    detail["damage"] = await asyncio.to_thread(g.corrupt_derived, target, str(pf.target),
                                                               str(pf.how), pf.damage_seed)
                await asyncio.sleep(pf.duration_s)
                g.start(target)  # a wiped node comes back with no flag unless rejoin_wiped
            elif pf.fault == "forge":
                started = self.now()
                urls = [n.http_url for n in g.nodes if n.alive()]
                detail["forge"] = await asyncio.to_thread(forge_fault.forge_once, urls, target.id)
                await self._sleep_until(started + pf.duration_s)
            elif pf.fault == "kill-all":
                killed = await g.kill_all()
                op.node = ",".join(killed)
                detail["killed"] = killed
                await asyncio.sleep(pf.duration_s)
                for nid in killed:
                    g.start(g.by_id[nid])
            elif pf.fault in ("pause-leader", "pause"):
                g.pause(target)
                await asyncio.sleep(pf.duration_s)
                g.resume(target)
            elif pf.fault == "partition":
                groups = self._partition_groups(pf, target)
                detail["shape"] = pf.shape
                detail["sides"] = [[n.id for n in grp] for grp in groups]
                detail["cut"] = await g.partition(groups)
                op.invoke = self.now()  # in effect once every rule is in (a few ms of iptables calls)
                op.node = ",".join(sorted({n.id for grp in groups for n in grp} if pf.shape != "isolate-leader"
                                          else {target.id}))
                await asyncio.sleep(pf.duration_s)
                await g.heal_network()
            else:
                raise RunError(f"unknown fault {pf.fault}")
        except asyncio.CancelledError:
            self.h.complete(op, OK, detail={**(op.detail or {}), **detail, "cut_short": True})
            raise
        self.h.complete(op, OK, detail={**(op.detail or {}), **detail})
        self.injected += 1

    def _partition_groups(self, pf: PlannedFault, leader: Node) -> list[list[Node]]:
        nodes = sorted(self.group.nodes, key=lambda n: n.id)
        rng = random.Random(int(pf.pick * 1e6))
        if pf.shape == "isolate-leader":
            return [[leader], [n for n in nodes if n is not leader]]
        rng.shuffle(nodes)
        if pf.shape == "halves":
            half = len(nodes) // 2
            return [nodes[:half], nodes[half:]]
        # A majority ring: each node sees only its ring neighbours. With 5 nodes each sees a
        # majority (itself and two neighbours), no two the same one; with 3, one node bridges two
        # that cannot see each other.
        if len(nodes) == 3:
            return [[nodes[0], nodes[1]], [nodes[1], nodes[2]]]
        return [[nodes[i], nodes[(i + 1) % len(nodes)]] for i in range(len(nodes))]

    async def wipe_majority(self) -> None:
        """Kill every node, wipe a majority's data, bring back only that majority."""
        g = self.group
        await asyncio.sleep(max(1.0, self.cfg.duration_s / 2 - self.now()))
        order = sorted(g.nodes, key=lambda n: n.id)
        majority = order[: len(order) // 2 + 1]
        op = self.h.invoke("nemesis", FAULT, value="wipe-majority", node=",".join(n.id for n in majority))
        self.last_fault = f"wipe-majority({op.node})"
        for n in g.nodes:
            await g.kill(n)
        for n in majority:
            await asyncio.to_thread(g.wipe, n)
            # As if the operator did not know: they bootstrap a new, empty group.
            g.start(n, rejoin=False, bootstrap=True)
        self.left_down = {n.id for n in order[len(majority):]}
        if await g.wait_leader(30) is not None:
            try:
                await create_topic([n.http_url for n in majority], deadline_s=30)
            except Exception as exc:  # noqa: BLE001 - recorded; the check will show the damage
                log.warning("recreating the topic after the wipe failed: %s", exc)
        self.h.complete(op, OK, detail={"wiped": [n.id for n in majority], "left_down": sorted(self.left_down)})
        self.injected += 1

    # -- watchers --------------------------------------------------------------------------
    async def watch_crashes(self) -> None:
        while True:
            for node, rc in self.group.crashed():
                tail = self.group.log_tail(node)
                self.h.event("nemesis", CRASH, value=str(rc), node=node.id, detail={"log_tail": tail[-2000:]})
                log.warning("node %s exited by itself with status %s", node.id, rc)
            await asyncio.sleep(0.2)

    async def progress(self) -> None:
        tty = sys.stderr.isatty()
        last_print = -1e9
        while True:
            wl = self.workload
            line = (f"t={self.now():4.0f}s acked={wl.acked if wl else 0} unknown={wl.unknown if wl else 0} "
                    f"failed={wl.failed if wl else 0} delivered={wl.delivered if wl else 0} "
                    f"faults={self.injected}/{len(self.plan) or 1} last={self.last_fault}")
            if tty:
                sys.stderr.write("\r" + line.ljust(110)[:160])
                sys.stderr.flush()
            elif self.now() - last_print >= 10:
                sys.stderr.write(line + "\n")
                sys.stderr.flush()
                last_print = self.now()
            await asyncio.sleep(1.0)

    # -- the end of a run --------------------------------------------------------------------
    async def heal_all(self) -> None:
        g = self.group
        await g.heal_network()
        for n in g.nodes:
            g.resume(n)
            if not n.alive() and n.id not in self.left_down:
                g.start(n)

    async def converge(self) -> bool:
        """Every running node answers, one leader, one applied index equal to the commit index."""
        g = self.group
        expected = [n for n in g.nodes if n.id not in self.left_down]
        end = self.now() + self.cfg.converge_timeout_s
        stable = 0
        last: dict[str, Any] = {}
        while self.now() < end:
            hs = await g.healths()
            last = {n.id: hs.get(n.id) for n in expected}
            answers = [h for h in last.values() if h]
            if (len(answers) == len(expected) and sum(1 for h in answers if h.get("role") == "leader") == 1
                    and len({(h.get("applied_index"), h.get("commit_index")) for h in answers}) == 1
                    and answers[0].get("applied_index") == answers[0].get("commit_index")):
                stable += 1
                if stable >= 3:
                    self.h.event("runner", CONVERGE, OK, detail={"applied_index": answers[0].get("applied_index")})
                    return True
            else:
                stable = 0
            await asyncio.sleep(0.3)
        seen = {nid: (None if h is None else {k: h.get(k) for k in ("role", "term", "commit_index", "applied_index")})
                for nid, h in last.items()}
        self.h.event("runner", CONVERGE, FAIL, detail={"after_s": self.cfg.converge_timeout_s, "nodes": seen})
        return False

    async def wait_consumed(self) -> None:
        assert self.workload is not None
        if not self.workload.cfg.push_consumers:
            return
        # After a majority lost its data the group's offsets are gone too: do not wait long.
        timeout_s = min(self.cfg.consume_timeout_s, 10.0) if self.cfg.wipe_majority else self.cfg.consume_timeout_s
        end = self.now() + timeout_s
        zero = 0
        while self.now() < end:
            lag = await self.workload.push_lag()
            zero = zero + 1 if lag == 0 else 0
            if zero >= 2:
                return
            await asyncio.sleep(0.5)
        log.warning("the push group did not catch up within %ss", timeout_s)

    # -- the run ------------------------------------------------------------------------------
    async def main(self) -> RunResult:
        logging.getLogger("client").setLevel(logging.CRITICAL)  # retries and failovers are the point here
        g = self.group
        background: list[asyncio.Task[None]] = []
        contents: dict[str, dict[tuple[int, int], str]] = {}
        unreadable: dict[str, dict[tuple[int, int], str]] = {}  # per node: offsets it answered with an error
        unread: dict[str, str] = {}  # nodes that could not be read at all, and why
        lookups: dict[str, dict[str, Any]] = {}  # per node: key -> positions found, or the error
        wl: Workload | None = None
        try:
            g.start_all()
            background.append(asyncio.create_task(self.watch_crashes()))
            if self.cfg.progress:
                background.append(asyncio.create_task(self.progress()))
            if await g.wait_leader(30) is None:
                raise RunError(f"no leader elected within 30 s; node logs under {self.base}")
            for n in g.nodes:  # a group short of a node from the start is not the group the run is about
                rc = n.proc.poll() if n.proc is not None else None
                if rc is not None:
                    raise RunError(f"node {n.id} exited with status {rc} before the group was ready "
                                   f"(a port taken?); its log ends: {g.log_tail(n)[-600:]}".replace("\n", " | "))
            await create_topic(g.urls)
            wl = self.workload = Workload(self.h, g.urls, {n.http_url: n.id for n in g.nodes}, self.targets,
                                          self.cfg.workload)
            await wl.start()
            nemesis = asyncio.create_task(self.wipe_majority() if self.cfg.wipe_majority else self.nemesis())
            await self._sleep_until(self.cfg.duration_s)
            try:
                await asyncio.wait_for(nemesis, timeout=max(5.0, self.cfg.fault_s * 2))
            except asyncio.TimeoutError:
                pass  # cancelled by wait_for; healing below undoes whatever it was doing
            await self.heal_all()
            await wl.stop_sending(timeout_s=self.cfg.workload.send_deadline_ms / 1000 + 5)
            await self.converge()
            await self.wait_consumed()
            wl.reading.clear()
            await wl.stop_consumers()
            await self.converge()  # the consumers' last commits are in; read offsets from everyone
            await wl.read_offsets(final=True)
            keys = self.lookup_keys()
            for n in g.nodes:
                if n.id in self.left_down:
                    unread[n.id] = "left down by the fault"
                    continue
                if not (n.alive() and not n.paused):
                    unread[n.id] = "not running at the end" + (f" (exit status {n.proc.returncode})"
                                                                 if n.proc is not None else "")
                    continue
                try:
                    contents[n.id], unreadable[n.id] = await wl.drain(n.http_url)
                    lookups[n.id] = await wl.lookup(n.http_url, keys)
                except Exception as exc:  # noqa: BLE001 - a node that cannot be read is reported, not fatal
                    if n.id not in contents:
                        unread[n.id] = f"could not be read: {exc}"[:300]
                    log.warning("could not read %s: %s", n.id, exc)
        finally:
            for t in background:
                t.cancel()
            await asyncio.gather(*background, return_exceptions=True)
            if wl is not None:
                await wl.stop()
            try:
                await g.heal_network()
            finally:
                await g.stop_all()
                await g.close()
            if self.cfg.progress:
                sys.stderr.write("\n")
        self.h.finish_pending()
        logs = await asyncio.to_thread(self.read_logs)
        for node, rc in g.crashed():  # died between the last watch and the stop
            self.h.event("nemesis", CRASH, value=str(rc), node=node.id, detail={"log_tail": g.log_tail(node)[-2000:]})
        result = check(self.h, contents, non_idempotent=wl.non_idempotent() if wl else (), unread=unread,
                       unreadable=unreadable, lookups=lookups, logs=logs)
        avail = availability(self.h)
        reasons = []
        if result.anomalies:
            counts = ", ".join(f"{k} {v}" for k, v in result.counts().items() if v)
            reasons.append(f"{result.anomalies} anomalies ({counts})")
        injected = [o for o in self.h.of(FAULT) if o.outcome == OK]
        planned = 1 if self.cfg.wipe_majority else len(self.plan)
        if not injected:
            reasons.append("no fault was injected")
        elif len(injected) < planned:
            reasons.append(f"only {len(injected)} of {planned} planned faults were injected")
        if result.acknowledged == 0:
            reasons.append("no send was acknowledged")
        for nid, pn in result.per_node.items():
            if pn["acked_missing"] or not pn["read"] or pn["lookup_failed"]:
                why = f" ({pn['why']})" if not pn["read"] else ""
                reasons.append(f"{nid}: {pn['acked_missing']} of {result.acknowledged} acknowledged messages missing"
                               + (f", {pn['unreadable']} offsets answered with an error" if pn["unreadable"] else "")
                               + (f", {pn['lookup_failed']} of {pn['lookups']} lookups by key failed"
                                  if pn["lookup_failed"] else "")
                               + why)
        nodes = [{"id": n.id, "http_url": n.http_url, "raft_addr": n.raft_addr, "log": str(n.log_path),
                  "data_dir": str(n.data_dir), "starts": n.incarnation} for n in g.nodes]
        return RunResult(self.cfg, self.plan, self.h, result, avail, self.partitions, nodes, str(self.base), reasons,
                         self.started_at, self.now())

    def read_logs(self) -> dict[str, dict[int, Any]]:
        """Every stopped node's Raft log up to the commit index the group converged
        on (``chaos.damage.log_entries``); nothing when it never converged (which
        is reported already) and nothing for nodes a fault left down."""
        upto = max((int((o.detail or {}).get("applied_index") or 0) for o in self.h.of(CONVERGE)
                    if o.outcome == OK), default=0)
        if upto <= 0:
            return {}
        return {n.id: damage.log_entries(n.data_dir / "dledger", upto) for n in self.group.nodes
                if n.id not in self.left_down and (n.data_dir / "dledger").is_dir()}

    def lookup_keys(self) -> list[str]:
        """The keys to look up on every node at the end (bodies are keys): a sample of
        the acknowledged messages drawn from the seed, and those whose key hash (or
        hash slot) an IndexFile bit flip hit (``chaos.damage.damage_index_file``
        records both, with ``key_hash`` = crc32 of the UTF-8 key)."""
        acked = sorted(o.value for o in self.h.of(SEND) if o.outcome == OK and o.value is not None)
        rng = random.Random(self.cfg.seed ^ 0x10C0)
        keys = set(rng.sample(acked, min(LOOKUP_SAMPLE, len(acked))))
        hit: list[tuple[int, int, int]] = []  # (key_hash, slot, slot_count) of each IndexFile flip
        for o in self.h.of(FAULT):
            d = ((o.detail or {}).get("damage") or {}) if o.value == "corrupt-derived" else {}
            if d.get("target") == "indexfile" and d.get("key_hash") is not None:
                hit.append((int(d["key_hash"]), int(d["slot"]), int(d["slot_count"])))
        if hit:
            targeted = [b for b in acked if any((h := zlib.crc32(b.encode())) == kh or h % n == slot
                                                for kh, slot, n in hit)]
            keys.update(targeted[:LOOKUP_TARGETED_MAX])
        return sorted(keys)

    def cleanup(self, passed: bool) -> None:
        """Remove the temporary data directory of a passing run (a failing one is kept to look at)."""
        if passed and self.own_base and not self.cfg.keep_data:
            shutil.rmtree(self.base, ignore_errors=True)


def run(cfg: RunConfig) -> tuple[Run, RunResult]:
    """Carry out a run in a fresh event loop; SIGTERM stops it like Ctrl-C does."""
    r = Run(cfg)

    async def guarded() -> RunResult:
        task = asyncio.current_task()
        loop = asyncio.get_running_loop()
        assert task is not None
        loop.add_signal_handler(signal.SIGTERM, task.cancel)
        try:
            return await r.main()
        finally:
            loop.remove_signal_handler(signal.SIGTERM)

    try:
        return r, asyncio.run(guarded())
    except BaseException:
        r.group.stop_all_now()
        raise


__all__ = ["Run", "RunConfig", "RunError", "RunResult", "run", "TOPIC", "QUEUES"]
