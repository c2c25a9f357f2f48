"""``raftmq bench log|produce|consume``: benchmarks that print figures.
``log`` runs the log benchmark program (``passthrough``); ``produce`` and
``consume`` measure over the HTTP API with ``client.local.bench``, against
``--server`` or a local group started per flush policy."""

from __future__ import annotations

import click

from raftmq.client.cli.error_lines import fail
from raftmq.client.cli.passthrough import bench_log
from raftmq.client.errors import RaftMQError
from raftmq.client.local import cluster as cluster_mod


@click.group()
def bench() -> None:
    """Benchmarks that print figures."""


bench.add_command(bench_log)


def _ints(text: str, name: str) -> list[int]:
    """A comma-separated list of positive integers (``--batch 1,16,128``)."""
    try:
        vals = [int(v) for v in text.split(",") if v.strip()]
    except ValueError:
        raise click.BadParameter(f"{text!r} is not a comma-separated list of integers", param_hint=name)
    if not vals or any(v < 1 for v in vals):
        raise click.BadParameter("values must be positive integers", param_hint=name)
    return vals


def _bench_targets(servers: tuple[str, ...], flush: str) -> list[tuple[str, list[str] | None]]:
    """What to measure: ``("server", urls)`` for a running group, else ``(policy, None)`` per flush policy."""
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
@click.option("--message-bytes", type=click.IntRange(1, 4 << 20), default=1024, show_default=True,
              help="Body size of each message.")
@click.option("--topic", default="bench", show_default=True, help="The topic produced to (created if missing).")
@click.option("--per-message", is_flag=True,
              help="Send through the Python client's Producer, one send() call per message (automatic batching).")
@click.option("--outstanding", type=click.IntRange(1, 100_000), default=1000, show_default=True,
              help="With --per-message: send() calls in flight.")
@click.option("--security", default="off", show_default=True, metavar="MODES",
              help="Local groups only: off (peer port authenticated by the cluster secret), acl (every request "
                   "signed), tls (HTTPS, a throwaway CA made with openssl), acl+tls, peer-open (no cluster "
                   "secret) or peer-tls (TLS on the peer port too); comma-separated to compare them in one run "
                   "(one group each).")
@click.option("--json", "as_json", is_flag=True, help="One JSON object per measurement.")
def bench_produce(servers: tuple[str, ...], flush: str, batch: str, producers: str, duration: float,
                  message_bytes: int, topic: str, per_message: bool, outstanding: int, security: str,
                  as_json: bool) -> None:
    """Produce throughput and latency over the HTTP API (msgpack)."""
    from raftmq.client.local import bench as b
    from raftmq.client.local.security import MODES, Security, SecurityError
    from raftmq.client.loop import run as run_loop

    batches, clients = _ints(batch, "--batch"), _ints(producers, "--producers")
    modes = [m.strip() for m in security.split(",") if m.strip()]
    if not modes or any(m not in MODES for m in modes):
        raise click.BadParameter(f"use {', '.join(MODES)} (comma-separated)", param_hint="--security")
    if servers and modes != ["off"]:
        raise click.BadParameter("applies to local groups only (without --server)", param_hint="--security")
    if per_message and modes != ["off"]:
        raise click.BadParameter("is not supported with --per-message", param_hint="--security")

    def run(urls: list[str], label: str, sec: Security = Security()) -> None:
        if per_message:
            b.emit(run_loop(b.produce_per_message(urls, topic, 8, outstanding, duration, message_bytes, label)),
                   as_json)
            return
        for n in batches:
            for c in clients:
                b.emit(run_loop(b.produce(urls, topic, 8, n, c, duration, message_bytes, label, security=sec)),
                       as_json)

    for label, urls in _bench_targets(servers, flush):
        try:
            if urls is None:
                for mode in modes:
                    b.with_secured_group(label, mode, lambda u, sec: run(u, label, sec))
            else:
                run(urls, label)
        except (cluster_mod.ClusterError, SecurityError, RaftMQError, RuntimeError, OSError) as exc:
            fail(exc)


@bench.command("consume")
@click.option("--server", "servers", multiple=True, help="A node URL of a running group (repeatable).")
@click.option("--flush", default="async", show_default=True, help="Flush policies of the local group.")
@click.option("--messages", type=click.IntRange(1000, 10_000_000), default=200_000, show_default=True,
              help="Messages stored first, then read back.")
@click.option("--queues", type=click.IntRange(1, 64), default=8, show_default=True,
              help="Queues of the topic (one reader each).")
@click.option("--message-bytes", type=click.IntRange(1, 4 << 20), default=1024, show_default=True,
              help="Body size of each message.")
@click.option("--topic", default="bench", show_default=True, help="The topic filled and read (created if missing).")
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
            fail(exc)
