"""The ``raftmq`` command line (click). Each command parses its options, calls
the code that does the work, and turns failures into one line and an exit code.

``raftmq broker`` and ``raftmq bench log`` run the broker and the log
benchmark as programs (``python -m raftmq.broker``, ``python -m raftmq.dledger.tools.bench``):
the client knows the servers only as programs and HTTP endpoints.
``raftmq cluster`` manages a local group (client/local/cluster.py); the data
commands ``produce``, ``consume``, ``topic``, ``group`` and ``message`` talk
to a group through the Python client (client/commands.py).
"""

from __future__ import annotations

import json
import os
import sys
from pathlib import Path
from typing import Any

import click

from raftmq.client.local import cluster as cluster_mod
from raftmq.client.errors import RaftMQError

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
    _exec_module("raftmq.broker", args)


@main.group()
def bench() -> None:
    """Benchmarks that print figures."""


@bench.command("log", context_settings=PASSTHROUGH)
@click.argument("args", nargs=-1, type=click.UNPROCESSED)
def bench_log(args: tuple[str, ...]) -> None:
    """The replicated log alone: a local 3-process group, 1 KiB proposals (--help for options)."""
    _exec_module("raftmq.dledger.tools.bench", args)


def _ints(text: str, name: str) -> list[int]:
    try:
        vals = [int(v) for v in text.split(",") if v.strip()]
    except ValueError:
        raise click.BadParameter(f"{text!r} is not a comma-separated list of integers", param_hint=name)
    if not vals or any(v < 1 for v in vals):
        raise click.BadParameter("values must be positive integers", param_hint=name)
    return vals


def _bench_targets(servers: tuple[str, ...], flush: str) -> list[tuple[str, list[str] | None]]:
    if servers:
        return [("server", list(servers))]
    flushes = [f.strip() for f in flush.split(",") if f.strip()]
    if not flushes or any(f not in ("async", "sync") for f in flushes):
        raise click.BadParameter("use async, sync or async,sync", param_hint="--flush")
    return [(f, None) for f in flushes]


@bench.command("produce")
@click.option("--server", "servers", multiple=True, help="A node URL of a running group (repeatable). "
              "Without it, a local 3-node group is started for each --flush policy.")
@click.option("--flush", default="async,sync", show_default=True, help="Flush policies of the local group.")
@click.option("--batch", default="1,16,128", show_default=True, help="Messages per request (comma-separated).")
@click.option("--producers", default="1,8", show_default=True, help="Concurrent producers (comma-separated).")
@click.option("--duration", type=click.FloatRange(1, 600), default=5.0, show_default=True, help="Seconds per run.")
@click.option("--message-bytes", type=click.IntRange(1, 4 << 20), default=1024, show_default=True)
@click.option("--topic", default="bench", show_default=True)
@click.option("--per-message", is_flag=True,
              help="Send through the Python client's Producer, one send() call per message (automatic batching).")
@click.option("--outstanding", type=click.IntRange(1, 100_000), default=1000, show_default=True,
              help="With --per-message: send() calls in flight.")
@click.option("--json", "as_json", is_flag=True, help="One JSON object per measurement.")
def bench_produce(servers: tuple[str, ...], flush: str, batch: str, producers: str, duration: float,
                  message_bytes: int, topic: str, per_message: bool, outstanding: int, as_json: bool) -> None:
    """Produce throughput and latency over the HTTP API (msgpack)."""
    from raftmq.client.local import bench as b
    from raftmq.client.loop import run as run_loop

    batches, clients = _ints(batch, "--batch"), _ints(producers, "--producers")

    def run(urls: list[str], label: str) -> None:
        if per_message:
            b.emit(run_loop(b.produce_per_message(urls, topic, 8, outstanding, duration, message_bytes, label)),
                   as_json)
            return
        for n in batches:
            for c in clients:
                b.emit(run_loop(b.produce(urls, topic, 8, n, c, duration, message_bytes, label)), as_json)

    for label, urls in _bench_targets(servers, flush):
        try:
            if urls is None:
                b.with_local_group(label, lambda u: run(u, label))
            else:
                run(urls, label)
        except (cluster_mod.ClusterError, RaftMQError, RuntimeError, OSError) as exc:
            _fail(exc)


@bench.command("consume")
@click.option("--server", "servers", multiple=True, help="A node URL of a running group (repeatable).")
@click.option("--flush", default="async", show_default=True, help="Flush policies of the local group.")
@click.option("--messages", type=click.IntRange(1000, 10_000_000), default=200_000, show_default=True)
@click.option("--queues", type=click.IntRange(1, 64), default=8, show_default=True)
@click.option("--message-bytes", type=click.IntRange(1, 4 << 20), default=1024, show_default=True)
@click.option("--topic", default="bench", show_default=True)
@click.option("--json", "as_json", is_flag=True, help="One JSON object per measurement.")
def bench_consume(servers: tuple[str, ...], flush: str, messages: int, queues: int, message_bytes: int,
                  topic: str, as_json: bool) -> None:
    """Fill a topic, then time reading it all back (one reader per queue, 1024 per pull)."""
    from raftmq.client.local import bench as b
    from raftmq.client.loop import run as run_loop

    for label, urls in _bench_targets(servers, flush):
        def run(u: list[str], label: str = label) -> None:
            b.emit(run_loop(b.consume(u, topic, queues, messages, message_bytes, label, queues)), as_json)

        try:
            if urls is None:
                b.with_local_group(label, run)
            else:
                run(urls)
        except (cluster_mod.ClusterError, RaftMQError, RuntimeError, OSError) as exc:
            _fail(exc)


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
@click.option("--base-dir", type=click.Path(file_okay=False), default=cluster_mod.DEFAULT_BASE_DIR, show_default=True)
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
@click.option("--base-dir", type=click.Path(file_okay=False), default=cluster_mod.DEFAULT_BASE_DIR, show_default=True)
def cluster_down(base_dir: str) -> None:
    """Stop a detached group."""
    try:
        cluster_mod.down(Path(base_dir), echo=click.echo)
    except cluster_mod.ClusterError as exc:
        _fail(exc)


@cluster.command("status")
@click.option("--base-dir", type=click.Path(file_okay=False), default=cluster_mod.DEFAULT_BASE_DIR, show_default=True)
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
    from raftmq.client.commands import emit, table

    emit(table(["id", "http_url", "pid", "role", "term", "commit_index", "applied_index", "lag"], st["nodes"]))


@cluster.command("restart-node")
@click.argument("node_id")
@click.option("--base-dir", type=click.Path(file_okay=False), default=cluster_mod.DEFAULT_BASE_DIR, show_default=True)
@click.option("--rejoin", is_flag=True, help="The node's data was lost: it must not vote until it has caught up.")
def cluster_restart_node(node_id: str, base_dir: str, rejoin: bool) -> None:
    """Start one stopped or killed node of a group again."""
    try:
        cluster_mod.restart_node(Path(base_dir), node_id, echo=click.echo, rejoin=rejoin)
    except cluster_mod.ClusterError as exc:
        _fail(exc)


from raftmq.client.commands import COMMANDS  # noqa: E402  (data commands: produce, consume, topic, group, message)

for _command in COMMANDS:
    main.add_command(_command)


@main.command("chaos", context_settings=PASSTHROUGH)
@click.argument("args", nargs=-1, type=click.UNPROCESSED)
def chaos(args: tuple[str, ...]) -> None:
    """Fault injection against a real local group: raftmq chaos run --help."""
    _exec_module("chaos", args)

if __name__ == "__main__":
    main()
