"""What a failed command tells the user: one line, ``raftmq: <what went
wrong>``, chosen by the type of the error, never by the words of its message.

- ``Timeout`` whose last attempt could not connect (``CannotConnect``), or
  after which no server accepts a TCP connection: "cannot connect to URL",
  with where the URL came from (``Servers.hint``).
- ``Timeout`` after ``NoLeader``/``NotLeader``: the group has no leader.
- any other ``Timeout``: no answer within the deadline, and for a write that
  it may or may not have been stored.
- ``CannotConnect`` or an aiohttp connection error met directly: "cannot connect".
- a ``RaftMQError`` built from an answer that was not a broker's
  (``foreign_answer``): "URL answered HTTP 404, not like a RaftMQ broker".
- any other ``RaftMQError``: the broker's message (``topic 'x' does not exist``).
- ``PartialProduce``: the first failure's line, then how many messages were
  sent and how many failed.

The exit codes are in ``runner``.
"""

from __future__ import annotations

import aiohttp
import click

from raftmq.client.cli.servers import Servers
from raftmq.client.errors import CannotConnect, NoLeader, NotLeader, RaftMQError, Timeout


class CommandFailed(Exception):
    """A failure already phrased for the user (one line, without the ``raftmq:`` prefix)."""


class PartialProduce(CommandFailed):
    """Some lines of a multi-message produce were stored and some were not;
    ``cause`` is the first failure."""

    def __init__(self, cause: BaseException, sent: int, failed: int) -> None:
        super().__init__(str(cause))
        self.cause, self.sent, self.failed = cause, sent, failed


def one_line(text: str, limit: int = 300) -> str:
    """``text`` with its whitespace runs (newlines included) made single spaces, cut at ``limit``."""
    text = " ".join(text.split())
    return text if len(text) <= limit else text[: limit - 3] + "..."


def error_line(exc: BaseException, servers: Servers, timeout_s: float, unreachable: bool = False) -> str:
    """What to tell the user about ``exc``, in one line. ``unreachable``: no
    server accepts a TCP connection (checked after a ``Timeout``)."""
    where = ", ".join(servers.urls)
    cannot_connect = f"cannot connect to {where}{servers.hint()}"
    if isinstance(exc, PartialProduce):
        return f"{error_line(exc.cause, servers, timeout_s, unreachable)} ({exc.sent} sent, {exc.failed} failed)"
    if isinstance(exc, Timeout):
        last = exc.last_error
        if unreachable or isinstance(last, CannotConnect):
            return cannot_connect
        if isinstance(last, (NoLeader, NotLeader)):
            return f"the group at {where} has no leader (no election finished within {timeout_s:g} s)"
        reason = f" (last error: {one_line(last.message, 160)})" if isinstance(last, RaftMQError) else ""
        if exc.outcome_unknown:
            return (f"no answer from {where} within {timeout_s:g} s; the write may or may not have been "
                    f"stored{reason}")
        return f"no answer from {where} within {timeout_s:g} s{reason}"
    if isinstance(exc, (CannotConnect, aiohttp.ClientConnectorError)):
        return cannot_connect
    if isinstance(exc, RaftMQError):
        if exc.foreign_answer:
            return f"{where} answered HTTP {exc.status}, not like a RaftMQ broker{servers.hint() or ' (check --server)'}"
        return one_line(exc.message.strip() or str(exc))
    if isinstance(exc, CommandFailed):
        return one_line(str(exc))
    return one_line(f"{type(exc).__name__}: {exc}" if not str(exc) else str(exc))


def fail(exc: Exception) -> None:
    """End a ``cluster`` or ``bench`` command that failed: ``raftmq: <exc>`` on stderr, exit code 1."""
    click.echo(f"raftmq: {exc}", err=True)
    raise SystemExit(1)
