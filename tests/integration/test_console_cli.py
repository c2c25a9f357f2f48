"""The raftmq data commands as a user runs them, against a real 3-process group."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path
from typing import Iterator

import pytest

from tests.integration.broker_group import BrokerGroup, running_group

pytestmark = pytest.mark.integration
REPO = Path(__file__).resolve().parents[2]


@pytest.fixture(scope="module")
def group(tmp_path_factory: pytest.TempPathFactory) -> Iterator[BrokerGroup]:
    with running_group(tmp_path_factory.mktemp("cli")) as g:
        yield g


def raftmq(group: BrokerGroup, *args: str, stdin: str | None = None) -> subprocess.CompletedProcess[str]:
    server = ["--server", group.nodes[0].http_url] if group else []
    return subprocess.run([sys.executable, "-m", "raftmq.client.cli", *args, *server], input=stdin, capture_output=True,
                          text=True, timeout=60, cwd=REPO)


def test_produce_from_stdin_then_consume_everything_in_order(group: BrokerGroup) -> None:
    assert raftmq(group, "topic", "create", "cli-orders", "--queues", "3").returncode == 0
    lines = [f"line-{i}" for i in range(100)]
    sent = raftmq(group, "produce", "--topic", "cli-orders", "--keys", "batch-1", "--json", stdin="\n".join(lines) + "\n")
    assert sent.returncode == 0, sent.stderr
    acks = [json.loads(x) for x in sent.stdout.splitlines()]
    assert len(acks) == 100
    got = raftmq(group, "consume", "--topic", "cli-orders", "--from-beginning", "--max", "100", "--group", "g1",
                 "--json")
    assert got.returncode == 0, got.stderr
    msgs = [json.loads(x) for x in got.stdout.splitlines()]
    assert sorted(m["body"] for m in msgs) == sorted(lines)
    for q in {m["queue_id"] for m in msgs}:  # per queue: the acknowledged order
        in_queue = [m for m in msgs if m["queue_id"] == q]
        assert [m["queue_offset"] for m in in_queue] == sorted(m["queue_offset"] for m in in_queue)
        acked = sorted((a["queue_offset"], b) for a, b in zip(acks, lines) if a["queue_id"] == q)
        assert [m["body"] for m in in_queue] == [b for _, b in acked]
    lag = json.loads(raftmq(group, "group", "lag", "g1", "--topic", "cli-orders", "--json").stdout)
    assert lag["lag"] == 0
    one = raftmq(group, "message", "get", acks[0]["msg_id"], "--json")
    assert json.loads(one.stdout)["body"] == "line-0"
    by_key = raftmq(group, "message", "query", "--key", "batch-1", "--max", "5", "--json")
    assert len(by_key.stdout.splitlines()) == 5


@pytest.mark.parametrize("args,fragment,code", [
    (("consume", "--topic", "no-such-topic"), "does not exist", 1),
    (("topic", "describe", "no-such-topic"), "does not exist", 1),
    (("produce", "--topic", "cli-orders", "--property", "novalue", "x"), "KEY=VALUE", 2),
    (("topic", "create", "x", "--queues", "0"), "Invalid value", 2),
])
def test_errors_are_short_and_non_zero(group: BrokerGroup, args: tuple[str, ...], fragment: str, code: int) -> None:
    r = raftmq(group, *args)
    assert r.returncode == code and fragment in r.stderr and "Traceback" not in r.stderr


def test_wrong_server_fails_with_one_line() -> None:
    r = subprocess.run([sys.executable, "-m", "raftmq.client.cli", "topic", "list", "--server", "http://127.0.0.1:9"],
                       capture_output=True, text=True, timeout=60, cwd=REPO)
    assert r.returncode == 1 and len(r.stderr.strip().splitlines()) == 1 and "127.0.0.1:9" in r.stderr
