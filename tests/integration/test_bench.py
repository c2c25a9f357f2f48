"""The load generator of ``raftmq bench produce``: its raw HTTP/1.1 connection
and the counts it reports, against a real 3-process group. What it says it
stored must be in the queues; an error answer must stop it, not be counted."""

from __future__ import annotations

import asyncio
from pathlib import Path
from typing import Iterator

import msgpack
import pytest

from raftmq.client.local import bench
from tests.integration.broker_group import BrokerGroup, http, running_group

pytestmark = [pytest.mark.integration, pytest.mark.timeout(120)]


@pytest.fixture
def group(tmp_path: Path) -> Iterator[BrokerGroup]:
    with running_group(tmp_path) as g:
        yield g


def stored(g: BrokerGroup, topic: str) -> int:
    status, _, body = http("GET", f"{g.leader().http_url}/v1/topics/{topic}")
    assert status == 200
    return sum(q["max_offset"] - q["min_offset"] for q in body["queue_offsets"])


def test_bench_produce_counts_only_what_the_group_stored(group: BrokerGroup) -> None:
    urls = [n.http_url for n in group.nodes]
    res = asyncio.run(bench.produce(urls, "b", 4, 16, 2, 2.0, 100, "async"))
    assert res.messages > 0 and res.messages % 16 == 0 and res.p50_ms is not None
    # Warm-up requests are stored but not counted: the queues hold at least what was reported.
    assert stored(group, "b") >= res.messages


def test_raw_connection_reads_answers_and_error_statuses(group: BrokerGroup) -> None:
    url = group.leader().http_url

    async def go() -> tuple[tuple[int, bytes], tuple[int, bytes], tuple[int, bytes]]:
        async with bench.RawConnection(url) as conn:
            missing = await conn.send(bench.RawConnection.request("POST", "/v1/topics/nope/messages",
                                                                  msgpack.packb({"messages": [{"body": b"x"}]})))
            health = await conn.send(b"GET /v1/health HTTP/1.1\r\nHost: t\r\nAccept: application/msgpack\r\n\r\n")
            bad = await conn.send(bench.RawConnection.request("POST", "/v1/topics", b"\xc1"))
            return missing, health, bad

    missing, health, bad = asyncio.run(go())
    assert missing[0] == 404 and msgpack.unpackb(missing[1])["error"] == "topic_not_found"
    assert health[0] == 200 and msgpack.unpackb(health[1])["role"] == "leader"  # same connection, kept alive
    assert bad[0] == 400


def test_bench_produce_stops_on_an_error_answer(group: BrokerGroup) -> None:
    urls = [n.http_url for n in group.nodes]
    with pytest.raises(RuntimeError, match="413|too_large|message_too_large"):
        asyncio.run(bench.produce(urls, "big", 1, 1, 1, 1.0, 8 << 20, "async"))
