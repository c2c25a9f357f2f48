"""Chaos reports: the JSON holds every figure, and the HTML page degrades to
tables when matplotlib is missing."""

from __future__ import annotations

import json
import sys
from pathlib import Path

import pytest

from raftmq.chaos import report
from raftmq.chaos.checker import availability, check
from raftmq.chaos.history import DELIVER, FAULT, OK, SEND, History, Op
from raftmq.chaos.runner import RunConfig, RunResult
from raftmq.chaos.schedule import PlannedFault


def result(tmp_path: Path) -> RunResult:
    ops = [Op("steady", SEND, 0.1 * i, 0.1 * i + 0.005, OK, f"steady-{i:06d}", 0, i, "n1") for i in range(50)]
    ops.append(Op("nemesis", FAULT, 2.0, 3.0, OK, "kill-leader", node="n1"))
    ops += [Op("chaos-push/c1", DELIVER, 6.0, 6.0, OK, o.value, 0, o.offset) for o in ops if o.kind == SEND]
    h = History(ops)
    contents = {"n1": {(0, i): f"steady-{i:06d}" for i in range(50)}}
    cfg = RunConfig(duration_s=10, seed=42, out_dir=str(tmp_path))
    return RunResult(cfg, [PlannedFault(2.0, "kill-leader", 1.0, 0.5)], h, check(h, contents), availability(h),
                     {"asked": True, "included": False, "skipped": "partitions need root"}, [], str(tmp_path), [],
                     0.0, 12.0)


def test_json_report_holds_the_verdict_seed_schedule_and_figures(tmp_path: Path) -> None:
    jpath, hpath, _ = report.write(result(tmp_path), str(tmp_path))
    doc = json.loads(jpath.read_text())
    assert doc["verdict"] == "PASS" and doc["seed"] == 42 and doc["anomalies"] == 0
    assert doc["schedule"][0]["fault"] == "kill-leader" and doc["faults_injected"] == 1
    assert doc["failover_after_leader_kill"]["count"] == 1
    assert doc["partitions"]["skipped"] == "partitions need root"
    assert set(doc["latency_by_phase"]) == {"calm", "kill-leader"}
    assert (tmp_path / "chaos-history.jsonl.gz").exists()
    assert "PASS" in hpath.read_text()


def test_html_report_embeds_the_timeline_picture_when_matplotlib_is_there(tmp_path: Path) -> None:
    pytest.importorskip("matplotlib")
    _, hpath, _ = report.write(result(tmp_path), str(tmp_path))
    assert "data:image/png;base64," in hpath.read_text()


def test_html_report_is_tables_only_without_matplotlib(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    for name in [m for m in sys.modules if m == "matplotlib" or m.startswith("matplotlib.")]:
        monkeypatch.delitem(sys.modules, name)
    monkeypatch.setitem(sys.modules, "matplotlib", None)  # import matplotlib -> ImportError
    _, hpath, _ = report.write(result(tmp_path), str(tmp_path))
    page = hpath.read_text()
    assert "data:image/png" not in page and "needs matplotlib" in page and "<table>" in page


def test_the_report_lists_the_storage_damage_and_what_every_node_lacks(tmp_path: Path) -> None:
    res = result(tmp_path)
    h = res.history
    h.add(Op("nemesis", FAULT, 4.0, 6.0, OK, "corrupt", node="n2",
             detail={"damage": {"damaged": True, "region": "body", "entry_index": 17, "offset": 4242, "bit": 3}}))
    h.add(Op("nemesis", FAULT, 7.0, 8.0, OK, "corrupt-derived", node="n3",
             detail={"damage": {"damaged": True, "target": "consumequeue", "how": "tear"}}))
    h.add(Op("nemesis", FAULT, 9.0, 9.5, OK, "corrupt-derived", node="n1",
             detail={"damage": {"damaged": False, "why": "no checkpoint"}}))
    h.add(Op("nemesis", FAULT, 10.0, 11.0, OK, "kill-all", node="n1,n2,n3", detail={"killed": ["n1", "n2", "n3"]}))
    res.check = check(h, {"n1": {(0, i): f"steady-{i:06d}" for i in range(50)}}, unread={"n2": "not running"})
    jpath, hpath, doc = report.write(res, str(tmp_path))
    assert doc["faults_by_kind"] == {"kill-leader": 1, "corrupt": 1, "corrupt-derived": 2, "kill-all": 1}
    assert doc["damage_counts"] == {"corrupt-derived/consumequeue/tear": 1, "corrupt-derived/nothing": 1,
                                    "corrupt/body": 1}
    assert doc["damage"][0]["damage"]["entry_index"] == 17 and doc["damage"][0]["node"] == "n2"
    assert doc["check"]["per_node"]["n2"]["read"] is False and doc["check"]["per_node"]["n2"]["acked_missing"] == 50
    page = hpath.read_text()
    assert "Storage damage" in page and "Every node at the end" in page and "no: not running" in page
    line = report.one_line(doc)
    assert "corrupt 1" in line and "kill-all 1" in line and "corrupt/body 1" in line and "unread_nodes 1" in line
