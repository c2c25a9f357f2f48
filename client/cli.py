"""The ``raftmq`` command line (click). Each command parses its options,
calls into the code that does the work, and turns failures into one line and
an exit code."""

from __future__ import annotations

import click


@click.group()
def main() -> None:
    """RaftMQ: a RocketMQ-style message broker on Raft groups."""


@main.group()
def bench() -> None:
    """Benchmarks."""


@bench.command("log")
@click.option("--flush", default="async,sync", show_default=True, help="Comma-separated flush policies.")
@click.option("--duration", type=float, default=5.0, show_default=True, help="Throughput window, seconds.")
@click.option("--warmup", type=float, default=1.0, show_default=True, help="Load before the window, seconds.")
@click.option("--outstanding", type=int, default=1000, show_default=True, help="Proposals in flight.")
@click.option("--connections", type=int, default=4, show_default=True, help="Client connections for throughput.")
@click.option("--samples", type=int, default=2000, show_default=True, help="Single-proposal latency samples.")
@click.option("--payload-bytes", type=int, default=1024, show_default=True)
@click.option("--baseline", type=click.Choice(["pysyncobj"]), default=None, help="Also measure this engine.")
@click.option("--json", "as_json", is_flag=True, help="One JSON object per line per measurement.")
@click.option("--profile", is_flag=True, help="cProfile the dledger nodes and keep the stats.")
@click.option("--base-dir", default=None, help="Where the temporary data dirs go.")
def bench_log(flush: str, duration: float, warmup: float, outstanding: int, connections: int, samples: int,
              payload_bytes: int, baseline: str | None, as_json: bool, profile: bool, base_dir: str | None) -> None:
    """The replicated log alone: a local 3-process dledger group, 1 KiB proposals."""
    from dledger.bench import BenchConfig, run_cli

    try:
        cfg = BenchConfig(
            flushes=tuple(f.strip() for f in flush.split(",") if f.strip()),
            duration_s=duration,
            warmup_s=warmup,
            outstanding=outstanding,
            connections=connections,
            latency_samples=samples,
            payload_bytes=payload_bytes,
            baseline=baseline,
            base_dir=base_dir,
            profile=profile,
        )
    except ValueError as exc:
        raise click.UsageError(str(exc)) from exc
    raise SystemExit(run_cli(cfg, as_json))
