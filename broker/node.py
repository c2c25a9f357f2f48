"""One broker node as a process: ``python -m raftmq.broker --config node.toml`` (what
``raftmq broker`` runs). Serves the HTTP API and the Raft peer port until
SIGTERM or SIGINT, then shuts down cleanly (a checkpoint, files closed).

The command line is click's, like every other ``raftmq`` command. A bad flag
or a bad setting in the node's TOML file is one line on stderr
(``raftmq broker: node.toml: tick_ms: expected an integer, got "50"``) and
exit status 2, before anything is opened.
"""

from __future__ import annotations

import asyncio
import logging
import resource
import signal
import sys

import click
from aiohttp import web

from raftmq.broker import config as config_mod
from raftmq.broker.config import BrokerConfig, Member
from raftmq.broker.http.app import make_app
from raftmq.broker.http.auth import warn_if_open
from raftmq.broker.http.tls import server_context
from raftmq.broker.http.server import GuardedAppRunner, connection_cap
from raftmq.broker.service import Broker
from raftmq.eventloop import loop_factory

log = logging.getLogger(__name__)

PROG = "raftmq broker"


def _member(spec: str) -> Member:
    mid, sep, rest = spec.partition("=")
    http_url, sep2, raft = rest.partition(",")
    if not sep or not sep2:
        raise click.BadParameter(f"{spec!r}: expected ID=HTTP_URL,RAFT_ADDR", param_hint="'--member'")
    return Member(mid, http_url, raft)


@click.command(name=PROG, context_settings={"help_option_names": ["-h", "--help"]})
@click.option("--config", "config_path", metavar="FILE",
              help="The node's TOML file (node id, group, data directory, members, limits, log settings). "
                   "Flags given with it override its settings.")
@click.option("--node-id", help="This node's id; must be one of the members. [default: from --config]")
@click.option("--group", help="The broker group's name (letters, digits, '-' or '_'). [default: from --config]")
@click.option("--data-dir", help="Where this node keeps its log and derived state. [default: from --config]")
@click.option("--flush", type=click.Choice(["async", "sync"]),
              help="async: written to the OS before acking (survives a process crash); "
                   "sync: fdatasync before acking (survives power loss). [default: from --config, else async]")
@click.option("--member", "member_specs", multiple=True, metavar="ID=HTTP_URL,RAFT_ADDR",
              help="A member of the group, once per member (this node's too); replaces the file's members.")
@click.option("--retention-hours", type=float,
              help="Delete CommitLog segments whose messages are all older than this. [default: from --config, else 72]")
@click.option("--segment-bytes", type=int,
              help="Size of one log segment file. [default: from --config, else 1 GiB]")
@click.option("--rejoin", is_flag=True,
              help="This node lost its data and rejoins an existing group: it neither votes nor campaigns "
                   "until it has caught up (like etcd's --initial-cluster-state existing).")
@click.option("--bootstrap", is_flag=True,
              help="The first start of a new group: a node on an empty data directory may vote (like etcd's "
                   "--initial-cluster-state new); without it an empty data directory rejoins as a non-voter "
                   "until caught up, as a wiped disk must.")
@click.option("--log-level", default="INFO", show_default=True,
              type=click.Choice(list(logging.getLevelNamesMapping()), case_sensitive=False),
              help="Lowest level of the log lines written to stderr.")
def command(config_path: str | None, node_id: str | None, group: str | None, data_dir: str | None,
            flush: str | None, member_specs: tuple[str, ...], retention_hours: float | None,
            segment_bytes: int | None, rejoin: bool, bootstrap: bool, log_level: str) -> BrokerConfig:
    """Run one RaftMQ broker node: raftmq broker --config node.toml, or every
    setting as flags (--node-id, --group, --data-dir and --member for every member)."""
    logging.basicConfig(level=log_level.upper(), stream=sys.stderr,
                        format="%(asctime)s %(levelname)s %(name)s %(message)s")
    overrides = {"node_id": node_id, "group": group, "data_dir": data_dir, "flush": flush,
                 "retention_hours": retention_hours, "segment_bytes": segment_bytes,
                 "rejoin": True if rejoin else None, "bootstrap": True if bootstrap else None}
    members = {m.id: m for m in map(_member, member_specs)}
    if config_path is not None:
        try:
            cfg = config_mod.load(config_path)
        except ValueError as exc:  # name the file, as the user wrote it (an OSError names it already)
            raise ValueError(f"{config_path}: {exc}") from None
        cfg = config_mod.with_overrides(cfg, **overrides)
        return config_mod.with_overrides(cfg, members=members) if members else cfg
    missing = [k for k in ("node_id", "group", "data_dir") if overrides[k] is None]
    if missing or not members:
        raise click.UsageError("give --config FILE, or --node-id, --group, --data-dir and --member for every member")
    return config_mod.from_mapping({k: v for k, v in overrides.items() if v is not None} | {"members": {
        m.id: {"http_url": m.http_url, "raft_addr": m.raft_addr} for m in members.values()}})


def parse_args(argv: list[str] | None = None) -> BrokerConfig | int:
    """The node's config from its command line, or the exit status when there
    is nothing to run (``--help`` printed). Raises ``click.ClickException`` for a
    bad flag, ``ValueError`` for a bad setting and ``OSError`` for an unreadable file."""
    return command.main(args=argv, prog_name=PROG, standalone_mode=False)


async def serve(cfg: BrokerConfig) -> None:
    ssl_context = server_context(cfg.tls)  # before anything starts: a bad certificate is one line, exit 1
    warn_if_open(cfg)
    broker = Broker(cfg)
    await broker.start()
    http = cfg.http
    cap = connection_cap(http.max_connections, resource.getrlimit(resource.RLIMIT_NOFILE)[0])
    runner = GuardedAppRunner(make_app(broker, http, cfg.acl), access_log=None, cap=cap,
                              header_timeout_s=http.header_timeout_ms / 1000,
                              keepalive_timeout=http.keepalive_idle_ms / 1000,
                              max_line_size=http.max_request_line_bytes, max_field_size=http.max_header_bytes)
    await runner.setup()
    host, port = cfg.http_host_port
    site = web.TCPSite(runner, host, port, reuse_address=True, ssl_context=ssl_context)
    await site.start()
    loop = asyncio.get_running_loop()
    log.info("node=%s group=%s http=%s raft=%s data=%s flush=%s loop=%s max_connections=%d serving", cfg.node_id,
             cfg.group, cfg.me.http_url, cfg.me.raft_addr, cfg.data_dir, cfg.log.flush,
             type(loop).__module__.split(".")[0], cap)
    stop = asyncio.Event()
    for sig in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(sig, stop.set)
    fatal = asyncio.ensure_future(broker.log.fatal.wait())
    try:
        await asyncio.wait([asyncio.ensure_future(stop.wait()), fatal], return_when=asyncio.FIRST_COMPLETED)
    finally:
        log.info("node=%s shutting down", cfg.node_id)
        await runner.cleanup()
        await broker.stop()
    if fatal.done():
        raise SystemExit(f"raftmq broker: node {cfg.node_id} stopped after a fatal error: {broker.log.failed!r}")


def main(argv: list[str] | None = None) -> int:
    try:
        cfg = parse_args(argv)
    except click.ClickException as exc:
        print(f"{PROG}: {exc.format_message()}", file=sys.stderr)
        return exc.exit_code
    except click.Abort:
        return 1
    except (ValueError, OSError) as exc:
        print(f"{PROG}: {exc}", file=sys.stderr)
        return 2
    if not isinstance(cfg, BrokerConfig):
        return cfg or 0
    try:
        with asyncio.Runner(loop_factory=loop_factory()) as runner:
            runner.run(serve(cfg))
    except OSError as exc:
        print(f"{PROG}: {exc}", file=sys.stderr)
        return 1
    return 0
