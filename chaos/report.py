"""Chaos reports.

- ``chaos-report.json``: the verdict and why, the seed, the configuration, the
  planned schedule and the faults as injected (with how long writes were
  unavailable around each), the storage damage done (which file, entry, byte
  and bit), operation counts, every anomaly's count and examples, what each
  node lacks at the end, failover times after leader kills, latency
  percentiles by phase.
- ``chaos-report.html``: a summary table, the anomalies, and a timeline
  picture (throughput and latency over time with the fault windows shaded),
  drawn with matplotlib's Agg backend and embedded as a base64 PNG. Without
  matplotlib (``pip install 'raftmq[chaos]'``) the page has the tables only.
- ``chaos-history.jsonl.gz``: the whole history, one operation per line.
"""

from __future__ import annotations

import base64
import datetime
import html
import io
import json
from collections import Counter, defaultdict
from dataclasses import asdict
from pathlib import Path
from typing import Any

from raftmq.chaos.checker import ANOMALIES, percentile
from raftmq.chaos.forge_fault import forgery_totals
from raftmq.chaos.history import COMMIT, DELIVER, FAULT, OK, PULL, SEND, History
from raftmq.chaos.runner import RunResult

FAULT_COLORS = {"kill-leader": "#d62728", "kill": "#ff7f0e", "pause-leader": "#9467bd", "pause": "#c5b0d5",
                "partition": "#1f77b4", "torn-tail": "#8c564b", "wipe": "#e377c2", "wipe-majority": "#000000",
                "corrupt": "#bcbd22", "corrupt-derived": "#17becf", "kill-all": "#7f7f7f"}
STORAGE_FAULTS = ("torn-tail", "wipe", "corrupt", "corrupt-derived")


def damage_done(h: History) -> tuple[list[dict[str, Any]], dict[str, int]]:
    """The storage faults as injected, with what each damaged; and their counts by
    kind of damage (``corrupt/body``, ``corrupt-derived/consumequeue/tear``, ...;
    ``.../nothing`` when the node had nothing of that kind to damage)."""
    items: list[dict[str, Any]] = []
    counts: Counter[str] = Counter()
    for o in h.of(FAULT):
        if o.outcome != OK or o.value not in STORAGE_FAULTS:
            continue
        d = o.detail or {}
        dmg = d.get("damage") or d.get("torn") or {}
        if o.value == "corrupt":
            key = f"corrupt/{dmg.get('region')}" if dmg.get("damaged") else "corrupt/nothing"
        elif o.value == "corrupt-derived":
            key = (f"corrupt-derived/{dmg.get('target')}/{dmg.get('how')}" if dmg.get("damaged")
                   else "corrupt-derived/nothing")
        elif o.value == "torn-tail":
            key = f"torn-tail/{dmg.get('how', 'nothing')}"
        else:
            key = "wipe/" + ("rejoin-flag" if d.get("rejoin_flag") else "no-flag")
        counts[key] += 1
        items.append({"fault": o.value, "node": o.node, "at": round(o.invoke, 3), "kind": key,
                      **({"damage": dmg} if dmg else {})})
    return items, dict(sorted(counts.items()))


def summary(res: RunResult) -> dict[str, Any]:
    """Everything the JSON report holds."""
    h = res.history
    sends = h.of(SEND)
    by_producer: dict[str, Counter[str]] = defaultdict(Counter)
    for o in sends:
        by_producer[o.process][o.outcome or "info"] += 1
    faults_by_kind = Counter(o.value for o in h.of(FAULT) if o.outcome == OK)
    cfg = asdict(res.config)
    cfg["faults"] = dict(res.config.faults)
    chk = res.check.summary()
    damage, damage_counts = damage_done(h)
    return {
        "verdict": "PASS" if res.exit_code == 0 else "FAIL",
        "exit_code": res.exit_code,
        "reasons": res.reasons,
        "seed": res.config.seed,
        "config": cfg,
        "started_at": datetime.datetime.fromtimestamp(res.started_at, datetime.timezone.utc).isoformat(),
        "elapsed_s": round(res.elapsed_s, 1),
        "partitions": res.partitions,
        "schedule": [p.to_json() for p in res.plan],
        "faults_planned": len(res.plan) if not res.config.wipe_majority else 1,
        "faults_injected": sum(faults_by_kind.values()),
        "faults_by_kind": dict(faults_by_kind),
        "faults": res.availability["faults"],
        "damage": damage,
        "damage_counts": damage_counts,
        "forgeries": forgery_totals([(o.detail or {})["forge"] for o in h.of(FAULT)
                                     if o.outcome == OK and o.value == "forge" and "forge" in (o.detail or {})]),
        "faults_not_injected": [{"fault": o.value, "at": round(o.invoke, 3), **(o.detail or {})}
                                for o in h.of(FAULT) if o.outcome != OK],
        "operations": {
            "sends": {"attempted": chk["attempted"], "acknowledged": chk["acknowledged"], "failed": chk["failed"],
                      "unknown": chk["unknown"], "unknown_but_stored": chk["unknown_present"]},
            "by_producer": {p: dict(c) for p, c in sorted(by_producer.items())},
            "pulls": Counter(o.outcome for o in h.of(PULL)),
            "deliveries": len(h.of(DELIVER)),
            "commits": Counter(o.outcome for o in h.of(COMMIT)),
            "messages_present_at_end": chk["present"],
        },
        "acknowledged": chk["acknowledged"],
        "anomalies": chk["anomalies"],
        "check": chk,
        "failover_after_leader_kill": res.availability["failover"],
        "latency_by_phase": res.availability["latency_by_phase"],
        "nodes": res.nodes,
        "data_dir": res.base_dir,
        "history": res.history_path,
    }


def timeline(h: History, bucket_s: float | None = None) -> dict[str, list[float]]:
    """Send series per time bucket (``bucket_s``, default: about 300 buckets, at least 0.25 s):
    acknowledged and failed-or-unknown sends per second (by completion time), and
    latency p50/p99/max in ms of the sends acknowledged in the bucket (NaN for none)."""
    sends = [o for o in h.of(SEND) if o.complete is not None]
    if not sends:
        return {"t": [], "acks": [], "errors": [], "p50_ms": [], "p99_ms": [], "max_ms": []}
    end = max(o.complete or 0.0 for o in sends)
    if bucket_s is None:
        bucket_s = max(0.25, round(end / 300, 2))
    n = int(end // bucket_s) + 1
    acks, errors = [0] * n, [0] * n
    lat: list[list[float]] = [[] for _ in range(n)]
    for o in sends:
        b = int((o.complete or 0.0) // bucket_s)
        if o.outcome == OK:
            acks[b] += 1
            lat[b].append(((o.complete or 0.0) - o.invoke) * 1000)
        else:
            errors[b] += 1
    nan = float("nan")
    return {"t": [i * bucket_s for i in range(n)], "acks": [a / bucket_s for a in acks],
            "errors": [e / bucket_s for e in errors],
            "p50_ms": [percentile(v, 0.5) if v else nan for v in lat],  # type: ignore[misc]
            "p99_ms": [percentile(v, 0.99) if v else nan for v in lat],  # type: ignore[misc]
            "max_ms": [max(v) if v else nan for v in lat]}


def timeline_png(h: History) -> str | None:
    """The timeline picture as base64 PNG, or None without matplotlib (or without data)."""
    try:
        import matplotlib

        matplotlib.use("Agg")
        import matplotlib.pyplot as plt
        from matplotlib.patches import Patch
    except ImportError:
        return None
    tl = timeline(h)
    if not tl["t"]:
        return None
    fig, ax = plt.subplots(2, 1, figsize=(12, 6), sharex=True)
    ax[0].plot(tl["t"], tl["acks"], color="tab:blue", lw=1, label="acknowledged sends/s")
    ax[0].plot(tl["t"], tl["errors"], color="tab:red", lw=1, label="failed or unknown sends/s")
    ax[0].set_ylabel("sends per second")
    ax[0].legend(loc="upper left", fontsize=8)
    ax[1].plot(tl["t"], tl["p50_ms"], color="tab:green", lw=1, label="p50")
    ax[1].plot(tl["t"], tl["p99_ms"], color="tab:orange", lw=1, label="p99")
    ax[1].plot(tl["t"], tl["max_ms"], color="tab:red", lw=0.8, label="max")
    ax[1].set_yscale("log")
    ax[1].set_ylabel("send latency (ms)")
    ax[1].set_xlabel("seconds since start")
    kinds = set()
    for f in h.of(FAULT):
        if f.outcome != OK:
            continue
        color = FAULT_COLORS.get(str(f.value), "grey")
        kinds.add(str(f.value))
        for a in ax:
            a.axvspan(f.invoke, f.complete if f.complete and f.complete > f.invoke + 0.1 else f.invoke + 0.1,
                      color=color, alpha=0.18, lw=0)
    handles, labels = ax[1].get_legend_handles_labels()
    handles += [Patch(color=FAULT_COLORS.get(k, "grey"), alpha=0.3) for k in sorted(kinds)]
    labels += sorted(kinds)
    ax[1].legend(handles, labels, loc="upper left", fontsize=8, ncol=4)
    fig.tight_layout()
    buf = io.BytesIO()
    fig.savefig(buf, format="png", dpi=90)
    plt.close(fig)
    return base64.b64encode(buf.getvalue()).decode()


def _table(rows: list[tuple[Any, ...]], head: tuple[str, ...] | None = None) -> str:
    e = lambda v: html.escape("" if v is None else str(v))  # noqa: E731
    out = ["<table>"]
    if head:
        out.append("<tr>" + "".join(f"<th>{e(c)}</th>" for c in head) + "</tr>")
    for r in rows:
        out.append("<tr>" + "".join(f"<td>{e(c)}</td>" for c in r) + "</tr>")
    out.append("</table>")
    return "".join(out)


def render_html(doc: dict[str, Any], png: str | None) -> str:
    fo = doc["failover_after_leader_kill"]
    ops = doc["operations"]["sends"]
    rows = [
        ("verdict", doc["verdict"] + ("" if not doc["reasons"] else ": " + "; ".join(doc["reasons"]))),
        ("seed", doc["seed"]),
        ("nodes / flush", f"{doc['config']['nodes']} / {doc['config']['flush']}"),
        ("duration under faults", f"{doc['config']['duration_s']} s (whole run {doc['elapsed_s']} s)"),
        ("faults injected / planned", f"{doc['faults_injected']} / {doc['faults_planned']}  "
                                      + ", ".join(f"{k} {v}" for k, v in sorted(doc["faults_by_kind"].items()))),
        ("partitions", "included" if doc["partitions"]["included"] else (doc["partitions"]["skipped"] or "not asked")),
        ("sends acknowledged / failed / unknown", f"{ops['acknowledged']} / {ops['failed']} / {ops['unknown']}"
                                                  f" (unknown but stored: {ops['unknown_but_stored']})"),
        ("messages at the end / delivered to the push group",
         f"{doc['operations']['messages_present_at_end']} / {doc['check']['delivered']}"),
        ("anomalies", doc["anomalies"]),
        ("storage damage", ", ".join(f"{k} {v}" for k, v in doc["damage_counts"].items()) or "none"),
        ("failover after leader kill (p50 / max)",
         f"{fo['p50_s']} s / {fo['max_s']} s over {fo['count']} kills; goal {fo['goal']['p50_s']} s / "
         f"{fo['goal']['max_s']} s: {'met' if fo['goal_met'] else 'not met' if fo['goal_met'] is False else '-'}"),
    ]
    anomaly_rows = [(k, doc["check"][k]["count"],
                     json.dumps(doc["check"][k]["examples"][:3])[:600] if doc["check"][k]["count"] else "")
                    for k in ANOMALIES]
    anomaly_rows.append(("duplicated (non-idempotent, expected)", doc["check"]["duplicated_non_idempotent"]["count"],
                         ""))
    fault_rows = [(f["start"], f["end"], f["fault"], f["nodes"], f["unavailable_s"], f["longest_gap_s"],
                   f["refused"], f["unknown"], json.dumps(f.get("detail", {}))[:300]) for f in doc["faults"]]
    node_rows = [(n, "yes" if p["read"] else f"no: {p.get('why')}", p["held"], p["acked_missing"], p["missing"],
                  p["unreadable"], f"{p.get('lookup_failed', 0)} / {p.get('lookups', 0)}",
                  json.dumps(p["examples"][:3])[:300]) for n, p in doc["check"]["per_node"].items()]
    damage_rows = [(d["at"], d["fault"], d["node"], d["kind"], json.dumps(d.get("damage", {}))[:400])
                   for d in doc["damage"]]
    lat_rows = [(k, v["count"], v["p50_s"], v["p90_s"], v["p99_s"], v["max_s"])
                for k, v in doc["latency_by_phase"].items()]
    img = (f'<img src="data:image/png;base64,{png}" alt="throughput and latency over time, faults shaded">'
           if png else "<p><i>No timeline picture: it needs matplotlib "
                       "(<code>pip install 'raftmq[chaos]'</code>).</i></p>")
    color = "#2ca02c" if doc["verdict"] == "PASS" else "#d62728"
    return (
        "<!doctype html><html><head><meta charset='utf-8'><title>RaftMQ chaos report</title><style>"
        "body{font-family:sans-serif;margin:2em;max-width:1300px}table{border-collapse:collapse;margin-bottom:1.5em}"
        "td,th{padding:3px 10px;border-bottom:1px solid #ddd;text-align:left;vertical-align:top;font-size:14px}"
        "h1 span{color:" + color + "}</style></head><body>"
        f"<h1>RaftMQ chaos run: <span>{doc['verdict']}</span></h1>"
        + _table(rows)
        + "<h2>Anomalies</h2>" + _table(anomaly_rows, ("check", "count", "examples"))
        + "<h2>Every node at the end</h2>"
        + _table(node_rows, ("node", "read", "messages held", "acknowledged missing", "missing (of any node's)",
                             "offsets answered with an error", "lookups by key failed / made",
                             "examples of acknowledged missing"))
        + "<h2>Timeline</h2>" + img
        + "<h2>Faults</h2>"
        + _table(fault_rows, ("start s", "end s", "fault", "nodes", "writes unavailable s", "longest gap s",
                              "refused", "unknown", "detail"))
        + "<h2>Storage damage</h2>" + _table(damage_rows, ("at s", "fault", "node", "kind", "what was damaged"))
        + "<h2>Send latency by phase</h2>" + _table(lat_rows, ("phase", "acks", "p50 s", "p90 s", "p99 s", "max s"))
        + "<h2>Nodes</h2>" + _table([(n["id"], n["http_url"], n["starts"], n["log"]) for n in doc["nodes"]],
                                    ("node", "url", "starts", "log"))
        + "</body></html>")


def write(res: RunResult, out_dir: str) -> tuple[Path, Path, dict[str, Any]]:
    """Write the history, the JSON report and the HTML report; returns their
    paths and the summary they hold."""
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    hist = out / "chaos-history.jsonl.gz"
    res.history.dump(str(hist))
    res.history_path = str(hist)
    doc = summary(res)
    jpath, hpath = out / "chaos-report.json", out / "chaos-report.html"
    jpath.write_text(json.dumps(doc, indent=2, default=str))
    hpath.write_text(render_html(doc, timeline_png(res.history)))
    return jpath, hpath, doc


def one_line(doc: dict[str, Any]) -> str:
    fo = doc["failover_after_leader_kill"]
    counts = doc["check"]["counts"]
    damage = doc.get("damage_counts") or {}
    forged = doc.get("forgeries") or {}
    return (f"{doc['verdict']}: {doc['faults_injected']}/{doc['faults_planned']} faults "
            f"({', '.join(f'{k} {v}' for k, v in sorted(doc['faults_by_kind'].items())) or 'none'}), "
            + (f"damage ({', '.join(f'{k} {v}' for k, v in damage.items())}), " if damage else "")
            + (f"forged frames refused {forged['refused']}/{forged['sent']} (term moved during "
               f"{forged['term_moved']} of {forged['faults']} forge faults), " if forged.get("faults") else "") +
            f"{doc['acknowledged']} acknowledged sends, {doc['anomalies']} anomalies"
            + (f" ({', '.join(f'{k} {v}' for k, v in counts.items() if v)})" if doc["anomalies"] else "")
            + (f"; failover after leader kill p50 {fo['p50_s']} s, max {fo['max_s']} s" if fo["count"] else ""))


__all__ = ["summary", "write", "render_html", "timeline", "timeline_png", "one_line"]
