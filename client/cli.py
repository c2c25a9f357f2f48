"""The ``raftmq`` command line (click). Each command parses its options, calls
the code that does the work, and turns failures into one line and an exit code.

``raftmq broker`` and ``raftmq bench log`` run the broker and the log
benchmark as programs (``python -m broker``, ``python -m dledger.bench``):
the client knows the servers only as programs and HTTP endpoints.
"""

from __future__ import annotations

import json
import os
import sys
from pathlib import Path
from typing import Any

import click

from client import cluster as cluster_mod

DEFAULT_BASE_DIR = "raftmq-data"
PASSTHROUGH = {"ignore_unknown_options": True, "allow_extra_args": True, "help_option_names": []}


def _exec_module(module: str, args: tuple[str, ...]) -> None:
    """Replace this process with ``python -m module args`` (signals go straight to it)."""
    os.execv(sys.executable, [sys.executable, "-m", module, *args])


@click.group()
@click.version_option(package_name="raftmq")
def main() -> None:
    """RaftMQ: a RocketMQ-style message broker on Raft groups."""


@main.command(context_settings=PASSTHROUGH)
@click.argument("args", nargs=-1, type=click.UNPROCESSED)
def broker(args: tuple[str, ...]) -> None:
    """Run one broker node: raftmq broker --config node.toml (--help for all options)."""
    _exec_module("broker", args)


@main.group()
def bench() -> None:
    """Benchmarks that print figures."""


@bench.command("log", context_settings=PASSTHROUGH)
@click.argument("args", nargs=-1, type=click.UNPROCESSED)
def bench_log(args: tuple[str, ...]) -> None:
    """The replicated log alone: a local 3-process group, 1 KiB proposals (--help for options)."""
    _exec_module("dledger.bench", args)


# ----------------------------------------------------------------------
# cluster
# ----------------------------------------------------------------------
@main.group()
def cluster() -> None:
    """A local broker group on 127.0.0.1."""


def _fail(exc: Exception) -> None:
    click.echo(f"raftmq: {exc}", err=True)
    raise SystemExit(1)


@cluster.command("up")
@click.option("--nodes", type=click.IntRange(1, 9), default=3, show_default=True)
@click.option("--base-dir", type=click.Path(file_okay=False), default=DEFAULT_BASE_DIR, show_default=True)
@click.option("--http-port-base", type=click.IntRange(1, 65000), default=None,
              help="HTTP ports BASE, BASE+1, ... (default: free ports)")
@click.option("--raft-port-base", type=click.IntRange(1, 65000), default=None,
              help="Raft ports BASE, BASE+1, ... (default: HTTP base + 1000, or free ports)")
@click.option("--flush", type=click.Choice(["async", "sync"]), default="async", show_default=True)
@click.option("--group", default="broker-a", show_default=True, help="Broker group name.")
@click.option("--detach", is_flag=True, help="Leave the group running in the background.")
def cluster_up(nodes: int, base_dir: str, http_port_base: int | None, raft_port_base: int | None, flush: str,
               group: str, detach: bool) -> None:
    """Start a group, wait for a leader, print the URLs; Ctrl-C stops it."""
    if raft_port_base is None and http_port_base is not None:
        raft_port_base = http_port_base + 1000
    try:
        rc = cluster_mod.up(Path(base_dir), nodes, http_port_base, raft_port_base, flush, group, detach,
                            echo=click.echo)
    except cluster_mod.ClusterError as exc:
        _fail(exc)
    raise SystemExit(rc)


@cluster.command("down")
@click.option("--base-dir", type=click.Path(file_okay=False), default=DEFAULT_BASE_DIR, show_default=True)
def cluster_down(base_dir: str) -> None:
    """Stop a detached group."""
    try:
        cluster_mod.down(Path(base_dir), echo=click.echo)
    except cluster_mod.ClusterError as exc:
        _fail(exc)


@cluster.command("status")
@click.option("--base-dir", type=click.Path(file_okay=False), default=DEFAULT_BASE_DIR, show_default=True)
@click.option("--json", "as_json", is_flag=True, help="Machine-readable output.")
def cluster_status(base_dir: str, as_json: bool) -> None:
    """Members, roles, terms and replication lag."""
    try:
        st = cluster_mod.status(Path(base_dir))
    except cluster_mod.ClusterError as exc:
        _fail(exc)
    if as_json:
        click.echo(json.dumps(st, indent=2))
        return
    click.echo(f"group {st['group']} (flush={st['flush']})")
    _table(["id", "http_url", "pid", "role", "term", "commit_index", "applied_index", "lag"], st["nodes"])


@cluster.command("restart-node")
@click.argument("node_id")
@click.option("--base-dir", type=click.Path(file_okay=False), default=DEFAULT_BASE_DIR, show_default=True)
def cluster_restart_node(node_id: str, base_dir: str) -> None:
    """Start one stopped or killed node of a group again."""
    try:
        cluster_mod.restart_node(Path(base_dir), node_id, echo=click.echo)
    except cluster_mod.ClusterError as exc:
        _fail(exc)


def _table(cols: list[str], rows: list[dict[str, Any]]) -> None:
    cells = [[("-" if r.get(c) is None else str(r.get(c))) for c in cols] for r in rows]
    widths = [max(len(c), *(len(row[i]) for row in cells)) for i, c in enumerate(cols)]
    click.echo("  ".join(c.ljust(w) for c, w in zip(cols, widths)))
    for row in cells:
        click.echo("  ".join(v.ljust(w) for v, w in zip(row, widths)))


if __name__ == "__main__":
    main()
