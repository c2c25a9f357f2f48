"""Commands that run another program of RaftMQ in this process's place:
``raftmq broker`` (``python -m raftmq.broker``), ``raftmq bench log``
(``python -m raftmq.dledger.tools.bench``) and ``raftmq chaos``. Their
arguments, ``--help`` included, go to that program unchanged: it owns its
options and their help; the client knows the servers only as programs and
HTTP endpoints."""

from __future__ import annotations

import os
import sys

import click

PASSTHROUGH = {"ignore_unknown_options": True, "allow_extra_args": True, "help_option_names": []}


def exec_module(module: str, args: tuple[str, ...]) -> None:
    """Replace this process with ``python -m module args`` (signals go straight to it)."""
    os.execv(sys.executable, [sys.executable, "-m", module, *args])


@click.command(context_settings=PASSTHROUGH)
@click.argument("args", nargs=-1, type=click.UNPROCESSED)
def broker(args: tuple[str, ...]) -> None:
    """Run one broker node: raftmq broker --config node.toml (--help for all options)."""
    exec_module("raftmq.broker", args)


@click.command("log", context_settings=PASSTHROUGH)
@click.argument("args", nargs=-1, type=click.UNPROCESSED)
def bench_log(args: tuple[str, ...]) -> None:
    """The replicated log alone: a local 3-process group, 1 KiB proposals (--help for options)."""
    exec_module("raftmq.dledger.tools.bench", args)


@click.command("chaos", context_settings=PASSTHROUGH)
@click.argument("args", nargs=-1, type=click.UNPROCESSED)
def chaos(args: tuple[str, ...]) -> None:
    """Fault injection against a real local group: raftmq chaos run --help."""
    exec_module("raftmq.chaos", args)
