"""One broker node as a process: ``python -m raftmq.broker --config node.toml`` (what
``raftmq broker`` runs). Serves the HTTP API and the Raft peer port until
SIGTERM or SIGINT, then shuts down cleanly (a checkpoint, files closed).
"""

from __future__ import annotations

import argparse
import asyncio
import logging
import signal
import sys
from dataclasses import replace

from aiohttp import web

from raftmq.broker import config as config_mod
from raftmq.broker.config import BrokerConfig, Member
from raftmq.broker.http.app import make_app
from raftmq.broker.service import Broker
from raftmq.eventloop import loop_factory

log = logging.getLogger(__name__)


def parse_args(argv: list[str] | None = None) -> BrokerConfig:
    p = argparse.ArgumentParser(prog="raftmq broker", description="Run one RaftMQ broker node.")
    p.add_argument("--config", help="node TOML file")
    p.add_argument("--node-id")
    p.add_argument("--group")
    p.add_argument("--data-dir")
    p.add_argument("--flush", choices=["async", "sync"])
    p.add_argument("--member", action="append", default=[],
                   help="ID=HTTP_URL,RAFT_ADDR, once per member (this node's too)")
    p.add_argument("--retention-hours", type=float)
    p.add_argument("--segment-bytes", type=int)
    p.add_argument("--rejoin", action="store_true",
                   help="this node lost its data and rejoins an existing group: it neither votes nor campaigns "
                        "until it has caught up (like etcd's --initial-cluster-state existing)")
    p.add_argument("--bootstrap", action="store_true",
                   help="the first start of a new group: a node on an empty data directory may vote (like etcd's "
                        "--initial-cluster-state new); without it an empty data directory rejoins as a non-voter "
                        "until caught up, as a wiped disk must")
    p.add_argument("--log-level", default="INFO")
    a = p.parse_args(argv)
    logging.basicConfig(level=a.log_level.upper(), stream=sys.stderr,
                        format="%(asctime)s %(levelname)s %(name)s %(message)s")
    overrides = {"node_id": a.node_id, "group": a.group, "data_dir": a.data_dir, "flush": a.flush,
                 "retention_hours": a.retention_hours, "segment_bytes": a.segment_bytes,
                 "rejoin": True if a.rejoin else None, "bootstrap": True if a.bootstrap else None}
    members = {}
    for spec in a.member:
        mid, sep, rest = spec.partition("=")
        http_url, sep2, raft = rest.partition(",")
        if not sep or not sep2:
            p.error(f"--member {spec!r}: expected ID=HTTP_URL,RAFT_ADDR")
        members[mid] = Member(mid, http_url, raft)
    if a.config:
        try:
            cfg = config_mod.load(a.config)
        except ValueError as exc:  # name the file, as the user wrote it (an OSError names it already)
            raise ValueError(f"{a.config}: {exc}") from None
        cfg = config_mod.with_overrides(cfg, **overrides)
        return replace(cfg, members=members) if members else cfg
    missing = [k for k in ("node_id", "group", "data_dir") if overrides[k] is None]
    if missing or not members:
        p.error("give --config FILE, or --node-id, --group, --data-dir and --member for every member")
    return config_mod.from_mapping({k: v for k, v in overrides.items() if v is not None} | {"members": {
        m.id: {"http_url": m.http_url, "raft_addr": m.raft_addr} for m in members.values()}})


async def serve(cfg: BrokerConfig) -> None:
    broker = Broker(cfg)
    await broker.start()
    runner = web.AppRunner(make_app(broker), access_log=None)
    await runner.setup()
    host, port = cfg.http_host_port
    site = web.TCPSite(runner, host, port, reuse_address=True)
    await site.start()
    loop = asyncio.get_running_loop()
    log.info("node=%s group=%s http=%s raft=%s data=%s flush=%s loop=%s serving", cfg.node_id, cfg.group,
             cfg.me.http_url, cfg.me.raft_addr, cfg.data_dir, cfg.log.flush, type(loop).__module__.split(".")[0])
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
    except (ValueError, OSError) as exc:
        print(f"raftmq broker: {exc}", file=sys.stderr)
        return 2
    try:
        with asyncio.Runner(loop_factory=loop_factory()) as runner:
            runner.run(serve(cfg))
    except OSError as exc:
        print(f"raftmq broker: {exc}", file=sys.stderr)
        return 1
    return 0
