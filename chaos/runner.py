"""``raftmq chaos run``: a real group, a workload through the client, a nemesis,
then heal, converge, drain every node and check (see ``chaos.checker``).

Workload: sequential idempotent producers (``p1`` doubles as the steady sender
whose acknowledgements time the failovers), one non-idempotent producer
(``r1``, duplicates counted, not anomalies), a PushConsumer group of two
recording every delivery, and a sampler of the group's committed offsets.
"""

from __future__ import annotations

import asyncio
import random
import sys
import tempfile
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from chaos.checker import CheckResult, check, failover_times
from chaos.history import History, Op
from chaos.nemesis import Group, Node, http_json, in_private_netns, partitions_possible
from client import Admin, Producer, PushConsumer
from client.errors import RaftMQError, Rejected, Timeout

TOPIC = "chaos"
QUEUES = 4
GROUP = "chaos-group"
ALL_FAULTS = ("kill-leader", "kill", "pause-leader", "pause", "torn-tail", "wipe", "partition")
DEFAULT_FAULTS = ("kill-leader", "pause-leader", "kill", "torn-tail", "partition")


@dataclass
class RunConfig:
    duration_s: float = 60.0
    interval_s: float = 5.0  # between the start of one fault and the next
    fault_s: float = 2.0  # how long a pause or partition lasts, or a killed node stays down
    faults: tuple[str, ...] = DEFAULT_FAULTS
    nodes: int = 3
    flush: str = "async"
    seed: int = 0
    producers: int = 3
    base_dir: str | None = None
    out_dir: str = "."
    progress: bool = True
    wipe_majority: bool = False  # a fault no Raft group survives: proves the checker can fail
    cycle: bool = False  # take the faults in turn instead of drawing them at random

    def __post_init__(self) -> None:
        unknown = set(self.faults) - set(ALL_FAULTS)
        if unknown:
            raise ValueError(f"faults: unknown {', '.join(sorted(unknown))}; choose from {', '.join(ALL_FAULTS)}")
        if self.nodes not in (3, 5):
            raise ValueError("nodes: 3 or 5")
        if self.duration_s <= 0 or self.interval_s <= 0 or self.fault_s <= 0:
            raise ValueError("duration, interval and fault time must be positive")


@dataclass
class RunResult:
    config: RunConfig
    check: CheckResult
    history: History
    faults: list[dict[str, Any]] = field(default_factory=list)
    failovers: list[dict[str, Any]] = field(default_factory=list)
    partitions_skipped: str = ""
    exit_code: int = 0
    base_dir: str = ""


class Run:
    def __init__(self, cfg: RunConfig) -> None:
        self.cfg = cfg
        self.rng = random.Random(cfg.seed)
        self.t0 = time.monotonic()
        self.h = History()
        self.stop = asyncio.Event()
        ok, why = partitions_possible()
        self.partitions = "partition" in cfg.faults and ok and in_private_netns()
        self.partitions_skipped = "" if self.partitions or "partition" not in cfg.faults else (
            why or "partitions need the run inside a private network namespace")
        base = Path(cfg.base_dir or tempfile.mkdtemp(prefix="raftmq-chaos-"))
        self.group = Group(base, cfg.nodes, cfg.flush, distinct_hosts=self.partitions)
        self.acked = 0
        self.last_fault = "-"

    def now(self) -> float:
        return time.monotonic() - self.t0

    # -- workload ---------------------------------------------------------------
    async def producer(self, name: str, idempotent: bool) -> None:
        urls = [n.http_url for n in self.group.nodes]
        async with Producer(urls, idempotent=idempotent, linger_ms=0, deadline_ms=8000, request_timeout_ms=2000) as p:
            n = 0
            while not self.stop.is_set():
                body = f"{name}-{n}"
                op = self.h.add(Op(name, "send", self.now(), value=body))
                try:
                    r = await p.send(TOPIC, body)
                    op.outcome, op.queue_id, op.offset = "ok", r.queue_id, r.queue_offset
                    self.acked += 1
                except Rejected as exc:
                    op.outcome, op.detail = "fail", {"error": str(exc)}
                except (Timeout, RaftMQError, OSError) as exc:
                    op.outcome, op.detail = "info", {"error": str(exc)}
                op.complete = self.now()
                n += 1

    async def consumers(self) -> list[PushConsumer]:
        urls = [n.http_url for n in self.group.nodes]

        def handler(m: Any) -> None:
            self.h.add(Op(GROUP, "deliver", self.now(), self.now(), "ok", m.body.decode(), m.queue_id, m.queue_offset))

        cs = [PushConsumer(urls, GROUP, TOPIC, handler, from_where="beginning", heartbeat_interval_ms=500,
                           handler_in_thread=False)
              for _ in range(2)]
        for c in cs:
            await c.start()
        return cs

    async def sample_offsets(self) -> None:
        while not self.stop.is_set():
            await asyncio.sleep(0.5)
            leader = await asyncio.to_thread(self.group.leader)
            if leader is None:
                continue
            h = await asyncio.to_thread(self.group.health, leader)
            status, body = await asyncio.to_thread(http_json, "GET",
                                                   f"{leader.http_url}/v1/groups/{GROUP}/offsets?topic={TOPIC}")
            if status != 200 or not h or h["applied_index"] < h["commit_index"]:
                continue
            for o in body["offsets"]:
                if o["offset"] is not None:
                    self.h.add(Op(GROUP, "commit", self.now(), self.now(), "ok", None, o["queue_id"], o["offset"],
                                  leader.id))

    # -- nemesis ----------------------------------------------------------------
    def pick(self, role: str) -> Node | None:
        live = [n for n in self.group.nodes if n.alive() and not n.paused]
        if role == "leader":
            return self.group.leader()
        return self.rng.choice(live) if live else None

    async def fault(self, name: str) -> None:
        g, rng = self.group, self.rng
        node = self.pick("leader" if name.endswith("-leader") else "any")
        if node is None:
            return
        op = self.h.add(Op("nemesis", "fault", self.now(), value=name, node=node.id))
        self.last_fault = f"{name}({node.id})"
        if name in ("kill-leader", "kill", "torn-tail", "wipe"):
            await asyncio.to_thread(g.kill, node)
            if name == "torn-tail":
                op.detail["torn"] = await asyncio.to_thread(g.tear_tail, node, rng)
            if name == "wipe":
                await asyncio.to_thread(g.wipe, node)
            await asyncio.sleep(self.cfg.fault_s)
            await asyncio.to_thread(g.start, node, name == "wipe")
        elif name in ("pause-leader", "pause"):
            await asyncio.to_thread(g.pause, node)
            await asyncio.sleep(self.cfg.fault_s)
            await asyncio.to_thread(g.resume, node)
        elif name == "partition":
            kind = rng.choice(["isolate-leader", "halves"] + (["ring"] if len(g.nodes) == 5 else []))
            nodes = list(g.nodes)
            if kind == "isolate-leader":
                parts = [[node], [n for n in nodes if n is not node]]
            elif kind == "halves":
                rng.shuffle(nodes)
                parts = [nodes[: len(nodes) // 2], nodes[len(nodes) // 2:]]
            else:  # each node sees its two neighbours: every majority is different
                parts = [[nodes[i], nodes[(i + 1) % 5], nodes[(i + 2) % 5]] for i in range(5)]
            op.detail["partition"] = kind
            await asyncio.to_thread(g.partition, parts)
            await asyncio.sleep(self.cfg.fault_s)
            await asyncio.to_thread(g.heal)
        op.complete = self.now()

    async def nemesis(self) -> None:
        faults = [f for f in self.cfg.faults if f != "partition" or self.partitions]
        k = 0
        while self.now() < self.cfg.duration_s - self.cfg.fault_s - 1:
            await asyncio.sleep(self.cfg.interval_s - self.cfg.fault_s)
            if self.now() >= self.cfg.duration_s - self.cfg.fault_s - 1:
                break
            await self.fault(faults[k % len(faults)] if self.cfg.cycle else self.rng.choice(faults))
            k += 1

    async def progress(self) -> None:
        while not self.stop.is_set():
            faults = len(self.h.of("fault"))
            sys.stderr.write(f"\rt={self.now():5.0f}s acked={self.acked} faults={faults} last={self.last_fault}   ")
            sys.stderr.flush()
            await asyncio.sleep(1)

    async def wipe_majority(self) -> None:
        """Kill every node, wipe a majority's data and bring back only that majority."""
        g = self.group
        await asyncio.sleep(self.cfg.duration_s / 2)
        op = self.h.add(Op("nemesis", "fault", self.now(), value="wipe-majority"))
        for n in g.nodes:
            await asyncio.to_thread(g.kill, n)
        majority = g.nodes[: len(g.nodes) // 2 + 1]
        for n in majority:
            await asyncio.to_thread(g.wipe, n)
            await asyncio.to_thread(g.start, n)
        op.node, op.complete = ",".join(n.id for n in majority), self.now()
        self.last_fault = "wipe-majority"
        # The new majority starts empty: recreate the topic so writes go on.
        urls = [n.http_url for n in majority]
        deadline = time.monotonic() + 30
        while time.monotonic() < deadline:
            try:
                async with Admin(urls, deadline_ms=3000) as a:
                    await a.create_topic(TOPIC, QUEUES)
                return
            except RaftMQError:
                await asyncio.sleep(0.3)

    # -- the run ------------------------------------------------------------------
    async def main(self) -> RunResult:
        import logging

        logging.getLogger("client").setLevel(logging.ERROR)  # retries through faults are expected here
        g = self.group
        g.start_all()
        try:
            await asyncio.to_thread(g.wait_leader, 30)
            async with Admin([n.http_url for n in g.nodes]) as a:
                await a.create_topic(TOPIC, QUEUES)
            consumers = await self.consumers()
            tasks = [asyncio.create_task(self.producer(f"p{i + 1}", True)) for i in range(self.cfg.producers)]
            tasks.append(asyncio.create_task(self.producer("r1", False)))
            tasks.append(asyncio.create_task(self.sample_offsets()))
            if self.cfg.progress:
                tasks.append(asyncio.create_task(self.progress()))
            chaos = asyncio.create_task(self.wipe_majority() if self.cfg.wipe_majority else self.nemesis())
            await asyncio.sleep(self.cfg.duration_s)
            await chaos
            self.stop.set()
            await asyncio.gather(*tasks, return_exceptions=True)
            # Heal, bring every node back (except what wipe-majority left down) and converge.
            await asyncio.to_thread(g.heal)
            if not self.cfg.wipe_majority:
                for n in g.nodes:
                    await asyncio.to_thread(g.start, n)
            await self._until(lambda: g.converged(), 60, "the group to converge")
            await self._until(lambda: self._consumed_all(), 30, "the consumer group to catch up")
            for c in consumers:
                await c.stop()
            live = [n for n in g.nodes if n.alive()]
            contents = {n.id: await asyncio.to_thread(g.drain, n, TOPIC, QUEUES) for n in live}
            result = check(self.h, contents, idempotent={f"p{i + 1}" for i in range(self.cfg.producers)},
                           push_groups=not self.cfg.wipe_majority)
        finally:
            self.stop.set()
            await asyncio.to_thread(g.heal) if g.partitioned else None
            await asyncio.to_thread(g.stop_all)
            if self.cfg.progress:
                sys.stderr.write("\n")
        faults = [{"at": round(o.invoke, 2), "fault": o.value, "node": o.node, **o.detail} for o in self.h.of("fault")]
        res = RunResult(self.cfg, result, self.h, faults, failover_times(self.h, "p1"), self.partitions_skipped,
                        base_dir=str(g.base))
        res.exit_code = 0 if (result.ok and faults) else 1
        return res

    def _consumed_all(self) -> bool:
        leader = self.group.leader()
        if leader is None:
            return False
        status, body = http_json("GET", f"{leader.http_url}/v1/groups/{GROUP}/lag?topic={TOPIC}")
        return status == 200 and body["lag"] == 0

    async def _until(self, cond: Any, timeout_s: float, what: str) -> None:
        end = time.monotonic() + timeout_s
        while time.monotonic() < end:
            if await asyncio.to_thread(cond):
                return
            await asyncio.sleep(0.2)
        sys.stderr.write(f"\nchaos: timed out waiting for {what}\n")


def run(cfg: RunConfig) -> RunResult:
    return asyncio.run(Run(cfg).main())
