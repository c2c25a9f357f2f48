"""``raftmq produce|consume|topic|group|message`` as a user runs them: each
command is its own ``python -m client.cli`` process against a real 3-process
broker group on loopback. Every test is bounded in time and the group is
stopped whatever happens."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path
from typing import Iterator

import pytest

from tests.ports import free_port
from tests.integration.broker_group import BrokerGroup, running_group

pytestmark = [pytest.mark.integration, pytest.mark.timeout(180)]
REPO = Path(__file__).resolve().parents[2]
CLI = [sys.executable, "-m", "raftmq.client.cli"]
ENV = {**os.environ, "PYTHONPATH": str(REPO), "RAFTMQ_SERVER": ""}


@pytest.fixture(scope="module")
def group(tmp_path_factory: pytest.TempPathFactory) -> Iterator[BrokerGroup]:
    with running_group(tmp_path_factory.mktemp("raftmq-cli")) as g:
        yield g


def raftmq(*args: str, server: str | None, stdin: str | bytes | None = None, cwd: Path = REPO,
           timeout_s: float = 60) -> subprocess.CompletedProcess[str]:
    """Run one command; ``server`` None means no --server (the default applies)."""
    extra = ["--server", server] if server else []
    data = stdin.encode() if isinstance(stdin, str) else stdin
    r = subprocess.run([*CLI, *args, *extra], input=data, capture_output=True, timeout=timeout_s, cwd=cwd, env=ENV)
    return subprocess.CompletedProcess(r.args, r.returncode, r.stdout.decode(), r.stderr.decode())


def default_sigint() -> None:
    """In the child before it starts: Ctrl-C handled the default way. A pytest
    started as a background job of a non-interactive shell runs with SIGINT
    ignored, and its children would inherit that and never see the test's
    Ctrl-C (as the shell intends for background jobs)."""
    signal.signal(signal.SIGINT, signal.SIG_DFL)


def json_lines(text: str) -> list[dict]:
    return [json.loads(line) for line in text.splitlines()]


def assert_one_line_error(r: subprocess.CompletedProcess[str], code: int) -> str:
    assert r.returncode == code, (r.returncode, r.stderr)
    lines = r.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("raftmq: "), r.stderr
    assert r.stdout == ""
    return lines[0]


def test_stdin_lines_are_produced_and_consumed_in_order_per_queue(group: BrokerGroup) -> None:
    url = group.nodes[1].http_url  # any node: the client finds the leader
    created = raftmq("topic", "create", "cli-lines", "--queues", "3", server=url)
    assert created.returncode == 0 and created.stdout == "topic cli-lines: 3 queues\n", created.stderr
    lines = [f"line {i}" for i in range(100)]
    sent = raftmq("produce", "--topic", "cli-lines", "--json", server=url, stdin="\n".join(lines) + "\n")
    assert sent.returncode == 0, sent.stderr
    acks = json_lines(sent.stdout)
    assert len(acks) == 100 and len({a["msg_id"] for a in acks}) == 100

    got = raftmq("consume", "--topic", "cli-lines", "--from-beginning", "--max", "100", "--json", server=url)
    assert got.returncode == 0, got.stderr
    msgs = json_lines(got.stdout)
    assert sorted(m["body"] for m in msgs) == sorted(lines)
    for q in range(3):  # each queue: every acknowledged message at its offset, in order
        acked = sorted((a["queue_offset"], body) for a, body in zip(acks, lines) if a["queue_id"] == q)
        read = [(m["queue_offset"], m["body"]) for m in msgs if m["queue_id"] == q]
        assert read == acked

    described = json.loads(raftmq("topic", "describe", "cli-lines", "--json", server=url).stdout)
    assert sum(q["max_offset"] for q in described["queue_offsets"]) == 100
    table = raftmq("topic", "describe", "cli-lines", server=url).stdout.splitlines()
    assert table[0] == "topic cli-lines: 3 queues, 100 messages stored"
    assert table[1].split() == ["queue_id", "min_offset", "max_offset", "messages"] and len(table) == 5
    assert "cli-lines" in raftmq("topic", "list", server=url).stdout


def test_a_group_commits_as_it_goes_and_resumes(group: BrokerGroup) -> None:
    url = group.nodes[0].http_url
    assert raftmq("topic", "create", "cli-group", "--queues", "2", server=url).returncode == 0
    first = raftmq("produce", "--topic", "cli-group", server=url, stdin="".join(f"a{i}\n" for i in range(10)))
    assert first.returncode == 0, first.stderr

    read = raftmq("consume", "--topic", "cli-group", "--group", "billing", "--from-beginning", "--max", "4",
                  "--json", server=url)
    assert read.returncode == 0, read.stderr
    assert len(json_lines(read.stdout)) == 4
    lag = json.loads(raftmq("group", "lag", "billing", "--topic", "cli-group", "--json", server=url).stdout)
    assert lag["lag"] == 6  # committed exactly what was printed

    rest = raftmq("consume", "--topic", "cli-group", "--group", "billing", "--json", server=url)
    assert rest.returncode == 0, rest.stderr
    seen = json_lines(read.stdout) + json_lines(rest.stdout)
    assert sorted(m["body"] for m in seen) == [f"a{i}" for i in range(10)]  # resumed: nothing twice, nothing lost

    offsets = json.loads(raftmq("group", "offsets", "billing", "--topic", "cli-group", "--json", server=url).stdout)
    described = json.loads(raftmq("topic", "describe", "cli-group", "--json", server=url).stdout)
    assert {o["queue_id"]: o["offset"] for o in offsets["offsets"]} == {
        q["queue_id"]: q["max_offset"] for q in described["queue_offsets"]}
    table = raftmq("group", "lag", "billing", "--topic", "cli-group", server=url).stdout.splitlines()
    assert table[0].split() == ["queue_id", "committed_offset", "max_offset", "lag"] and table[-1] == "total lag: 0"

    late = raftmq("consume", "--topic", "cli-group", "--group", "late", server=url)
    assert late.returncode == 0 and late.stdout == ""  # a new group starts at the end (RocketMQ's default)
    assert "--from-beginning" in late.stderr
    assert raftmq("produce", "--topic", "cli-group", server=url, stdin="b1\nb2\nb3\n").returncode == 0
    for g in ("late", "billing"):
        new = raftmq("consume", "--topic", "cli-group", "--group", g, "--json", server=url)
        assert sorted(m["body"] for m in json_lines(new.stdout)) == ["b1", "b2", "b3"], (g, new.stderr)


def test_message_get_and_query_by_key(group: BrokerGroup) -> None:
    url = group.nodes[2].http_url
    assert raftmq("topic", "create", "cli-keys", "--queues", "2", server=url).returncode == 0
    sent = raftmq("produce", "--topic", "cli-keys", "--keys", "order-17,customer-3", "--tags", "paid",
                  "--property", "region=eu", "--json", "the order", server=url)
    assert sent.returncode == 0, sent.stderr
    (ack,) = json_lines(sent.stdout)

    got = raftmq("message", "get", ack["msg_id"], "--json", server=url)
    assert got.returncode == 0, got.stderr
    m = json.loads(got.stdout)
    assert (m["body"], m["tags"], m["keys"], m["properties"]) == ("the order", "paid", ["order-17", "customer-3"],
                                                                  {"region": "eu"})
    assert (m["queue_id"], m["queue_offset"]) == (ack["queue_id"], ack["queue_offset"])
    block = raftmq("message", "get", ack["msg_id"], server=url).stdout
    assert "body        the order" in block and "keys        order-17,customer-3" in block

    found = raftmq("message", "query", "--key", "customer-3", "--json", server=url)
    assert [x["msg_id"] for x in json_lines(found.stdout)] == [ack["msg_id"]]
    now_ms = int(time.time() * 1000)
    later = raftmq("message", "query", "--key", "customer-3", "--begin-ts", str(now_ms + 60_000), server=url)
    assert later.returncode == 0 and later.stdout == "" and "no message with key" in later.stderr


def test_binary_bodies_and_ordered_messages(group: BrokerGroup) -> None:
    url = group.nodes[0].http_url
    assert raftmq("topic", "create", "cli-bin", "--queues", "4", server=url).returncode == 0
    sent = raftmq("produce", "--topic", "cli-bin", "--sharding-key", "order-9", "--json", server=url,
                  stdin=b"\xff\xfe binary\n" + b"".join(b"step %d\n" % i for i in range(20)))
    assert sent.returncode == 0, sent.stderr
    acks = json_lines(sent.stdout)
    assert len({a["queue_id"] for a in acks}) == 1  # one sharding key, one queue, in order
    assert [a["queue_offset"] for a in acks] == list(range(21))
    q = acks[0]["queue_id"]
    got = json_lines(raftmq("consume", "--topic", "cli-bin", "--queue", str(q), "--from-beginning", "--json",
                            server=url).stdout)
    assert got[0]["body_b64"] == "//4gYmluYXJ5" and [m["body"] for m in got[1:]] == [f"step {i}" for i in range(20)]
    text = raftmq("consume", "--topic", "cli-bin", "--queue", str(q), "--from-beginning", "--max", "1", server=url)
    assert text.stdout.rstrip().endswith("  base64://4gYmluYXJ5")


def test_follow_prints_new_messages_and_ctrl_c_exits_0_with_offsets_committed(group: BrokerGroup) -> None:
    url = group.nodes[0].http_url
    assert raftmq("topic", "create", "cli-follow", "--queues", "3", server=url).returncode == 0
    proc = subprocess.Popen([*CLI, "consume", "--topic", "cli-follow", "--group", "tail", "--follow", "--json",
                             "--server", url], stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, cwd=REPO,
                            env={**ENV, "PYTHONFAULTHANDLER": "1"}, preexec_fn=default_sigint)
    try:
        deadline = time.monotonic() + 30
        # The consumer starts at the end: wait until it has read the (empty) topic's bounds and committed them.
        while json.loads(raftmq("group", "offsets", "tail", "--topic", "cli-follow", "--json", server=url).stdout
                         )["offsets"][0]["offset"] is None:
            assert time.monotonic() < deadline and proc.poll() is None, "the consumer did not start"
            time.sleep(0.1)
        sent = raftmq("produce", "--topic", "cli-follow", "--json", server=url, stdin="x1\nx2\nx3\nx4\nx5\n")
        assert sent.returncode == 0, sent.stderr
        assert proc.stdout is not None
        got = [json.loads(proc.stdout.readline()) for _ in range(5)]  # bounded by the test's timeout
        assert sorted(m["body"] for m in got) == ["x1", "x2", "x3", "x4", "x5"]
        proc.send_signal(signal.SIGINT)
        try:
            out, err = proc.communicate(timeout=20)
        except subprocess.TimeoutExpired:
            # Still running: SIGABRT makes faulthandler (PYTHONFAULTHANDLER) print
            # where every thread is, so the failure says where it hangs.
            proc.send_signal(signal.SIGABRT)
            out, err = proc.communicate(timeout=20)
            raise AssertionError(f"consume --follow still running 20 s after SIGINT; its threads:\n{err}") from None
        assert proc.returncode == 0 and err == "" and out == ""
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
    lag = json.loads(raftmq("group", "lag", "tail", "--topic", "cli-follow", "--json", server=url).stdout)
    assert lag["lag"] == 0


def test_follow_with_max_stops_by_itself(group: BrokerGroup) -> None:
    url = group.nodes[1].http_url
    assert raftmq("topic", "create", "cli-max", "--queues", "2", server=url).returncode == 0
    proc = subprocess.Popen([*CLI, "consume", "--topic", "cli-max", "--follow", "--max", "3", "--server", url],
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, cwd=REPO, env=ENV)
    try:
        deadline = time.monotonic() + 30
        lines: list[str] = []
        while proc.poll() is None:  # keep producing until it has seen its 3 (it starts at the end)
            assert time.monotonic() < deadline, "consume --follow --max 3 did not stop"
            assert raftmq("produce", "--topic", "cli-max", "tick", server=url).returncode == 0
            time.sleep(0.2)
        out, err = proc.communicate(timeout=10)
        lines = out.splitlines()
        assert proc.returncode == 0 and len(lines) == 3 and all(line.endswith("  tick") for line in lines), err
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()


def test_the_local_group_file_is_the_default_server(group: BrokerGroup, tmp_path: Path) -> None:
    (tmp_path / "raftmq-data").mkdir()
    (tmp_path / "raftmq-data" / "cluster.json").write_text(json.dumps(
        {"group": group.group, "nodes": [{"id": n.id, "http_url": n.http_url} for n in group.nodes]}))
    r = raftmq("topic", "create", "cli-default", "--queues", "1", server=None, cwd=tmp_path)
    assert r.returncode == 0, r.stderr
    assert "cli-default" in raftmq("topic", "list", server=None, cwd=tmp_path).stdout



def test_a_wrong_server_fails_fast_with_one_line(tmp_path: Path) -> None:
    url = f"http://127.0.0.1:{free_port()}"
    t = time.monotonic()
    r = raftmq("topic", "list", server=url)
    assert assert_one_line_error(r, 1) == f"raftmq: cannot connect to {url}"
    assert time.monotonic() - t < 15
    r = raftmq("consume", "--topic", "x", server=None, cwd=tmp_path, timeout_s=30)  # no ./raftmq-data here
    if r.returncode == 0:  # something else answers at 127.0.0.1:8081 on this machine
        pytest.skip("a server listens on 127.0.0.1:8081")
    assert "the default: no ./raftmq-data/cluster.json here" in assert_one_line_error(r, 1)


@pytest.mark.parametrize("args,message", [
    (("consume", "--topic", "no-such-topic", "--from-beginning"), "raftmq: topic 'no-such-topic' does not exist"),
    (("topic", "describe", "no-such-topic"), "raftmq: topic 'no-such-topic' does not exist"),
    (("produce", "--topic", "no-such-topic", "hello"), "raftmq: topic 'no-such-topic' does not exist"),
    (("group", "lag", "g", "--topic", "no-such-topic"), "raftmq: topic 'no-such-topic' does not exist"),
    (("message", "get", "test-group-00000000FFFFFFFF"), "raftmq: no message with id"),
])
def test_unknown_names_are_one_line_and_exit_1(group: BrokerGroup, args: tuple[str, ...], message: str) -> None:
    assert assert_one_line_error(raftmq(*args, server=group.nodes[0].http_url), 1).startswith(message)


def test_stdin_to_an_unknown_topic_reports_how_many_failed(group: BrokerGroup) -> None:
    r = raftmq("produce", "--topic", "no-such-topic", server=group.nodes[0].http_url, stdin="a\nb\nc\n")
    assert assert_one_line_error(r, 1) == "raftmq: topic 'no-such-topic' does not exist (0 sent, 3 failed)"


@pytest.mark.parametrize("args,fragment", [
    (("topic", "create", "x", "--queues", "0"), "--queues"),
    (("produce", "--topic", "t", "--property", "novalue", "x"), "KEY=VALUE"),
    (("consume",), "Missing option '--topic'"),
    (("consume", "--topic", "cli-lines", "--queue", "99"), "has queues 0..2"),
])
def test_bad_arguments_are_one_line_and_exit_2(group: BrokerGroup, args: tuple[str, ...], fragment: str) -> None:
    if "cli-lines" in args:
        raftmq("topic", "create", "cli-lines", "--queues", "3", server=group.nodes[0].http_url)
    assert fragment in assert_one_line_error(raftmq(*args, server=group.nodes[0].http_url), 2)
