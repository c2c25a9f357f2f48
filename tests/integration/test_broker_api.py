"""API contract tests for HTTP API v1 against a real 3-process broker group."""

from __future__ import annotations

import base64
import threading
import time
from pathlib import Path
from typing import Any, Iterator

import msgpack
import pytest

from tests.integration.broker_group import BrokerGroup, http, running_group

pytestmark = pytest.mark.integration

LIMITS = {"limits": {"max_message_bytes": 4096, "max_batch_messages": 64, "max_request_bytes": 1 << 20}}


@pytest.fixture(scope="module")
def group(tmp_path_factory: pytest.TempPathFactory) -> Iterator[BrokerGroup]:
    with running_group(tmp_path_factory.mktemp("api"), extra=LIMITS) as g:
        yield g


@pytest.fixture(scope="module")
def leader_url(group: BrokerGroup) -> str:
    return group.leader().http_url


def post(url: str, body: Any, **kw: Any) -> tuple[int, dict[str, str], Any]:
    return http("POST", url, body, **kw)


def make_topic(leader_url: str, name: str, queues: int = 4) -> None:
    status, _, body = post(leader_url + "/v1/topics", {"name": name, "queues": queues})
    assert status == 200, body


def max_offsets(url: str, topic: str) -> list[int]:
    _, _, body = http("GET", f"{url}/v1/topics/{topic}")
    return [q["max_offset"] for q in body["queue_offsets"]]


# -- cluster ------------------------------------------------------------------
def test_health_reports_role_term_and_indexes_on_every_node(group: BrokerGroup) -> None:
    roles = []
    for node in group.nodes:
        status, _, h = http("GET", node.http_url + "/v1/health")
        assert status == 200
        assert set(h) >= {"node_id", "role", "term", "leader_id", "leader_url", "commit_index", "applied_index"}
        assert h["node_id"] == node.id
        roles.append(h["role"])
    assert roles.count("leader") == 1 and roles.count("follower") == 2


def test_cluster_lists_members_with_leader(group: BrokerGroup, leader_url: str) -> None:
    status, _, c = http("GET", leader_url + "/v1/cluster")
    assert status == 200
    assert c["group"] == "test-group"
    assert {m["id"] for m in c["members"]} == {"n1", "n2", "n3"}
    for m in c["members"]:
        assert set(m) >= {"id", "http_url", "raft_addr", "role", "match_index", "lag"}
    assert [m["role"] for m in c["members"]].count("leader") == 1


# -- topics -------------------------------------------------------------------
def test_create_topic_is_idempotent_and_conflicts_on_other_settings(leader_url: str) -> None:
    make_topic(leader_url, "t-create", 3)
    status, _, body = post(leader_url + "/v1/topics", {"name": "t-create", "queues": 3})
    assert status == 200 and body["queues"] == 3
    status, _, body = post(leader_url + "/v1/topics", {"name": "t-create", "queues": 5})
    assert status == 409 and body["error"] == "topic_exists"


@pytest.mark.parametrize("payload,code", [
    ({"name": "bad name!", "queues": 2}, "invalid_argument"),
    ({"queues": 2}, "invalid_argument"),
    ({"name": "ok", "queues": 0}, "invalid_argument"),
    ({"name": "ok", "queues": "four"}, "invalid_argument"),
])
def test_create_topic_rejects_bad_input(leader_url: str, payload: dict[str, Any], code: str) -> None:
    status, _, body = post(leader_url + "/v1/topics", payload)
    assert status == 400 and body["error"] == code, body


def test_list_and_describe_topics(group: BrokerGroup, leader_url: str) -> None:
    make_topic(leader_url, "t-list", 2)
    _, _, body = http("GET", leader_url + "/v1/topics")
    assert {"name": "t-list", "queues": 2} in body["topics"]
    status, _, t = http("GET", leader_url + "/v1/topics/t-list")
    assert status == 200
    assert [(q["queue_id"], q["min_offset"], q["max_offset"]) for q in t["queue_offsets"]] == [(0, 0, 0), (1, 0, 0)]
    status, _, body = http("GET", leader_url + "/v1/topics/nope")
    assert status == 404 and body["error"] == "topic_not_found"


# -- produce and consume --------------------------------------------------------
def test_produce_then_consume_json(leader_url: str) -> None:
    make_topic(leader_url, "t-json", 2)
    msgs = [{"body": f"hello {i}", "tags": "a" if i % 2 else "b", "keys": [f"k{i}"], "properties": {"i": str(i)},
             "queue_id": 1} for i in range(5)]
    status, _, body = post(f"{leader_url}/v1/topics/t-json/messages", {"messages": msgs})
    assert status == 200, body
    res = body["results"]
    assert [r["queue_offset"] for r in res] == [0, 1, 2, 3, 4]
    assert all(r["queue_id"] == 1 and r["msg_id"].startswith("test-group-") for r in res)
    status, _, got = http("GET", f"{leader_url}/v1/topics/t-json/queues/1/messages?offset=0&max=10")
    assert status == 200
    assert [m["body"] for m in got["messages"]] == [f"hello {i}" for i in range(5)]
    assert [m["msg_id"] for m in got["messages"]] == [r["msg_id"] for r in res]
    first = got["messages"][0]
    assert first["keys"] == ["k0"] and first["properties"] == {"i": "0"} and first["tags"] == "b"
    assert first["store_ts"] >= first["born_ts"] > 0
    assert got["next_offset"] == 5 and got["max_offset"] == 5


def test_produce_then_consume_msgpack_with_binary_body(leader_url: str) -> None:
    make_topic(leader_url, "t-mp", 1)
    blob = bytes(range(256))
    raw = msgpack.packb({"messages": [{"body": blob, "tags": "bin"}]}, use_bin_type=True)
    status, headers, body = http("POST", f"{leader_url}/v1/topics/t-mp/messages", raw=raw, ctype="application/msgpack")
    assert status == 200 and headers["Content-Type"].startswith("application/msgpack")
    assert body["results"][0]["queue_offset"] == 0
    status, _, got = http("GET", f"{leader_url}/v1/topics/t-mp/queues/0/messages", accept="application/msgpack")
    assert got["messages"][0]["body"] == blob
    # The same binary body in JSON comes back base64-encoded.
    _, _, got = http("GET", f"{leader_url}/v1/topics/t-mp/queues/0/messages")
    assert base64.b64decode(got["messages"][0]["body_b64"]) == blob


def test_body_b64_in_json_request(leader_url: str) -> None:
    make_topic(leader_url, "t-b64", 1)
    status, _, _ = post(f"{leader_url}/v1/topics/t-b64/messages",
                        {"messages": [{"body_b64": base64.b64encode(b"\xff\x00").decode()}]})
    assert status == 200
    _, _, got = http("GET", f"{leader_url}/v1/topics/t-b64/queues/0/messages")
    assert base64.b64decode(got["messages"][0]["body_b64"]) == b"\xff\x00"


def test_sharding_key_keeps_one_queue_and_round_robin_spreads(leader_url: str) -> None:
    make_topic(leader_url, "t-shard", 4)
    queues = set()
    for i in range(6):
        _, _, body = post(f"{leader_url}/v1/topics/t-shard/messages",
                          {"messages": [{"body": f"o{i}", "sharding_key": "order-42"}]})
        queues.add(body["results"][0]["queue_id"])
    assert len(queues) == 1
    rr = set()
    for i in range(8):
        _, _, body = post(f"{leader_url}/v1/topics/t-shard/messages", {"messages": [{"body": f"r{i}"}]})
        rr.add(body["results"][0]["queue_id"])
    assert rr == {0, 1, 2, 3}


@pytest.mark.parametrize("kind", ["unknown_topic", "bad_queue", "bad_json", "bad_msgpack", "too_large",
                                  "batch_too_large", "wrong_type", "no_messages", "not_object", "bad_b64"])
def test_produce_errors_change_nothing(leader_url: str, kind: str) -> None:
    make_topic(leader_url, "t-err", 2)
    before = max_offsets(leader_url, "t-err")
    url = f"{leader_url}/v1/topics/t-err/messages"
    expected: tuple[int, str]
    if kind == "unknown_topic":
        r = post(f"{leader_url}/v1/topics/missing/messages", {"messages": [{"body": "x"}]})
        expected = (404, "topic_not_found")
    elif kind == "bad_queue":
        r = post(url, {"messages": [{"body": "x"}, {"body": "y", "queue_id": 7}]})
        expected = (404, "queue_not_found")
    elif kind == "bad_json":
        r = http("POST", url, raw=b'{"messages": [', ctype="application/json")
        expected = (400, "malformed_body")
    elif kind == "bad_msgpack":
        r = http("POST", url, raw=b"\xc1\xc1\xc1", ctype="application/msgpack")
        expected = (400, "malformed_body")
    elif kind == "too_large":
        r = post(url, {"messages": [{"body": "ok"}, {"body": "x" * 5000}]})
        expected = (413, "message_too_large")
    elif kind == "batch_too_large":
        r = post(url, {"messages": [{"body": "x"}] * 65})
        expected = (413, "batch_too_large")
    elif kind == "wrong_type":
        r = http("POST", url, raw=b"hello", ctype="text/plain")
        expected = (415, "unsupported_media_type")
    elif kind == "no_messages":
        r = post(url, {"messages": []})
        expected = (400, "invalid_argument")
    elif kind == "not_object":
        r = post(url, [1, 2, 3])
        expected = (400, "malformed_body")
    else:
        r = post(url, {"messages": [{"body_b64": "***"}]})
        expected = (400, "invalid_argument")
    status, _, body = r
    assert (status, body["error"]) == expected, body
    assert body["message"]
    assert max_offsets(leader_url, "t-err") == before


def test_request_over_size_limit_is_413(leader_url: str) -> None:
    make_topic(leader_url, "t-big", 1)
    status, _, body = http("POST", f"{leader_url}/v1/topics/t-big/messages", raw=b"x" * (2 << 20),
                           ctype="application/json")
    assert status == 413 and body["error"] == "request_too_large"


@pytest.mark.parametrize("query,code", [("offset=-1", "offset_out_of_range"), ("offset=999", "offset_out_of_range"),
                                        ("max=0", "invalid_argument"), ("offset=abc", "invalid_argument"),
                                        ("wait_ms=-5", "invalid_argument")])
def test_pull_rejects_bad_offsets_and_arguments(leader_url: str, query: str, code: str) -> None:
    make_topic(leader_url, "t-pull", 1)
    status, _, body = http("GET", f"{leader_url}/v1/topics/t-pull/queues/0/messages?{query}")
    assert status == 400 and body["error"] == code, body


def test_pull_unknown_queue_is_404(leader_url: str) -> None:
    make_topic(leader_url, "t-pull", 1)
    status, _, body = http("GET", f"{leader_url}/v1/topics/t-pull/queues/3/messages")
    assert status == 404 and body["error"] == "queue_not_found"
    status, _, body = http("GET", f"{leader_url}/v1/topics/t-pull/queues/x/messages")
    assert status == 400


def test_tag_filter(leader_url: str) -> None:
    make_topic(leader_url, "t-tags", 1)
    msgs = [{"body": f"m{i}", "tags": t} for i, t in enumerate(["a", "b", "c", "a", "b"])]
    post(f"{leader_url}/v1/topics/t-tags/messages", {"messages": msgs})
    _, _, got = http("GET", f"{leader_url}/v1/topics/t-tags/queues/0/messages?tags=a||c")
    assert [m["body"] for m in got["messages"]] == ["m0", "m2", "m3"]
    assert got["next_offset"] == 5


def test_long_poll_wakes_when_a_message_lands(leader_url: str) -> None:
    make_topic(leader_url, "t-poll", 1)
    result: dict[str, Any] = {}

    def poll() -> None:
        t0 = time.monotonic()
        result["resp"] = http("GET", f"{leader_url}/v1/topics/t-poll/queues/0/messages?offset=0&wait_ms=20000",
                              timeout_s=30)
        result["elapsed"] = time.monotonic() - t0

    th = threading.Thread(target=poll)
    th.start()
    time.sleep(0.3)
    assert th.is_alive(), "the poll returned before any message existed"
    post(f"{leader_url}/v1/topics/t-poll/messages", {"messages": [{"body": "wake"}]})
    th.join(25)
    status, _, body = result["resp"]
    assert status == 200 and [m["body"] for m in body["messages"]] == ["wake"]
    assert result["elapsed"] < 15, "the poll waited for its timeout instead of waking on the message"


def test_long_poll_times_out_empty(leader_url: str) -> None:
    make_topic(leader_url, "t-poll2", 1)
    status, _, body = http("GET", f"{leader_url}/v1/topics/t-poll2/queues/0/messages?wait_ms=300")
    assert status == 200 and body["messages"] == [] and body["next_offset"] == 0


# -- lookups ------------------------------------------------------------------
def test_message_by_id_and_by_key(leader_url: str) -> None:
    make_topic(leader_url, "t-lookup", 2)
    _, _, body = post(f"{leader_url}/v1/topics/t-lookup/messages",
                      {"messages": [{"body": "findme", "keys": ["order-7", "user-3"], "queue_id": 1}]})
    msg_id = body["results"][0]["msg_id"]
    status, _, m = http("GET", f"{leader_url}/v1/messages/{msg_id}")
    assert status == 200 and m["body"] == "findme" and m["queue_offset"] == 0 and m["queue_id"] == 1
    status, _, found = http("GET", f"{leader_url}/v1/messages?key=order-7")
    assert status == 200 and [x["msg_id"] for x in found["messages"]] == [msg_id]
    _, _, found = http("GET", f"{leader_url}/v1/messages?key=nobody")
    assert found["messages"] == []


@pytest.mark.parametrize("msg_id,status_code", [("garbage", 400), ("test-group-zz", 400),
                                                ("test-group-00000000000fffff", 404), ("other-0000000000000000", 404)])
def test_message_by_bad_id(leader_url: str, msg_id: str, status_code: int) -> None:
    status, _, body = http("GET", f"{leader_url}/v1/messages/{msg_id}")
    assert status == status_code, body


# -- offsets ------------------------------------------------------------------
def test_commit_offsets_and_lag(leader_url: str) -> None:
    make_topic(leader_url, "t-off", 2)
    post(f"{leader_url}/v1/topics/t-off/messages", {"messages": [{"body": "a", "queue_id": 0}] * 3})
    status, _, body = post(f"{leader_url}/v1/groups/g1/offsets", {"topic": "t-off", "queue_id": 0, "offset": 2})
    assert status == 200, body
    _, _, offs = http("GET", f"{leader_url}/v1/groups/g1/offsets?topic=t-off")
    assert offs["offsets"] == [{"queue_id": 0, "offset": 2}, {"queue_id": 1, "offset": None}]
    _, _, lag = http("GET", f"{leader_url}/v1/groups/g1/lag?topic=t-off")
    assert lag["queues"][0] == {"queue_id": 0, "committed_offset": 2, "max_offset": 3, "lag": 1}
    assert lag["lag"] == 1


@pytest.mark.parametrize("payload,status_code,code", [
    ({"topic": "t-off", "queue_id": 0, "offset": -1}, 400, "offset_out_of_range"),
    ({"topic": "t-off", "queue_id": 0, "offset": 10_000}, 400, "offset_out_of_range"),
    ({"topic": "t-off", "queue_id": 9, "offset": 0}, 404, "queue_not_found"),
    ({"topic": "zzz", "queue_id": 0, "offset": 0}, 404, "topic_not_found"),
    ({"topic": "t-off", "offset": 0}, 400, "invalid_argument"),
])
def test_commit_offset_errors(leader_url: str, payload: dict[str, Any], status_code: int, code: str) -> None:
    make_topic(leader_url, "t-off", 2)
    status, _, body = post(f"{leader_url}/v1/groups/g2/offsets", payload)
    assert (status, body["error"]) == (status_code, code), body


def test_offsets_need_topic_parameter(leader_url: str) -> None:
    status, _, body = http("GET", f"{leader_url}/v1/groups/g1/offsets")
    assert status == 400 and body["error"] == "invalid_argument"


# -- followers ------------------------------------------------------------------
def test_follower_redirects_writes_to_the_leader(group: BrokerGroup, leader_url: str) -> None:
    make_topic(leader_url, "t-redirect", 1)
    follower = group.followers()[0]
    path = "/v1/topics/t-redirect/messages"
    status, headers, body = post(follower.http_url + path, {"messages": [{"body": "x"}]})
    assert status == 307
    assert body["error"] == "not_leader" and body["leader"] == leader_url
    assert headers["Location"] == leader_url + path


def test_follower_serves_committed_reads(group: BrokerGroup, leader_url: str) -> None:
    make_topic(leader_url, "t-fread", 1)
    post(f"{leader_url}/v1/topics/t-fread/messages", {"messages": [{"body": "replicated"}]})
    follower = group.followers()[0]

    def seen() -> bool:
        _, _, got = http("GET", f"{follower.http_url}/v1/topics/t-fread/queues/0/messages")
        return bool(got and got.get("messages"))

    group.wait_for(seen, 10, "the follower to apply the message")


# -- documentation ------------------------------------------------------------
def test_openapi_documents_every_route(leader_url: str) -> None:
    from raftmq.broker.http.app import ROUTES
    from raftmq.broker.http.auth import ACL_ROUTES

    status, _, doc = http("GET", leader_url + "/v1/openapi.json")
    assert status == 200 and doc["openapi"].startswith("3.")
    documented = {(m.upper(), p) for p, ops in doc["paths"].items() for m in ops if m != "parameters"}
    served = {(m, p) for m, p, _ in ROUTES + ACL_ROUTES}
    assert documented == served


def test_unknown_route_is_json_404(leader_url: str) -> None:
    status, _, body = http("GET", leader_url + "/v1/nothing-here")
    assert status == 404 and body["error"] == "not_found"


def test_committed_offsets_only_move_forward_unless_reset(leader_url: str) -> None:
    make_topic(leader_url, "t-mono", 1)
    post(f"{leader_url}/v1/topics/t-mono/messages", {"messages": [{"body": "a"}] * 5})
    url = f"{leader_url}/v1/groups/gm/offsets"
    assert post(url, {"topic": "t-mono", "queue_id": 0, "offset": 4})[2]["offset"] == 4
    status, _, body = post(url, {"topic": "t-mono", "queue_id": 0, "offset": 2})  # a late, stale commit
    assert status == 200 and body["offset"] == 4
    status, _, body = post(url, {"topic": "t-mono", "queue_id": 0, "offset": 1, "reset": True})  # a seek
    assert status == 200 and body["offset"] == 1


def test_mixed_request_retry_is_stored_once(leader_url: str) -> None:
    make_topic(leader_url, "t-mixed", 4)
    req = {"messages": [{"body": "rr1"}, {"body": "q2", "queue_id": 2}, {"body": "rr2"}, {"body": "s", "sharding_key": "k"}],
           "producer_id": "mixed-producer", "sequence": 1}
    first = post(f"{leader_url}/v1/topics/t-mixed/messages", req)[2]["results"]
    for _ in range(3):  # retries (the round-robin queue moves on between them)
        assert post(f"{leader_url}/v1/topics/t-mixed/messages", req)[2]["results"] == first
    assert sum(max_offsets(leader_url, "t-mixed")) == 4


# -- queue locks ---------------------------------------------------------------
def test_queue_lock_lease_defaults_to_the_longest_and_refuses_zero(leader_url: str) -> None:
    make_topic(leader_url, "locks", 2)
    url = leader_url + "/v1/groups/lg/locks"
    status, _, body = post(url, {"topic": "locks", "client_id": "c1", "queue_ids": [0]})
    assert status == 200 and body["lease_ms"] == 10_000, body
    status, _, body = post(url, {"topic": "locks", "client_id": "c1", "queue_ids": [1], "lease_ms": 0})
    assert status == 400 and body["error"] == "invalid_argument", body
