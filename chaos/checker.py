"""The chaos checker: pure functions over a run's history and what each node
holds at the end (in the manner of Jepsen's total-queue and Kafka checks).

``check(history, contents, idempotent)`` where ``contents`` maps each node to
``{(queue_id, offset): body}`` as drained from it after healing. Reported:

- lost: acknowledged sends whose body is on no node at its acked queue and
  offset (split into prefix / middle / postfix of each producer's acked sends:
  a lost middle is the worst sign, a lost postfix the most common);
- unexpected: bodies present that no send ever attempted;
- inconsistent: one (queue, offset) holding different bodies on different nodes;
- duplicated: one body at two offsets (an anomaly for idempotent producers,
  counted apart for the others);
- nonmonotonic: a producer's later acknowledged send (its sends are
  sequential) landing at an earlier offset of the same queue;
- lost_on_node: a node lacking an offset that another node holds, below its
  own end (a replica that silently dropped committed data);
- offsets_backwards: a consumer group's committed offset moving back;
- undelivered: acknowledged bodies a push consumer group never delivered.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass, field
from typing import Any

from chaos.history import History


@dataclass(slots=True)
class CheckResult:
    acknowledged: int = 0
    attempted: int = 0
    lost: list[str] = field(default_factory=list)
    lost_by_position: dict[str, int] = field(default_factory=lambda: {"prefix": 0, "middle": 0, "postfix": 0})
    unexpected: list[str] = field(default_factory=list)
    inconsistent: list[dict[str, Any]] = field(default_factory=list)
    duplicated: list[str] = field(default_factory=list)
    duplicated_non_idempotent: int = 0
    nonmonotonic: list[dict[str, Any]] = field(default_factory=list)
    lost_on_node: list[dict[str, Any]] = field(default_factory=list)
    offsets_backwards: list[dict[str, Any]] = field(default_factory=list)
    undelivered: list[str] = field(default_factory=list)

    @property
    def anomalies(self) -> int:
        return (len(self.lost) + len(self.unexpected) + len(self.inconsistent) + len(self.duplicated)
                + len(self.nonmonotonic) + len(self.lost_on_node) + len(self.offsets_backwards)
                + len(self.undelivered))

    @property
    def ok(self) -> bool:
        return self.anomalies == 0

    def summary(self) -> dict[str, Any]:
        d = asdict(self)
        for k in ("lost", "unexpected", "duplicated", "undelivered"):
            d[k] = {"count": len(d[k]), "examples": d[k][:10]}
        for k in ("inconsistent", "nonmonotonic", "lost_on_node", "offsets_backwards"):
            d[k] = {"count": len(d[k]), "examples": d[k][:10]}
        d["anomalies"] = self.anomalies
        return d


def check(history: History, contents: dict[str, dict[tuple[int, int], str]],
          idempotent: set[str] | None = None, push_groups: bool = True) -> CheckResult:
    """``idempotent``: the producer ids whose duplicates are anomalies (default all)."""
    r = CheckResult()
    sends = history.of("send")
    attempted = {o.value for o in sends if o.value is not None}
    acked = [o for o in sends if o.outcome == "ok"]
    r.attempted, r.acknowledged = len(attempted), len(acked)

    # The union of what the nodes hold, and disagreements between them.
    union: dict[tuple[int, int], str] = {}
    for node, held in sorted(contents.items()):
        for pos, body in held.items():
            prev = union.setdefault(pos, body)
            if prev != body:
                r.inconsistent.append({"queue_id": pos[0], "offset": pos[1], "node": node,
                                       "bodies": sorted({prev, body})})
    # A node missing an offset below its own end that some other node holds.
    for node, held in sorted(contents.items()):
        by_queue: dict[int, int] = {}
        for q, off in held:
            by_queue[q] = max(by_queue.get(q, -1), off)
        for (q, off) in union:
            if off <= by_queue.get(q, -1) and (q, off) not in held:
                r.lost_on_node.append({"node": node, "queue_id": q, "offset": off})

    where: dict[str, list[tuple[int, int]]] = {}
    for pos, body in union.items():
        where.setdefault(body, []).append(pos)

    # Lost: an acknowledged send not at its acknowledged position.
    by_producer: dict[str, list[Any]] = {}
    for o in acked:
        by_producer.setdefault(o.process, []).append(o)
    for proc, ops in by_producer.items():
        ops.sort(key=lambda o: o.invoke)
        present = [union.get((o.queue_id, o.offset)) == o.value for o in ops]
        first_ok = next((i for i, p in enumerate(present) if p), len(ops))
        last_ok = max((i for i, p in enumerate(present) if p), default=-1)
        for i, (o, p) in enumerate(zip(ops, present)):
            if p:
                continue
            r.lost.append(o.value)
            pos = "prefix" if i < first_ok else "postfix" if i > last_ok else "middle"
            r.lost_by_position[pos] += 1
        # Nonmonotonic: sequential sends to one queue must get growing offsets.
        last_off: dict[int, tuple[int, str]] = {}
        for o in ops:
            prev = last_off.get(o.queue_id)
            if prev is not None and o.offset is not None and o.offset <= prev[0]:
                r.nonmonotonic.append({"producer": proc, "queue_id": o.queue_id, "earlier": prev[1],
                                       "later": o.value, "offsets": [prev[0], o.offset]})
            if o.offset is not None:
                last_off[o.queue_id] = (o.offset, o.value)

    for body, positions in where.items():
        if body not in attempted:
            r.unexpected.append(body)
        elif len(positions) > 1:
            proc = body.split("-", 1)[0]
            if idempotent is None or proc in idempotent:
                r.duplicated.append(body)
            else:
                r.duplicated_non_idempotent += 1

    # Consumer side.
    commits: dict[tuple[str, int], int] = {}
    for o in sorted(history.of("commit"), key=lambda o: o.complete or o.invoke):
        if o.outcome != "ok" or o.offset is None or o.queue_id is None:
            continue
        key = (o.process, o.queue_id)
        if key in commits and o.offset < commits[key]:
            r.offsets_backwards.append({"group": o.process, "queue_id": o.queue_id, "from": commits[key],
                                        "to": o.offset})
        commits[key] = max(commits.get(key, 0), o.offset)
    if push_groups:
        delivered = {o.value for o in history.of("deliver")}
        if delivered or any(o.kind == "deliver" for o in history.ops):
            present_acked = {o.value for o in acked if union.get((o.queue_id, o.offset)) == o.value}
            r.undelivered = sorted(present_acked - delivered)
    return r


def failover_times(history: History, process: str) -> list[dict[str, Any]]:
    """For each leader kill: seconds from the kill to the first acknowledgement
    of a send by ``process`` invoked after it (write unavailability)."""
    out = []
    sends = sorted((o for o in history.of("send") if o.process == process and o.outcome == "ok"),
                   key=lambda o: o.invoke)
    for f in history.of("fault"):
        if f.value != "kill-leader":
            continue
        after = next((o for o in sends if o.invoke >= f.invoke), None)
        out.append({"at": round(f.invoke, 3), "node": f.node,
                    "seconds": None if after is None else round((after.complete or after.invoke) - f.invoke, 3)})
    return out
