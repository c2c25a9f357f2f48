"""``raftmq consume``: print a topic's messages, from the group's committed
offsets, the end of each queue, or the beginning; with ``--follow``, keep
long-polling every queue until Ctrl-C or ``--max``. With ``--group`` the
positions printed are committed as it goes."""

from __future__ import annotations

import asyncio
from dataclasses import dataclass, field
from typing import Any

import click

from raftmq.client.cli.output import emit, format_message
from raftmq.client.cli.runner import EXIT_INTERRUPTED, run
from raftmq.client.cli.servers import Servers, common_options, transport_options
from raftmq.client.cli.usage import DataCommand
from raftmq.client.consumer import PullConsumer, PullResult, ReceivedMessage

FETCH_MESSAGES = 256  # messages per pull while reading what is stored
FOLLOW_WAIT_MS = 10_000  # long-poll per queue with --follow (the broker allows up to 30 s)


def start_offset(committed: int | None, min_offset: int, max_offset: int, from_beginning: bool) -> int:
    """Where a queue is read from: the group's committed offset (kept inside the
    queue's bounds: retention may have deleted older messages), else its oldest
    message with ``--from-beginning``, else its end (RocketMQ's default for a
    new group, CONSUME_FROM_LAST_OFFSET: only messages that arrive from now on)."""
    if committed is not None:
        return min(max(committed, min_offset), max_offset)
    return min_offset if from_beginning else max_offset


@dataclass(slots=True)
class ConsumeProgress:
    """Per-queue read positions and what is left of ``--max``; pure bookkeeping."""

    positions: dict[int, int]
    remaining: int | None = None  # None: no --max
    committed: dict[int, int] = field(default_factory=dict)  # what this run last committed per queue
    printed: int = 0

    @property
    def done(self) -> bool:
        return self.remaining is not None and self.remaining <= 0

    def batch_size(self) -> int:
        return FETCH_MESSAGES if self.remaining is None else max(1, min(FETCH_MESSAGES, self.remaining))

    def take(self, queue_id: int, res: PullResult) -> list[ReceivedMessage]:
        """The fetched messages to print (cut at ``--max``) and the queue's new
        position: past the fetch (and any messages the tag filter skipped), or
        just past the last message printed when ``--max`` cut the batch."""
        msgs = res.messages
        if self.remaining is not None and len(msgs) > self.remaining:
            msgs = msgs[: self.remaining]
            if msgs:
                self.positions[queue_id] = msgs[-1].queue_offset + 1
        else:
            self.positions[queue_id] = max(self.positions[queue_id], res.next_offset)
        if self.remaining is not None:
            self.remaining -= len(msgs)
        self.printed += len(msgs)
        return msgs

    def to_commit(self, queue_id: int) -> int | None:
        pos = self.positions[queue_id]
        return pos if self.committed.get(queue_id) != pos else None


async def consume_run(pc: PullConsumer, queues: list[int], progress: ConsumeProgress, *, group: str | None,
                      follow: bool, tags: str | None, as_json: bool) -> None:
    """Read what is stored, queue by queue, then with ``follow`` long-poll every
    queue at once until ``--max`` is reached (or the task is cancelled: Ctrl-C).
    With a group, each queue's position is committed after every batch printed."""

    async def commit(q: int) -> None:
        offset = progress.to_commit(q)
        if group is not None and offset is not None:
            await pc.commit(q, offset)
            progress.committed[q] = offset

    def show(q: int, res: PullResult) -> None:
        emit([format_message(m, as_json) for m in progress.take(q, res)])

    for q in queues:  # what is stored now
        while not progress.done:
            before = progress.positions[q]
            res = await pc.fetch(q, before, max_messages=progress.batch_size(), tags=tags)
            show(q, res)
            await commit(q)
            if progress.positions[q] >= res.max_offset or progress.positions[q] == before:
                break
    if not follow or progress.done:
        return

    finished = asyncio.Event()

    async def follow_queue(q: int) -> None:
        while True:
            res = await pc.fetch(q, progress.positions[q], max_messages=progress.batch_size(),
                                 wait_ms=FOLLOW_WAIT_MS, tags=tags)
            show(q, res)  # synchronous: a batch is printed whole, and --max is checked, before any other queue's
            if progress.done:
                finished.set()
                return
            await commit(q)

    # One long poll per queue; the first to reach --max (or fail) ends them all.
    tasks = [asyncio.create_task(follow_queue(q), name=f"raftmq-follow-{q}") for q in queues]
    waiter: asyncio.Task[Any] = asyncio.create_task(finished.wait())
    try:
        await asyncio.wait([*tasks, waiter], return_when=asyncio.FIRST_COMPLETED)
        for t in tasks:
            if t.done() and not t.cancelled() and (err := t.exception()) is not None:
                raise err
    finally:
        for t in [*tasks, waiter]:
            t.cancel()
        await asyncio.gather(*tasks, waiter, return_exceptions=True)


async def final_commit(pc: PullConsumer, progress: ConsumeProgress, deadline_s: float) -> None:
    """Commit every queue position not committed yet (after --max, or on Ctrl-C)."""
    async def one(q: int, offset: int) -> None:
        await pc.commit(q, offset)
        progress.committed[q] = offset

    todo = [(q, o) for q in progress.positions if (o := progress.to_commit(q)) is not None]
    if todo:
        await asyncio.wait_for(asyncio.gather(*(one(q, o) for q, o in todo)), deadline_s)


@click.command(cls=DataCommand)
@click.option("--topic", required=True, help="The topic to read.")
@click.option("--group", default=None, help="A consumer group: start from its committed offsets and commit "
                                            "them as messages are printed.")
@click.option("--from-beginning", is_flag=True,
              help="Where the group has no committed offset (or without --group): start at each queue's oldest "
                   "message. Default: at its end, as RocketMQ's CONSUME_FROM_LAST_OFFSET.")
@click.option("--follow", "-f", is_flag=True, help="Keep waiting for new messages until Ctrl-C (or --max).")
@click.option("--max", "max_messages", type=click.IntRange(1), default=None, metavar="N",
              help="Stop after N messages.")
@click.option("--queue", "queue_id", type=click.IntRange(0), default=None, help="Read this queue only.")
@click.option("--tags", default=None, metavar="TAG[||TAG...]", help="Only messages with one of these tags.")
@common_options
def consume(topic: str, group: str | None, from_beginning: bool, follow: bool, max_messages: int | None,
            queue_id: int | None, tags: str | None, servers: Servers, timeout_s: float, as_json: bool) -> None:
    """Print a topic's messages: one line each (queue, offset, tags, keys,
    message id, then the body: text, or base64 when it is not UTF-8), or one
    JSON object per line with --json. Messages of one queue come in queue
    order.

    Reading starts at the group's committed offsets; where there are none, at
    the end of each queue (only new messages: combine with --follow), or at
    the oldest message with --from-beginning. Without --follow it stops once
    it has read what is stored.

    \b
      raftmq consume --topic orders --from-beginning --max 10
      raftmq consume --topic orders --group billing --follow
    """

    async def go() -> ConsumeProgress | None:
        opts = transport_options(timeout_s)
        async with PullConsumer(servers.urls, group or "raftmq-cli", topic, **opts,
                                max_connections=1100) as pc:  # a long poll per queue with --follow
            bounds = await pc.bounds()
            if queue_id is not None and queue_id not in bounds:
                raise click.BadParameter(f"topic {topic!r} has queues 0..{len(bounds) - 1}", param_hint="--queue")
            queues = sorted(bounds) if queue_id is None else [queue_id]
            committed = await pc.committed() if group is not None else {}
            progress = ConsumeProgress({q: start_offset(committed.get(q), *bounds[q], from_beginning)
                                        for q in queues}, remaining=max_messages)
            progress.committed = {q: o for q, o in committed.items() if o is not None and q in progress.positions}
            try:
                await consume_run(pc, queues, progress, group=group, follow=follow, tags=tags, as_json=as_json)
            except asyncio.CancelledError:
                if not follow:
                    raise
                # Ctrl-C: the normal end of --follow. Commit what was printed, then exit 0.
                if group is not None:
                    await final_commit(pc, progress, min(timeout_s, 2.0))
                return None
            if group is not None:
                await final_commit(pc, progress, timeout_s)
            return progress if all(committed.get(q) is None for q in queues) else None

    try:
        progress = run(go, servers, timeout_s)
    except SystemExit as exc:
        if follow and exc.code == EXIT_INTERRUPTED:
            raise SystemExit(0)
        raise
    if progress is not None and progress.printed == 0 and not from_beginning and not follow:
        click.echo("raftmq: no new messages (reading starts at the end of each queue: --from-beginning reads "
                   "the stored ones, --follow waits for new ones)", err=True)
