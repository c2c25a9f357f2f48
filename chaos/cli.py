"""``raftmq chaos run`` (also ``python -m chaos run``)."""

from __future__ import annotations

import sys

import click

from chaos.nemesis import enter_private_netns, in_private_netns, partitions_possible
from chaos.runner import ALL_FAULTS, DEFAULT_FAULTS, RunConfig


@click.group("chaos")
def chaos_group() -> None:
    """Kill, pause, partition and corrupt a real local group while it works; check nothing acknowledged is lost."""


@chaos_group.command("run")
@click.option("--duration", type=click.FloatRange(10, 24 * 3600), default=60.0, show_default=True, help="Seconds.")
@click.option("--interval", type=click.FloatRange(2, 600), default=5.0, show_default=True,
              help="Seconds between fault starts.")
@click.option("--fault-time", type=click.FloatRange(0.5, 600), default=2.0, show_default=True,
              help="How long a pause or partition lasts and a killed node stays down.")
@click.option("--faults", default=",".join(DEFAULT_FAULTS), show_default=True,
              help=f"Comma-separated, or 'all': {', '.join(ALL_FAULTS)}.")
@click.option("--nodes", type=click.Choice(["3", "5"]), default="3", show_default=True)
@click.option("--flush", type=click.Choice(["async", "sync"]), default="async", show_default=True)
@click.option("--seed", type=int, default=0, show_default=True, help="Seeds the fault schedule.")
@click.option("--producers", type=click.IntRange(1, 32), default=3, show_default=True)
@click.option("--out", "out_dir", default=".", show_default=True, help="Where chaos-report.json/.html go.")
@click.option("--base-dir", default=None, help="Where the nodes' data goes (default: a temporary directory).")
@click.option("--wipe-majority", is_flag=True, hidden=True, help="Lose a majority's data (the checker must fail).")
@click.option("--cycle", is_flag=True, help="Take the faults in turn instead of at random.")
@click.option("--quiet", is_flag=True, help="No progress line.")
def run_command(duration: float, interval: float, fault_time: float, faults: str, nodes: str, flush: str, seed: int,
                producers: int, out_dir: str, base_dir: str | None, wipe_majority: bool, cycle: bool, quiet: bool) -> None:
    """Run a group under faults, then check the history; exit 0 only if no anomaly was found."""
    chosen = ALL_FAULTS if faults.strip() == "all" else tuple(f.strip() for f in faults.split(",") if f.strip())
    try:
        cfg = RunConfig(duration_s=duration, interval_s=interval, fault_s=fault_time, faults=chosen, nodes=int(nodes),
                        flush=flush, seed=seed, producers=producers, base_dir=base_dir, out_dir=out_dir,
                        progress=not quiet, wipe_majority=wipe_majority, cycle=cycle)
    except ValueError as exc:
        raise click.UsageError(str(exc))
    if "partition" in chosen and not in_private_netns():
        ok, why = partitions_possible()
        if ok:  # run the whole thing inside a private network namespace of its own
            raise SystemExit(enter_private_netns([sys.executable, "-m", "chaos", *sys.argv[sys.argv.index("run"):]]))
        click.echo(f"chaos: partitions skipped: {why}", err=True)
    from chaos import report
    from chaos.runner import run

    res = run(cfg)
    jpath, hpath = report.write(res, out_dir)
    doc = report.summary(res)
    fo = doc["failover_after_leader_kill_s"]
    click.echo(f"{'PASS' if res.exit_code == 0 else 'FAIL'}: {doc['faults_injected']} faults, "
               f"{doc['acknowledged']} acknowledged sends, {doc['check']['anomalies']} anomalies "
               f"(lost {doc['check']['lost']['count']}, duplicated {doc['check']['duplicated']['count']}, "
               f"inconsistent {doc['check']['inconsistent']['count']}, lost-on-node "
               f"{doc['check']['lost_on_node']['count']}); failover after leader kill p50 {fo['p50']} s, "
               f"max {fo['max']} s; reports: {jpath}, {hpath}")
    if res.partitions_skipped:
        click.echo(f"partitions skipped: {res.partitions_skipped}")
    raise SystemExit(res.exit_code)
