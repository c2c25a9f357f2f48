"""The chaos checker reports each anomaly on a synthetic history (and nothing on a clean one)."""

from __future__ import annotations

from chaos.checker import check, failover_times
from chaos.history import History, Op


def send(proc: str, n: int, q: int, off: int | None, outcome: str = "ok", t: float | None = None) -> Op:
    t = float(n) if t is None else t
    return Op(proc, "send", t, t + 0.01, outcome, f"{proc}-{n}", q, off)


def clean() -> tuple[History, dict[str, dict[tuple[int, int], str]]]:
    h = History([send("p1", 0, 0, 0), send("p1", 1, 0, 1), send("p1", 2, 1, 0), send("p2", 0, 0, 2)])
    held = {(0, 0): "p1-0", (0, 1): "p1-1", (1, 0): "p1-2", (0, 2): "p2-0"}
    return h, {"n1": dict(held), "n2": dict(held), "n3": dict(held)}


def test_clean_history_has_no_anomaly() -> None:
    h, c = clean()
    r = check(h, c)
    assert r.ok and r.acknowledged == 4, r.summary()


def test_lost_acknowledged_send_is_reported_with_its_position() -> None:
    h, c = clean()
    for node in c.values():
        del node[(0, 1)]  # p1-1 (the middle of p1's acked sends) is gone everywhere
    r = check(h, c)
    assert r.lost == ["p1-1"] and r.lost_by_position["middle"] == 1


def test_lost_postfix() -> None:
    h, c = clean()
    for node in c.values():
        del node[(1, 0)]
    assert check(h, c).lost_by_position["postfix"] == 1


def test_unexpected_message_is_reported() -> None:
    h, c = clean()
    c["n1"][(1, 1)] = c["n2"][(1, 1)] = c["n3"][(1, 1)] = "ghost-1"
    assert check(h, c).unexpected == ["ghost-1"]


def test_unknown_outcome_send_present_is_not_unexpected() -> None:
    h, c = clean()
    h.add(send("p2", 1, 1, None, outcome="info"))
    for node in c.values():
        node[(1, 1)] = "p2-1"
    assert check(h, c).ok


def test_inconsistent_offsets_between_nodes() -> None:
    h, c = clean()
    c["n2"][(0, 1)] = "p2-0"
    r = check(h, c)
    assert r.inconsistent and r.inconsistent[0]["offset"] == 1


def test_duplicate_of_idempotent_producer_is_an_anomaly_but_counted_apart_otherwise() -> None:
    h, c = clean()
    for node in c.values():
        node[(1, 1)] = "p1-0"
    assert check(h, c).duplicated == ["p1-0"]
    r = check(h, c, idempotent={"p2"})
    assert r.duplicated == [] and r.duplicated_non_idempotent == 1


def test_nonmonotonic_send_is_reported() -> None:
    h = History([send("p1", 0, 0, 1), send("p1", 1, 0, 0)])
    held = {(0, 0): "p1-1", (0, 1): "p1-0"}
    r = check(h, {"n1": held})
    assert r.nonmonotonic and r.nonmonotonic[0]["later"] == "p1-1"


def test_lost_on_node_is_reported() -> None:
    h, c = clean()
    del c["n3"][(0, 0)]  # n3 holds offsets 1 and 2 of queue 0 but not 0
    r = check(h, c)
    assert r.lost_on_node == [{"node": "n3", "queue_id": 0, "offset": 0}]
    assert not r.lost  # still on the other nodes


def test_committed_offset_going_backwards_is_reported() -> None:
    h, c = clean()
    h.add(Op("g1", "commit", 1.0, 1.1, "ok", None, 0, 5))
    h.add(Op("g1", "commit", 2.0, 2.1, "ok", None, 0, 3))
    assert check(h, c).offsets_backwards == [{"group": "g1", "queue_id": 0, "from": 5, "to": 3}]


def test_push_group_missing_a_delivery_is_reported() -> None:
    h, c = clean()
    for v in ("p1-0", "p1-1", "p2-0"):
        h.add(Op("group", "deliver", 5.0, 5.0, "ok", v))
    assert check(h, c).undelivered == ["p1-2"]


def test_failover_time_is_kill_to_first_ack_of_a_send_after_it() -> None:
    h = History([send("steady", 0, 0, 0, t=1.0), Op("nemesis", "fault", 2.0, 2.0, "ok", "kill-leader", node="n1"),
                 send("steady", 1, 0, None, outcome="info", t=2.1), send("steady", 2, 0, 1, t=2.3)])
    assert failover_times(h, "steady") == [{"at": 2.0, "node": "n1", "seconds": 0.31}]
