"""``raftmq message get|query``: look messages up by id or by key, through ``Admin``."""

from __future__ import annotations

import json
from datetime import datetime
from typing import Any

import click

from raftmq.client.cli.output import emit, format_message, message_block, message_json
from raftmq.client.cli.runner import ask_admin
from raftmq.client.cli.servers import Servers, common_options
from raftmq.client.cli.usage import DataGroup


class TimestampParam(click.ParamType):
    """Milliseconds since the epoch, or an ISO 8601 date or date-time (local time unless it says otherwise)."""

    name = "TIMESTAMP"

    def convert(self, value: Any, param: click.Parameter | None, ctx: click.Context | None) -> int:
        if isinstance(value, int):
            return value
        text = str(value).strip()
        if text.isdigit():
            return int(text)
        try:
            dt = datetime.fromisoformat(text)
        except ValueError:
            self.fail(f"{text!r} is neither milliseconds since the epoch nor an ISO 8601 date-time", param, ctx)
        if dt.tzinfo is None:
            dt = dt.astimezone()  # a naive time is local time
        return int(dt.timestamp() * 1000)


@click.group(cls=DataGroup)
def message() -> None:
    """Look messages up by id or by key."""


@message.command("get")
@click.argument("msg_id")
@common_options
def message_get(msg_id: str, servers: Servers, timeout_s: float, as_json: bool) -> None:
    """The message with id MSG_ID (as produce and consume print it)."""
    m = ask_admin(lambda a: a.get_message(msg_id), servers, timeout_s)
    emit([json.dumps(message_json(m))] if as_json else message_block(m))


@message.command("query")
@click.option("--key", required=True, help="A message key (see produce --keys).")
@click.option("--begin-ts", type=TimestampParam(), default=None,
              help="Stored at or after: ms since the epoch or an ISO date-time like 2026-01-31T12:00.")
@click.option("--end-ts", type=TimestampParam(), default=None, help="Stored at or before (same forms).")
@click.option("--max", "max_results", type=click.IntRange(1, 1024), default=32, show_default=True, metavar="N",
              help="At most N messages.")
@common_options
def message_query(key: str, begin_ts: int | None, end_ts: int | None, max_results: int, servers: Servers,
                  timeout_s: float, as_json: bool) -> None:
    """Messages with key KEY, newest first, one per line (as consume prints them)."""
    if begin_ts is not None and end_ts is not None and begin_ts > end_ts:
        raise click.UsageError("--begin-ts is after --end-ts")

    found = ask_admin(lambda a: a.query(key, begin_ts, end_ts, max_results), servers, timeout_s)
    emit([format_message(m, as_json, with_topic=True) for m in found])
    if not found and not as_json:
        click.echo(f"raftmq: no message with key {key!r}", err=True)
