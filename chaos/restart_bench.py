"""``raftmq chaos restart-bench``: how long a node takes to come back.

Fills a real local 3-node group with ``--log-mib`` of log through the raw
load generator of ``client.local.bench`` (1 KiB messages, 128 per request, each
with a key so that the IndexFile is exercised), waits until every node has
applied everything, then SIGKILLs one follower and restarts it, three ways:

- ``clean``: its checkpoint and derived files are whole (the start verifies
  them, scrubs the whole log, and re-applies what came after the checkpoint);
- ``derived-damaged``: one ConsumeQueue file deleted, one IndexFile bit
  flipped and the checkpoint cut short (``chaos.damage``), so the node
  rebuilds every ConsumeQueue, IndexFile and the applied state from the log;
- ``log-damaged``: a bit of a committed log entry flipped, so the scrub finds
  it and the node repairs it from a peer.

For each it prints the time from the process start until the node answers
``/v1/health`` (serving) and until it has applied every entry it held before
the kill and, for ``log-damaged``, repaired the entry (caught up), with the
node's own log lines for the rebuild or repair.
"""

from __future__ import annotations

import asyncio
import random
import re
import shutil
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from raftmq.client.local.bench import produce

from raftmq.chaos import damage
from raftmq.chaos.nemesis import Group, Node

TOPIC = "restart-bench"
QUEUES = 8
MESSAGE_BYTES = 1024
VARIANTS = ("clean", "derived-damaged", "log-damaged")


@dataclass(slots=True, frozen=True)
class Restart:
    variant: str
    log_mib: float
    applied_index: int
    serving_s: float
    caught_up_s: float
    node_says: str  # the node's own lines about what it verified, rebuilt or repaired


def _log_bytes(node: Node) -> int:
    return sum(p.stat().st_size for p in (node.data_dir / "dledger" / "commitlog").iterdir())


async def _applied(g: Group, node: Node) -> int:
    h = await g.health(node)
    return int(h["applied_index"]) if h else -1


async def _fill(g: Group, log_bytes: int, echo: Any) -> None:
    probe = g.nodes[0]
    while _log_bytes(probe) < log_bytes:
        r = await produce(g.urls, TOPIC, QUEUES, 128, 4, 2.0, MESSAGE_BYTES, g.flush, keyed=True)
        echo(f"  filled {_log_bytes(probe) / (1 << 20):,.0f} MiB of log ({r.messages_per_s:,.0f} msg/s)")


async def _wait_applied_everywhere(g: Group, timeout_s: float) -> int:
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        applied = {await _applied(g, n) for n in g.nodes}
        if len(applied) == 1 and -1 not in applied:
            return applied.pop()
        await asyncio.sleep(0.2)
    raise RuntimeError("the group did not converge")


def _damage(node: Node, variant: str, applied: int, rng: random.Random) -> None:
    if variant == "derived-damaged":
        damage.damage_derived(node.data_dir, rng, "consumequeue", "delete")
        damage.damage_derived(node.data_dir, rng, "indexfile", "flip")
        damage.damage_derived(node.data_dir, rng, "checkpoint", "truncate")
    elif variant == "log-damaged":
        damage.corrupt_log_entry(node.data_dir, rng, max_index=applied, region="body")


_SAYS = re.compile(r"event=(rebuild_derived\S*|checkpoint_loaded|open|entry_repaired|damaged_entry)\b.*")


def _log_since(node: Node, mark: int) -> str:
    with open(node.log_path, "rb") as f:
        f.seek(mark)
        return f.read().decode(errors="replace")


async def _restart(g: Group, node: Node, variant: str, rng: random.Random) -> Restart:
    applied = await _wait_applied_everywhere(g, 120)
    log_mib = _log_bytes(node) / (1 << 20)
    await g.kill(node)
    _damage(node, variant, applied, rng)
    mark = node.log_path.stat().st_size
    t0 = time.monotonic()
    g.start(node)
    serving = caught_up = None
    # A damaged entry below the checkpoint is repaired from a peer in the
    # background while the node already serves: it is back only once repaired.
    repaired = variant != "log-damaged"
    while caught_up is None and time.monotonic() - t0 < 600:
        a = await _applied(g, node)
        now = time.monotonic() - t0
        if a >= 0 and serving is None:
            serving = now
        repaired = repaired or "event=entry_repaired" in _log_since(node, mark)
        if a >= applied and repaired:
            caught_up = now
        await asyncio.sleep(0.02)
    if serving is None or caught_up is None:
        raise RuntimeError(f"{node.id} did not come back within 600 s ({variant})")
    says = "; ".join(m.group(0)[:160] for line in _log_since(node, mark).splitlines() if (m := _SAYS.search(line)))
    return Restart(variant, round(log_mib, 1), applied, round(serving, 2), round(caught_up, 2), says)


async def run(log_mib: int, flush: str, variants: tuple[str, ...], seed: int, echo: Any) -> list[Restart]:
    base = Path(tempfile.mkdtemp(prefix="raftmq-restart-bench-"))
    g = Group(base, 3, flush, distinct_hosts=False, segment_bytes=1 << 30, checkpoint_interval_ms=1000)
    rng = random.Random(seed)
    try:
        g.start_all()
        if await g.wait_leader(30) is None:
            raise RuntimeError("no leader elected")
        echo(f"filling {log_mib} MiB of log ...")
        await _fill(g, log_mib << 20, echo)
        out = []
        for variant in variants:
            leader = await g.wait_leader(30)
            node = next(n for n in g.nodes if n is not leader)
            r = await _restart(g, node, variant, rng)
            echo(f"{r.variant:16s} log={r.log_mib:,.0f} MiB applied_index={r.applied_index:,} "
                 f"serving after {r.serving_s:.2f} s, caught up after {r.caught_up_s:.2f} s\n    {r.node_says}")
            out.append(r)
        return out
    finally:
        await g.stop_all()
        await g.close()
        shutil.rmtree(base, ignore_errors=True)
