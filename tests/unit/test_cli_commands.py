"""The data commands of ``raftmq`` (client/cli/) without a broker:
argument parsing, output formats, the produce and consume loops over fakes,
and the one-line errors against a server that is not there (a loopback port
nothing listens on)."""

from __future__ import annotations

import asyncio
import io
import json
import socket
from pathlib import Path
from typing import Any

import click
import pytest
from click.testing import CliRunner, Result

from raftmq.client.cli import consume as consume_mod, error_lines, message as message_mod, output
from raftmq.client.cli import produce as produce_mod, servers as servers_mod, stdin as stdin_mod
from raftmq.client.cli import main
from raftmq.client.consumer import PullResult, ReceivedMessage
from raftmq.client.errors import TopicNotFound, from_response
from raftmq.client.producer import SendResult


def dead_url() -> str:
    """A loopback URL with nothing listening (the port was free a moment ago)."""
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return f"http://127.0.0.1:{s.getsockname()[1]}"


def invoke(*args: str, input: str | bytes | None = None, env: dict[str, str] | None = None) -> Result:
    return CliRunner().invoke(main, list(args), input=input, env=env)


def one_error_line(r: Result) -> str:
    lines = r.stderr.strip().splitlines()
    assert len(lines) == 1, r.stderr
    assert lines[0].startswith("raftmq: ") and "Traceback" not in r.output, r.stderr
    return lines[0]


def msg(q: int, offset: int, body: bytes = b"x", **kw: Any) -> ReceivedMessage:
    return ReceivedMessage(msg_id=f"g-{offset:016X}", topic="t", queue_id=q, queue_offset=offset, body=body, **kw)


# ----------------------------------------------------------------------
# which servers
# ----------------------------------------------------------------------
def test_server_values_split_on_commas_and_spaces_and_accept_host_port() -> None:
    s = servers_mod.parse_servers(["http://a:1,b:2", "c:3  http://a:1"], "option")
    assert s.urls == ("http://a:1", "http://b:2", "http://c:3") and s.origin == "option"


def test_without_server_the_local_group_file_is_used(tmp_path: Path) -> None:
    (tmp_path / "cluster.json").write_text(json.dumps({"nodes": [{"http_url": "http://127.0.0.1:7001"},
                                                                  {"http_url": "http://127.0.0.1:7002"}]}))
    assert servers_mod.parse_servers([], "option", base_dir=tmp_path) == servers_mod.Servers(
        ("http://127.0.0.1:7001", "http://127.0.0.1:7002"), "local")


def test_without_server_or_local_group_the_default_url_is_used(tmp_path: Path) -> None:
    assert servers_mod.parse_servers([], "option", base_dir=tmp_path) == servers_mod.Servers(("http://127.0.0.1:8081",), "default")
    (tmp_path / "cluster.json").write_text("{not json")
    assert servers_mod.parse_servers([], "option", base_dir=tmp_path).origin == "default"


def test_help_says_what_the_default_server_is() -> None:
    for args in (["produce"], ["consume"], ["topic", "list"], ["group", "lag"], ["message", "get"]):
        out = "".join(invoke(*args, "--help").output.split())  # help text wraps lines anywhere
        assert "RAFTMQ_SERVER" in out and "raftmq-data/cluster.json" in out and "http://127.0.0.1:8081" in out


# ----------------------------------------------------------------------
# usage errors: one line, exit code 2
# ----------------------------------------------------------------------
@pytest.mark.parametrize("args,fragment", [
    (["consume"], "Missing option '--topic'"),
    (["topic", "create", "x", "--queues", "0"], "--queues"),
    (["produce", "--topic", "t", "--property", "novalue", "x"], "'novalue' is not KEY=VALUE"),
    (["produce", "--topic", "t", "--queue", "1", "--sharding-key", "k", "x"], "either --queue or --sharding-key"),
    (["topic", "list", "--server", "http://"], "is not a broker URL"),
    (["topic", "frobnicate"], "No such command 'frobnicate'"),
    (["consume", "--topic", "t", "--max", "0"], "--max"),
    (["message", "query", "--key", "k", "--begin-ts", "yesterday"], "neither milliseconds"),
    (["message", "query", "--key", "k", "--begin-ts", "2026-01-02", "--end-ts", "2026-01-01"], "after --end-ts"),
    (["topic", "list", "--timeout", "0"], "--timeout"),
])
def test_bad_arguments_are_one_line_and_exit_2(args: list[str], fragment: str) -> None:
    r = invoke(*args)
    assert r.exit_code == 2
    assert fragment in one_error_line(r)


def test_a_group_without_subcommand_prints_its_help() -> None:
    r = invoke("topic")
    assert "create" in r.output and "describe" in r.output


def test_existing_commands_keep_clicks_usage_errors() -> None:
    r = invoke("cluster", "up", "--nodes", "0")
    assert r.exit_code == 2 and "Usage:" in r.stderr


# ----------------------------------------------------------------------
# an unreachable server: one line, exit code 1, quickly
# ----------------------------------------------------------------------
@pytest.mark.parametrize("args", [
    ["topic", "list"],
    ["topic", "create", "t", "--queues", "2"],
    ["topic", "describe", "t"],
    ["group", "offsets", "g", "--topic", "t"],
    ["group", "lag", "g", "--topic", "t"],
    ["message", "get", "g-0000000000000000"],
    ["message", "query", "--key", "k"],
    ["consume", "--topic", "t", "--from-beginning"],
    ["consume", "--topic", "t", "--follow"],
    ["produce", "--topic", "t", "hello"],
])
def test_unreachable_server_is_one_line_and_exit_1(args: list[str]) -> None:
    url = dead_url()
    r = invoke(*args, "--server", url, "--timeout", "0.5")
    assert r.exit_code == 1
    assert one_error_line(r) == f"raftmq: cannot connect to {url}"


def test_unreachable_server_while_producing_stdin_counts_what_failed() -> None:
    url = dead_url()
    r = invoke("produce", "--topic", "t", "--server", url, "--timeout", "0.5", input="a\nb\nc\n")
    assert r.exit_code == 1
    assert one_error_line(r) == f"raftmq: cannot connect to {url} (0 sent, 3 failed)"
    assert r.stdout == ""


def test_error_line_says_where_the_servers_came_from(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    url = dead_url()
    r = invoke("topic", "list", "--timeout", "0.3", env={"RAFTMQ_SERVER": f"{url} {url}"})
    assert one_error_line(r) == f"raftmq: cannot connect to {url} (from RAFTMQ_SERVER)"
    monkeypatch.chdir(tmp_path)
    r = invoke("topic", "list", "--timeout", "0.3", env={"RAFTMQ_SERVER": ""})
    assert "(the default: no ./raftmq-data/cluster.json here" in one_error_line(r)
    (tmp_path / "raftmq-data").mkdir()
    (tmp_path / "raftmq-data" / "cluster.json").write_text(json.dumps({"nodes": [{"http_url": url}]}))
    r = invoke("topic", "list", "--timeout", "0.3", env={"RAFTMQ_SERVER": ""})
    assert one_error_line(r).startswith(f"raftmq: cannot connect to {url} (the local group of ./raftmq-data")


def test_an_answer_that_is_not_the_brokers_is_one_line() -> None:
    servers = servers_mod.Servers(("http://127.0.0.1:80",), "option")
    html = b"<!DOCTYPE HTML>\n<html>\n<body>\n<h1>Error response</h1>\n</body>\n</html>\n"
    line = error_lines.error_line(from_response(404, html), servers, 5)
    assert line == "http://127.0.0.1:80 answered HTTP 404, not like a RaftMQ broker (check --server)"
    assert error_lines.error_line(from_response(404, {"error": "topic_not_found", "message": "topic 'x' does not exist"}),
                          servers, 5) == "topic 'x' does not exist"


# ----------------------------------------------------------------------
# formats
# ----------------------------------------------------------------------
def test_message_line_keeps_one_line_per_message_and_shows_binary_as_base64() -> None:
    m = msg(2, 7, b"two\nlines", tags="T", keys=("a", "b"), properties={"p": "1"})
    assert output.message_line(m) == "queue=2 offset=7 tags=T keys=a,b properties=p=1 msg_id=g-0000000000000007  two\\nlines"
    assert output.message_line(msg(0, 1, b"\xff\xfe")).endswith("  base64://4=")
    assert output.message_line(msg(0, 1, "héllo".encode()), with_topic=True).startswith("topic=t queue=0")
    assert output.message_line(msg(0, 1, "héllo".encode())).endswith("  héllo")


def test_message_json_is_the_http_apis_form() -> None:
    assert output.message_json(msg(0, 1, b"hi"))["body"] == "hi"
    d = output.message_json(msg(0, 1, b"\xff"))
    assert d["body_b64"] == "/w==" and "body" not in d


def test_send_results_as_lines_and_json() -> None:
    r = SendResult("g-00000000000000AA", 3, 41)
    assert output.send_result_line(r, False) == "queue=3 offset=41 msg_id=g-00000000000000AA"
    assert json.loads(output.send_result_line(r, True)) == {"queue_id": 3, "queue_offset": 41, "msg_id": "g-00000000000000AA"}


def test_table_aligns_columns_and_shows_none_as_dash() -> None:
    assert output.table(["queue_id", "offset"], [{"queue_id": 0, "offset": 12}, {"queue_id": 1, "offset": None}]) == [
        "queue_id  offset", "0         12", "1         -"]


def test_keys_and_properties_options() -> None:
    assert produce_mod.split_keys(["a,b", " c ", "a,,"]) == ["a", "b", "c"]
    assert produce_mod.parse_properties(["k=v", "x=a=b", "e="]) == {"k": "v", "x": "a=b", "e": ""}
    with pytest.raises(click.BadParameter):
        produce_mod.parse_properties(["=v"])


def test_timestamps_are_ms_or_iso_dates() -> None:
    ts = message_mod.TimestampParam()
    assert ts.convert("1700000000000", None, None) == 1700000000000
    assert ts.convert("2023-11-14T22:13:20+00:00", None, None) == 1700000000000


# ----------------------------------------------------------------------
# produce: lines in, results out in input order
# ----------------------------------------------------------------------
def test_stdin_lines_are_split_without_line_ends_and_blank_lines() -> None:
    assert stdin_mod.split_lines(b"ab", b"c\r\n\nd\n\r\ne") == ([b"abc", b"d"], b"e")


async def test_stdin_is_read_in_chunks_in_a_thread() -> None:
    stream = io.BytesIO(b"".join(b"line %d\n" % i for i in range(10)) + b"last")
    chunks = [c async for c in stdin_mod.StdinLines(stream, chunk_lines=4, max_chunks=2).chunks()]
    assert [len(c) for c in chunks] == [4, 4, 2, 1]
    assert chunks[0][0] == b"line 0" and chunks[-1] == [b"last"]


class FakeProducer:
    """Stores each body at the next offset of queue len(body) % 2; fails bodies starting with b'bad'."""

    def __init__(self) -> None:
        self.sent: list[tuple[bytes, dict[str, Any]]] = []
        self.next = [0, 0]

    async def send(self, topic: str, body: bytes, **kw: Any) -> SendResult:
        await asyncio.sleep(0.001 * (len(body) % 3))  # answers come back out of order
        if body.startswith(b"bad"):
            raise TopicNotFound(f"topic {topic!r} does not exist")
        q = len(body) % 2
        self.sent.append((body, kw))
        self.next[q] += 1
        return SendResult(f"g-{len(self.sent):016X}", q, self.next[q] - 1)


async def chunks_of(*chunks: list[bytes]) -> Any:
    for c in chunks:
        yield c


async def test_produce_prints_one_result_per_message_in_input_order(capsys: pytest.CaptureFixture[str]) -> None:
    p = FakeProducer()
    bodies = [b"m" * n for n in range(1, 40)]
    await produce_mod.produce_stream(p, "t", chunks_of(bodies[:20], bodies[20:]), {"tags": "T"}, True)  # type: ignore[arg-type]
    out = [json.loads(line) for line in capsys.readouterr().out.splitlines()]
    assert len(out) == 39
    by_body = {b: i for i, (b, _) in enumerate(p.sent)}
    assert [o["msg_id"] for o in out] == [f"g-{by_body[b] + 1:016X}" for b in bodies]
    assert all(kw == {"tags": "T"} for _, kw in p.sent)


async def test_produce_stops_reading_after_a_failure_and_reports_the_counts(capsys: pytest.CaptureFixture[str]) -> None:
    read = []

    async def source() -> Any:
        for c in ([b"a", b"bad", b"c"], [b"d"], [b"e"]):
            read.append(c)
            yield c
            await asyncio.sleep(0.05)  # the failure is known before the next chunk

    with pytest.raises(error_lines.PartialProduce) as info:
        await produce_mod.produce_stream(FakeProducer(), "t", source(), {}, False)  # type: ignore[arg-type]
    assert (info.value.sent, info.value.failed) == (2, 1)
    assert len(read) == 1
    assert len(capsys.readouterr().out.splitlines()) == 2
    line = error_lines.error_line(info.value, servers_mod.Servers(("http://h:1",), "option"), 5)
    assert line == "topic 't' does not exist (2 sent, 1 failed)"


async def test_one_failed_message_raises_its_own_error() -> None:
    with pytest.raises(TopicNotFound):
        await produce_mod.produce_stream(FakeProducer(), "t", chunks_of([b"bad"]), {}, False)  # type: ignore[arg-type]


# ----------------------------------------------------------------------
# consume: where to start, --max, commits
# ----------------------------------------------------------------------
def test_start_offset_is_committed_else_beginning_or_end() -> None:
    assert consume_mod.start_offset(None, 3, 10, from_beginning=False) == 10  # RocketMQ: CONSUME_FROM_LAST_OFFSET
    assert consume_mod.start_offset(None, 3, 10, from_beginning=True) == 3
    assert consume_mod.start_offset(5, 3, 10, from_beginning=False) == 5
    assert consume_mod.start_offset(1, 3, 10, from_beginning=False) == 3  # retention deleted offsets 1 and 2
    assert consume_mod.start_offset(12, 3, 10, from_beginning=True) == 10


def test_max_cuts_a_batch_and_the_position_stops_after_the_last_message_printed() -> None:
    p = consume_mod.ConsumeProgress({0: 0}, remaining=2)
    took = p.take(0, PullResult([msg(0, 0), msg(0, 3), msg(0, 4)], next_offset=5, max_offset=9))
    assert [m.queue_offset for m in took] == [0, 3] and p.positions[0] == 4 and p.done
    assert p.take(0, PullResult([msg(0, 4)], 5, 9)) == [] and p.positions[0] == 4


def test_position_moves_past_messages_the_tag_filter_skipped() -> None:
    p = consume_mod.ConsumeProgress({0: 0})
    assert p.take(0, PullResult([], next_offset=7, max_offset=7)) == [] and p.positions[0] == 7
    assert p.to_commit(0) == 7
    p.committed[0] = 7
    assert p.to_commit(0) is None


class FakePullConsumer:
    """Queues of a topic in memory; fetch long-polls (up to wait_ms) for a message to be added."""

    def __init__(self, queues: dict[int, int]) -> None:
        self.queues = {q: [msg(q, i, b"q%d-%d" % (q, i)) for i in range(n)] for q, n in queues.items()}
        self.commits: list[tuple[int, int]] = []
        self.added = asyncio.Event()

    def add(self, q: int, n: int = 1) -> None:
        for _ in range(n):
            i = len(self.queues[q])
            self.queues[q].append(msg(q, i, b"q%d-%d" % (q, i)))
        self.added.set()

    async def fetch(self, q: int, offset: int, max_messages: int = 32, wait_ms: int = 0,
                    tags: str | None = None) -> PullResult:
        if offset >= len(self.queues[q]) and wait_ms:
            self.added.clear()
            try:
                await asyncio.wait_for(self.added.wait(), wait_ms / 1000)
            except asyncio.TimeoutError:
                pass
        got = self.queues[q][offset:offset + max_messages]
        return PullResult(got, offset + len(got), len(self.queues[q]))

    async def commit(self, q: int, offset: int) -> int:
        self.commits.append((q, offset))
        return offset


async def test_consume_reads_every_queue_in_order_and_commits_what_it_printed(
        capsys: pytest.CaptureFixture[str]) -> None:
    pc = FakePullConsumer({0: 300, 1: 2, 2: 0})
    progress = consume_mod.ConsumeProgress({0: 0, 1: 0, 2: 0})
    await consume_mod.consume_run(pc, [0, 1, 2], progress, group="g", follow=False, tags=None, as_json=True)  # type: ignore[arg-type]
    out = [json.loads(line) for line in capsys.readouterr().out.splitlines()]
    assert [(m["queue_id"], m["queue_offset"]) for m in out] == [(0, i) for i in range(300)] + [(1, 0), (1, 1)]
    assert pc.commits == [(0, 256), (0, 300), (1, 2), (2, 0)]
    assert progress.printed == 302


async def test_follow_waits_for_new_messages_and_stops_at_max(capsys: pytest.CaptureFixture[str]) -> None:
    pc = FakePullConsumer({0: 1, 1: 0})
    progress = consume_mod.ConsumeProgress({0: 1, 1: 0}, remaining=3)  # started at the end of queue 0
    run = asyncio.create_task(consume_mod.consume_run(pc, [0, 1], progress, group=None, follow=True, tags=None,  # type: ignore[arg-type]
                                              as_json=False))
    await asyncio.sleep(0.05)
    assert not run.done() and capsys.readouterr().out == ""
    pc.add(1, 2)
    await asyncio.sleep(0.05)
    pc.add(0, 5)
    await asyncio.wait_for(run, 5)
    lines = capsys.readouterr().out.splitlines()
    assert [line.split("  ")[-1] for line in lines] == ["q1-0", "q1-1", "q0-1"]
    assert progress.positions == {0: 2, 1: 2} and pc.commits == []


# ----------------------------------------------------------------------
# the commands end to end over fakes (no broker)
# ----------------------------------------------------------------------
def test_produce_sends_body_argument_bytes_and_options(monkeypatch: pytest.MonkeyPatch) -> None:
    made: list[Any] = []

    class Recording(FakeProducer):
        def __init__(self, urls: Any, **options: Any) -> None:
            super().__init__()
            self.urls, self.options = urls, options
            made.append(self)

        async def __aenter__(self) -> "Recording":
            return self

        async def __aexit__(self, *exc: object) -> None:
            pass

    monkeypatch.setattr(produce_mod, "Producer", Recording)
    r = invoke("produce", "--topic", "t", "--server", "h:1", "--keys", "a,b", "--keys", "c", "--tags", "T",
               "--property", "p=1", "--sharding-key", "s", "héllo")
    assert r.exit_code == 0, r.output
    assert r.stdout == "queue=0 offset=0 msg_id=g-0000000000000001\n"
    (p,) = made
    assert p.urls == ("http://h:1",) and p.options["deadline_ms"] == 5000
    assert p.sent == [("héllo".encode(), {"tags": "T", "keys": ["a", "b", "c"], "properties": {"p": "1"},
                                         "sharding_key": "s"})]


def test_produce_reads_binary_stdin_lines(monkeypatch: pytest.MonkeyPatch) -> None:
    p = FakeProducer()

    class Ctx:
        def __init__(self, *a: Any, **k: Any) -> None:
            pass

        async def __aenter__(self) -> FakeProducer:
            return p

        async def __aexit__(self, *exc: object) -> None:
            pass

    monkeypatch.setattr(produce_mod, "Producer", Ctx)
    r = invoke("produce", "--topic", "t", "--server", "h:1", "--json", input=b"\xff\xfe\n\ntext\r\n")
    assert r.exit_code == 0, r.output
    assert sorted(b for b, _ in p.sent) == [b"text", b"\xff\xfe"] and len(r.stdout.splitlines()) == 2
