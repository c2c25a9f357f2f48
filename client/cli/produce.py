"""``raftmq produce``: one message from the BODY argument, or one per line of
standard input, sent through the ``Producer`` (which batches them), with one
result line per message printed in input order."""

from __future__ import annotations

import asyncio
import os
import sys
from typing import Any, AsyncIterator, Iterable

import click

from raftmq.client.cli.error_lines import PartialProduce
from raftmq.client.cli.output import emit, send_result_line
from raftmq.client.cli.runner import run
from raftmq.client.cli.servers import Servers, common_options, transport_options
from raftmq.client.cli.stdin import PRODUCE_CHUNKS_IN_FLIGHT, StdinLines
from raftmq.client.cli.usage import DataCommand
from raftmq.client.producer import Producer, SendResult


def parse_properties(values: Iterable[str]) -> dict[str, str]:
    """``--property k=v`` values as a dict (the first ``=`` splits; the value may be empty)."""
    props: dict[str, str] = {}
    for item in values:
        k, sep, v = item.partition("=")
        if not sep or not k.strip():
            raise click.BadParameter(f"{item!r} is not KEY=VALUE", param_hint="--property")
        props[k.strip()] = v
    return props


def split_keys(values: Iterable[str]) -> list[str]:
    """``--keys a,b --keys c`` -> ``["a", "b", "c"]`` (blanks dropped, order kept, no repeats)."""
    keys: list[str] = []
    for value in values:
        for k in value.split(","):
            k = k.strip()
            if k and k not in keys:
                keys.append(k)
    return keys


async def produce_stream(producer: Producer, topic: str, chunks: AsyncIterator[list[bytes]],
                         send_options: dict[str, Any], as_json: bool) -> None:
    """Send every line and print one result per message, in input order, as
    soon as it is known. Input is read while earlier chunks are in flight (the
    producer batches them into requests), at most ``PRODUCE_CHUNKS_IN_FLIGHT``
    chunks ahead. After a failure no more input is read; what was already sent
    is still reported, then the first error is raised."""
    inflight: asyncio.Queue[asyncio.Future[list[Any]] | None] = asyncio.Queue()
    room = asyncio.Semaphore(PRODUCE_CHUNKS_IN_FLIGHT)
    sent = failed = 0
    first_error: BaseException | None = None

    async def submit() -> None:
        try:
            async for chunk in chunks:
                await room.acquire()
                inflight.put_nowait(asyncio.gather(*(producer.send(topic, body, **send_options) for body in chunk),
                                                   return_exceptions=True))
        finally:
            inflight.put_nowait(None)

    def report(results: list[SendResult | BaseException]) -> None:
        nonlocal sent, failed, first_error
        lines = []
        for r in results:
            if isinstance(r, BaseException):
                failed += 1
                first_error = first_error or r
            else:
                sent += 1
                lines.append(send_result_line(r, as_json))
        emit(lines)

    submitter = asyncio.create_task(submit(), name="raftmq-produce-input")
    try:
        while (batch := await inflight.get()) is not None:
            report(await batch)
            room.release()
            if first_error is not None:
                submitter.cancel()  # stop reading input; the chunks already sent are still reported
        await asyncio.wait([submitter])
    finally:
        submitter.cancel()
    if not submitter.cancelled() and submitter.exception() is not None:
        raise submitter.exception()  # type: ignore[misc]  # reading standard input failed
    if first_error is not None:
        if sent + failed <= 1:
            raise first_error
        raise PartialProduce(first_error, sent, failed)


async def _single(body: bytes) -> AsyncIterator[list[bytes]]:
    yield [body]


@click.command(cls=DataCommand)
@click.option("--topic", required=True, help="The topic to send to.")
@click.option("--tags", default=None, help="The message tag (consumers can filter on it).")
@click.option("--keys", "keys", multiple=True, metavar="KEY[,KEY...]",
              help="Message keys, for 'raftmq message query --key' (comma-separated or repeatable).")
@click.option("--sharding-key", default=None,
              help="Messages with the same sharding key go to the same queue, in order.")
@click.option("--queue", "queue_id", type=click.IntRange(0), default=None, help="Send to this queue.")
@click.option("--property", "props", multiple=True, metavar="KEY=VALUE", callback=lambda c, p, v: parse_properties(v),
              help="A user property (repeatable).")
@click.argument("body", required=False)
@common_options
def produce(topic: str, tags: str | None, keys: tuple[str, ...], sharding_key: str | None, queue_id: int | None,
            props: dict[str, str], body: str | None, servers: Servers, timeout_s: float, as_json: bool) -> None:
    """Send BODY as one message, or, without BODY, each line of standard input
    as one message (empty lines are skipped). Prints where each message was
    stored, in input order: queue, queue offset and message id.

    \b
      raftmq produce --topic orders 'hello'
      seq 1 1000 | raftmq produce --topic orders --keys batch-7 --json
    """
    if queue_id is not None and sharding_key is not None:
        raise click.UsageError("use either --queue or --sharding-key, not both")
    send_options: dict[str, Any] = {"tags": tags, "keys": split_keys(keys) or None, "properties": props or None,
                                    "queue_id": queue_id, "sharding_key": sharding_key}
    send_options = {k: v for k, v in send_options.items() if v is not None}
    stdin = getattr(sys.stdin, "buffer", None)
    if body is None and stdin is None:
        raise click.UsageError("give BODY, or messages on standard input")
    if body is None and sys.stdin.isatty():
        click.echo("raftmq: reading messages from standard input, one per line (Ctrl-D to end)", err=True)

    async def go() -> None:
        # os.fsencode gives back the argument's exact bytes, even ones that are not UTF-8.
        chunks = _single(os.fsencode(body)) if body is not None else StdinLines(stdin).chunks()  # type: ignore[arg-type]
        async with Producer(servers.urls, **transport_options(timeout_s)) as producer:
            await produce_stream(producer, topic, chunks, send_options, as_json)

    run(go, servers, timeout_s)
