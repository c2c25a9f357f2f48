"""The data commands of ``raftmq``: produce, consume, topic, group, message.

Each command parses its options, does its work through the Python client
(``Producer``, ``PullConsumer``, ``Admin``) and prints a human-readable line
or table, or JSON (one object per line for streams) with ``--json``.

Errors are one line on stderr, ``raftmq: <what went wrong>``, and exit code 1;
bad arguments are click's usage errors with exit code 2. Ctrl-C stops a
command with exit code 130, except ``consume --follow``, where it is the
normal way to stop (exit code 0, offsets committed first).

Which group: ``--server URL`` (repeatable or comma-separated; or the
``RAFTMQ_SERVER`` environment variable, URLs separated by spaces or commas)
names any node(s) of the group; the client learns the others and follows the
leader. Without it, the nodes of the local group that ``raftmq cluster up``
wrote to ./raftmq-data/cluster.json, else http://127.0.0.1:8081.

Requests give up after ``--timeout`` seconds (default 5: long enough to ride
out an election, short enough that a wrong server fails fast).
"""

from __future__ import annotations

import asyncio
import base64
import json
import os
import socket
import sys
import threading
from dataclasses import dataclass, field
from datetime import datetime, timezone
from pathlib import Path
from typing import IO, Any, AsyncIterator, Awaitable, Callable, Iterable, Sequence, TypeVar
from urllib.parse import urlsplit

import click

from raftmq.client.admin import Admin
from raftmq.client.local.cluster import DEFAULT_BASE_DIR, STATE_FILE
from raftmq.client.consumer import PullConsumer, PullResult, ReceivedMessage
from raftmq.client.errors import NoLeader, NotLeader, RaftMQError, Timeout, Unavailable
from raftmq.client.http import normalize_url
from raftmq.client.loop import run as run_loop
from raftmq.client.producer import Producer, SendResult

T = TypeVar("T")

DEFAULT_URL = "http://127.0.0.1:8081"
LOCAL_BASE_DIR = Path(DEFAULT_BASE_DIR)
DEFAULT_TIMEOUT_S = 5.0
FETCH_MESSAGES = 256  # messages per pull while reading what is stored
FOLLOW_WAIT_MS = 10_000  # long-poll per queue with --follow (the broker allows up to 30 s)
PRODUCE_CHUNK_LINES = 1024  # stdin lines handed to the producer at a time (its batch size)
PRODUCE_CHUNKS_IN_FLIGHT = 8  # chunks sent and not yet answered; bounds memory on a large stdin
EXIT_INTERRUPTED = 130  # 128 + SIGINT, as a shell reports a command stopped by Ctrl-C
EXIT_BROKEN_PIPE = 141  # 128 + SIGPIPE: the reader of our output went away (`| head`)


# ----------------------------------------------------------------------
# which group
# ----------------------------------------------------------------------
@dataclass(slots=True, frozen=True)
class Servers:
    """The node URLs a command talks to, and where they came from (for error hints)."""

    urls: tuple[str, ...]
    origin: str  # "option", "env", "local" (./raftmq-data/cluster.json) or "default"

    def hint(self) -> str:
        if self.origin == "local":
            return f" (the local group of ./{LOCAL_BASE_DIR / STATE_FILE}: is it running? see 'raftmq cluster status')"
        if self.origin == "default":
            return (f" (the default: no ./{LOCAL_BASE_DIR / STATE_FILE} here; start a group with "
                    "'raftmq cluster up' or pass --server)")
        if self.origin == "env":
            return " (from RAFTMQ_SERVER)"
        return ""


def local_group_urls(base_dir: Path = LOCAL_BASE_DIR) -> list[str]:
    """The HTTP URLs of the nodes in ``<base_dir>/cluster.json`` ([] if there is no usable file)."""
    try:
        nodes = json.loads((base_dir / STATE_FILE).read_text())["nodes"]
        return [normalize_url(n["http_url"]) for n in nodes]
    except (OSError, ValueError, KeyError, TypeError):
        return []


def parse_servers(values: Iterable[str], origin: str, base_dir: Path = LOCAL_BASE_DIR) -> Servers:
    """``--server`` values (each may hold several URLs separated by commas or
    spaces; ``host:port`` means ``http://host:port``) or the default group."""
    urls: list[str] = []
    for value in values:
        for item in value.replace(",", " ").split():
            try:
                url = normalize_url(item)
            except ValueError:
                raise click.BadParameter(f"{item!r} is not a broker URL (expected http://HOST:PORT)",
                                         param_hint="--server")
            if url not in urls:
                urls.append(url)
    if urls:
        return Servers(tuple(urls), origin)
    local = local_group_urls(base_dir)
    if local:
        return Servers(tuple(local), "local")
    return Servers((DEFAULT_URL,), "default")


def _servers_callback(ctx: click.Context, param: click.Parameter, value: tuple[str, ...]) -> Servers:
    source = ctx.get_parameter_source(param.name or "servers")
    return parse_servers(value, "env" if source == click.core.ParameterSource.ENVIRONMENT else "option")


def transport_options(timeout_s: float) -> dict[str, Any]:
    """Client options for a command that gives up after ``timeout_s`` seconds."""
    ms = max(1, int(timeout_s * 1000))
    return {"deadline_ms": ms, "request_timeout_ms": min(ms, 4000), "connect_timeout_ms": min(ms, 1000)}


def common_options(f: Callable[..., Any]) -> Callable[..., Any]:
    """--server, --timeout and --json, on every data command."""
    f = click.option("--json", "as_json", is_flag=True, help="JSON output for scripts (one object per line "
                     "for messages and send results).")(f)
    f = click.option("--timeout", "timeout_s", type=click.FloatRange(0.1, 3600), default=DEFAULT_TIMEOUT_S,
                     show_default=True, metavar="SECONDS",
                     help="Give up on a request (after retrying through elections) after this long.")(f)
    f = click.option("--server", "servers", multiple=True, envvar="RAFTMQ_SERVER", show_envvar=True,
                     callback=_servers_callback, metavar="URL",
                     help=f"A node of the group, like http://127.0.0.1:8081 (repeatable or comma-separated; "
                          f"the other nodes are found from it). Default: the local group in "
                          f"./{LOCAL_BASE_DIR / STATE_FILE} (written by 'raftmq cluster up') if it exists, "
                          f"else {DEFAULT_URL}.")(f)
    return f


# ----------------------------------------------------------------------
# errors: one line each
# ----------------------------------------------------------------------
class CommandFailed(Exception):
    """A failure already phrased for the user (one line, without the ``raftmq:`` prefix)."""


def one_line(text: str, limit: int = 300) -> str:
    text = " ".join(text.split())
    return text if len(text) <= limit else text[: limit - 3] + "..."


class OneLineUsageError(click.UsageError):
    """A usage error shown like every other failure of these commands: one
    line, ``raftmq: ...``, with where to find help (exit code 2, as click's)."""

    def show(self, file: IO[Any] | None = None) -> None:
        hint = f" (see '{self.ctx.command_path} --help')" if self.ctx is not None else ""
        click.echo(f"raftmq: {one_line(self.format_message())}{hint}", file=file, err=file is None)


def _one_line_usage(exc: click.UsageError) -> click.UsageError:
    if isinstance(exc, (OneLineUsageError, click.exceptions.NoArgsIsHelpError)):
        return exc  # NoArgsIsHelpError: `raftmq topic` alone prints the group's help
    return OneLineUsageError(exc.format_message(), exc.ctx)


class _OneLineUsage:
    """Mixed into a click command or group: its usage errors are one line (see ``OneLineUsageError``)."""

    def parse_args(self, ctx: click.Context, args: list[str]) -> list[str]:
        try:
            return super().parse_args(ctx, args)  # type: ignore[misc, no-any-return]
        except click.UsageError as exc:
            raise _one_line_usage(exc) from None

    def invoke(self, ctx: click.Context) -> Any:
        try:
            return super().invoke(ctx)  # type: ignore[misc]
        except click.UsageError as exc:
            raise _one_line_usage(exc) from None


class DataCommand(_OneLineUsage, click.Command):
    """A command whose usage errors are one line."""


class DataGroup(_OneLineUsage, click.Group):
    """A group of ``DataCommand``s, with one-line usage errors of its own (an unknown subcommand)."""

    command_class = DataCommand


def error_line(exc: BaseException, servers: Servers, timeout_s: float, unreachable: bool = False) -> str:
    """What to tell the user about ``exc``, in one line. ``unreachable``: no
    server accepts a TCP connection (checked after a ``Timeout``)."""
    where = ", ".join(servers.urls)
    if isinstance(exc, _PartialProduce):
        return f"{error_line(exc.cause, servers, timeout_s, unreachable)} ({exc.sent} sent, {exc.failed} failed)"
    if isinstance(exc, Timeout):
        last = exc.last_error
        if unreachable or (isinstance(last, Unavailable) and "cannot connect" in last.message):
            return f"cannot connect to {where}{servers.hint()}"
        if isinstance(last, (NoLeader, NotLeader)):
            return f"the group at {where} has no leader (no election finished within {timeout_s:g} s)"
        reason = f" (last error: {one_line(last.message, 160)})" if isinstance(last, RaftMQError) else ""
        if exc.outcome_unknown:
            return (f"no answer from {where} within {timeout_s:g} s; the write may or may not have been "
                    f"stored{reason}")
        return f"no answer from {where} within {timeout_s:g} s{reason}"
    if isinstance(exc, RaftMQError):
        msg = exc.message.strip()
        if msg.startswith("<") or "\n" in msg or msg == f"HTTP {exc.status}":
            # Not the broker's {"error": code, "message": ...}: some other HTTP server.
            return f"{where} answered HTTP {exc.status}, not like a RaftMQ broker{servers.hint() or ' (check --server)'}"
        return one_line(msg or str(exc))
    if isinstance(exc, CommandFailed):
        return one_line(str(exc))
    return one_line(f"{type(exc).__name__}: {exc}" if not str(exc) else str(exc))


def run(make: Callable[[], Awaitable[T]], servers: Servers, timeout_s: float) -> T:
    """Run one command's coroutine; expected failures become one line on stderr
    and an exit code (click's own usage errors pass through to click)."""
    try:
        return run_loop(make())  # type: ignore[arg-type]
    except (RaftMQError, CommandFailed, OSError) as exc:
        if isinstance(exc, BrokenPipeError):
            _quiet_stdout()
            raise SystemExit(EXIT_BROKEN_PIPE)
        timed_out = isinstance(exc, Timeout) or isinstance(getattr(exc, "cause", None), Timeout)
        unreachable = timed_out and not any(accepts_connections(u) for u in servers.urls)
        click.echo(f"raftmq: {error_line(exc, servers, timeout_s, unreachable)}", err=True)
        raise SystemExit(1)
    except KeyboardInterrupt:
        raise SystemExit(EXIT_INTERRUPTED)


def accepts_connections(url: str, timeout_s: float = 0.5) -> bool:
    """Whether the host of ``url`` accepts a TCP connection on its port. Asked
    after a timeout, to tell "nothing listens there" from "it did not answer":
    the transport reports only its last attempt, which the deadline may have cut."""
    u = urlsplit(url)
    try:
        port = u.port or (443 if u.scheme == "https" else 80)
        with socket.create_connection((u.hostname or "", port), timeout=timeout_s):
            return True
    except (OSError, ValueError):
        return False


def _quiet_stdout() -> None:
    """After EPIPE, point stdout at /dev/null so the interpreter's final flush stays silent."""
    try:
        devnull = os.open(os.devnull, os.O_WRONLY)
        os.dup2(devnull, sys.stdout.fileno())
    except (OSError, ValueError):  # no real stdout (a test runner's buffer)
        pass


def emit(lines: Sequence[str]) -> None:
    """Write lines to stdout in one write (one syscall per batch, not per message)."""
    if lines:
        click.echo("\n".join(lines))


# ----------------------------------------------------------------------
# formatting
# ----------------------------------------------------------------------
def body_text(body: bytes) -> str:
    """A body for a human: the text with control characters escaped (so a
    message stays on one line), or ``base64:...`` when it is not UTF-8."""
    try:
        text = body.decode("utf-8")
    except UnicodeDecodeError:
        return "base64:" + base64.b64encode(body).decode("ascii")
    if text.isprintable():
        return text
    return "".join(c if c.isprintable() else c.encode("unicode_escape").decode("ascii") for c in text)


def message_json(m: ReceivedMessage) -> dict[str, Any]:
    """A message as the HTTP API's JSON has it: ``body`` if UTF-8, else ``body_b64``."""
    d: dict[str, Any] = {"topic": m.topic, "queue_id": m.queue_id, "queue_offset": m.queue_offset,
                         "msg_id": m.msg_id, "tags": m.tags, "keys": list(m.keys),
                         "properties": dict(m.properties), "born_ts": m.born_ts, "store_ts": m.store_ts}
    try:
        d["body"] = m.body.decode("utf-8")
    except UnicodeDecodeError:
        d["body_b64"] = base64.b64encode(m.body).decode("ascii")
    return d


def message_line(m: ReceivedMessage, with_topic: bool = False) -> str:
    """``queue=0 offset=5 tags=T keys=a,b msg_id=...  body`` (empty fields left out)."""
    fields = [f"topic={m.topic}"] if with_topic else []
    fields += [f"queue={m.queue_id}", f"offset={m.queue_offset}"]
    if m.tags:
        fields.append(f"tags={m.tags}")
    if m.keys:
        fields.append("keys=" + ",".join(m.keys))
    if m.properties:
        fields.append("properties=" + ",".join(f"{k}={v}" for k, v in sorted(m.properties.items())))
    fields.append(f"msg_id={m.msg_id}")
    return " ".join(fields) + "  " + body_text(m.body)


def format_message(m: ReceivedMessage, as_json: bool, with_topic: bool = False) -> str:
    return json.dumps(message_json(m)) if as_json else message_line(m, with_topic)


def format_ts(ts_ms: int) -> str:
    if not ts_ms:
        return "-"
    local = datetime.fromtimestamp(ts_ms / 1000, timezone.utc).astimezone()
    return f"{local.isoformat(timespec='milliseconds')} ({ts_ms})"


def message_block(m: ReceivedMessage) -> list[str]:
    """One message in full, a field per line (``message get``)."""
    rows = [("msg_id", m.msg_id), ("topic", m.topic), ("queue", str(m.queue_id)), ("offset", str(m.queue_offset)),
            ("tags", m.tags or "-"), ("keys", ",".join(m.keys) or "-"),
            ("properties", ",".join(f"{k}={v}" for k, v in sorted(m.properties.items())) or "-"),
            ("born", format_ts(m.born_ts)), ("stored", format_ts(m.store_ts)), ("size", f"{len(m.body)} bytes"),
            ("body", body_text(m.body))]
    return [f"{name:<10}  {value}" for name, value in rows]


def send_result_line(r: SendResult, as_json: bool) -> str:
    if as_json:
        return json.dumps({"queue_id": r.queue_id, "queue_offset": r.queue_offset, "msg_id": r.msg_id})
    return f"queue={r.queue_id} offset={r.queue_offset} msg_id={r.msg_id}"


def table(cols: Sequence[str], rows: Sequence[dict[str, Any]]) -> list[str]:
    """Left-aligned columns; ``None`` shows as ``-``."""
    cells = [["-" if r.get(c) is None else str(r.get(c)) for c in cols] for r in rows]
    widths = [max([len(c)] + [len(row[i]) for row in cells]) for i, c in enumerate(cols)]
    return ["  ".join(v.ljust(w) for v, w in zip(row, widths)).rstrip() for row in [list(cols), *cells]]


# ----------------------------------------------------------------------
# option parsing
# ----------------------------------------------------------------------
def parse_properties(values: Iterable[str]) -> dict[str, str]:
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


# ----------------------------------------------------------------------
# produce
# ----------------------------------------------------------------------
def split_lines(pending: bytes, data: bytes) -> tuple[list[bytes], bytes]:
    """Complete lines of ``pending + data`` (without ``\\n`` or ``\\r\\n``; empty
    lines dropped) and the incomplete rest."""
    *lines, rest = (pending + data).split(b"\n")
    return [ln[:-1] if ln.endswith(b"\r") else ln for ln in lines if ln and ln != b"\r"], rest


class StdinLines:
    """The lines of a binary stream, read by a daemon thread (a blocking read
    must never stall the event loop) and handed to the loop in chunks as they
    arrive: a pipe gives big chunks, a terminal a line at a time. At most
    ``max_chunks`` chunks wait unconsumed, so a huge input is not read ahead."""

    def __init__(self, stream: IO[bytes], chunk_lines: int = PRODUCE_CHUNK_LINES,
                 max_chunks: int = PRODUCE_CHUNKS_IN_FLIGHT) -> None:
        self._stream = stream
        self._chunk_lines = chunk_lines
        self._room = threading.Semaphore(max_chunks)
        self._queue: asyncio.Queue[list[bytes] | BaseException | None] = asyncio.Queue()
        self._loop = asyncio.get_running_loop()
        threading.Thread(target=self._read, name="raftmq-stdin", daemon=True).start()

    def _put(self, item: list[bytes] | BaseException | None) -> None:
        self._room.acquire()
        self._loop.call_soon_threadsafe(self._queue.put_nowait, item)

    def _read(self) -> None:
        read = getattr(self._stream, "read1", None) or self._stream.read
        rest = b""
        try:
            while True:
                data = read(1 << 16)
                if not data:
                    break
                lines, rest = split_lines(rest, data)
                for i in range(0, len(lines), self._chunk_lines):
                    self._put(lines[i:i + self._chunk_lines])
            if rest.rstrip(b"\r"):
                self._put([rest.rstrip(b"\r")])
            self._put(None)
        except RuntimeError:  # the loop is closed: the command has ended
            return
        except OSError as exc:
            try:
                self._put(exc)
            except RuntimeError:
                return

    async def chunks(self) -> AsyncIterator[list[bytes]]:
        while True:
            item = await self._queue.get()
            self._room.release()
            if item is None:
                return
            if isinstance(item, BaseException):
                raise item
            yield item


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
        raise _PartialProduce(first_error, sent, failed)


class _PartialProduce(CommandFailed):
    def __init__(self, cause: BaseException, sent: int, failed: int) -> None:
        super().__init__(str(cause))
        self.cause, self.sent, self.failed = cause, sent, failed


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


# ----------------------------------------------------------------------
# consume
# ----------------------------------------------------------------------
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


# ----------------------------------------------------------------------
# topic, group, message
# ----------------------------------------------------------------------
@click.group(cls=DataGroup)
def topic() -> None:
    """Create, list and describe topics."""


@topic.command("create")
@click.argument("name")
@click.option("--queues", type=click.IntRange(1, 1024), default=4, show_default=True, help="Number of queues.")
@common_options
def topic_create(name: str, queues: int, servers: Servers, timeout_s: float, as_json: bool) -> None:
    """Create topic NAME (creating it again with the same settings is fine)."""
    async def go() -> dict[str, Any]:
        async with Admin(servers.urls, **transport_options(timeout_s)) as a:
            return await a.create_topic(name, queues)

    res = run(go, servers, timeout_s)
    emit([json.dumps(res) if as_json else f"topic {res['name']}: {res['queues']} queues"])


@topic.command("list")
@common_options
def topic_list(servers: Servers, timeout_s: float, as_json: bool) -> None:
    """List the topics and their queue counts."""
    async def go() -> list[dict[str, Any]]:
        async with Admin(servers.urls, **transport_options(timeout_s)) as a:
            return await a.list_topics()

    res = run(go, servers, timeout_s)
    emit([json.dumps({"topics": res})] if as_json else table(["name", "queues"], res))


@topic.command("describe")
@click.argument("name")
@common_options
def topic_describe(name: str, servers: Servers, timeout_s: float, as_json: bool) -> None:
    """Topic NAME's queues: oldest and next offset, and messages stored."""
    async def go() -> dict[str, Any]:
        async with Admin(servers.urls, **transport_options(timeout_s)) as a:
            return await a.describe_topic(name)

    res = run(go, servers, timeout_s)
    if as_json:
        emit([json.dumps(res)])
        return
    rows = [{**q, "messages": q["max_offset"] - q["min_offset"]} for q in res["queue_offsets"]]
    emit([f"topic {res['name']}: {res['queues']} queues, {sum(r['messages'] for r in rows)} messages stored",
          *table(["queue_id", "min_offset", "max_offset", "messages"], rows)])


@click.group(cls=DataGroup)
def group() -> None:
    """Consumer groups: committed offsets and lag."""


@group.command("offsets")
@click.argument("name")
@click.option("--topic", required=True, help="The topic the group consumes.")
@common_options
def group_offsets(name: str, topic: str, servers: Servers, timeout_s: float, as_json: bool) -> None:
    """Group NAME's committed offset per queue of a topic (- when none)."""
    async def go() -> dict[int, int | None]:
        async with Admin(servers.urls, **transport_options(timeout_s)) as a:
            return await a.offsets(name, topic)

    res = run(go, servers, timeout_s)
    rows = [{"queue_id": q, "offset": o} for q, o in sorted(res.items())]
    emit([json.dumps({"group": name, "topic": topic, "offsets": rows})] if as_json
         else table(["queue_id", "offset"], rows))


@group.command("lag")
@click.argument("name")
@click.option("--topic", required=True, help="The topic the group consumes.")
@common_options
def group_lag(name: str, topic: str, servers: Servers, timeout_s: float, as_json: bool) -> None:
    """Group NAME's lag per queue: messages stored past its committed offset."""
    async def go() -> dict[str, Any]:
        async with Admin(servers.urls, **transport_options(timeout_s)) as a:
            return await a.lag(name, topic)

    res = run(go, servers, timeout_s)
    emit([json.dumps(res)] if as_json else
         [*table(["queue_id", "committed_offset", "max_offset", "lag"], res["queues"]), f"total lag: {res['lag']}"])


@click.group(cls=DataGroup)
def message() -> None:
    """Look messages up by id or by key."""


@message.command("get")
@click.argument("msg_id")
@common_options
def message_get(msg_id: str, servers: Servers, timeout_s: float, as_json: bool) -> None:
    """The message with id MSG_ID (as produce and consume print it)."""
    async def go() -> ReceivedMessage:
        async with Admin(servers.urls, **transport_options(timeout_s)) as a:
            return await a.get_message(msg_id)

    m = run(go, servers, timeout_s)
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

    async def go() -> list[ReceivedMessage]:
        async with Admin(servers.urls, **transport_options(timeout_s)) as a:
            return await a.query(key, begin_ts, end_ts, max_results)

    found = run(go, servers, timeout_s)
    emit([format_message(m, as_json, with_topic=True) for m in found])
    if not found and not as_json:
        click.echo(f"raftmq: no message with key {key!r}", err=True)


COMMANDS: list[click.Command] = [produce, consume, topic, group, message]
