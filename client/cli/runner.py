"""Runs a data command's coroutine on the client's event loop and turns the
failures a user can meet into one line on stderr and an exit code:

- 1: the command failed (``error_lines.error_line`` says why);
- 2: a usage error (click's, passed through);
- 130: Ctrl-C (128 + SIGINT, as a shell reports it), except for
  ``consume --follow``, whose normal end it is;
- 141: the reader of our output went away (``| head``: 128 + SIGPIPE), silently.
"""

from __future__ import annotations

import os
import socket
import sys
from typing import Awaitable, Callable, TypeVar
from urllib.parse import urlsplit

import aiohttp
import click

from raftmq.client.admin import Admin
from raftmq.client.cli.error_lines import CommandFailed, PartialProduce, error_line
from raftmq.client.cli.servers import Servers, transport_options
from raftmq.client.errors import RaftMQError, Timeout
from raftmq.client.loop import run as run_loop

T = TypeVar("T")

EXIT_FAILED = 1
EXIT_INTERRUPTED = 130  # 128 + SIGINT, as a shell reports a command stopped by Ctrl-C
EXIT_BROKEN_PIPE = 141  # 128 + SIGPIPE: the reader of our output went away (`| head`)


def run(make: Callable[[], Awaitable[T]], servers: Servers, timeout_s: float) -> T:
    """Run one command's coroutine; expected failures become one line on stderr
    and an exit code (click's own usage errors pass through to click)."""
    try:
        return run_loop(make())  # type: ignore[arg-type]
    except KeyboardInterrupt:
        raise SystemExit(EXIT_INTERRUPTED)
    except BrokenPipeError:
        quiet_stdout()
        raise SystemExit(EXIT_BROKEN_PIPE)
    except (RaftMQError, CommandFailed, OSError, aiohttp.ClientError) as exc:
        timed_out = isinstance(exc.cause if isinstance(exc, PartialProduce) else exc, Timeout)
        unreachable = timed_out and not any(accepts_connections(u) for u in servers.urls)
        click.echo(f"raftmq: {error_line(exc, servers, timeout_s, unreachable)}", err=True)
        raise SystemExit(EXIT_FAILED)


def ask_admin(call: Callable[[Admin], Awaitable[T]], servers: Servers, timeout_s: float) -> T:
    """One ``Admin`` request as a command: ``run`` over an ``Admin`` opened for ``servers``."""
    async def go() -> T:
        async with Admin(servers.urls, **transport_options(timeout_s)) as admin:
            return await call(admin)

    return run(go, servers, timeout_s)


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


def quiet_stdout() -> None:
    """After EPIPE, point stdout at /dev/null so the interpreter's final flush stays silent."""
    try:
        devnull = os.open(os.devnull, os.O_WRONLY)
        os.dup2(devnull, sys.stdout.fileno())
    except (OSError, ValueError):  # no real stdout (a test runner's buffer)
        pass
