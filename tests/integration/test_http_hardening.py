"""The HTTP edge against hostile input and hostile clients (issue 11), on real
broker processes: every answer is a 4xx (or 503) in the JSON error model with
an error code, never a 5xx or aiohttp's plain text; the node keeps serving;
connections, slow headers and long polls are bounded by ``[http]`` settings.
"""

from __future__ import annotations

import json
import os
import socket
import sys
import time
from pathlib import Path
from typing import Any, Iterator

import msgpack
import pytest

from tests.integration.broker_group import REPO, BrokerGroup, http, running_group

pytestmark = pytest.mark.integration

HTTP = {"header_timeout_ms": 2000, "body_timeout_ms": 2000, "max_connections": 32, "max_long_polls": 4}


@pytest.fixture(scope="module")
def group(tmp_path_factory: pytest.TempPathFactory) -> Iterator[BrokerGroup]:
    with running_group(tmp_path_factory.mktemp("hardening"), n=1, extra={"http": HTTP}) as g:
        status, _, body = http("POST", g.leader().http_url + "/v1/topics", {"name": "t", "queues": 2})
        assert status == 200, body
        yield g


@pytest.fixture(scope="module")
def url(group: BrokerGroup) -> str:
    return group.leader().http_url


def addr(url: str) -> tuple[str, int]:
    host, port = url.removeprefix("http://").split(":")
    return host, int(port)


def raw_exchange(url: str, data: bytes, timeout_s: float = 5) -> tuple[int, dict[str, str], bytes]:
    """Send ``data`` as is on a new connection; the answer's status, headers and body."""
    with socket.create_connection(addr(url), timeout=timeout_s) as s:
        s.sendall(data)
        buf = b""
        while b"\r\n\r\n" not in buf:
            chunk = s.recv(65536)
            if not chunk:
                break
            buf += chunk
        head, _, body = buf.partition(b"\r\n\r\n")
        lines = head.decode("latin-1").split("\r\n")
        headers = dict(line.split(": ", 1) for line in lines[1:] if ": " in line)
        want = int(headers.get("Content-Length", "0"))
        while len(body) < want:
            chunk = s.recv(65536)
            if not chunk:
                break
            body += chunk
        return int(lines[0].split()[1]), headers, body


def assert_error(status: int, body: Any, expected_status: int, code: str) -> None:
    assert isinstance(body, dict), body
    assert (status, body.get("error")) == (expected_status, code), body
    assert isinstance(body.get("message"), str) and body["message"]


def assert_alive(group: BrokerGroup) -> None:
    for node in group.nodes:
        assert node.proc is not None and node.proc.poll() is None, group.logs()
    assert group.health(group.nodes[0].id) is not None


# -- request bodies -----------------------------------------------------------
PRODUCE = "/v1/topics/t/messages"


@pytest.mark.parametrize("ctype", ["application/json", "application/msgpack"])
def test_body_nested_deeper_than_max_json_depth_is_400(group: BrokerGroup, url: str, ctype: str) -> None:
    if ctype == "application/json":
        raw = b'{"messages": ' + b"[" * 100_000 + b"]" * 100_000 + b"}"
    else:
        raw = b"\x81\xa8messages" + b"\x91" * 1000 + b"\x90"  # 1,000 nested arrays (msgpack's own limit is 1,024)
    status, _, body = http("POST", url + PRODUCE, raw=raw, ctype=ctype)
    assert_error(status, body, 400, "nesting_too_deep")
    nested = {"messages": [{"body": "x", "properties": {"a": "b"}}]}
    for _ in range(40):
        nested = {"x": nested}
    status, _, body = http("POST", url + "/v1/groups/g/heartbeat", nested)
    assert_error(status, body, 400, "nesting_too_deep")
    assert_alive(group)


SURROGATE_BODIES = {
    "body": '{"messages": [{"body": "\\udc80"}]}',
    "tags": '{"messages": [{"body": "x", "tags": "\\udc80"}]}',
    "keys": '{"messages": [{"body": "x", "keys": ["k", "\\udc80"]}]}',
    "keys_string": '{"messages": [{"body": "x", "keys": "a \\udc80"}]}',
    "property_value": '{"messages": [{"body": "x", "properties": {"a": "\\udc80"}}]}',
    "property_name": '{"messages": [{"body": "x", "properties": {"\\ud800": "a"}}]}',
    "sharding_key": '{"messages": [{"body": "x", "sharding_key": "\\udc80"}]}',
    "producer_id": '{"messages": [{"body": "x"}], "producer_id": "\\udc80", "sequence": 1}',
    "high_surrogate_alone": '{"messages": [{"body": "a\\ud83dz"}]}',
}


@pytest.mark.parametrize("field", SURROGATE_BODIES)
def test_lone_surrogate_in_any_produce_field_is_400(group: BrokerGroup, url: str, field: str) -> None:
    status, _, body = http("POST", url + PRODUCE, raw=SURROGATE_BODIES[field].encode())
    assert_error(status, body, 400, "invalid_string")
    assert_alive(group)


@pytest.mark.parametrize("path,payload", [
    ("/v1/topics", '{"name": "\\udc80", "queues": 1}'),
    ("/v1/groups/g/heartbeat", '{"topic": "t", "client_id": "\\udc80"}'),
    ("/v1/groups/g/offsets", '{"topic": "t\\udc80", "queue_id": 0, "offset": 0}'),
    ("/v1/groups/g/locks", '{"topic": "t", "client_id": "\\udfff", "queue_ids": [0]}'),
    ("/v1/groups/g/unlock", '{"topic": "t", "client_id": "\\udfff", "queue_ids": [0]}'),
])
def test_lone_surrogate_in_other_bodies_is_400(group: BrokerGroup, url: str, path: str, payload: str) -> None:
    status, _, body = http("POST", url + path, raw=payload.encode())
    assert_error(status, body, 400, "invalid_string")


def test_a_surrogate_pair_is_a_character_and_is_stored(url: str) -> None:
    status, _, body = http("POST", url + PRODUCE, raw=b'{"messages": [{"body": "\\ud83d\\ude00", "queue_id": 1}]}')
    assert status == 200, body
    offset = body["results"][0]["queue_offset"]
    _, _, got = http("GET", f"{url}/v1/topics/t/queues/1/messages?offset={offset}&max=1")
    assert got["messages"][0]["body"] == "\U0001F600"


BIG = 2**64
# Each case as a function of an integer just outside int64: 2**64 in JSON (no
# fixed width there); 2**63 in msgpack (an uint64 msgpack carries, that still
# does not fit an int64). Negative cases are JSON only: msgpack stops at -2**63.
OUT_OF_RANGE = {
    "born_ts": (PRODUCE, lambda n: {"messages": [{"body": "x", "born_ts": n}]}),
    "sequence": (PRODUCE, lambda n: {"messages": [{"body": "x"}], "producer_id": "p", "sequence": n}),
    "queue_id": (PRODUCE, lambda n: {"messages": [{"body": "x", "queue_id": n}]}),
    "create_queues": ("/v1/topics", lambda n: {"name": "big", "queues": n}),
    "commit_offset": ("/v1/groups/g/offsets", lambda n: {"topic": "t", "queue_id": 0, "offset": n}),
    "commit_queue_id": ("/v1/groups/g/offsets", lambda n: {"topic": "t", "queue_id": n, "offset": 0}),
    "lock_queue_ids": ("/v1/groups/g/locks", lambda n: {"topic": "t", "client_id": "c", "queue_ids": [n]}),
    "lock_lease_ms": ("/v1/groups/g/locks",
                      lambda n: {"topic": "t", "client_id": "c", "queue_ids": [0], "lease_ms": n}),
    "unlock_queue_ids": ("/v1/groups/g/unlock", lambda n: {"topic": "t", "client_id": "c", "queue_ids": [n]}),
}


@pytest.mark.parametrize("case", OUT_OF_RANGE)
@pytest.mark.parametrize("encoding,value", [("json", BIG), ("json", 2**63), ("json", -BIG), ("msgpack", 2**63)])
def test_integer_outside_int64_is_400(group: BrokerGroup, url: str, case: str, encoding: str, value: int) -> None:
    path, payload = OUT_OF_RANGE[case]
    if encoding == "msgpack":
        raw, ctype = msgpack.packb(payload(value)), "application/msgpack"
    else:
        raw, ctype = json.dumps(payload(value)).encode(), "application/json"
    status, _, body = http("POST", url + path, raw=raw, ctype=ctype)
    assert_error(status, body, 400, "integer_out_of_range")
    assert_alive(group)


def test_update_topic_queues_outside_int64_is_400(url: str) -> None:
    status, _, body = http("PUT", url + "/v1/topics/t", {"queues": BIG})
    assert_error(status, body, 400, "integer_out_of_range")


@pytest.mark.parametrize("query", [
    "/v1/topics/t/queues/0/messages?offset=18446744073709551616",
    "/v1/topics/t/queues/0/messages?max=99999999999999999999999999999999",
    "/v1/topics/t/queues/0/messages?wait_ms=-18446744073709551616",
    "/v1/topics/t/queues/18446744073709551616/messages",
    "/v1/messages?key=k&begin_ts=18446744073709551616",
    "/v1/messages?key=k&end_ts=-18446744073709551616",
    "/v1/messages?key=k&max=" + "9" * 5000,
])
def test_integer_outside_int64_in_a_url_is_400(url: str, query: str) -> None:
    status, _, body = http("GET", url + query)
    assert_error(status, body, 400, "integer_out_of_range")


# -- URLs, headers and the HTTP parser ------------------------------------------------
def test_url_over_the_request_line_limit_is_414_json(group: BrokerGroup, url: str) -> None:
    status, headers, body = raw_exchange(url, b"GET /v1/topics?x=" + b"a" * 9000 + b" HTTP/1.1\r\nHost: h\r\n\r\n")
    assert headers["Content-Type"].startswith("application/json")
    assert_error(status, json.loads(body), 414, "uri_too_long")
    assert_alive(group)


def test_header_over_the_limit_is_431_json(url: str) -> None:
    status, headers, body = raw_exchange(url, b"GET /v1/topics HTTP/1.1\r\nHost: h\r\nX-Big: " + b"a" * 9000
                                         + b"\r\n\r\n")
    assert headers["Content-Type"].startswith("application/json")
    assert_error(status, json.loads(body), 431, "header_too_large")


@pytest.mark.parametrize("request_bytes", [
    b"GARBAGE\r\n\r\n",
    b"GET /v1/health HTTP/9.9\r\n\r\n",
    b"\x16\x03\x01\x02\x00\x01\x00\x01\xfc\x03\x03",  # a TLS hello on the HTTP port
    b"GET /v1/topics/\xed\xb2\x80 HTTP/1.1\r\nHost: h\r\n\r\n",
    b"POST /v1/topics HTTP/1.1\r\nHost: h\r\nTransfer-Encoding: chunked\r\n\r\nzz\r\n",
    b"POST /v1/topics HTTP/1.1\r\nHost: h\r\nContent-Length: 5\r\nContent-Length: 6\r\n\r\n{}",
])
def test_what_the_http_parser_refuses_is_400_json(group: BrokerGroup, url: str, request_bytes: bytes) -> None:
    status, headers, body = raw_exchange(url, request_bytes)
    assert headers["Content-Type"].startswith("application/json"), body
    assert_error(status, json.loads(body), 400, "malformed_request")
    assert_alive(group)


def test_unknown_route_and_method_and_big_body_are_json(url: str) -> None:
    status, _, body = http("GET", url + "/nothing")
    assert_error(status, body, 404, "not_found")
    status, _, body = http("DELETE", url + "/v1/topics")
    assert_error(status, body, 405, "method_not_allowed")
    # Declared over max_request_bytes (32 MiB by default): refused before a byte of it is sent.
    status, _, raw = raw_exchange(url, b"POST /v1/topics HTTP/1.1\r\nHost: h\r\nContent-Type: application/json\r\n"
                                       b"Content-Length: 99999999999\r\n\r\n")
    assert_error(status, json.loads(raw), 413, "request_too_large")


# -- connections ------------------------------------------------------------------------
def test_slowloris_connections_are_closed_after_the_header_timeout(group: BrokerGroup, url: str) -> None:
    socks = [socket.create_connection(addr(url), timeout=10) for _ in range(24)]
    try:
        for s in socks:
            s.sendall(b"GET /v1/health HTTP/1.1\r\nHo")
        start = time.monotonic()
        closed: set[int] = set()
        deadline = start + HTTP["header_timeout_ms"] / 1000 + 6
        while len(closed) < len(socks) and time.monotonic() < deadline:
            # another client is served meanwhile
            assert http("GET", url + "/v1/health", timeout_s=5)[0] == 200
            for i, s in enumerate(socks):
                if i in closed:
                    continue
                try:
                    s.sendall(b"s")  # one byte at a time, never a complete header
                    s.setblocking(False)
                    if s.recv(1) == b"":
                        closed.add(i)
                except BlockingIOError:
                    pass
                except OSError:
                    closed.add(i)
                finally:
                    s.setblocking(True)
            time.sleep(0.3)
        elapsed = time.monotonic() - start
        assert len(closed) == len(socks), f"{len(socks) - len(closed)} slow connections still open after {elapsed:.1f}s"
        assert elapsed >= HTTP["header_timeout_ms"] / 1000 - 0.5  # not before the timeout
    finally:
        for s in socks:
            s.close()
    assert "event=http_header_timeout" in group.node("n1").log_path.read_text()


def test_a_connection_over_max_connections_gets_a_503_json_answer(group: BrokerGroup, url: str) -> None:
    # Hold every slot with a connection that is busy (its headers not complete), not idle.
    socks = [socket.create_connection(addr(url), timeout=10) for _ in range(HTTP["max_connections"])]
    try:
        for s in socks:
            s.sendall(b"GET /v1/health HTTP/1.1\r\n")
        time.sleep(0.3)
        status, headers, body = raw_exchange(url, b"GET /v1/health HTTP/1.1\r\nHost: h\r\n\r\n")
        assert_error(status, json.loads(body), 503, "too_many_connections")
        assert headers.get("Retry-After") == "1"
    finally:
        for s in socks:
            s.close()
    group.wait_for(lambda: group.health("n1"), 10, "the node to serve again once the slots are free")


def test_idle_keep_alive_connections_make_room_for_new_ones(group: BrokerGroup, url: str) -> None:
    socks = [socket.create_connection(addr(url), timeout=10) for _ in range(HTTP["max_connections"])]
    try:
        for s in socks:  # each one asks once and then keeps its connection open, idle
            s.sendall(b"GET /v1/health HTTP/1.1\r\nHost: h\r\n\r\n")
        for s in socks:
            assert s.recv(65536).startswith(b"HTTP/1.1 200")
        status, _, body = http("POST", url + PRODUCE, {"messages": [{"body": "room"}]})
        assert status == 200, body
    finally:
        for s in socks:
            s.close()


def test_a_pull_over_max_long_polls_is_answered_at_once(group: BrokerGroup, url: str) -> None:
    poll = b"GET /v1/topics/t/queues/0/messages?offset=%d&wait_ms=8000 HTTP/1.1\r\nHost: h\r\n\r\n"
    _, _, topic = http("GET", url + "/v1/topics/t")
    end = topic["queue_offsets"][0]["max_offset"]
    socks = [socket.create_connection(addr(url), timeout=10) for _ in range(HTTP["max_long_polls"])]
    try:
        for s in socks:
            s.sendall(poll % end)
        time.sleep(0.5)
        start = time.monotonic()
        status, _, body = http("GET", f"{url}/v1/topics/t/queues/0/messages?offset={end}&wait_ms=8000")
        assert status == 200 and body["messages"] == [], body
        assert time.monotonic() - start < 3, "the pull over the cap waited"
    finally:
        for s in socks:
            s.close()
    assert "event=long_poll_cap_reached" in group.node("n1").log_path.read_text()


# -- 1,200 idle long polls under ulimit -n 1024 ------------------------------------------
SETRLIMIT_THEN_RUN = ("import os, resource, sys; resource.setrlimit(resource.RLIMIT_NOFILE, (1024, 1024)); "
                      "os.execv(sys.executable, [sys.executable, '-m', 'raftmq.broker', *sys.argv[1:]])")


def test_1200_idle_long_polls_under_ulimit_1024_leave_room_for_a_producer(tmp_path: Path) -> None:
    g = BrokerGroup(tmp_path, n=1)  # default [http] settings
    node = g.nodes[0]
    env = dict(os.environ, PYTHONPATH=str(REPO) + os.pathsep + os.environ.get("PYTHONPATH", ""))
    socks: list[socket.socket] = []
    try:
        g.supervisor.start(node.id, [sys.executable, "-c", SETRLIMIT_THEN_RUN, "--config", str(node.config_path)],
                           node.log_path, env=env)
        url = g.leader().http_url
        assert http("POST", url + "/v1/topics", {"name": "lp", "queues": 1})[0] == 200
        request = b"GET /v1/topics/lp/queues/0/messages?offset=0&wait_ms=30000 HTTP/1.1\r\nHost: h\r\n\r\n"
        for _ in range(1200):
            s = socket.create_connection(addr(url), timeout=10)
            s.sendall(request)
            socks.append(s)
        start = time.monotonic()
        status, _, body = http("POST", url + "/v1/topics/lp/messages", {"messages": [{"body": "through"}]},
                               timeout_s=10)
        assert status == 200, body
        assert time.monotonic() - start < 5
        assert http("GET", url + "/v1/health", timeout_s=10)[0] == 200
        assert node.proc is not None and node.proc.poll() is None
    finally:
        for s in socks:
            s.close()
        g.stop()


@pytest.mark.parametrize("tail", [b"zz\r\n", b"3\r\nabcdef\r\n", b"5\r\nab"])
def test_a_broken_or_stalled_body_is_answered_in_time_and_never_a_500(group: BrokerGroup, url: str,
                                                                       tail: bytes) -> None:
    """The handler is already reading a chunked body when it breaks (a bad chunk
    size, a chunk longer than announced) or the client stops sending it: a
    4xx (408 request_timeout after ``body_timeout_ms``), or no answer to a
    client that hung up; never an internal error, never a request held open."""
    start = time.monotonic()
    with socket.create_connection(addr(url), timeout=10) as s:
        s.sendall(b"POST /v1/topics/t/messages HTTP/1.1\r\nHost: h\r\nContent-Type: application/json\r\n"
                  b"Transfer-Encoding: chunked\r\n\r\n3\r\n{\"m\r\n")
        time.sleep(0.3)  # the handler is reading the body by now
        s.sendall(tail)
        if tail.startswith(b"5"):
            s.shutdown(socket.SHUT_WR)  # the body ends in the middle of a chunk
        answer = b""
        while b"\r\n\r\n" not in answer and (chunk := s.recv(65536)):
            answer += chunk
    assert time.monotonic() - start < HTTP["body_timeout_ms"] / 1000 + 3
    if answer:
        status = int(answer.split()[1])
        assert 400 <= status < 500 and b'"error": "' in answer, answer
    assert_alive(group)
    log_text = group.node("n1").log_path.read_text()
    assert "internal_error" not in log_text and "Traceback" not in log_text
