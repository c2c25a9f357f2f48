"""The click command class of the local tool programs (the log benchmark,
the demo KV node, the pysyncobj baseline, the store benchmark).

A bad option value is reported the way ``raftmq``'s own commands report
failures: one line on stderr naming the option, with where to find help,
and exit code 2 (click's usual usage error is a usage block, a blank line
and the message).
"""

from __future__ import annotations

from typing import IO, Any

import click


class OneLineUsageError(click.UsageError):
    """A usage error shown as one line: ``<program>: <what is wrong> (see '<program> --help')``."""

    def show(self, file: IO[Any] | None = None) -> None:
        prog = self.ctx.command_path if self.ctx is not None else "error"
        message = " ".join(self.format_message().split())
        click.echo(f"{prog}: {message} (see '{prog} --help')", file=file, err=file is None)


class ToolCommand(click.Command):
    """A click command whose usage errors (while parsing, or raised by the
    command itself as ``click.UsageError``/``click.BadParameter``) are one line."""

    def parse_args(self, ctx: click.Context, args: list[str]) -> list[str]:
        try:
            return super().parse_args(ctx, args)
        except OneLineUsageError:
            raise
        except click.UsageError as exc:
            raise OneLineUsageError(exc.format_message(), exc.ctx or ctx) from None

    def invoke(self, ctx: click.Context) -> Any:
        try:
            return super().invoke(ctx)
        except OneLineUsageError:
            raise
        except click.UsageError as exc:
            raise OneLineUsageError(exc.format_message(), exc.ctx or ctx) from None


LOG_LEVELS = click.Choice(["DEBUG", "INFO", "WARNING", "ERROR", "CRITICAL"], case_sensitive=False)
