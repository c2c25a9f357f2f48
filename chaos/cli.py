"""``raftmq chaos run`` (also ``python -m raftmq.chaos run``): the command-line edge of
``chaos.runner``. Options become one ``RunConfig``; errors become one line
and an exit status (0 pass, 1 anomalies or faults missing, 2 the run could
not be carried out, 130 interrupted)."""

from __future__ import annotations

import asyncio
import logging
import sys
from typing import Any

import click

from raftmq.chaos.netns import in_private_netns, loopback_up, partitions_possible, run_in_private_netns
from raftmq.chaos.schedule import DEFAULT_FAULTS, FAULTS, parse_mix
from raftmq.chaos.workload import WorkloadConfig


@click.group("chaos")
def chaos_group() -> None:
    """Kill, pause, partition and damage the storage of a real local group under load; check nothing
    acknowledged is lost."""


@chaos_group.command("run")
@click.option("--duration", type=click.FloatRange(10, 24 * 3600), default=60.0, show_default=True,
              help="Seconds of load under faults (healing and checking come after).")
@click.option("--faults", default=",".join(DEFAULT_FAULTS), show_default=True,
              help=f"Fault mix: comma-separated names, optionally weighted (kill-leader=3,pause=1), or 'all'. "
                   f"Names: {', '.join(FAULTS)}.")
@click.option("--schedule", type=click.Choice(["random", "cycle"]), default="random", show_default=True,
              help="random: weighted draws from the seed; cycle: the faults in turn.")
@click.option("--cycle", is_flag=True, help="Same as --schedule cycle.")
@click.option("--interval", type=click.FloatRange(1, 3600), default=6.0, show_default=True,
              help="Seconds between the starts of two faults.")
@click.option("--fault-time", type=click.FloatRange(0.2, 3600), default=2.0, show_default=True,
              help="Seconds a pause or partition lasts, or a killed node stays down.")
@click.option("--seed", type=int, default=None, help="Seeds the schedule (default: a random seed, printed).")
@click.option("--nodes", type=click.Choice(["3", "5"]), default="3", show_default=True)
@click.option("--flush", type=click.Choice(["async", "sync"]), default="async", show_default=True,
              help="The nodes' flush policy.")
@click.option("--segment-bytes", type=click.IntRange(4096, 1 << 31), default=1 << 20, show_default=True,
              help="The nodes' Raft log segment size: small ones roll over (and snapshot) often.")
@click.option("--producers", type=click.IntRange(0, 64), default=3, show_default=True,
              help="Idempotent producers sending one message at a time.")
@click.option("--rate", type=click.FloatRange(0, 100_000), default=100.0, show_default=True,
              help="Messages per second of each producer and of the raw sender (0: as fast as they go).")
@click.option("--steady-period-ms", type=click.FloatRange(1, 1000), default=10.0, show_default=True,
              help="The steady sender (for failover times) starts a send this often.")
@click.option("--consumers", type=click.IntRange(0, 16), default=2, show_default=True,
              help="Members of the push consumer group.")
@click.option("--out", "out_dir", default=".", show_default=True,
              help="Directory for chaos-report.json, chaos-report.html and chaos-history.jsonl.gz.")
@click.option("--base-dir", default=None, help="Nodes' configs, data and logs (default: a temporary directory, "
                                               "removed when the run passes).")
@click.option("--keep-data", is_flag=True, help="Keep the temporary directory even when the run passes.")
@click.option("--quiet", is_flag=True, help="No progress line.")
@click.option("--rejoin-wiped", is_flag=True,
              help="Restart a wiped node with the broker's --rejoin (the old operator workaround). By default it "
                   "restarts with no flag, and the broker must notice by itself that its data is gone.")
@click.option("--wipe-majority", is_flag=True, hidden=True,
              help="Instead of the schedule: lose a majority's data mid-run (the checker must report loss).")
def run_command(**opts: Any) -> None:
    """Run a local group under faults, then check the history; exit 0 only if no anomaly was found
    and every planned fault happened."""
    logging.basicConfig(level=logging.WARNING, format="chaos: %(levelname)s %(name)s: %(message)s")
    try:
        mix = parse_mix(opts["faults"])
    except ValueError as exc:
        raise click.BadParameter(str(exc), param_hint="--faults")
    ctx = click.get_current_context()
    if opts["seed"] is None:
        import random

        opts["seed"] = random.SystemRandom().randrange(1 << 31)
    if in_private_netns():
        loopback_up()
    elif mix.get("partition", 0) > 0 and not opts["wipe_majority"]:
        ok, why = partitions_possible()
        if ok:  # the whole run, clients included, goes into a network namespace of its own
            raise SystemExit(run_in_private_netns([sys.executable, "-m", "raftmq.chaos", "run", *_argv(ctx, opts)]))
        click.echo(f"chaos: partitions skipped: {why}", err=True)

    from raftmq.chaos import report
    from raftmq.chaos.runner import RunConfig, RunError, run

    try:
        cfg = RunConfig(
            duration_s=opts["duration"], interval_s=opts["interval"], fault_s=opts["fault_time"], faults=mix,
            schedule="cycle" if opts["cycle"] else opts["schedule"], nodes=int(opts["nodes"]), flush=opts["flush"],
            segment_bytes=opts["segment_bytes"], seed=opts["seed"],
            workload=WorkloadConfig(producers=opts["producers"], rate_per_s=opts["rate"],
                                    steady_period_ms=opts["steady_period_ms"], push_consumers=opts["consumers"],
                                    seed=opts["seed"]),
            base_dir=opts["base_dir"], out_dir=opts["out_dir"], progress=not opts["quiet"],
            wipe_majority=opts["wipe_majority"], keep_data=opts["keep_data"], rejoin_wiped=opts["rejoin_wiped"])
    except ValueError as exc:
        raise click.UsageError(str(exc))
    click.echo(f"chaos: seed {cfg.seed}, {cfg.nodes} nodes, flush {cfg.flush}, {cfg.duration_s:g} s, faults "
               f"{','.join(f'{k}={v:g}' for k, v in mix.items())} ({cfg.schedule})", err=True)
    try:
        runner, res = run(cfg)
    except RunError as exc:
        click.echo(f"chaos: error: {exc}", err=True)
        raise SystemExit(2)
    except (KeyboardInterrupt, asyncio.CancelledError):  # Ctrl-C, or SIGTERM (which cancels the run)
        click.echo("chaos: interrupted; every node process was stopped", err=True)
        raise SystemExit(130)
    jpath, hpath, doc = report.write(res, cfg.out_dir)
    click.echo(report.one_line(doc))
    for r in res.reasons:
        click.echo(f"  {r}")
    if res.partitions["asked"] and not res.partitions["included"]:
        click.echo(f"  partitions skipped: {res.partitions['skipped']}")
    click.echo(f"reports: {jpath} {hpath} (seed {cfg.seed})")
    runner.cleanup(passed=res.exit_code == 0)
    if res.exit_code != 0:
        click.echo(f"node data and logs kept under {res.base_dir}")
    raise SystemExit(res.exit_code)


@chaos_group.command("restart-bench")
@click.option("--log-mib", type=click.IntRange(1, 1 << 20), default=1024, show_default=True,
              help="MiB of Raft log to fill the group with before the restarts.")
@click.option("--flush", type=click.Choice(["async", "sync"]), default="async", show_default=True)
@click.option("--variants", default=",".join(("clean", "derived-damaged", "log-damaged")), show_default=True,
              help="Which restarts, comma-separated: clean, derived-damaged, log-damaged.")
@click.option("--seed", type=int, default=1, show_default=True, help="Seeds which files and bits are damaged.")
def restart_bench_command(log_mib: int, flush: str, variants: str, seed: int) -> None:
    """Restart time of a follower holding LOG_MIB of log: clean, with its derived files damaged
    (rebuilt from the log), and with a log entry damaged (repaired from a peer)."""
    from raftmq.chaos.restart_bench import VARIANTS, run

    chosen = tuple(v.strip() for v in variants.split(",") if v.strip())
    unknown = [v for v in chosen if v not in VARIANTS]
    if unknown or not chosen:
        raise click.BadParameter(f"unknown {unknown or 'empty'}; choose from {', '.join(VARIANTS)}",
                                 param_hint="--variants")
    logging.basicConfig(level=logging.WARNING, format="chaos: %(levelname)s %(name)s: %(message)s")
    try:
        asyncio.run(run(log_mib, flush, chosen, seed, click.echo))
    except RuntimeError as exc:
        click.echo(f"chaos: restart-bench: {exc}", err=True)
        raise SystemExit(2)
    except KeyboardInterrupt:
        click.echo("chaos: interrupted; every node process was stopped", err=True)
        raise SystemExit(130)


def _argv(ctx: click.Context, opts: dict[str, Any]) -> list[str]:
    """The options of this invocation as command-line arguments (to run it again elsewhere)."""
    out: list[str] = []
    for p in ctx.command.params:
        if not isinstance(p, click.Option) or p.name is None:
            continue
        v = opts.get(p.name)
        if p.is_flag:
            if v:
                out.append(p.opts[0])
        elif v is not None:
            out += [p.opts[0], str(v)]
    return out
