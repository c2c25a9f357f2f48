"""The log benchmark: a 3-process group on loopback, 1 KiB proposals.

    python -m raftmq.dledger.tools.bench [--flush async,sync] [--duration 5] [--outstanding 1000]
                            [--baseline pysyncobj] [--json]
    raftmq bench log ...      (the same, through the command line)

For each engine and flush policy it starts three node processes
(``dledger.tools.kvnode``, or ``dledger.tools.bench_pysyncobj`` for the baseline) in a
temporary directory, waits for a leader, and measures on the leader:

- *throughput*: ``--outstanding`` proposals kept in flight over
  ``--connections`` client connections (a reply immediately sends the next
  proposal), counted over ``--duration`` seconds after ``--warmup`` seconds;
- *latency*: one proposal at a time, ``--samples`` of them; p50, p99, mean.

It prints a table, or with ``--json`` one JSON object per (engine, flush)
line with ``engine``, ``flush``, ``proposals_per_s``, ``p50_ms``, ``p99_ms``
and more (CPU use of each node during the throughput run, errors seen).
Every process it started is stopped at the end, also on error or Ctrl-C.
It asserts nothing about speed.
"""

from __future__ import annotations

import asyncio
import json
import logging
import os
import shutil
import signal
import sys
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable, Sequence

import click

from raftmq.client.local.cluster import free_ports
from raftmq.client.local.supervisor import Supervisor
from raftmq.client.local.tool_command import ToolCommand
from raftmq.dledger.tools.kvnode import KvClient

log = logging.getLogger(__name__)

ENGINES = ("dledger", "pysyncobj")


@dataclass(slots=True, frozen=True)
class BenchConfig:
    """What to measure. Times in seconds, sizes in bytes."""

    flushes: tuple[str, ...] = ("async", "sync")
    duration_s: float = 5.0
    warmup_s: float = 1.0
    outstanding: int = 1000
    connections: int = 4
    latency_samples: int = 2000
    latency_max_s: float = 20.0  # stop sampling latency after this long (pysyncobj's default batching is slow)
    payload_bytes: int = 1024
    baseline: str | None = None
    base_dir: str | None = None
    profile: bool = False  # dledger nodes write cProfile stats into their data dirs

    def __post_init__(self) -> None:
        for f in self.flushes:
            if f not in ("async", "sync"):
                raise ValueError(f"flushes: {f!r} is not async or sync")
        if self.duration_s <= 0 or self.warmup_s < 0:
            raise ValueError("duration_s must be > 0 and warmup_s >= 0")
        if self.outstanding < 1 or self.connections < 1:
            raise ValueError("outstanding and connections must be at least 1")
        if self.latency_samples < 0:
            raise ValueError("latency_samples must be >= 0")
        if self.payload_bytes < 1:
            raise ValueError("payload_bytes must be at least 1")
        if self.baseline not in (None, "pysyncobj"):
            raise ValueError(f"baseline: only 'pysyncobj' is known, not {self.baseline!r}")


class LocalGroup:
    """Three node processes of one engine on 127.0.0.1, in ``base_dir``."""

    def __init__(self, engine: str, flush: str, base_dir: Path, profile: bool = False, size: int = 3,
                 variant: str = "") -> None:
        self.engine = engine
        self.variant = variant
        self.flush = flush
        self.base_dir = base_dir
        self.profile = profile
        ports = free_ports(2 * size)
        self.ids = [f"n{i + 1}" for i in range(size)]
        self.raft_addr = {nid: f"127.0.0.1:{ports[i]}" for i, nid in enumerate(self.ids)}
        self.client_addr = {nid: f"127.0.0.1:{ports[size + i]}" for i, nid in enumerate(self.ids)}
        self.supervisor = Supervisor()

    def command(self, nid: str) -> list[str]:
        data = self.base_dir / nid
        if self.engine == "pysyncobj":
            others = ",".join(a for p, a in self.raft_addr.items() if p != nid)
            return [sys.executable, "-m", "raftmq.dledger.tools.bench_pysyncobj", "--self", self.raft_addr[nid],
                    "--partners", others, "--client-addr", self.client_addr[nid], "--data-dir", str(data),
                    *(["--no-batch"] if self.variant == "nobatch" else [])]
        cmd = [sys.executable, "-m", "raftmq.dledger.tools.kvnode", "--id", nid, "--group", "bench",
               "--peers", ",".join(f"{p}={a}" for p, a in self.raft_addr.items()),
               "--client-addr", self.client_addr[nid], "--data-dir", str(data),
               "--flush", self.flush, "--log-level", "WARNING", "--bootstrap"]  # a new group each run
        if self.profile:
            cmd += ["--profile", str(self.base_dir / f"{nid}.pstats")]
        return cmd

    def log_path(self, nid: str) -> Path:
        return self.base_dir / f"{nid}.log"

    def start(self) -> None:
        self.base_dir.mkdir(parents=True, exist_ok=True)
        for nid in self.ids:
            self.supervisor.start(nid, self.command(nid), self.log_path(nid), stdout_to_log=False)

    def stop(self, timeout_s: float = 10.0) -> None:
        """SIGTERM every process, SIGKILL those still running after ``timeout_s``."""
        self.supervisor.close(timeout_s)

    def check_alive(self) -> None:
        for nid in self.ids:
            code = self.supervisor.process(nid).returncode()
            if code is not None:
                tail = self.log_path(nid).read_text(errors="replace")[-2000:]
                raise RuntimeError(f"{self.engine} node {nid} exited with {code}:\n{tail}")

    def cpu_seconds(self) -> dict[str, float]:
        """User + system CPU time of each node process so far (Linux /proc)."""
        out = {}
        tick = os.sysconf("SC_CLK_TCK")
        for nid in self.ids:
            try:
                stat = Path(f"/proc/{self.supervisor.process(nid).pid}/stat").read_text()
                fields = stat.rsplit(")", 1)[1].split()
                out[nid] = (int(fields[11]) + int(fields[12])) / tick
            except (OSError, IndexError, ValueError):
                out[nid] = float("nan")
        return out

    async def wait_leader(self, timeout_s: float = 30.0) -> str:
        """The id of the node that is leader and accepts a proposal."""
        deadline = time.monotonic() + timeout_s
        last_err: Exception | None = None
        while time.monotonic() < deadline:
            self.check_alive()
            for nid in self.ids:
                try:
                    async with KvClient(self.client_addr[nid]) as c:
                        st = await asyncio.wait_for(c.status(), 2.0)
                        if st.get("role") == "leader":
                            kind, value = await asyncio.wait_for(c.propose(b"\x00warmup"), 5.0)
                            if kind == "ok":
                                return nid
                            last_err = RuntimeError(f"warm-up proposal on {nid}: {kind} {value}")
                except (OSError, asyncio.TimeoutError) as exc:
                    last_err = exc
            await asyncio.sleep(0.1)
        raise TimeoutError(f"no {self.engine} leader within {timeout_s} s (last error: {last_err!r})")


async def measure_throughput(addr: str, cfg: BenchConfig, payload: bytes,
                             cpu_seconds: Callable[[], dict[str, float]] | None = None) -> dict[str, Any]:
    """Keep ``cfg.outstanding`` proposals in flight; count the acks in the window.
    With ``cpu_seconds`` (CPU time per process so far), also the CPU each
    process spent per acknowledged proposal in the window (``cpu_us_per_proposal``)
    and its share of a core (``cpu_pct``): on a busy machine these say more
    than the rate alone."""
    clients = [await KvClient(addr).connect() for _ in range(cfg.connections)]
    counts = {"ok": 0, "other": 0}
    state = {"running": True}
    other_kinds: dict[str, int] = {}

    def make_callback(client: KvClient) -> Any:
        request = ["propose", payload]

        def on_reply(kind: str, value: Any) -> None:
            if kind == "ok":
                counts["ok"] += 1
            else:
                counts["other"] += 1
                other_kinds[kind] = other_kinds.get(kind, 0) + 1
                if kind == "connection_lost":
                    return
            if state["running"]:
                client.send(request, on_reply)

        return on_reply

    try:
        for i in range(cfg.outstanding):
            c = clients[i % len(clients)]
            c.send(["propose", payload], make_callback(c))
        await asyncio.sleep(cfg.warmup_s)
        cpu0 = cpu_seconds() if cpu_seconds else {}
        own0 = time.process_time()
        ok0, t0 = counts["ok"], time.perf_counter()
        await asyncio.sleep(cfg.duration_s)
        ok1, t1 = counts["ok"], time.perf_counter()
        cpu1 = cpu_seconds() if cpu_seconds else {}
        own1 = time.process_time()
        state["running"] = False
        deadline = time.monotonic() + 30
        while any(c.in_flight for c in clients) and time.monotonic() < deadline:
            await asyncio.sleep(0.05)
    finally:
        for c in clients:
            await c.close()
    acked, window = ok1 - ok0, t1 - t0
    used = {k: cpu1[k] - cpu0[k] for k in cpu0}
    used["client"] = own1 - own0
    return {
        "proposals_per_s": round(acked / window, 1),
        "acked_in_window": acked,
        "window_s": round(window, 3),
        "errors": dict(other_kinds),
        "cpu_pct": {k: round(100 * v / window, 1) for k, v in used.items()},
        "cpu_us_per_proposal": {k: round(1e6 * v / acked, 1) if acked else None for k, v in used.items()},
    }


async def measure_latency(addr: str, cfg: BenchConfig, payload: bytes) -> dict[str, Any]:
    """One proposal at a time; percentiles of the round trip seen by the client."""
    samples: list[float] = []
    errors: dict[str, int] = {}
    async with KvClient(addr) as c:
        for _ in range(min(100, cfg.latency_samples)):  # warm-up
            await c.propose(payload)
        stop_at = time.monotonic() + cfg.latency_max_s
        for _ in range(cfg.latency_samples):
            if time.monotonic() > stop_at:
                break
            t = time.perf_counter()
            kind, _ = await c.propose(payload)
            dt = time.perf_counter() - t
            if kind == "ok":
                samples.append(dt)
            else:
                errors[kind] = errors.get(kind, 0) + 1
    if not samples:
        return {"p50_ms": None, "p99_ms": None, "mean_ms": None, "latency_samples": 0, "latency_errors": errors}
    samples.sort()

    def pct(q: float) -> float:
        return round(samples[min(len(samples) - 1, int(q * len(samples)))] * 1000, 3)

    return {
        "p50_ms": pct(0.50),
        "p99_ms": pct(0.99),
        "max_ms": round(samples[-1] * 1000, 3),
        "mean_ms": round(sum(samples) / len(samples) * 1000, 3),
        "latency_samples": len(samples),
        "latency_errors": errors,
    }


async def bench_one(engine: str, flush: str, variant: str, cfg: BenchConfig, base_dir: Path) -> dict[str, Any]:
    group = LocalGroup(engine, flush, base_dir / f"{engine}-{flush}{variant}", variant=variant,
                       profile=cfg.profile and engine == "dledger")
    payload = b"\x01" + os.urandom(cfg.payload_bytes - 1)  # raw bytes: counted, not decoded, by the node
    try:
        group.start()
        leader = await group.wait_leader()
        addr = group.client_addr[leader]

        def cpu_seconds() -> dict[str, float]:
            return {("leader" if nid == leader else nid): v for nid, v in group.cpu_seconds().items()}

        thr = await measure_throughput(addr, cfg, payload, cpu_seconds)
        lat = await measure_latency(addr, cfg, payload)
        group.check_alive()
        result: dict[str, Any] = {"engine": engine, "flush": flush, "variant": variant or "default", **thr, **lat,
                                  "outstanding": cfg.outstanding, "connections": cfg.connections,
                                  "payload_bytes": cfg.payload_bytes, "load_avg_1m": os.getloadavg()[0]}
        if engine == "pysyncobj":
            result["config"] = ("appendEntriesUseBatch=False" if variant == "nobatch"
                                else "default SyncObjConf (appendEntriesUseBatch=True, appendEntriesPeriod=0.1 s)")
            result["note"] = "journalFile is an mmap'ed file, never fsync'ed: pysyncobj has no sync option"
        return result
    finally:
        group.stop()


def runs(cfg: BenchConfig) -> list[tuple[str, str, str]]:
    """(engine, flush, variant) to measure. pysyncobj has one flush policy
    (written to the OS, no fsync); it runs with its defaults and with
    ``appendEntriesUseBatch=False``, which trades throughput for latency."""
    out = [("dledger", f, "") for f in cfg.flushes]
    if cfg.baseline == "pysyncobj":
        out += [("pysyncobj", "async", ""), ("pysyncobj", "async", "nobatch")]
    return out


async def run_bench(cfg: BenchConfig, emit: Any = None) -> list[dict[str, Any]]:
    """Run every measurement; ``emit(result)`` is called as each one finishes."""
    tmp = Path(tempfile.mkdtemp(prefix="dledger-bench-", dir=cfg.base_dir))
    results = []
    try:
        for engine, flush, variant in runs(cfg):
            log.info("benchmarking %s flush=%s %s", engine, flush, variant)
            r = await bench_one(engine, flush, variant, cfg, tmp)
            results.append(r)
            if emit is not None:
                emit(r)
    finally:
        if cfg.profile:
            print(f"profiles kept in {tmp}", file=sys.stderr)
        else:
            shutil.rmtree(tmp, ignore_errors=True)
    return results


def format_table(results: Sequence[dict[str, Any]]) -> str:
    head = ("engine", "flush", "proposals/s", "p50 ms", "p99 ms", "mean ms", "cpu% leader/followers/client",
            "leader cpu us/proposal", "errors")
    rows = [head]
    for r in results:
        cpu = r.get("cpu_pct", {})
        followers = "/".join(f"{v:.0f}" for k, v in cpu.items() if k not in ("leader", "client"))
        name = r["engine"] if r.get("variant", "default") == "default" else f"{r['engine']} ({r['variant']})"
        rows.append((
            name, r["flush"], f"{r['proposals_per_s']:,.0f}",
            _fmt(r.get("p50_ms")), _fmt(r.get("p99_ms")), _fmt(r.get("mean_ms")),
            f"{cpu.get('leader', float('nan')):.0f}/{followers}/{cpu.get('client', float('nan')):.0f}",
            _fmt((r.get("cpu_us_per_proposal") or {}).get("leader"), 1),
            str(sum(r.get("errors", {}).values()) + sum(r.get("latency_errors", {}).values())),
        ))
    widths = [max(len(row[i]) for row in rows) for i in range(len(head))]
    lines = ["  ".join(c.rjust(w) if i >= 2 else c.ljust(w) for i, (c, w) in enumerate(zip(row, widths)))
             for row in rows]
    lines.insert(1, "  ".join("-" * w for w in widths))
    return "\n".join(lines)


def _fmt(v: float | None, digits: int = 3) -> str:
    return "-" if v is None else f"{v:.{digits}f}"


def run_cli(cfg: BenchConfig, as_json: bool) -> int:
    """Run and print; the entry point shared by ``python -m`` and ``raftmq bench log``."""
    def emit(r: dict[str, Any]) -> None:
        if as_json:
            print(json.dumps(r), flush=True)
        else:
            print(f"{r['engine']} flush={r['flush']}: {r['proposals_per_s']:,.0f} proposals/s, "
                  f"p50 {_fmt(r.get('p50_ms'))} ms, p99 {_fmt(r.get('p99_ms'))} ms", file=sys.stderr, flush=True)

    def on_sigterm(signum: int, frame: Any) -> None:
        raise KeyboardInterrupt  # the same cleanup as Ctrl-C: every node process is stopped

    signal.signal(signal.SIGTERM, on_sigterm)
    try:
        results = asyncio.run(run_bench(cfg, emit))
    except KeyboardInterrupt:
        print("interrupted; every node process was stopped", file=sys.stderr)
        return 130
    if not as_json:
        print(format_table(results))
        loads = ", ".join(f"{r['load_avg_1m']:.1f}" for r in results)
        print(f"machine: {os.cpu_count()} CPUs; 1-min load average after each run: {loads} "
              "(other work on the machine lowers proposals/s; cpu us/proposal is steadier)")
    return 0


def _flushes(ctx: click.Context, param: click.Parameter, value: str) -> tuple[str, ...]:
    flushes = tuple(f.strip() for f in value.split(",") if f.strip())
    bad = [f for f in flushes if f not in ("async", "sync")]
    if bad or not flushes:
        raise click.BadParameter(f"{value!r}: give async, sync or async,sync")
    return flushes


@click.command("python -m raftmq.dledger.tools.bench", cls=ToolCommand, help=__doc__.split("\n\n")[0],
               context_settings={"help_option_names": ["-h", "--help"], "max_content_width": 100})
@click.option("--flush", "flushes", default="async,sync", show_default=True, callback=_flushes,
              help="Comma-separated flush policies to measure (async: write, fsync in the background; "
                   "sync: fsync before an entry counts).")
@click.option("--duration", type=click.FloatRange(min=0, min_open=True), default=5.0, show_default=True,
              help="Throughput window in seconds.")
@click.option("--warmup", type=click.FloatRange(min=0), default=1.0, show_default=True,
              help="Seconds of load before the throughput window.")
@click.option("--outstanding", type=click.IntRange(min=1), default=1000, show_default=True,
              help="Proposals kept in flight during the throughput run.")
@click.option("--connections", type=click.IntRange(min=1), default=4, show_default=True,
              help="Client connections for the throughput run.")
@click.option("--samples", type=click.IntRange(min=0), default=2000, show_default=True,
              help="Single-proposal latency samples.")
@click.option("--payload-bytes", type=click.IntRange(min=1), default=1024, show_default=True,
              help="Size of one proposal in bytes.")
@click.option("--baseline", type=click.Choice(["pysyncobj"]), default=None,
              help="Also measure this engine (needs the bench extra: pysyncobj).")
@click.option("--json", "as_json", is_flag=True, help="Print one JSON object per line per measurement.")
@click.option("--profile", is_flag=True, help="cProfile the dledger nodes and keep the stats and data.")
@click.option("--base-dir", type=click.Path(file_okay=False), default=None,
              help="Where the temporary data directories go (default: the system's temp directory).")
def main(flushes: tuple[str, ...], duration: float, warmup: float, outstanding: int, connections: int,
         samples: int, payload_bytes: int, baseline: str | None, as_json: bool, profile: bool,
         base_dir: str | None) -> None:
    logging.basicConfig(level=logging.WARNING, stream=sys.stderr, format="%(levelname)s %(name)s %(message)s")
    try:
        cfg = BenchConfig(flushes=flushes, duration_s=duration, warmup_s=warmup, outstanding=outstanding,
                          connections=connections, latency_samples=samples, payload_bytes=payload_bytes,
                          baseline=baseline, base_dir=base_dir, profile=profile)
    except ValueError as exc:
        raise click.UsageError(str(exc)) from None
    sys.exit(run_cli(cfg, as_json))


if __name__ == "__main__":
    main()
