"""The data commands of ``raftmq``: produce, consume, topic, group, message.

Each command talks to a group through the Python client (``client.Admin``,
``client.Producer``, ``client.PullConsumer``) and prints a human-readable
table or line per message, or JSON lines with ``--json``. Failures are one
line on stderr and exit code 1 (2 for bad arguments, as click does).

``--server`` (repeatable; or the RAFTMQ_SERVER environment variable) names
any node(s) of the group; the rest are discovered. Without it, the nodes of
the local group started by ``raftmq cluster up`` in ./raftmq-data are used,
else http://127.0.0.1:8081.
"""

from __future__ import annotations

import asyncio
import base64
import json
import sys
from pathlib import Path
from typing import Any, Awaitable, Callable, TypeVar

import click

from client.admin import Admin
from client.consumer import PullConsumer, ReceivedMessage
from client.errors import RaftMQError
from client.producer import Producer

T = TypeVar("T")
DEFAULT_URL = "http://127.0.0.1:8081"
LOCAL_STATE = Path("raftmq-data") / "cluster.json"
# Interactive commands give up quickly on a wrong or dead server.
QUICK = {"deadline_ms": 5000, "request_timeout_ms": 4000, "connect_timeout_ms": 1000}


def default_servers() -> list[str]:
    try:
        nodes = json.loads(LOCAL_STATE.read_text())["nodes"]
        return [n["http_url"] for n in nodes] or [DEFAULT_URL]
    except (OSError, ValueError, KeyError, TypeError):
        return [DEFAULT_URL]


def servers_option(f: Callable[..., Any]) -> Callable[..., Any]:
    return click.option("--server", "servers", multiple=True, envvar="RAFTMQ_SERVER",
                        help="A node URL of the group (repeatable). Default: the local group in "
                             "./raftmq-data (raftmq cluster up), else http://127.0.0.1:8081.")(f)


def json_option(f: Callable[..., Any]) -> Callable[..., Any]:
    return click.option("--json", "as_json", is_flag=True, help="JSON output for scripts.")(f)


def run(coro: Awaitable[T]) -> T:
    """Run one command; a client error becomes one line and exit code 1."""
    try:
        return asyncio.run(coro)  # type: ignore[arg-type]
    except RaftMQError as exc:
        click.echo(f"raftmq: {exc}", err=True)
        raise SystemExit(1)
    except KeyboardInterrupt:
        raise SystemExit(130)


def urls(servers: tuple[str, ...]) -> list[str]:
    out = [u.rstrip("/") for s in servers for u in s.split(",") if u.strip()]
    for u in out:
        if not u.startswith(("http://", "https://")):
            raise click.BadParameter(f"{u!r} is not an http:// URL", param_hint="--server")
    return out or default_servers()


def message_json(m: ReceivedMessage) -> dict[str, Any]:
    d: dict[str, Any] = {"topic": m.topic, "queue_id": m.queue_id, "queue_offset": m.queue_offset,
                         "msg_id": m.msg_id, "tags": m.tags, "keys": list(m.keys),
                         "properties": dict(m.properties), "born_ts": m.born_ts, "store_ts": m.store_ts}
    try:
        d["body"] = m.body.decode("utf-8")
    except UnicodeDecodeError:
        d["body_b64"] = base64.b64encode(m.body).decode("ascii")
    return d


def print_message(m: ReceivedMessage, as_json: bool) -> None:
    d = message_json(m)
    if as_json:
        click.echo(json.dumps(d))
        return
    body = d.get("body", "base64:" + d.get("body_b64", ""))
    extra = "".join(f" {k}={v}" for k, v in (("tags", m.tags), ("keys", ",".join(m.keys))) if v)
    click.echo(f"q={m.queue_id} offset={m.queue_offset}{extra} id={m.msg_id}  {body}")


def table(cols: list[str], rows: list[dict[str, Any]]) -> None:
    cells = [[("-" if r.get(c) is None else str(r.get(c))) for c in cols] for r in rows]
    widths = [max([len(c)] + [len(row[i]) for row in cells]) for i, c in enumerate(cols)]
    click.echo("  ".join(c.ljust(w) for c, w in zip(cols, widths)).rstrip())
    for row in cells:
        click.echo("  ".join(v.ljust(w) for v, w in zip(row, widths)).rstrip())


# ----------------------------------------------------------------------
# produce
# ----------------------------------------------------------------------
@click.command()
@click.option("--topic", required=True)
@click.option("--tags", default=None, help="The message tag.")
@click.option("--keys", "keys", multiple=True, help="Message keys (repeatable or comma-separated).")
@click.option("--sharding-key", default=None, help="Same key, same queue: ordered messages.")
@click.option("--queue", "queue_id", type=click.IntRange(0), default=None, help="An explicit queue.")
@click.option("--property", "props", multiple=True, help="KEY=VALUE (repeatable).")
@click.argument("body", required=False)
@servers_option
@json_option
def produce(topic: str, tags: str | None, keys: tuple[str, ...], sharding_key: str | None, queue_id: int | None,
            props: tuple[str, ...], body: str | None, servers: tuple[str, ...], as_json: bool) -> None:
    """Send BODY, or each line of standard input as one message."""
    properties: dict[str, str] = {}
    for p in props:
        k, sep, v = p.partition("=")
        if not sep or not k:
            raise click.BadParameter(f"{p!r} is not KEY=VALUE", param_hint="--property")
        properties[k] = v
    key_list = [k for item in keys for k in item.split(",") if k]
    bodies = [body] if body is not None else [line.rstrip("\n") for line in sys.stdin]
    if not bodies:
        raise click.UsageError("no message: give BODY or lines on standard input")
    targets = urls(servers)

    async def go() -> None:
        async with Producer(targets, **QUICK) as p:
            kw: dict[str, Any] = {"tags": tags, "keys": key_list or None, "properties": properties or None,
                                  "queue_id": queue_id, "sharding_key": sharding_key}
            kw = {k: v for k, v in kw.items() if v is not None}
            for start in range(0, len(bodies), 1000):  # bounded in flight; the producer batches them
                chunk = bodies[start:start + 1000]
                results = await asyncio.gather(*(p.send(topic, b, **kw) for b in chunk))
                for r in results:
                    if as_json:
                        click.echo(json.dumps({"msg_id": r.msg_id, "queue_id": r.queue_id,
                                               "queue_offset": r.queue_offset}))
                    else:
                        click.echo(f"sent q={r.queue_id} offset={r.queue_offset} id={r.msg_id}")

    run(go())


# ----------------------------------------------------------------------
# consume
# ----------------------------------------------------------------------
@click.command()
@click.option("--topic", required=True)
@click.option("--group", default=None, help="Commit offsets for this consumer group and resume from them.")
@click.option("--from-beginning", is_flag=True,
              help="Start at each queue's oldest message when the group has no committed offset "
                   "(default: only messages that arrive from now on).")
@click.option("--follow", is_flag=True, help="Keep waiting for new messages until Ctrl-C.")
@click.option("--max", "max_messages", type=click.IntRange(1), default=None, help="Stop after N messages.")
@click.option("--queue", "queue_id", type=click.IntRange(0), default=None, help="Read one queue only.")
@click.option("--tags", default=None, help="Only these tags, like a||b.")
@servers_option
@json_option
def consume(topic: str, group: str | None, from_beginning: bool, follow: bool, max_messages: int | None,
            queue_id: int | None, tags: str | None, servers: tuple[str, ...], as_json: bool) -> None:
    """Print a topic's messages, queue by queue, from committed offsets or the start or end."""
    targets = urls(servers)

    async def go() -> None:
        async with Admin(targets, **QUICK) as admin:
            desc = await admin.describe_topic(topic)
            bounds = {q["queue_id"]: (q["min_offset"], q["max_offset"]) for q in desc["queue_offsets"]}
            committed = await admin.offsets(group, topic) if group else {}
        queues = sorted(bounds) if queue_id is None else [queue_id]
        for q in queues:
            if q not in bounds:
                raise click.BadParameter(f"topic {topic!r} has queues 0..{len(bounds) - 1}", param_hint="--queue")
        pos = {}
        for q in queues:
            c = committed.get(q)
            pos[q] = c if c is not None else (bounds[q][0] if from_beginning else bounds[q][1])
        seen = 0
        async with PullConsumer(targets, group or "raftmq-cli", topic, **QUICK) as pc:
            try:
                while True:
                    idle = True
                    for q in queues:
                        want = 256 if max_messages is None else min(256, max_messages - seen)
                        res = await pc.fetch(q, pos[q], max_messages=want, tags=tags,
                                             wait_ms=(300 if follow and len(queues) == 1 else 0))
                        for m in res.messages:
                            print_message(m, as_json)
                        seen += len(res.messages)
                        if res.next_offset != pos[q]:
                            idle = False
                            pos[q] = res.next_offset
                            if group:
                                await pc.commit(q, pos[q])
                        if max_messages is not None and seen >= max_messages:
                            return
                    if idle:
                        if not follow:
                            return
                        await asyncio.sleep(0.2 if len(queues) > 1 else 0)
            except (KeyboardInterrupt, asyncio.CancelledError):
                return

    try:
        run(go())
    except SystemExit as exc:
        if exc.code == 130:  # Ctrl-C during --follow is how one stops it
            raise SystemExit(0)
        raise


# ----------------------------------------------------------------------
# topic, group, message
# ----------------------------------------------------------------------
@click.group()
def topic() -> None:
    """Create, list and describe topics."""


@topic.command("create")
@click.argument("name")
@click.option("--queues", type=click.IntRange(1, 1024), default=4, show_default=True)
@servers_option
@json_option
def topic_create(name: str, queues: int, servers: tuple[str, ...], as_json: bool) -> None:
    """Create a topic (repeating it with the same settings is fine)."""
    async def go() -> dict[str, Any]:
        async with Admin(urls(servers), **QUICK) as a:
            return await a.create_topic(name, queues)

    res = run(go())
    click.echo(json.dumps(res) if as_json else f"topic {res['name']}: {res['queues']} queues")


@topic.command("list")
@servers_option
@json_option
def topic_list(servers: tuple[str, ...], as_json: bool) -> None:
    """List topics."""
    async def go() -> list[dict[str, Any]]:
        async with Admin(urls(servers), **QUICK) as a:
            return await a.list_topics()

    res = run(go())
    if as_json:
        click.echo(json.dumps(res))
    else:
        table(["name", "queues"], res)


@topic.command("describe")
@click.argument("name")
@servers_option
@json_option
def topic_describe(name: str, servers: tuple[str, ...], as_json: bool) -> None:
    """A topic's queues with their min and max offsets."""
    async def go() -> dict[str, Any]:
        async with Admin(urls(servers), **QUICK) as a:
            return await a.describe_topic(name)

    res = run(go())
    if as_json:
        click.echo(json.dumps(res))
    else:
        click.echo(f"topic {res['name']}: {res['queues']} queues")
        table(["queue_id", "min_offset", "max_offset"], res["queue_offsets"])


@click.group()
def group() -> None:
    """Consumer group offsets and lag."""


@group.command("offsets")
@click.argument("name")
@click.option("--topic", required=True)
@servers_option
@json_option
def group_offsets(name: str, topic: str, servers: tuple[str, ...], as_json: bool) -> None:
    """Committed offsets per queue."""
    async def go() -> dict[int, int | None]:
        async with Admin(urls(servers), **QUICK) as a:
            return await a.offsets(name, topic)

    res = run(go())
    rows = [{"queue_id": q, "offset": o} for q, o in sorted(res.items())]
    if as_json:
        click.echo(json.dumps(rows))
    else:
        table(["queue_id", "offset"], rows)


@group.command("lag")
@click.argument("name")
@click.option("--topic", required=True)
@servers_option
@json_option
def group_lag(name: str, topic: str, servers: tuple[str, ...], as_json: bool) -> None:
    """Per-queue committed offset, max offset and lag."""
    async def go() -> dict[str, Any]:
        async with Admin(urls(servers), **QUICK) as a:
            return await a.lag(name, topic)

    res = run(go())
    if as_json:
        click.echo(json.dumps(res))
    else:
        table(["queue_id", "committed_offset", "max_offset", "lag"], res["queues"])
        click.echo(f"total lag: {res['lag']}")


@click.group()
def message() -> None:
    """Look messages up by id or key."""


@message.command("get")
@click.argument("msg_id")
@servers_option
@json_option
def message_get(msg_id: str, servers: tuple[str, ...], as_json: bool) -> None:
    """One message by id."""
    async def go() -> ReceivedMessage:
        async with Admin(urls(servers), **QUICK) as a:
            return await a.get_message(msg_id)

    print_message(run(go()), as_json)


@message.command("query")
@click.option("--key", required=True)
@click.option("--begin-ts", type=click.IntRange(0), default=None, help="Stored at or after (ms since the epoch).")
@click.option("--end-ts", type=click.IntRange(0), default=None, help="Stored at or before (ms since the epoch).")
@click.option("--max", "max_results", type=click.IntRange(1, 1024), default=32, show_default=True)
@servers_option
@json_option
def message_query(key: str, begin_ts: int | None, end_ts: int | None, max_results: int, servers: tuple[str, ...],
                  as_json: bool) -> None:
    """Messages with a key (newest first)."""
    async def go() -> list[ReceivedMessage]:
        async with Admin(urls(servers), **QUICK) as a:
            return await a.query(key, begin_ts, end_ts, max_results)

    for m in run(go()):
        print_message(m, as_json)


COMMANDS = [produce, consume, topic, group, message]
