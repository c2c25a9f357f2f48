"""A broker node's derived state heals from its log (issue 9, cases 2, 3 and 7),
with real broker processes.

Each test stops a node (SIGKILL or SIGTERM), damages one derived file at a
byte offset computed from its format (the checkpoint: broker.store.checkpoint
and broker.statemachine; ConsumeQueue: 20-byte entries, phys_offset in bytes
0..8; IndexFile: 40-byte header, 4-byte slots, 28-byte entries), starts it
again and asserts that it starts, serves every acknowledged message at its
acknowledged offset and nothing else (the same as the leader), finds every
key by lookup, and logged the rebuild. Several damages share one group, one
after the other, alternating between the two followers.
"""

from __future__ import annotations

import re
import resource
import signal
import sys
import uuid
import zlib
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable, Iterator

import msgpack
import pytest

from tests.integration.broker_group import BrokerGroup, BrokerNode, http, running_group

pytestmark = pytest.mark.integration

TOPIC = "orders"
QUEUES = 2
INDEX_SLOTS = 500_000  # IndexStore's default slot count: entries start at 40 + 4 * slots


@dataclass(frozen=True)
class Acked:
    body: str
    key: str
    queue_id: int
    queue_offset: int
    msg_id: str


@pytest.fixture
def group(tmp_path: Path) -> Iterator[BrokerGroup]:
    with running_group(tmp_path, extra={"checkpoint_interval_ms": 100}) as g:
        status, _, body = http("POST", g.leader().http_url + "/v1/topics", {"name": TOPIC, "queues": QUEUES})
        assert status == 200, body
        yield g


def produce(group: BrokerGroup, batches: int, batch: int = 10) -> list[Acked]:
    """Acknowledged messages, each with a key of its own; every other batch tagged."""
    out = []
    for b in range(batches):
        tag = "red" if b % 2 else ""
        msgs = [{"body": f"{uuid.uuid4().hex}", "keys": [f"key-{uuid.uuid4().hex[:12]}"], "tags": tag,
                 "queue_id": b % QUEUES} for _ in range(batch)]
        status, _, body = http("POST", f"{group.leader().http_url}/v1/topics/{TOPIC}/messages", {"messages": msgs})
        assert status == 200, body
        out += [Acked(m["body"], m["keys"][0], r["queue_id"], r["queue_offset"], r["msg_id"])
                for m, r in zip(msgs, body["results"])]
    return out


# ----------------------------------------------------------------------
# observing a node
# ----------------------------------------------------------------------
def read_checkpoint(node: BrokerNode) -> dict[str, Any] | None:
    """The node's checkpoint body, framed (16-byte header) or version 1."""
    try:
        raw = (node.data_dir / "broker" / "checkpoint").read_bytes()
    except FileNotFoundError:
        return None
    body = raw[16:] if raw[:4] == b"RMCP" else raw
    doc: dict[str, Any] = msgpack.unpackb(body, raw=False, strict_map_key=False)
    return doc


def caught_up(group: BrokerGroup, node: BrokerNode, checkpointed: bool = False) -> bool:
    """The node applied everything the leader committed (and checkpointed it)."""
    lead = group.health(group.leader().id)
    h = group.health(node.id)
    if not lead or not h or h["applied_index"] < lead["commit_index"]:
        return False
    if checkpointed:
        doc = read_checkpoint(node)
        return doc is not None and doc["index"] == h["applied_index"]
    return True


def read_queue(url: str, q: int) -> dict[int, str]:
    got: dict[int, str] = {}
    offset = 0
    while True:
        status, _, body = http("GET", f"{url}/v1/topics/{TOPIC}/queues/{q}/messages?offset={offset}&max=256")
        assert status == 200, body
        for m in body["messages"]:
            assert m["queue_offset"] not in got
            got[m["queue_offset"]] = m["body"]
        if body["next_offset"] >= body["max_offset"]:
            return got
        offset = body["next_offset"]


def assert_serves_everything(group: BrokerGroup, node: BrokerNode, acked: list[Acked]) -> None:
    """Every acknowledged message at its acknowledged offset, nothing else (the
    leader's queues exactly), and every key found by lookup with that message."""
    lead = group.leader()
    for q in range(QUEUES):
        mine = read_queue(node.http_url, q)
        assert mine == read_queue(lead.http_url, q), f"queue {q} on {node.id} differs from the leader's"
        for a in (a for a in acked if a.queue_id == q):
            assert mine.get(a.queue_offset) == a.body, f"acked {a} lost or moved on {node.id}"
    for a in acked:
        status, _, body = http("GET", f"{node.http_url}/v1/messages?key={a.key}")
        assert status == 200, body
        assert [(m["body"], m["msg_id"], m["queue_offset"]) for m in body["messages"]] == \
            [(a.body, a.msg_id, a.queue_offset)], f"key {a.key} on {node.id}"


def restart_damaged(group: BrokerGroup, node: BrokerNode, damage: Callable[[Path], None], acked: list[Acked],
                    sig: int = signal.SIGKILL, rebuilt: str = "event=rebuild_derived ") -> None:
    """Stop ``node`` once it checkpointed everything, damage its data dir,
    start it, and check that it serves everything and logged ``rebuilt``."""
    group.wait_for(lambda: caught_up(group, node, checkpointed=True), 15, f"{node.id} to checkpoint")
    group.kill(node.id, sig)
    logged_before = node.log_path.read_text(errors="replace")
    damage(node.data_dir)
    group.start(node.id)
    group.wait_for(lambda: caught_up(group, node), 20, f"{node.id} to start and catch up")
    assert_serves_everything(group, node, acked)
    new_log = node.log_path.read_text(errors="replace")[len(logged_before):]
    assert rebuilt in new_log, f"{node.id} did not log {rebuilt!r}:\n{new_log[-3000:]}"


# ----------------------------------------------------------------------
# damage, at offsets computed from the formats
# ----------------------------------------------------------------------
def flip_bit(path: Path, at: int, mask: int) -> None:
    raw = bytearray(path.read_bytes())
    raw[at] ^= mask
    path.write_bytes(bytes(raw))


def lowest_set_bit(byte: int) -> int:
    assert byte, "a zero byte has no bit to clear"
    return byte & -byte


def checkpoint_path(data: Path) -> Path:
    return data / "broker" / "checkpoint"


def flip_applied_index(data: Path) -> None:
    """Clear the lowest set bit of the checkpoint's applied index (42 -> 40 in
    the issue): the node would re-apply entries it already holds."""
    path = checkpoint_path(data)
    raw = path.read_bytes()
    doc = read_checkpoint_at(raw)
    key = msgpack.packb("index")
    value = msgpack.packb(doc["index"])
    at = raw.index(key + value) + len(key) + len(value) - 1  # the value's last (lowest) byte
    flip_bit(path, at, lowest_set_bit(raw[at]))


def flip_queue_length(data: Path) -> None:
    """Clear the lowest set bit of queue 0's max_offset in the checkpoint (500 ->
    496 in the issue): the node would cut acknowledged entries and move others."""
    path = checkpoint_path(data)
    raw = path.read_bytes()
    doc = read_checkpoint_at(raw)
    record = next(r for r in doc["queues"] if r[0] == TOPIC and r[1] == 0)
    at_max = 3 if len(record) == 5 else 2  # [topic, q, min, max, files]; version 1: [topic, q, max]
    encoded = msgpack.packb(record)
    at = raw.index(encoded) + 1 + sum(len(msgpack.packb(x)) for x in record[:at_max + 1]) - 1
    flip_bit(path, at, lowest_set_bit(raw[at]))


def read_checkpoint_at(raw: bytes) -> dict[str, Any]:
    doc: dict[str, Any] = msgpack.unpackb(raw[16:] if raw[:4] == b"RMCP" else raw, raw=False, strict_map_key=False)
    return doc


def cq_file(data: Path, q: int = 0) -> Path:
    return data / "consumequeue" / TOPIC / str(q) / f"{0:020d}"


def index_file(data: Path) -> Path:
    return data / "index" / f"{0:020d}"


def slot_of(key: str) -> int:
    """Byte offset of a key's hash slot in an IndexFile: header 40, 4 bytes a slot."""
    return 40 + 4 * (zlib.crc32(key.encode()) % INDEX_SLOTS)


def entry_at(e: int) -> int:
    """Byte offset of IndexFile entry number e (1-based): after the header and slots, 28 bytes each."""
    return 40 + 4 * INDEX_SLOTS + 28 * (e - 1)


# ----------------------------------------------------------------------
# the tests
# ----------------------------------------------------------------------
def test_a_damaged_checkpoint_is_rebuilt_from_the_log(group: BrokerGroup) -> None:
    acked = produce(group, 20)
    a, b = group.followers()
    restart_damaged(group, a, flip_applied_index, acked)
    acked += produce(group, 4)
    restart_damaged(group, b, flip_queue_length, acked, sig=signal.SIGTERM)
    acked += produce(group, 4)
    restart_damaged(group, a, lambda d: checkpoint_path(d).write_bytes(checkpoint_path(d).read_bytes()[:23]), acked)
    restart_damaged(group, b, lambda d: checkpoint_path(d).write_bytes(bytes(range(256)) * 3), acked)


def test_a_damaged_consume_queue_is_rebuilt_from_the_log(group: BrokerGroup) -> None:
    acked = produce(group, 20)
    a, b = group.followers()
    entries = cq_file(a.data_dir).stat().st_size // 20
    restart_damaged(group, a, lambda d: cq_file(d).write_bytes(cq_file(d).read_bytes()[:20 * (entries // 2)]), acked)
    restart_damaged(group, b, lambda d: cq_file(d).write_bytes(cq_file(d).read_bytes()[:20 * (entries // 2) + 9]),
                    acked)
    acked += produce(group, 4)
    restart_damaged(group, a, lambda d: cq_file(d, 1).unlink(), acked)
    # Entry 10's phys_offset (bytes 0..8, big-endian), bit 6 of its lowest byte.
    restart_damaged(group, b, lambda d: flip_bit(cq_file(d), 20 * 10 + 7, 0x40), acked, sig=signal.SIGTERM)


def test_a_damaged_index_file_is_rebuilt(group: BrokerGroup) -> None:
    acked = produce(group, 12)
    a, b = group.followers()
    restart_damaged(group, a, lambda d: index_file(d).unlink(), acked)
    # Entry 7's phys_offset (bytes 4..12 of the entry), a bit of its lowest byte: rebuilt from the log.
    restart_damaged(group, b, lambda d: flip_bit(index_file(d), entry_at(7) + 11, 0x08), acked)
    # A hash slot (the newest entry of a key's chain): rebuilt in place from the entries.
    key = acked[5].key
    restart_damaged(group, a, lambda d: flip_bit(index_file(d), slot_of(key) + 3, 0x01), acked,
                    rebuilt="hash slots damaged; rebuilt from its")


def test_a_damaged_entry_found_while_serving_is_never_served_and_rebuilt_on_restart(group: BrokerGroup) -> None:
    """Entry 10 of queue 0 pointed at message 11's record, as a flipped bit that
    lands on the neighbour does: the node served message 11 at offset 10 with
    a 200. Now: 503 storage_damaged in the JSON error model, and the next start
    rebuilds."""
    acked = produce(group, 10)
    node = group.followers()[0]
    group.wait_for(lambda: caught_up(group, node, checkpointed=True), 15, f"{node.id} to checkpoint")
    path = cq_file(node.data_dir)
    raw = bytearray(path.read_bytes())
    raw[20 * 10:20 * 10 + 8] = raw[20 * 11:20 * 11 + 8]
    path.write_bytes(bytes(raw))  # the running node reads it through the same page cache
    for offset, n in ((10, 1), (8, 4), (0, 32)):
        status, headers, body = http("GET", f"{node.http_url}/v1/topics/{TOPIC}/queues/0/messages"
                                            f"?offset={offset}&max={n}")
        assert (status, body["error"]) == (503, "storage_damaged"), body
        assert headers["Content-Type"].startswith("application/json") and body["message"]
    eleventh = next(a for a in acked if a.queue_id == 0 and a.queue_offset == 11)
    for url in (f"/v1/messages/{eleventh.msg_id}", f"/v1/messages?key={eleventh.key}"):
        status, _, body = http("GET", node.http_url + url)
        assert status in (200, 503), body
        if status == 200:  # right, or refused: never the message at another offset
            found = body["messages"] if "messages" in body else [body]
            assert [m["queue_offset"] for m in found] == [11], body
        else:
            assert body["error"] == "storage_damaged"
    assert "event=storage_damaged" in node.log_path.read_text()
    restart_damaged(group, node, lambda d: None, acked, sig=signal.SIGTERM)


@pytest.mark.skipif(not hasattr(resource, "prlimit") or sys.platform != "linux", reason="needs Linux prlimit")
def test_a_write_the_leader_cannot_store_is_answered_in_the_json_error_model(group: BrokerGroup) -> None:
    """Case 7: the leader's log write fails mid-request (its file size limit
    stands in for a full disk: the write fails with EFBIG as with ENOSPC). The
    answer is a JSON 503 storage_failure, not aiohttp's plain-text 500, and a
    retry with the same producer id and sequence stores the message once."""
    acked = produce(group, 2)
    lead = group.leader()
    group.wait_for(lambda: all(caught_up(group, n) for n in group.nodes), 15, "every node to catch up")
    segment = max((lead.data_dir / "dledger" / "commitlog").iterdir())
    limit = segment.stat().st_size + 64
    assert lead.proc is not None
    resource.prlimit(lead.proc.pid, resource.RLIMIT_FSIZE, (limit, limit))
    request = {"messages": [{"body": "x" * 2000, "queue_id": 1}], "producer_id": "p-full", "sequence": 1}
    status, headers, body = http("POST", f"{lead.http_url}/v1/topics/{TOPIC}/messages", request)
    assert headers["Content-Type"].startswith("application/json"), body
    assert (status, body["error"]) == (503, "storage_failure"), body
    assert re.search(r"Errno 27|File too large", body["message"]), body
    new = group.leader(exclude=(lead.id,))
    status, _, body = http("POST", f"{new.http_url}/v1/topics/{TOPIC}/messages", request)
    assert status == 200, body
    got = read_queue(new.http_url, 1)
    assert list(got.values()).count("x" * 2000) == 1
    assert all(got.get(a.queue_offset) == a.body for a in acked if a.queue_id == 1)


def test_a_rebuild_after_retention_starts_from_the_snapshot_the_log_starts_after(tmp_path: Path) -> None:
    """With the log's first segments deleted by retention, a rebuild re-applies
    what is left after the snapshot the log starts after (restored by dledger),
    and serves every retained message as the leader does."""
    extra = {"segment_bytes": 64 << 10, "retention_hours": 2.0 / 3600, "retention_check_interval_ms": 200,
             "checkpoint_interval_ms": 100}
    with running_group(tmp_path, extra=extra) as group:
        assert http("POST", group.leader().http_url + "/v1/topics", {"name": TOPIC, "queues": QUEUES})[0] == 200
        produce(group, 30, batch=20)  # ~40 bytes a body, ~100 a record: several 64 KiB segments
        node = group.followers()[0]

        def compacted() -> bool:
            produce(group, 1)  # moves retention's time marks on
            status, _, body = http("GET", f"{node.http_url}/v1/topics/{TOPIC}")
            return status == 200 and all(q["min_offset"] > 0 for q in body["queue_offsets"])

        group.wait_for(compacted, 20, "retention to delete the first segments")
        acked = produce(group, 3)
        group.wait_for(lambda: caught_up(group, node, checkpointed=True), 15, f"{node.id} to checkpoint")
        group.kill(node.id)
        a = acked[0]  # its ConsumeQueue entry: file 0 (300,000 entries a file), phys_offset's lowest byte
        flip_bit(cq_file(node.data_dir, a.queue_id), 20 * a.queue_offset + 7, 0x01)
        group.start(node.id)
        group.wait_for(lambda: caught_up(group, node), 20, f"{node.id} to start and catch up")
        lead = group.leader()
        for q in range(QUEUES):
            mine, theirs = read_queue(node.http_url, q), read_queue(lead.http_url, q)
            common = set(mine) & set(theirs)
            assert common and all(mine[o] == theirs[o] for o in common)
            assert max(mine) == max(theirs)
        for a in acked:
            assert read_queue(node.http_url, a.queue_id)[a.queue_offset] == a.body
            status, _, body = http("GET", f"{node.http_url}/v1/messages?key={a.key}")
            assert [m["msg_id"] for m in body["messages"]] == [a.msg_id]
        text = node.log_path.read_text()
        assert "event=rebuild_derived " in text and "state restored from the snapshot" in text
