"""``raftmq topic create|list|describe``: topics and their queues, through ``Admin``."""

from __future__ import annotations

import json

import click

from raftmq.client.cli.output import emit, table
from raftmq.client.cli.runner import ask_admin
from raftmq.client.cli.servers import Servers, common_options
from raftmq.client.cli.usage import DataGroup


@click.group(cls=DataGroup)
def topic() -> None:
    """Create, list and describe topics."""


@topic.command("create")
@click.argument("name")
@click.option("--queues", type=click.IntRange(1, 1024), default=4, show_default=True, help="Number of queues.")
@common_options
def topic_create(name: str, queues: int, servers: Servers, timeout_s: float, as_json: bool) -> None:
    """Create topic NAME (creating it again with the same settings is fine)."""
    res = ask_admin(lambda a: a.create_topic(name, queues), servers, timeout_s)
    emit([json.dumps(res) if as_json else f"topic {res['name']}: {res['queues']} queues"])


@topic.command("list")
@common_options
def topic_list(servers: Servers, timeout_s: float, as_json: bool) -> None:
    """List the topics and their queue counts."""
    res = ask_admin(lambda a: a.list_topics(), servers, timeout_s)
    emit([json.dumps({"topics": res})] if as_json else table(["name", "queues"], res))


@topic.command("describe")
@click.argument("name")
@common_options
def topic_describe(name: str, servers: Servers, timeout_s: float, as_json: bool) -> None:
    """Topic NAME's queues: oldest and next offset, and messages stored."""
    res = ask_admin(lambda a: a.describe_topic(name), servers, timeout_s)
    if as_json:
        emit([json.dumps(res)])
        return
    rows = [{**q, "messages": q["max_offset"] - q["min_offset"]} for q in res["queue_offsets"]]
    emit([f"topic {res['name']}: {res['queues']} queues, {sum(r['messages'] for r in rows)} messages stored",
          *table(["queue_id", "min_offset", "max_offset", "messages"], rows)])
