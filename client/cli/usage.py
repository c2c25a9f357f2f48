"""Usage errors of the data commands on one line: ``raftmq: <what is wrong>
(see 'raftmq produce --help')``, exit code 2 as click's own. The ``cluster``,
``bench`` and passthrough commands keep click's usual multi-line usage errors."""

from __future__ import annotations

from typing import IO, Any

import click

from raftmq.client.cli.error_lines import one_line


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
