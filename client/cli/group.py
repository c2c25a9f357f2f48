"""``raftmq group offsets|lag``: a consumer group's committed offsets and lag, through ``Admin``."""

from __future__ import annotations

import json

import click

from raftmq.client.cli.output import emit, table
from raftmq.client.cli.runner import ask_admin
from raftmq.client.cli.servers import Servers, common_options
from raftmq.client.cli.usage import DataGroup


@click.group(cls=DataGroup)
def group() -> None:
    """Consumer groups: committed offsets and lag."""


@group.command("offsets")
@click.argument("name")
@click.option("--topic", required=True, help="The topic the group consumes.")
@common_options
def group_offsets(name: str, topic: str, servers: Servers, timeout_s: float, as_json: bool) -> None:
    """Group NAME's committed offset per queue of a topic (- when none)."""
    res = ask_admin(lambda a: a.offsets(name, topic), servers, timeout_s)
    rows = [{"queue_id": q, "offset": o} for q, o in sorted(res.items())]
    emit([json.dumps({"group": name, "topic": topic, "offsets": rows})] if as_json
         else table(["queue_id", "offset"], rows))


@group.command("lag")
@click.argument("name")
@click.option("--topic", required=True, help="The topic the group consumes.")
@common_options
def group_lag(name: str, topic: str, servers: Servers, timeout_s: float, as_json: bool) -> None:
    """Group NAME's lag per queue: messages stored past its committed offset."""
    res = ask_admin(lambda a: a.lag(name, topic), servers, timeout_s)
    emit([json.dumps(res)] if as_json else
         [*table(["queue_id", "committed_offset", "max_offset", "lag"], res["queues"]), f"total lag: {res['lag']}"])
