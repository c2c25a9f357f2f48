"""The command line's failures: one line chosen by the error's type (never by
the words of its message), the exit code by the kind of failure, and help
text on every option."""

from __future__ import annotations

import asyncio
from typing import Any

import aiohttp
import click
import pytest

from raftmq.client.cli import main
from raftmq.client.cli.error_lines import PartialProduce, error_line
from raftmq.client.cli.runner import EXIT_BROKEN_PIPE, EXIT_FAILED, EXIT_INTERRUPTED, run
from raftmq.client.cli.servers import Servers
from raftmq.client.errors import CannotConnect, NoLeader, TopicNotFound, Timeout, Unavailable, from_response

URL = "http://127.0.0.1:9"
SERVERS = Servers((URL,), "option")


def timeout_after(last: BaseException | None, outcome_unknown: bool = False) -> Timeout:
    return Timeout("GET /v1/topics: no node answered", outcome_unknown=outcome_unknown, last_error=last)


def test_a_refused_connection_is_cannot_connect_whatever_its_message_says() -> None:
    assert error_line(timeout_after(CannotConnect("refused")), SERVERS, 5) == f"cannot connect to {URL}"
    assert error_line(CannotConnect("x"), SERVERS, 5) == f"cannot connect to {URL}"
    os_error = OSError(111, "Connection refused")
    refused = aiohttp.ClientConnectorError(aiohttp.client_reqrep.ConnectionKey(  # type: ignore[attr-defined]
        "127.0.0.1", 9, False, True, None, None, None), os_error)
    assert error_line(refused, SERVERS, 5) == f"cannot connect to {URL}"


def test_a_message_that_mentions_cannot_connect_is_not_a_refused_connection() -> None:
    # A node that answered 503 with these words did accept the connection.
    line = error_line(timeout_after(Unavailable("peer n2: cannot connect")), SERVERS, 5)
    assert line == f"no answer from {URL} within 5 s (last error: peer n2: cannot connect)"


def test_timeouts_name_the_missing_leader_or_the_unknown_outcome() -> None:
    assert error_line(timeout_after(NoLeader("election")), SERVERS, 2) == (
        f"the group at {URL} has no leader (no election finished within 2 s)")
    assert error_line(timeout_after(None, outcome_unknown=True), SERVERS, 2) == (
        f"no answer from {URL} within 2 s; the write may or may not have been stored")


def test_only_an_answer_without_a_broker_error_code_is_foreign() -> None:
    assert from_response(404, b"Not Found").foreign_answer
    assert from_response(502, {"detail": "bad gateway"}).foreign_answer
    broker = from_response(400, {"error": "invalid_argument", "message": "<topic> must not be empty\nat all"})
    assert not broker.foreign_answer
    assert error_line(broker, SERVERS, 5) == "<topic> must not be empty at all"
    assert error_line(from_response(404, b"Not Found"), SERVERS, 5) == (
        f"{URL} answered HTTP 404, not like a RaftMQ broker (check --server)")


def test_a_partial_produce_adds_the_counts_to_its_cause() -> None:
    exc = PartialProduce(TopicNotFound("topic 't' does not exist"), 3, 2)
    assert error_line(exc, SERVERS, 5) == "topic 't' does not exist (3 sent, 2 failed)"


@pytest.mark.parametrize("raised,code", [
    (TopicNotFound("topic 't' does not exist"), EXIT_FAILED),
    (BrokenPipeError(), EXIT_BROKEN_PIPE),
    (KeyboardInterrupt(), EXIT_INTERRUPTED),
])
def test_exit_codes_follow_the_kind_of_failure(raised: BaseException, code: int,
                                               capsys: pytest.CaptureFixture[str]) -> None:
    async def fails() -> None:
        await asyncio.sleep(0)
        raise raised

    with pytest.raises(SystemExit) as info:
        run(fails, SERVERS, 5)
    assert info.value.code == code
    err = capsys.readouterr().err
    assert err == ("raftmq: topic 't' does not exist\n" if code == EXIT_FAILED else "")


def _commands(cmd: click.Command, path: str = "raftmq") -> list[tuple[str, click.Command]]:
    found = [(path, cmd)]
    if isinstance(cmd, click.Group):
        for name, sub in cmd.commands.items():
            found += _commands(sub, f"{path} {name}")
    return found


def test_every_option_has_help_text() -> None:
    missing: list[Any] = [f"{path} {'/'.join(p.opts)}" for path, cmd in _commands(main) for p in cmd.params
                          if isinstance(p, click.Option) and not p.help]
    assert not missing, f"options without help text: {missing}"
