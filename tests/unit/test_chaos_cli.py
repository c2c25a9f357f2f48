"""``raftmq chaos run``'s command line: bad options are one-line usage errors,
and the options survive the re-execution inside a network namespace."""

from __future__ import annotations

import click
from click.testing import CliRunner

from raftmq.chaos.cli import _argv, chaos_group, run_command


def test_an_unknown_fault_is_a_usage_error() -> None:
    res = CliRunner().invoke(chaos_group, ["run", "--faults", "kill-leader,explode"])
    assert res.exit_code == 2 and "unknown fault 'explode'" in res.output


def test_node_counts_other_than_3_or_5_are_refused() -> None:
    res = CliRunner().invoke(chaos_group, ["run", "--nodes", "4"])
    assert res.exit_code == 2 and "--nodes" in res.output


def test_options_are_rebuilt_for_the_re_executed_run() -> None:
    args = ["--duration", "30.0", "--faults", "partition=2,kill", "--seed", "9", "--quiet", "--nodes", "5"]
    ctx = run_command.make_context("run", list(args))
    argv = _argv(ctx, dict(ctx.params))
    again = run_command.make_context("run", argv)
    assert again.params == ctx.params
    assert isinstance(run_command, click.Command)


def test_the_issues_command_line_is_accepted_with_small_segments() -> None:
    ctx = run_command.make_context("run", ["--duration", "600", "--faults", "all", "--segment-bytes", "65536",
                                           "--seed", "101"])
    assert ctx.params["segment_bytes"] == 65536 and ctx.params["faults"] == "all"
    assert ctx.params["rejoin_wiped"] is False  # a wiped node comes back with no flag by default


def test_rejoin_wiped_survives_the_re_execution() -> None:
    ctx = run_command.make_context("run", ["--rejoin-wiped", "--faults", "wipe"])
    again = run_command.make_context("run", _argv(ctx, dict(ctx.params)))
    assert again.params["rejoin_wiped"] is True
