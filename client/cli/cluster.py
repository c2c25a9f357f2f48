"""``raftmq cluster up|down|status|restart-node``: a local broker group on
127.0.0.1, managed by ``client.local.cluster``; this module only parses the
options and prints."""

from __future__ import annotations

import json
from pathlib import Path

import click

from raftmq.client.cli.error_lines import fail
from raftmq.client.cli.output import emit, table
from raftmq.client.local import cluster as cluster_mod

BASE_DIR_HELP = "Where the group's data, logs and state file (cluster.json) live."


@click.group()
def cluster() -> None:
    """A local broker group on 127.0.0.1."""


@cluster.command("up")
@click.option("--nodes", type=click.IntRange(1, 9), default=3, show_default=True, help="Number of broker nodes.")
@click.option("--base-dir", type=click.Path(file_okay=False), default=cluster_mod.DEFAULT_BASE_DIR, show_default=True,
              help=BASE_DIR_HELP)
@click.option("--http-port-base", type=click.IntRange(1, 65000), default=None,
              help="HTTP ports BASE, BASE+1, ... (default: free ports)")
@click.option("--raft-port-base", type=click.IntRange(1, 65000), default=None,
              help="Raft ports BASE, BASE+1, ... (default: HTTP base + 1000, or free ports)")
@click.option("--flush", type=click.Choice(["async", "sync"]), default="async", show_default=True,
              help="The nodes' flush policy: async (RocketMQ's ASYNC_FLUSH) or sync (fdatasync before every "
                   "acknowledgement).")
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
        fail(exc)
    raise SystemExit(rc)


@cluster.command("down")
@click.option("--base-dir", type=click.Path(file_okay=False), default=cluster_mod.DEFAULT_BASE_DIR, show_default=True,
              help=BASE_DIR_HELP)
def cluster_down(base_dir: str) -> None:
    """Stop a detached group."""
    try:
        cluster_mod.down(Path(base_dir), echo=click.echo)
    except cluster_mod.ClusterError as exc:
        fail(exc)


@cluster.command("status")
@click.option("--base-dir", type=click.Path(file_okay=False), default=cluster_mod.DEFAULT_BASE_DIR, show_default=True,
              help=BASE_DIR_HELP)
@click.option("--json", "as_json", is_flag=True, help="Machine-readable output.")
def cluster_status(base_dir: str, as_json: bool) -> None:
    """Members, roles, terms and replication lag."""
    try:
        st = cluster_mod.status(Path(base_dir))
    except cluster_mod.ClusterError as exc:
        fail(exc)
    if as_json:
        click.echo(json.dumps(st, indent=2))
        return
    click.echo(f"group {st['group']} (flush={st['flush']})")
    emit(table(["id", "http_url", "pid", "role", "term", "commit_index", "applied_index", "lag"], st["nodes"]))


@cluster.command("restart-node")
@click.argument("node_id")
@click.option("--base-dir", type=click.Path(file_okay=False), default=cluster_mod.DEFAULT_BASE_DIR, show_default=True,
              help=BASE_DIR_HELP)
@click.option("--rejoin", is_flag=True, help="The node's data was lost: it must not vote until it has caught up.")
def cluster_restart_node(node_id: str, base_dir: str, rejoin: bool) -> None:
    """Start one stopped or killed node of a group again."""
    try:
        cluster_mod.restart_node(Path(base_dir), node_id, echo=click.echo, rejoin=rejoin)
    except cluster_mod.ClusterError as exc:
        fail(exc)
