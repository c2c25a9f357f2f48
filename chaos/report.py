"""Chaos reports: ``chaos-report.json`` (every figure, the seed, the fault
schedule) and ``chaos-report.html`` (a summary table and a timeline of
throughput and latency with the fault windows shaded, drawn with matplotlib
when it is installed: ``pip install 'raftmq[chaos]'``)."""

from __future__ import annotations

import base64
import html
import io
import json
from dataclasses import asdict
from pathlib import Path
from typing import Any

from chaos.runner import RunResult


def _percentile(xs: list[float], q: float) -> float | None:
    if not xs:
        return None
    s = sorted(xs)
    return round(s[min(len(s) - 1, int(q * len(s)))], 4)


def latency_by_phase(res: RunResult) -> dict[str, dict[str, Any]]:
    """Send latency percentiles while some fault was active, and while none was."""
    windows = [(o.invoke, o.complete or o.invoke) for o in res.history.of("fault")]
    phases: dict[str, list[float]] = {"calm": [], "fault": []}
    for o in res.history.of("send"):
        if o.outcome != "ok" or o.complete is None:
            continue
        during = any(a <= o.invoke <= b for a, b in windows)
        phases["fault" if during else "calm"].append(o.complete - o.invoke)
    return {k: {"count": len(v), "p50_s": _percentile(v, 0.5), "p99_s": _percentile(v, 0.99),
                "max_s": _percentile(v, 1.0)} for k, v in phases.items()}


def summary(res: RunResult) -> dict[str, Any]:
    fo = [f["seconds"] for f in res.failovers if f["seconds"] is not None]
    return {
        "ok": res.exit_code == 0,
        "seed": res.config.seed,
        "config": asdict(res.config),
        "faults_injected": len(res.faults),
        "faults": res.faults,
        "partitions_skipped": res.partitions_skipped or None,
        "acknowledged": res.check.acknowledged,
        "attempted": res.check.attempted,
        "check": res.check.summary(),
        "failover_after_leader_kill_s": {"count": len(fo), "p50": _percentile(fo, 0.5), "max": max(fo, default=None),
                                         "each": res.failovers},
        "latency_by_phase": latency_by_phase(res),
        "data_dir": res.base_dir,
    }


def _timeline_png(res: RunResult) -> str | None:
    try:
        import matplotlib

        matplotlib.use("Agg")
        import matplotlib.pyplot as plt
    except ImportError:
        return None
    sends = [o for o in res.history.of("send") if o.outcome == "ok" and o.complete is not None]
    if not sends:
        return None
    end = int(max(o.complete for o in sends)) + 1  # type: ignore[type-var]
    per_s = [0] * (end + 1)
    lat: list[list[float]] = [[] for _ in range(end + 1)]
    for o in sends:
        per_s[int(o.complete)] += 1  # type: ignore[arg-type]
        lat[int(o.complete)].append((o.complete - o.invoke) * 1000)  # type: ignore[operator]
    fig, ax = plt.subplots(2, 1, figsize=(10, 5), sharex=True)
    ax[0].plot(range(end + 1), per_s, color="tab:blue")
    ax[0].set_ylabel("acks/s")
    ax[1].plot(range(end + 1), [max(v) if v else 0 for v in lat], color="tab:red", label="max")
    ax[1].plot(range(end + 1), [sorted(v)[len(v) // 2] if v else 0 for v in lat], color="tab:green", label="p50")
    ax[1].set_ylabel("send latency ms")
    ax[1].set_xlabel("seconds")
    ax[1].legend(loc="upper right")
    for f in res.history.of("fault"):
        for a in ax:
            a.axvspan(f.invoke, f.complete or f.invoke + 0.2, color="orange", alpha=0.25)
        ax[0].text(f.invoke, max(per_s) * 0.95, f"{f.value}", fontsize=7, rotation=90, va="top")
    fig.tight_layout()
    buf = io.BytesIO()
    fig.savefig(buf, format="png", dpi=90)
    plt.close(fig)
    return base64.b64encode(buf.getvalue()).decode()


def write(res: RunResult, out_dir: str) -> tuple[Path, Path]:
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    doc = summary(res)
    jpath, hpath = out / "chaos-report.json", out / "chaos-report.html"
    jpath.write_text(json.dumps(doc, indent=2))
    rows = [("result", "PASS" if doc["ok"] else "FAIL"), ("seed", doc["seed"]),
            ("faults injected", doc["faults_injected"]), ("acknowledged sends", doc["acknowledged"]),
            ("anomalies", doc["check"]["anomalies"]),
            ("failover after leader kill (p50 / max s)",
             f"{doc['failover_after_leader_kill_s']['p50']} / {doc['failover_after_leader_kill_s']['max']}"),
            ("partitions", doc["partitions_skipped"] or "included" if "partition" in res.config.faults else "not asked")]
    for k in ("lost", "unexpected", "inconsistent", "duplicated", "nonmonotonic", "lost_on_node", "offsets_backwards",
              "undelivered"):
        rows.append((k, doc["check"][k]["count"]))
    png = _timeline_png(res)
    img = f'<img src="data:image/png;base64,{png}" alt="timeline">' if png else \
        "<p>(install matplotlib for the timeline picture: pip install 'raftmq[chaos]')</p>"
    faults = "".join(f"<tr><td>{f['at']}</td><td>{html.escape(str(f['fault']))}</td><td>{f['node']}</td></tr>"
                     for f in doc["faults"])
    hpath.write_text(
        "<!doctype html><meta charset=utf-8><title>RaftMQ chaos report</title>"
        "<style>body{font-family:sans-serif;margin:2em}td,th{padding:2px 10px;border-bottom:1px solid #ddd}</style>"
        f"<h1>RaftMQ chaos run: {'PASS' if doc['ok'] else 'FAIL'}</h1><table>"
        + "".join(f"<tr><th align=left>{html.escape(str(k))}</th><td>{html.escape(str(v))}</td></tr>" for k, v in rows)
        + f"</table><h2>Timeline</h2>{img}<h2>Faults</h2><table><tr><th>at s</th><th>fault</th><th>node</th></tr>"
        + faults + "</table>")
    return jpath, hpath
