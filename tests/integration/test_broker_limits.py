"""The broker's resource limits (issue 11) on a real 3-node group: a request
over a limit gets a 4xx with its error code, stores nothing, and the group
keeps its leader (same node, same term) with every process alive.

The group runs with 4 MiB log segments, so an entry larger than a segment
can hold is cheap to send; small topic and group counts keep those tests short.
"""

from __future__ import annotations

from typing import Any, Iterator

import pytest

from raftmq.broker.message import parse_msg_id
from tests.integration.broker_group import BrokerGroup, http, running_group

pytestmark = pytest.mark.integration

MAX_TOPICS = 6
MAX_GROUPS = 3
LIMITS = {"max_topics": MAX_TOPICS, "max_groups": MAX_GROUPS}


@pytest.fixture(scope="module")
def group(tmp_path_factory: pytest.TempPathFactory) -> Iterator[BrokerGroup]:
    with running_group(tmp_path_factory.mktemp("limits"), n=3,
                       extra={"segment_bytes": 4 << 20, "limits": LIMITS}) as g:
        status, _, body = http("POST", g.leader().http_url + "/v1/topics", {"name": "t", "queues": 2})
        assert status == 200, body
        yield g


def leadership(group: BrokerGroup) -> tuple[str, int]:
    lead = group.leader()
    h = group.health(lead.id)
    assert h is not None
    return lead.id, h["term"]


def stored(group: BrokerGroup, topic: str = "t") -> list[int]:
    status, _, body = http("GET", f"{group.leader().http_url}/v1/topics/{topic}")
    assert status == 200, body
    return [q["max_offset"] for q in body["queue_offsets"]]


def refused(group: BrokerGroup, method: str, path: str, body: Any, status: int, code: str) -> dict[str, Any]:
    """``body`` sent to the leader is refused with ``status`` and ``code``;
    the leader is the same node in the same term after, and no process died."""
    before = leadership(group)
    got_status, _, got = http(method, group.leader().http_url + path, body, timeout_s=60)
    assert isinstance(got, dict) and (got_status, got.get("error")) == (status, code), got
    assert leadership(group) == before
    for node in group.nodes:
        assert node.proc is not None and node.proc.poll() is None, group.logs()
    return got


# -- properties ----------------------------------------------------------------
def test_a_property_name_or_value_over_its_limit_is_refused(group: BrokerGroup) -> None:
    before = stored(group)
    refused(group, "POST", "/v1/topics/t/messages",
            {"messages": [{"body": "x", "properties": {"k" * 129: "v"}}]}, 400, "property_too_long")
    refused(group, "POST", "/v1/topics/t/messages",
            {"messages": [{"body": "x", "properties": {"k": "v" * 4097}}]}, 400, "property_too_long")
    assert stored(group) == before


def test_more_properties_than_max_properties_are_refused(group: BrokerGroup) -> None:
    before = stored(group)
    props = {f"p{i}": "v" for i in range(10_000)}
    got = refused(group, "POST", "/v1/topics/t/messages", {"messages": [{"body": "x", "properties": props}]},
                  400, "invalid_argument")
    assert "the limit is 64" in got["message"]
    assert stored(group) == before


# -- producer ids and entry sizes ----------------------------------------------
def test_an_84kb_producer_id_is_refused_and_the_leader_stays(group: BrokerGroup) -> None:
    """Copied into each of 1,024 records, this id once made an 86 MB entry no
    follower would take: the group lost its leader."""
    before = stored(group)
    body = {"messages": [{"body": "x", "queue_id": 0}] * 1024, "producer_id": "p" * 84_000, "sequence": 1}
    got = refused(group, "POST", "/v1/topics/t/messages", body, 400, "name_too_long")
    assert "256 bytes" in got["message"]
    assert stored(group) == before


def test_the_producer_id_is_stored_once_per_entry(group: BrokerGroup) -> None:
    """1,000 messages with a 256-byte producer id: the records, one after the
    other in the log, are as long as without an id (12-byte header, ~30 bytes
    of fields, the topic, a 10-byte body), not 256 bytes longer each."""
    lead = leadership(group)
    body = {"messages": [{"body": "0123456789", "queue_id": 1}] * 1000, "producer_id": "p" * 256, "sequence": 7}
    status, _, got = http("POST", group.leader().http_url + "/v1/topics/t/messages", body, timeout_s=60)
    assert status == 200, got
    positions = [parse_msg_id(r["msg_id"])[1] for r in got["results"]]
    per_record = (positions[-1] - positions[0]) / 999
    assert per_record < 80, per_record
    status, _, again = http("POST", group.leader().http_url + "/v1/topics/t/messages", body, timeout_s=60)
    assert (status, again) == (200, got)  # a retry is answered from the dedup table
    assert leadership(group) == lead


def test_an_entry_larger_than_a_segment_holds_is_refused_before_it_is_proposed(group: BrokerGroup) -> None:
    before = stored(group)
    big = "x" * (2_500_000)
    got = refused(group, "POST", "/v1/topics/t/messages",
                  {"messages": [{"body": big, "queue_id": 0}, {"body": big, "queue_id": 0}]}, 413, "entry_too_large")
    assert got["max_entry_bytes"] == (4 << 20) - 32 and got["entry_bytes"] > 5_000_000
    assert stored(group) == before
    # Split over two queues, each entry fits: stored, on every node.
    status, _, ok = http("POST", group.leader().http_url + "/v1/topics/t/messages",
                         {"messages": [{"body": big, "queue_id": 0}, {"body": big, "queue_id": 1}]}, timeout_s=60)
    assert status == 200, ok
    assert stored(group) == [before[0] + 1, before[1] + 1]


# -- counts and names ----------------------------------------------------------
def test_a_topic_past_max_topics_is_refused(group: BrokerGroup) -> None:
    url = group.leader().http_url
    for i in range(1, MAX_TOPICS):  # "t" is the first
        status, _, body = http("POST", url + "/v1/topics", {"name": f"more-{i}", "queues": 1})
        assert status == 200, body
    got = refused(group, "POST", "/v1/topics", {"name": "one-too-many", "queues": 1}, 409, "too_many_topics")
    assert got["max_topics"] == MAX_TOPICS
    status, _, body = http("GET", url + "/v1/topics")
    assert status == 200 and len(body["topics"]) == MAX_TOPICS, body
    status, _, body = http("POST", url + "/v1/topics", {"name": "more-1", "queues": 1})  # an existing one: fine
    assert status == 200, body


def test_a_group_past_max_groups_is_refused(group: BrokerGroup) -> None:
    url = group.leader().http_url
    status, _, body = http("POST", url + "/v1/topics/t/messages", {"messages": [{"body": "x", "queue_id": 0}]})
    assert status == 200, body
    for i in range(MAX_GROUPS):
        status, _, body = http("POST", f"{url}/v1/groups/g{i}/offsets", {"topic": "t", "queue_id": 0, "offset": 1})
        assert status == 200, body
    got = refused(group, "POST", "/v1/groups/g-too-many/offsets", {"topic": "t", "queue_id": 0, "offset": 1},
                  409, "too_many_groups")
    assert got["max_groups"] == MAX_GROUPS
    status, _, body = http("GET", f"{url}/v1/groups/g-too-many/offsets?topic=t")
    assert status == 200 and all(o["offset"] is None for o in body["offsets"]), body
    status, _, body = http("POST", f"{url}/v1/groups/g0/offsets", {"topic": "t", "queue_id": 1, "offset": 0})
    assert status == 200, body  # a known group commits on


def test_groups_with_members_are_bounded(group: BrokerGroup) -> None:
    for i in range(MAX_GROUPS):
        status, _, body = http("POST", f"{group.leader().http_url}/v1/groups/m{i}/heartbeat",
                               {"topic": "t", "client_id": "c"})
        assert status == 200, body
    refused(group, "POST", "/v1/groups/m-too-many/heartbeat", {"topic": "t", "client_id": "c"},
            409, "too_many_groups")


def test_group_names_and_client_ids_are_bounded(group: BrokerGroup) -> None:
    long = "g" * 256
    refused(group, "POST", f"/v1/groups/{long}/offsets", {"topic": "t", "queue_id": 0, "offset": 0},
            400, "name_too_long")
    refused(group, "POST", f"/v1/groups/{long}/heartbeat", {"topic": "t", "client_id": "c"}, 400, "name_too_long")
    refused(group, "POST", "/v1/groups/m0/heartbeat", {"topic": "t", "client_id": "c" * 256}, 400, "name_too_long")
