"""The chaos checker is proven able to fail: each anomaly on a synthetic
history is reported (and a clean history reports nothing)."""

from __future__ import annotations

from pathlib import Path

from raftmq.chaos.checker import ANOMALIES, availability, check, latency_by_phase, percentile
from raftmq.chaos.history import (COMMIT, CONVERGE, CRASH, DELIVER, FAIL, FAULT, INFO, OFFSETS, OK, PULL, SEND, History,
                           Op)

Contents = dict[str, dict[tuple[int, int], str]]


def send(proc: str, n: int, q: int | None, off: int | None, outcome: str = OK, t: float | None = None,
         dur: float = 0.01) -> Op:
    t = float(n) if t is None else t
    return Op(proc, SEND, t, t + dur, outcome, f"{proc}-{n:06d}", q, off, "n1")


def everywhere(held: dict[tuple[int, int], str], nodes: tuple[str, ...] = ("n1", "n2", "n3")) -> Contents:
    return {n: dict(held) for n in nodes}


def clean() -> tuple[History, Contents]:
    """Two idempotent producers and a raw one, a push group that got everything, a
    puller, commits and offset reads: all consistent."""
    ops = [send("p1", 0, 0, 0), send("p1", 1, 0, 1), send("p1", 2, 1, 0), send("p1", 3, 1, 1), send("p1", 4, 0, 3),
           send("p2", 0, 0, 2, t=1.5), send("r1", 0, 1, 2, t=2.5)]
    held = {(o.queue_id, o.offset): o.value for o in ops}  # type: ignore[misc]
    for (q, off), body in sorted(held.items()):
        ops.append(Op("chaos-push/c1", DELIVER, 6.0, 6.0, OK, body, q, off))
    ops.append(Op("pull", PULL, 5.0, 5.1, OK, None, 0, 0, "n2", {"messages": [[0, "p1-000000"], [1, "p1-000001"]]}))
    ops.append(Op("chaos-pull", COMMIT, 5.2, 5.3, OK, None, 0, 2, None, {"asked": 2}))
    ops.append(Op("chaos-pull", OFFSETS, 5.4, 5.5, OK, None, None, None, "n2", {"offsets": {"0": 2}, "incarnation": 1}))
    ops.append(Op("chaos-pull", OFFSETS, 7.0, 7.1, OK, None, None, None, "n1",
                  {"offsets": {"0": 2}, "incarnation": 1, "final": True}))
    return History(ops), everywhere(held)  # type: ignore[arg-type]


def only(r: object, kind: str) -> list:
    """The anomaly list ``kind``, asserting every other kind is empty."""
    others = {k: getattr(r, k) for k in ANOMALIES if k != kind and getattr(r, k)}
    assert not others, others
    return getattr(r, kind)  # type: ignore[no-any-return]


def test_clean_history_reports_no_anomaly() -> None:
    h, c = clean()
    r = check(h, c, non_idempotent={"r1"})
    assert r.ok and r.anomalies == 0, r.summary()
    assert r.acknowledged == 7 and r.present == 7 and r.delivered == 7


def test_acknowledged_but_present_nowhere_is_lost_split_prefix_middle_postfix() -> None:
    h, c = clean()
    for node in c.values():
        for pos in ((0, 0), (1, 0), (0, 3)):  # p1's first, third and last acknowledged sends
            del node[pos]
    h = History([o for o in h if o.kind != DELIVER and o.kind != PULL])
    r = check(h, c, non_idempotent={"r1"})
    assert sorted(x["body"] for x in r.lost) == ["p1-000000", "p1-000002", "p1-000004"]
    assert r.lost_by_position == {"prefix": 1, "middle": 1, "postfix": 1}
    # Offset 0 of both queues is now held by no node, below their ends: gaps as well.
    assert r.gaps == [{"queue_id": 0, "from": 0, "to": 0}, {"queue_id": 1, "from": 0, "to": 0}]
    assert {k for k, v in r.counts().items() if v} == {"lost", "gaps"}


def test_a_producer_with_nothing_left_counts_all_as_prefix() -> None:
    h = History([send("p1", 0, 0, 0), send("p1", 1, 0, 1)])
    r = check(h, everywhere({}))
    assert [x["body"] for x in only(r, "lost")] == ["p1-000000", "p1-000001"]
    assert r.lost_by_position == {"prefix": 2, "middle": 0, "postfix": 0}


def test_unknown_outcome_send_found_stored_is_fine_and_counted() -> None:
    h, c = clean()
    h.add(send("p2", 1, None, None, outcome=INFO, t=3.0))
    for node in c.values():
        node[(1, 3)] = "p2-000001"
    h.add(Op("chaos-push/c1", DELIVER, 6.0, 6.0, OK, "p2-000001", 1, 3))
    r = check(h, c, non_idempotent={"r1"})
    assert r.ok, r.summary()
    assert r.unknown == 1 and r.unknown_present == 1


def test_a_message_never_sent_is_unexpected() -> None:
    h, c = clean()
    for node in c.values():
        node[(1, 3)] = "ghost-1"
    r = check(h, c, non_idempotent={"r1"})
    assert [(x["body"], x["why"]) for x in only(r, "unexpected")] == [("ghost-1", "never sent")]


def test_a_message_whose_send_definitely_failed_is_unexpected_when_stored() -> None:
    h, c = clean()
    h.add(send("p2", 1, None, None, outcome=FAIL, t=3.0))
    for node in c.values():
        node[(1, 3)] = "p2-000001"
    r = check(h, c, non_idempotent={"r1"})
    assert [(x["body"], x["why"]) for x in r.unexpected] == [("p2-000001", "its send failed")]


def test_an_unexpected_message_seen_only_by_a_pull_is_reported() -> None:
    h, c = clean()
    h.add(Op("pull", PULL, 5.0, 5.1, OK, None, 1, 3, "n3", {"messages": [[3, "ghost-2"]]}))
    r = check(h, c, non_idempotent={"r1"})
    assert [x["body"] for x in r.unexpected] == ["ghost-2"]
    assert r.unexpected[0]["source"] == "pull@n3"


def test_nodes_holding_different_messages_at_one_offset_is_inconsistent() -> None:
    h, c = clean()
    c["n2"][(0, 1)] = "p2-000000"
    r = check(h, c, non_idempotent={"r1"})
    bad = [x for x in r.inconsistent if (x["queue_id"], x["offset"]) == (0, 1)]
    assert bad and set(bad[0]["seen"]) == {"p1-000001", "p2-000000"}
    assert any("final@n2" in s for s in bad[0]["seen"]["p2-000000"])


def test_a_pull_that_read_another_message_than_the_end_holds_is_inconsistent() -> None:
    h, c = clean()
    h.add(Op("pull", PULL, 4.0, 4.1, OK, None, 0, 1, "n3", {"messages": [[1, "p2-000000"]]}))
    r = check(h, c, non_idempotent={"r1"})
    bad = only(r, "inconsistent")
    assert [(x["queue_id"], x["offset"]) for x in bad] == [(0, 1)]
    assert bad[0]["seen"]["p2-000000"] == ["pull@n3 t=4.00"]


def test_two_reads_disagreeing_on_an_offset_no_node_holds_any_more_is_inconsistent() -> None:
    h, c = clean()
    h.add(Op("pull", PULL, 4.0, 4.1, OK, None, 2, 0, "n1", {"messages": [[0, "p1-000001"]]}))
    h.add(Op("pull", PULL, 4.5, 4.6, OK, None, 2, 0, "n2", {"messages": [[0, "p2-000000"]]}))
    r = check(h, c, non_idempotent={"r1"})
    assert [(x["queue_id"], x["offset"]) for x in r.inconsistent] == [(2, 0)]


def test_an_acknowledged_message_stored_at_another_offset_is_inconsistent() -> None:
    h, c = clean()
    for node in c.values():
        node[(1, 3)] = node.pop((1, 1))  # p1-000003 was acked at queue 1 offset 1
        node[(1, 1)] = "p2-000009"
    h.add(send("p2", 9, None, None, outcome=INFO, t=3.5))
    h = History([o for o in h if o.kind != DELIVER])
    r = check(h, c, non_idempotent={"r1"})
    assert (1, 1) in [(x["queue_id"], x["offset"]) for x in only(r, "inconsistent")]


def test_a_duplicate_from_an_idempotent_producer_is_an_anomaly() -> None:
    h, c = clean()
    for node in c.values():
        node[(1, 3)] = "p1-000000"
    r = check(h, c, non_idempotent={"r1"})
    assert only(r, "duplicated") == [{"body": "p1-000000", "producer": "p1", "positions": [(0, 0), (1, 3)]}]


def test_a_duplicate_from_the_non_idempotent_sender_is_counted_not_an_anomaly() -> None:
    h, c = clean()
    for node in c.values():
        node[(1, 3)] = "r1-000000"
    r = check(h, c, non_idempotent={"r1"})
    assert r.ok, r.summary()
    assert [x["body"] for x in r.duplicated_non_idempotent] == ["r1-000000"]


def test_a_later_send_at_an_earlier_offset_of_the_same_queue_is_nonmonotonic() -> None:
    h = History([send("p1", 0, 0, 1), send("p1", 1, 0, 0)])  # acked at t=0.01, the next invoked at t=1
    r = check(h, everywhere({(0, 0): "p1-000001", (0, 1): "p1-000000"}))
    assert [(x["earlier"], x["later"]) for x in only(r, "nonmonotonic")] == [("p1-000000", "p1-000001")]


def test_concurrent_sends_may_land_in_either_order() -> None:
    h = History([send("steady", 0, 0, 1, t=1.0, dur=0.5), send("steady", 1, 0, 0, t=1.1, dur=0.1)])
    r = check(h, everywhere({(0, 0): "steady-000001", (0, 1): "steady-000000"}))
    assert r.ok, r.summary()


def test_an_offset_no_node_holds_below_a_queues_end_is_a_gap() -> None:
    h, c = clean()
    for node in c.values():
        del node[(0, 2)]  # p2-000000
    h = History([o for o in h if o.value != "p2-000000"])
    r = check(h, c, non_idempotent={"r1"})
    assert only(r, "gaps") == [{"queue_id": 0, "from": 2, "to": 2}]


def test_a_node_lacking_what_others_hold_is_lost_on_node() -> None:
    h, c = clean()
    del c["n3"][(0, 0)]
    del c["n3"][(0, 3)]  # its queue 0 is also shorter
    r = check(h, c, non_idempotent={"r1"})
    assert [(x["node"], x["queue_id"], x["offset"]) for x in only(r, "lost_on_node")] == [("n3", 0, 0), ("n3", 0, 3)]
    assert r.summary()["lost_on_node"]["by_node"] == {"n3": 2}


def test_every_node_is_accounted_for_with_what_acknowledged_messages_it_lacks() -> None:
    h, c = clean()
    r = check(h, c, non_idempotent={"r1"})
    assert r.nodes == ["n1", "n2", "n3"]
    assert {n: (p["read"], p["held"], p["acked_missing"]) for n, p in r.per_node.items()} == {
        "n1": (True, 7, 0), "n2": (True, 7, 0), "n3": (True, 7, 0)}
    del c["n2"][(1, 0)]  # p1-000002
    r = check(h, c, non_idempotent={"r1"})
    assert r.per_node["n2"]["acked_missing"] == 1 and r.per_node["n2"]["missing"] == 1
    assert r.per_node["n2"]["examples"] == [{"body": "p1-000002", "queue_id": 1, "offset": 0}]
    assert r.summary()["per_node"]["n2"]["acked_missing"] == 1


def test_a_node_that_could_not_be_read_at_the_end_is_an_anomaly_and_lacks_everything() -> None:
    h, c = clean()
    del c["n3"]
    r = check(h, c, non_idempotent={"r1"}, unread={"n3": "not running at the end (exit status 1)"})
    assert only(r, "unread_nodes") == [{"node": "n3", "why": "not running at the end (exit status 1)"}]
    assert r.nodes == ["n1", "n2", "n3"]
    assert r.per_node["n3"] == {"read": False, "why": "not running at the end (exit status 1)", "held": 0,
                                "missing": 7, "unreadable": 0, "acked_missing": 7, "examples": [], "lookups": 0,
                                "lookup_failed": 0}


def test_an_offset_a_node_answered_with_an_error_is_lost_on_that_node_with_the_error() -> None:
    h, c = clean()
    del c["n1"][(0, 1)]
    r = check(h, c, non_idempotent={"r1"}, unreadable={"n1": {(0, 1): "internal_error: record CRC mismatch"}})
    assert only(r, "lost_on_node") == [{"node": "n1", "queue_id": 0, "offset": 1, "body": "p1-000001",
                                        "error": "internal_error: record CRC mismatch"}]
    assert r.per_node["n1"]["unreadable"] == 1 and r.per_node["n1"]["acked_missing"] == 1


def test_a_lookup_by_key_that_misses_a_message_the_node_holds_is_reported() -> None:
    h, c = clean()
    lookups = {
        "n1": {"p1-000000": [(0, 0)], "p1-000001": [], "p1-000002": "internal_error: index damaged",
               "p2-000000": [(3, 9)]},
        "n2": {"p1-000001": [[0, 1]]},  # positions as JSON lists are fine
        "n3": {"nobody-000000": []},  # a key the node does not hold: not a lookup failure
    }
    r = check(h, c, non_idempotent={"r1"}, lookups=lookups)
    assert [(x["node"], x["key"], x["problem"]) for x in only(r, "lookup_failed")] == [
        ("n1", "p1-000001", "not found"), ("n1", "p1-000002", "error: internal_error: index damaged"),
        ("n1", "p2-000000", "found at [(3, 9)]")]
    assert (r.per_node["n1"]["lookups"], r.per_node["n1"]["lookup_failed"]) == (4, 3)
    assert (r.per_node["n2"]["lookups"], r.per_node["n2"]["lookup_failed"]) == (1, 0)


def test_nodes_whose_committed_log_entries_differ_or_are_damaged_are_a_log_mismatch() -> None:
    h, c = clean()
    same = {1: (1, 0, 40, 7), 2: (1, 0, 50, 8), 3: (2, 1, 32, 0)}
    logs = {"n1": dict(same), "n2": {**same, 2: (70368744177665, 0, 50, 8)}, "n3": {**same, 3: "body crc mismatch"},
            "n4": {3: (2, 1, 32, 0)}}  # a log that starts after a snapshot: only index 3 compared
    r = check(h, c, non_idempotent={"r1"}, logs=logs)
    found = only(r, "log_mismatch")
    assert [x["index"] for x in found] == [2, 3]
    assert found[0]["seen"]["n2"]["term"] == 70368744177665 and found[0]["seen"]["n1"]["term"] == 1
    assert found[1]["seen"]["n3"] == "body crc mismatch" and set(found[1]["seen"]) == {"n1", "n2", "n3", "n4"}
    assert check(h, c, non_idempotent={"r1"}, logs={"n1": same, "n2": same}).ok


def test_commit_answers_going_back_in_real_time_order_are_reported() -> None:
    h, c = clean()
    h.add(Op("chaos-pull", COMMIT, 8.0, 8.1, OK, None, 1, 5))
    h.add(Op("chaos-pull", COMMIT, 9.0, 9.1, OK, None, 1, 3))
    bad = only(check(h, c, non_idempotent={"r1"}), "offsets_backwards")
    assert [(x["from"], x["to"], x["seen"]) for x in bad] == [(5, 3, "answers to commits")]


def test_one_nodes_committed_offsets_going_back_in_one_lifetime_are_reported() -> None:
    h, c = clean()
    h.add(Op("chaos-push", OFFSETS, 8.0, 8.1, OK, None, None, None, "n3", {"offsets": {"1": 7}, "incarnation": 2}))
    h.add(Op("chaos-push", OFFSETS, 8.5, 8.6, OK, None, None, None, "n3", {"offsets": {"1": 4}, "incarnation": 2}))
    h.add(Op("chaos-push", OFFSETS, 9.0, 9.1, OK, None, None, None, "n3", {"offsets": {"1": 7}, "incarnation": 2}))
    bad = only(check(h, c, non_idempotent={"r1"}), "offsets_backwards")
    assert [(x["node"], x["from"], x["to"]) for x in bad] == [("n3", 7, 4)]


def test_offsets_read_before_and_after_a_restart_may_differ() -> None:
    h, c = clean()
    h.add(Op("chaos-push", OFFSETS, 8.0, 8.1, OK, None, None, None, "n3", {"offsets": {"1": 7}, "incarnation": 1}))
    h.add(Op("chaos-push", OFFSETS, 8.5, 8.6, OK, None, None, None, "n3", {"offsets": {"1": 4}, "incarnation": 2}))
    h.add(Op("chaos-push", OFFSETS, 9.5, 9.6, OK, None, None, None, "n3",
             {"offsets": {"1": 7}, "incarnation": 2, "final": True}))
    assert check(h, c, non_idempotent={"r1"}).ok


def test_a_final_offset_below_one_seen_committed_before_is_reported() -> None:
    h, c = clean()
    h.add(Op("chaos-pull", OFFSETS, 9.5, 9.6, OK, None, None, None, "n2",
             {"offsets": {"0": 1}, "incarnation": 1, "final": True}))
    bad = only(check(h, c, non_idempotent={"r1"}), "offsets_backwards")
    assert [(x["node"], x["from"], x["to"]) for x in bad] == [("n2", 2, 1)]


def test_an_acknowledged_message_the_push_group_never_delivered_is_reported() -> None:
    h, c = clean()
    h = History([o for o in h if not (o.kind == DELIVER and o.value == "p1-000002")])
    bad = only(check(h, c, non_idempotent={"r1"}), "undelivered")
    assert bad == [{"group": "chaos-push", "body": "p1-000002", "queue_id": 1, "offset": 0}]


def test_a_node_that_exited_by_itself_and_a_group_that_never_converged_are_anomalies() -> None:
    h, c = clean()
    h.add(Op("nemesis", CRASH, 3.0, 3.0, OK, "1", None, None, "n2", {"log_tail": "StorageFailure"}))
    h.add(Op("runner", CONVERGE, 10.0, 10.0, FAIL, detail={"nodes": {"n2": None}}))
    r = check(h, c, non_idempotent={"r1"})
    assert r.counts()["crashes"] == 1 and r.counts()["not_converged"] == 1 and r.anomalies == 2


# -- availability -------------------------------------------------------------------
def steady(n: int, t: float, dur: float, outcome: str = OK) -> Op:
    return Op("steady", SEND, t, t + dur, outcome, f"steady-{n:06d}", 0, n)


def test_failover_time_runs_from_the_kill_to_the_first_ack_of_a_send_invoked_after_it() -> None:
    ops = [steady(0, 1.0, 0.01), steady(1, 1.99, 0.5),  # in flight across the kill: does not count
           Op("nemesis", FAULT, 2.0, 3.0, OK, "kill-leader", node="n1"),
           steady(2, 2.01, 1.0, INFO), steady(3, 2.05, 0.3), steady(4, 2.2, 0.05),  # acked at 2.35 and 2.25
           steady(5, 9.0, 0.01)]
    a = availability(ops)
    (f,) = a["faults"]
    assert f["unavailable_s"] == 0.25 and f["unknown"] == 1 and f["refused"] == 0
    assert a["failover"]["each_s"] == [0.25] and a["failover"]["goal_met"] is True


def test_failover_goal_is_not_met_when_the_worst_case_is_too_long() -> None:
    ops = [Op("nemesis", FAULT, 2.0, 3.0, OK, "kill-leader", node="n1"), steady(0, 2.1, 1.6),
           Op("nemesis", FAULT, 10.0, 11.0, OK, "kill-leader", node="n2"), steady(1, 10.1, 0.05)]
    fo = availability(ops)["failover"]
    assert fo["each_s"] == [1.7, 0.15] and fo["max_s"] == 1.7 and fo["goal_met"] is False


def test_longest_gap_covers_the_fault_and_stops_at_the_next_fault() -> None:
    ops = [steady(i, 0.1 * i, 0.01) for i in range(20)]  # acks every 0.1 s until t=1.91
    ops += [Op("nemesis", FAULT, 1.0, 1.5, OK, "pause", node="n2"), steady(30, 3.0, 0.5),
            Op("nemesis", FAULT, 3.2, 3.4, OK, "pause", node="n3"), steady(31, 3.6, 0.01)]
    first = availability(ops)["faults"][0]
    assert abs(first["longest_gap_s"] - (3.2 - 1.91)) < 1e-6  # up to the next fault's start


def test_latency_by_phase_attributes_sends_to_the_fault_active_when_they_started() -> None:
    ops = [send("p1", 0, 0, 0, t=1.0, dur=0.01), Op("nemesis", FAULT, 2.0, 4.0, OK, "partition"),
           send("p1", 1, 0, 1, t=3.0, dur=1.0), send("p1", 2, 0, 2, t=5.0, dur=0.02)]
    ph = latency_by_phase(ops)
    assert ph["calm"]["count"] == 2 and ph["partition"]["count"] == 1 and ph["partition"]["max_s"] == 1.0


def test_percentile_is_nearest_rank() -> None:
    xs = [float(i) for i in range(1, 101)]
    assert percentile(xs, 0.5) == 50.0 and percentile(xs, 0.99) == 99.0 and percentile(xs, 1.0) == 100.0
    assert percentile([], 0.5) is None and percentile([3.0], 0.5) == 3.0


def test_history_round_trips_through_gzipped_json_lines(tmp_path: Path) -> None:
    h, _ = clean()
    path = tmp_path / "h.jsonl.gz"
    h.dump(str(path))
    back = History.load(str(path))
    assert [o.to_json() for o in back] == [o.to_json() for o in h]
