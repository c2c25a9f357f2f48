"""Damage to a node's Raft log, with real broker processes (issue 9, cases 4, 5, 6).

Bits are flipped at byte offsets computed from the on-disk formats: the index
files (``<data>/dledger/index/<20-digit first index>``, 24-byte records
``>QQIB3x``: position, term, frame size, kind) say where entry N's frame is,
and the frame (``dledger/store/entry_format.py``: 32-byte header, then the
body) lies in the segment ``<data>/dledger/commitlog/<20-digit start>`` that
holds that position.

- Case 4: a damaged entry in an old segment was found only when read (a
  plain-text 500 on every pull over it, 404 by id, never repaired).
- Case 6: a damaged committed entry among the newest segments was cut as a
  torn tail, with every sound entry after it.
- Case 5: a leader that read a damaged entry of its own while replicating
  stopped with CorruptLog and took the group down.

Now: the scrub on start (or the read) finds the damage, the node serves
nothing wrong, steps down if it leads, abstains from elections, and repairs the
entry in place from a peer; every acknowledged message stays readable on every
node.
"""

from __future__ import annotations

import os
import struct
import time
from pathlib import Path
from typing import Any

import pytest

from raftmq.broker.message import parse_msg_id
from tests.integration.broker_group import BrokerGroup, http, running_group

pytestmark = pytest.mark.integration

SEGMENT_BYTES = 64 << 10
RECORD = struct.Struct(">QQIB3x")
ENTRY_HEADER_BYTES = 32
TOPIC = "damage"
QUEUES = 2


def frame_of(data_dir: Path, index: int) -> tuple[int, int, int]:
    """(position, term, frame size) of entry ``index`` from the node's index files."""
    index_dir = data_dir / "dledger" / "index"
    firsts = sorted(int(n) for n in os.listdir(index_dir) if n.isdigit())
    first = max(f for f in firsts if f <= index)
    raw = (index_dir / f"{first:020d}").read_bytes()
    pos, term, size, _kind = RECORD.unpack_from(raw, (index - first) * RECORD.size)
    assert size >= ENTRY_HEADER_BYTES and term > 0, (index, pos, term, size)
    return pos, term, size


def flip_bit(data_dir: Path, position: int, bit: int = 0) -> None:
    seg = position - position % SEGMENT_BYTES
    path = data_dir / "dledger" / "commitlog" / f"{seg:020d}"
    with open(path, "r+b") as f:
        f.seek(position - seg)
        b = f.read(1)
        f.seek(position - seg)
        f.write(bytes([b[0] ^ (1 << bit)]))


def segments_of(data_dir: Path) -> list[int]:
    return sorted(int(n) for n in os.listdir(data_dir / "dledger" / "commitlog") if n.isdigit())


def produce(g: BrokerGroup, n_requests: int, tag: str) -> list[dict[str, Any]]:
    """``n_requests`` produce requests of 8 messages (one log entry each), in order; their results."""
    acked = []
    for r in range(n_requests):
        msgs = [{"body": f"{tag}-{r:04d}-{k}-" + "x" * 180, "keys": [f"{tag}-{r}-{k}"], "queue_id": r % QUEUES}
                for k in range(8)]
        for _ in range(100):
            lead = g.leader()
            status, _, body = http("POST", f"{lead.http_url}/v1/topics/{TOPIC}/messages", {"messages": msgs})
            if status == 200:
                acked += [dict(res, body=m["body"], key=m["keys"][0]) for res, m in zip(body["results"], msgs)]
                break
            time.sleep(0.1)
        else:
            raise AssertionError(f"produce failed: {status} {body}")
    return acked


def read_all(url: str) -> dict[tuple[int, int], tuple[str, str]]:
    """Every message of the topic on one node (local reads): (queue, offset) -> (msg_id, body)."""
    out: dict[tuple[int, int], tuple[str, str]] = {}
    for q in range(QUEUES):
        offset = 0
        while True:
            status, _, body = http("GET", f"{url}/v1/topics/{TOPIC}/queues/{q}/messages?offset={offset}&max=256"
                                          f"&consistency=local")
            assert status == 200, (url, q, offset, status, body)
            for m in body["messages"]:
                out[(q, m["queue_offset"])] = (m["msg_id"], m["body"])
            if body["next_offset"] >= body["max_offset"] or not body["messages"]:
                break
            offset = body["next_offset"]
    return out


def assert_serves_everything(g: BrokerGroup, nid: str, acked: list[dict[str, Any]]) -> None:
    url = g.node(nid).http_url
    got = read_all(url)
    for a in acked:
        assert got.get((a["queue_id"], a["queue_offset"])) == (a["msg_id"], a["body"]), (nid, a)
    for a in acked[:: max(1, len(acked) // 40)]:  # by id and by key, a sample
        status, _, body = http("GET", f"{url}/v1/messages/{a['msg_id']}?consistency=local")
        assert status == 200 and body["body"] == a["body"], (nid, a, status, body)
        status, _, body = http("GET", f"{url}/v1/messages?key={a['key']}&consistency=local")
        assert status == 200 and any(m["body"] == a["body"] for m in body["messages"]), (nid, a, status, body)


def wait_applied_everywhere(g: BrokerGroup, timeout_s: float = 30) -> int:
    def same() -> int | None:
        hs = [g.health(n.id) for n in g.nodes if n.proc is not None and n.proc.poll() is None]
        if any(h is None for h in hs):
            return None
        applied = {h["applied_index"] for h in hs if h}
        return applied.pop() if len(applied) == 1 else None

    return g.wait_for(same, timeout_s, "every running node to apply the same index")


def create_topic(g: BrokerGroup) -> None:
    status, _, body = http("POST", f"{g.leader().http_url}/v1/topics", {"name": TOPIC, "queues": QUEUES})
    assert status == 200, body


def test_damaged_entries_in_old_and_new_segments_are_repaired_from_peers_not_cut_or_served(tmp_path: Path) -> None:
    with running_group(tmp_path, extra={"segment_bytes": SEGMENT_BYTES}) as g:
        create_topic(g)
        acked = produce(g, 240, "a")  # ~400 KiB of log: several segments
        last = wait_applied_everywhere(g)
        node = g.followers()[0]
        g.kill(node.id)
        segs = segments_of(node.data_dir)
        assert len(segs) >= 5, segs
        # Case 4: a body bit in the oldest segment; a header bit (the index field) in the second.
        old_body = next(i for i in range(3, last) if frame_of(node.data_dir, i)[0] < segs[1]
                        and frame_of(node.data_dir, i)[2] > ENTRY_HEADER_BYTES)
        old_head = next(i for i in range(3, last) if segs[1] <= frame_of(node.data_dir, i)[0] < segs[2])
        # Case 6: a committed entry in the second-newest segment, sound entries after it.
        recent = next(i for i in range(last - 1, 3, -1) if segs[-2] <= frame_of(node.data_dir, i)[0] < segs[-1])
        pos, _, size = frame_of(node.data_dir, old_body)
        flip_bit(node.data_dir, pos + ENTRY_HEADER_BYTES + (size - ENTRY_HEADER_BYTES) // 2, 3)
        pos, _, _ = frame_of(node.data_dir, old_head)
        flip_bit(node.data_dir, pos + 20, 1)
        pos, _, size = frame_of(node.data_dir, recent)
        flip_bit(node.data_dir, pos + size - 1, 7)

        g.start(node.id)
        g.wait_for(lambda: (g.health(node.id) or {}).get("applied_index", 0) >= last, 30,
                   "the damaged node to apply everything again")
        text = node.log_path.read_text()
        for index in (old_body, old_head, recent):
            assert f"event=entry_repaired dir={node.data_dir / 'dledger'} index={index} " in text, (index, text[-3000:])
        assert "event=cut_tail" not in text and "lost_entries" not in text
        assert len(segments_of(node.data_dir)) >= len(segs)  # nothing was cut
        acked += produce(g, 10, "b")  # and the group goes on
        wait_applied_everywhere(g)
        for n in g.nodes:
            assert_serves_everything(g, n.id, acked)
        assert "fatal error" not in g.logs()


def test_a_leader_that_reads_a_damaged_entry_of_its_own_steps_down_and_the_group_goes_on(tmp_path: Path) -> None:
    with running_group(tmp_path, extra={"segment_bytes": SEGMENT_BYTES, "preferred_leader": "n1"}) as g:
        create_topic(g)
        acked = produce(g, 20, "a")
        g.kill("n3")  # n3 will need the next entries from the leader's disk
        acked += produce(g, 120, "b")
        last = wait_applied_everywhere(g)
        # Restart n1 so that it holds these entries on disk only (no in-memory tail), and
        # let it take its preferred leadership back.
        g.kill("n1")
        g.start("n1")
        g.wait_for(lambda: (g.health("n1") or {}).get("role") == "leader", 30, "n1 to lead again")
        n1 = g.node("n1")
        # The newest entry with a body in an older segment (a leader's no-op is a bare
        # 32-byte header: a flip "in its body" would land in the next frame or the padding).
        lagging = next(i for i in range(last, 0, -1) if frame_of(n1.data_dir, i)[0] < segments_of(n1.data_dir)[-2]
                       and frame_of(n1.data_dir, i)[2] > ENTRY_HEADER_BYTES + 8)
        pos, _, size = frame_of(n1.data_dir, lagging)
        flip_bit(n1.data_dir, pos + ENTRY_HEADER_BYTES + 7, 2)  # behind the running leader's back
        g.start("n3")
        g.wait_for(lambda: (g.health("n3") or {}).get("applied_index", 0) >= last, 40,
                   "the lagging node to catch up")
        assert n1.proc is not None and n1.proc.poll() is None, "the damaged leader must not crash"
        text = n1.log_path.read_text()
        assert "entries of its log are damaged" in text and "event=entry_repaired" in text, text[-3000:]
        acked += produce(g, 10, "c")
        wait_applied_everywhere(g)
        for n in g.nodes:
            assert_serves_everything(g, n.id, acked)
        assert "fatal error" not in g.logs()


def test_a_record_found_damaged_while_serving_is_not_served_and_is_repaired_from_a_peer(tmp_path: Path) -> None:
    with running_group(tmp_path, extra={"segment_bytes": SEGMENT_BYTES}) as g:
        create_topic(g)
        acked = produce(g, 60, "a")
        last = wait_applied_everywhere(g)
        node = g.followers()[0]
        g.kill(node.id)
        g.start(node.id)  # so that it reads these entries from disk (no in-memory tail)
        g.wait_for(lambda: (g.health(node.id) or {}).get("applied_index", 0) >= last, 30, "the restart")
        victim = acked[len(acked) // 2]
        record = parse_msg_id(victim["msg_id"])[1]  # a message id is the group and the record's position
        # The record lies inside its entry's body: flip a bit of it, behind the running node's back.
        index = next(i for i in range(last, 0, -1) if frame_of(node.data_dir, i)[0] < record)
        pos, _, size = frame_of(node.data_dir, index)
        target = record + 40
        assert pos + ENTRY_HEADER_BYTES <= target < pos + size
        flip_bit(node.data_dir, target, 4)
        url = f"{node.http_url}/v1/topics/{TOPIC}/queues/{victim['queue_id']}/messages?offset={victim['queue_offset']}&max=1&consistency=local"
        status, _, body = http("GET", url)
        assert status == 503 and body["error"] == "storage_damaged", (status, body)  # never served
        g.wait_for(lambda: http("GET", url)[0] == 200, 20, "the entry to be repaired from a peer")
        status, _, body = http("GET", url)
        assert body["messages"][0]["body"] == victim["body"]
        assert f"event=entry_repaired dir={node.data_dir / 'dledger'} index={index} " in node.log_path.read_text()
        assert_serves_everything(g, node.id, acked)

