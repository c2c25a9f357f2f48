"""The chaos checker: pure functions over a run's history and what every node
holds at the end, in the manner of Jepsen's total-queue and Kafka checkers.

``check(history, contents, non_idempotent=..., unread=..., unreadable=...,
lookups=..., logs=...)``: ``contents`` maps each node drained after healing to
``{(queue_id, offset): body}``; ``unread`` names the nodes that could not be
read at all (and why); ``unreadable`` maps a node to the offsets it answered
with an error (and the error); ``lookups`` maps a node to what its lookups by
key answered (the positions found, or an error); ``logs`` maps a node to its
Raft log's committed entries as read from its disk after the run
(``chaos.damage.log_entries``). Every node of the group is
in ``contents`` or ``unread``. Message bodies are unique per send
(``p3-000123``) and are their messages' keys, which is what makes the checks
below exact.

Anomalies (any one fails the run):

- ``lost``: an acknowledged send whose body is on no node. Split by where it
  sits in its producer's acknowledged sends (in invocation order): before the
  first one still present (``prefix``), after the last one (``postfix``), or
  between (``middle``, the worst sign); a producer with none left counts all
  as ``prefix``.
- ``unexpected``: a body read (finally or during the run) that no send ever
  attempted, or whose send definitely failed.
- ``inconsistent``: one (queue, offset) seen holding different bodies: on
  different nodes at the end, or by different reads (acknowledgements, pulls,
  deliveries) against each other or the end; or an acknowledged body found at
  another offset than the acknowledged one.
- ``duplicated``: one body at two offsets, from an idempotent producer (a
  non-idempotent producer's duplicates are expected: counted apart).
- ``nonmonotonic``: a producer's send acknowledged before another of its
  sends was invoked, to the same queue, but at a later (or equal) offset.
- ``gaps``: an offset below a queue's end that no node holds (queues are dense).
- ``lost_on_node``: a node lacking, at the end, what another node holds
  (with the error when the node answered one for that offset).
- ``unread_nodes``: a node that could not be read at the end (down, crashed,
  or not answering): everything acknowledged is missing on it.
- ``lookup_failed``: a lookup by key on a node that did not find a message
  that node holds (or answered an error, or found it elsewhere).
- ``log_mismatch``: a committed log index whose entry differs between nodes
  (term, kind, size or body CRC), or whose frame on a node is damaged (Raft's
  Log Matching: a damaged entry must be repaired, never accepted as it is).
- ``offsets_backwards``: a consumer group's committed offset seen going
  back: in the answers to its commits (in real-time order), in one node's
  answers over one process lifetime, or at the end compared with anything
  seen committed before.
- ``undelivered``: an acknowledged message present at the end that a push
  consumer group never delivered.
- ``crashes``: a node process that exited without being killed.
- ``not_converged``: after healing the nodes never agreed on one applied index.

``CheckResult.per_node`` says, for every node, whether it was read, how
many messages it holds, and how many acknowledged messages it lacks.

``availability(history)`` gives, for each fault, how long writes were refused
or hung, the failover time after each leader kill, and send latency
percentiles by phase (no fault, or which fault was active).
"""

from __future__ import annotations

import bisect
import heapq
import math
from collections import defaultdict
from dataclasses import dataclass, field
from typing import Any, Final, Iterable, Mapping

from raftmq.chaos.history import COMMIT, CONVERGE, CRASH, DELIVER, FAIL, FAULT, OFFSETS, OK, PULL, SEND, History, Op

Pos = tuple[int, int]  # (queue_id, queue offset)
Contents = Mapping[str, Mapping[Pos, str]]

ANOMALIES: Final = ("lost", "unexpected", "inconsistent", "duplicated", "nonmonotonic", "gaps", "lost_on_node",
                    "unread_nodes", "lookup_failed", "log_mismatch", "offsets_backwards", "undelivered", "crashes",
                    "not_converged")
PER_NODE_EXAMPLES: Final = 5
MAX_SOURCES: Final = 4  # sources kept per body of an inconsistent offset
FAILOVER_GOAL_P50_S: Final = 0.25
FAILOVER_GOAL_MAX_S: Final = 1.5


@dataclass(slots=True)
class CheckResult:
    """Every anomaly found (lists of plain dicts, JSON-ready) and the counts."""

    attempted: int = 0
    acknowledged: int = 0
    failed: int = 0
    unknown: int = 0
    unknown_present: int = 0  # sends of unknown outcome that were in fact stored
    present: int = 0  # distinct (queue, offset) held at the end
    delivered: int = 0
    nodes: list[str] = field(default_factory=list)
    lost: list[dict[str, Any]] = field(default_factory=list)
    lost_by_position: dict[str, int] = field(default_factory=lambda: {"prefix": 0, "middle": 0, "postfix": 0})
    unexpected: list[dict[str, Any]] = field(default_factory=list)
    inconsistent: list[dict[str, Any]] = field(default_factory=list)
    duplicated: list[dict[str, Any]] = field(default_factory=list)
    duplicated_non_idempotent: list[dict[str, Any]] = field(default_factory=list)
    nonmonotonic: list[dict[str, Any]] = field(default_factory=list)
    gaps: list[dict[str, Any]] = field(default_factory=list)
    lost_on_node: list[dict[str, Any]] = field(default_factory=list)
    unread_nodes: list[dict[str, Any]] = field(default_factory=list)
    lookup_failed: list[dict[str, Any]] = field(default_factory=list)
    log_mismatch: list[dict[str, Any]] = field(default_factory=list)
    # node -> read, why (not read), held, missing (of what any node holds),
    # unreadable (offsets answered with an error), acked_missing, examples
    per_node: dict[str, dict[str, Any]] = field(default_factory=dict)
    offsets_backwards: list[dict[str, Any]] = field(default_factory=list)
    undelivered: list[dict[str, Any]] = field(default_factory=list)
    crashes: list[dict[str, Any]] = field(default_factory=list)
    not_converged: list[dict[str, Any]] = field(default_factory=list)

    def counts(self) -> dict[str, int]:
        return {k: len(getattr(self, k)) for k in ANOMALIES}

    @property
    def anomalies(self) -> int:
        return sum(self.counts().values())

    @property
    def ok(self) -> bool:
        return self.anomalies == 0

    def summary(self, examples: int = 20) -> dict[str, Any]:
        """Counts and the first ``examples`` of each anomaly, for the report."""
        out: dict[str, Any] = {
            "anomalies": self.anomalies, "counts": self.counts(), "attempted": self.attempted,
            "acknowledged": self.acknowledged, "failed": self.failed, "unknown": self.unknown,
            "unknown_present": self.unknown_present, "present": self.present, "delivered": self.delivered,
            "nodes": self.nodes, "lost_by_position": dict(self.lost_by_position),
            "duplicated_non_idempotent": {"count": len(self.duplicated_non_idempotent),
                                          "examples": self.duplicated_non_idempotent[:examples]},
        }
        for k in ANOMALIES:
            items = getattr(self, k)
            out[k] = {"count": len(items), "examples": items[:examples]}
        by_node: dict[str, int] = defaultdict(int)
        for x in self.lost_on_node:
            by_node[x["node"]] += 1
        out["lost_on_node"]["by_node"] = dict(by_node)
        out["per_node"] = self.per_node
        return out


class _Observations:
    """What each (queue, offset) was seen holding, and by whom; conflicts found on the way."""

    def __init__(self) -> None:
        self.final: dict[Pos, str] = {}  # the union of what the nodes hold at the end
        self.read_only: dict[Pos, tuple[str, str]] = {}  # offsets no node holds at the end: first read
        self.conflicts: dict[Pos, dict[str, list[str]]] = {}

    def conflict(self, pos: Pos, body: str, source: str) -> None:
        srcs = self.conflicts.setdefault(pos, {}).setdefault(body, [])
        if len(srcs) < MAX_SOURCES:
            srcs.append(source)

    def see(self, pos: Pos, body: str, source: str) -> None:
        ref = self.final.get(pos)
        if ref is None:
            first = self.read_only.setdefault(pos, (body, source))
            if first[0] != body:
                self.conflict(pos, first[0], first[1])
                self.conflict(pos, body, source)
        elif ref != body:
            self.conflict(pos, ref, "final")
            self.conflict(pos, body, source)

    def load_final(self, contents: Contents) -> None:
        """The union of what the nodes hold; offsets they disagree on are conflicts."""
        disagree: set[Pos] = set()
        for node in sorted(contents):
            for pos, body in contents[node].items():
                if self.final.setdefault(pos, body) != body:
                    disagree.add(pos)
        for pos in sorted(disagree):
            for node in sorted(contents):
                held = contents[node].get(pos)
                if held is not None:
                    self.conflict(pos, held, f"final@{node}")


def check(history: History | Iterable[Op], contents: Contents, *, non_idempotent: Iterable[str] = (),
          unread: Mapping[str, str] | None = None,
          unreadable: Mapping[str, Mapping[Pos, str]] | None = None,
          lookups: Mapping[str, Mapping[str, list[Pos] | str]] | None = None,
          logs: Mapping[str, Mapping[int, Any]] | None = None) -> CheckResult:
    """Check a run. ``non_idempotent``: producer ids whose duplicates are expected;
    ``unread``, ``unreadable``, ``lookups`` and ``logs``: see the module docstring."""
    ops = list(history)
    non_idem = set(non_idempotent)
    unread = dict(unread or {})
    unreadable = unreadable or {}
    r = CheckResult(nodes=sorted(set(contents) | set(unread)))
    sends = [o for o in ops if o.kind == SEND]
    producer_of = {o.value: o.process for o in sends if o.value is not None}
    failed_bodies = {o.value for o in sends if o.outcome == FAIL}
    acked = [o for o in sends if o.outcome == OK]
    r.attempted, r.acknowledged = len(sends), len(acked)
    r.failed = sum(1 for o in sends if o.outcome == FAIL)
    r.unknown = len(sends) - r.acknowledged - r.failed

    obs = _Observations()
    obs.load_final(contents)
    union = obs.final
    r.present = len(union)
    where: dict[str, list[Pos]] = defaultdict(list)
    for pos, body in union.items():
        where[body].append(pos)

    # Unexpected: read anywhere, never sent (or sent and definitely failed).
    flagged: set[str] = set()

    def unexpected(body: str, source: str, pos: Pos) -> None:
        if body in flagged or (body in producer_of and body not in failed_bodies):
            return
        flagged.add(body)
        why = "never sent" if body not in producer_of else "its send failed"
        r.unexpected.append({"body": body, "why": why, "source": source, "queue_id": pos[0], "offset": pos[1]})

    # Reads during the run (acknowledgements, pulls, deliveries) must agree with each other and the end.
    for o in acked:
        if o.queue_id is not None and o.offset is not None and o.value is not None:
            obs.see((o.queue_id, o.offset), o.value, f"ack:{o.process}@{o.node}")
    for o in ops:
        if o.outcome != OK:
            continue
        if o.kind == PULL and o.detail and o.queue_id is not None:
            for off, body in o.detail.get("messages", ()):
                pos = (o.queue_id, off)
                obs.see(pos, body, f"pull@{o.node} t={o.invoke:.2f}")
                unexpected(body, f"pull@{o.node}", pos)
        elif o.kind == DELIVER and o.value is not None and o.queue_id is not None and o.offset is not None:
            obs.see((o.queue_id, o.offset), o.value, f"deliver:{o.process}")
            unexpected(o.value, f"deliver:{o.process}", (o.queue_id, o.offset))
    for body, positions in where.items():
        unexpected(body, "final", min(positions))

    # Lost; and acknowledged bodies found elsewhere than where the ack said.
    by_producer: dict[str, list[Op]] = defaultdict(list)
    for o in acked:
        by_producer[o.process].append(o)
    for proc in sorted(by_producer):
        pops = sorted(by_producer[proc], key=lambda o: o.invoke)
        present = [o.value in where for o in pops]
        first = next((i for i, p in enumerate(present) if p), None)
        last = max((i for i, p in enumerate(present) if p), default=-1)
        for i, (o, p) in enumerate(zip(pops, present)):
            if p:
                if o.queue_id is not None and o.offset is not None:
                    pos = (o.queue_id, o.offset)
                    if pos not in where[o.value]:  # type: ignore[index]
                        obs.conflict(pos, o.value, f"ack:{proc}")  # type: ignore[arg-type]
                        for q, off in where[o.value]:  # type: ignore[index]
                            obs.conflict(pos, f"<{o.value} found at queue {q} offset {off}>", "final")
                continue
            position = "prefix" if first is None or i < first else "postfix" if i > last else "middle"
            r.lost_by_position[position] += 1
            r.lost.append({"producer": proc, "body": o.value, "queue_id": o.queue_id, "offset": o.offset,
                           "acked_at": round(o.complete or o.invoke, 3), "node": o.node, "position": position})
        r.nonmonotonic += _nonmonotonic(proc, pops)
    r.unknown_present = sum(1 for o in sends if o.outcome not in (OK, FAIL) and o.value in where)

    for pos in sorted(obs.conflicts):
        seen = obs.conflicts[pos]
        if len(seen) > 1:
            r.inconsistent.append({"queue_id": pos[0], "offset": pos[1], "seen": seen})

    for body in sorted(where):
        positions = where[body]
        if len(positions) > 1:
            sender = producer_of.get(body)
            item = {"body": body, "producer": sender, "positions": sorted(positions)}
            (r.duplicated_non_idempotent if sender in non_idem else r.duplicated).append(item)

    # Dense queues: every offset below a queue's end is held by some node.
    by_queue: dict[int, list[int]] = defaultdict(list)
    for q, off in union:
        by_queue[q].append(off)
    for q in sorted(by_queue):
        expect = 0
        for off in sorted(by_queue[q]):
            if off > expect:
                r.gaps.append({"queue_id": q, "from": expect, "to": off - 1})
            expect = off + 1
    for node in sorted(contents):
        held = contents[node]
        errors = unreadable.get(node, {})
        for pos in sorted(set(union) - set(held)):
            item = {"node": node, "queue_id": pos[0], "offset": pos[1], "body": union[pos]}
            if pos in errors:
                item["error"] = errors[pos]
            r.lost_on_node.append(item)
    for node in sorted(unread):
        r.unread_nodes.append({"node": node, "why": unread[node]})
    lookups = lookups or {}
    for node in sorted(lookups):
        at = {body: pos for pos, body in contents.get(node, {}).items()}
        for key, found in sorted(lookups[node].items()):
            pos = at.get(key)
            if pos is None:
                continue  # not held by the node: reported as lost_on_node already
            if isinstance(found, str):
                problem = f"error: {found}"
            elif pos not in [tuple(p) for p in found]:
                problem = "not found" if not found else f"found at {sorted(tuple(p) for p in found)}"
            else:
                continue
            r.lookup_failed.append({"node": node, "key": key, "queue_id": pos[0], "offset": pos[1],
                                    "problem": problem})
    r.log_mismatch = log_mismatches(logs or {})
    r.per_node = _per_node(r.nodes, contents, unread, unreadable, acked, union)
    for node, pn in r.per_node.items():
        pn["lookups"] = len(lookups.get(node, {}))
        pn["lookup_failed"] = sum(1 for x in r.lookup_failed if x["node"] == node)

    r.offsets_backwards = _offsets_backwards(ops)

    # Push consumer groups: every acknowledged message still present was delivered at least once.
    delivered: dict[str, set[str]] = defaultdict(set)
    for o in ops:
        if o.kind == DELIVER and o.value is not None:
            delivered[o.process.split("/", 1)[0]].add(o.value)
    r.delivered = sum(len(v) for v in delivered.values())
    present_acked = sorted({o.value for o in acked if o.value in where})  # type: ignore[misc]
    for group in sorted(delivered):
        for body in present_acked:
            if body not in delivered[group]:
                q, off = min(where[body])
                r.undelivered.append({"group": group, "body": body, "queue_id": q, "offset": off})

    for o in ops:
        if o.kind == CRASH:
            r.crashes.append({"node": o.node, "at": round(o.invoke, 3), "exit": o.value, **(o.detail or {})})
        elif o.kind == CONVERGE and o.outcome == FAIL:
            r.not_converged.append({"at": round(o.invoke, 3), **(o.detail or {})})
    return r


def log_mismatches(logs: Mapping[str, Mapping[int, Any]]) -> list[dict[str, Any]]:
    """Indexes where the nodes' logs (``{node: {index: (term, kind, size, body crc) or
    a problem}}``, committed entries only) disagree, or a node holds a damaged
    frame. Indexes a node does not hold (compacted, or before a snapshot it
    installed) are not compared for it."""
    out = []
    for index in sorted(set().union(*(set(v) for v in logs.values())) if logs else ()):
        seen = {node: logs[node][index] for node in sorted(logs) if index in logs[node]}
        values = list(seen.values())
        if any(isinstance(v, str) for v in values) or any(tuple(v) != tuple(values[0]) for v in values[1:]):
            out.append({"index": index, "seen": {n: (v if isinstance(v, str) else
                                                     dict(zip(("term", "kind", "size", "body_crc"), v)))
                                                 for n, v in seen.items()}})
    return out


def _per_node(nodes: list[str], contents: Contents, unread: Mapping[str, str],
              unreadable: Mapping[str, Mapping[Pos, str]], acked: list[Op],
              union: Mapping[Pos, str]) -> dict[str, dict[str, Any]]:
    """What each node holds and lacks: acknowledged messages missing on it, wherever
    they were acknowledged (a node not read lacks them all)."""
    out: dict[str, dict[str, Any]] = {}
    for node in nodes:
        held = contents.get(node)
        if held is None:
            out[node] = {"read": False, "why": unread.get(node, "not read"), "held": 0, "missing": len(union),
                         "unreadable": 0, "acked_missing": len(acked), "examples": []}
            continue
        bodies = set(held.values())
        missing = [o for o in acked if o.value not in bodies]
        out[node] = {"read": True, "held": len(held), "missing": len(set(union) - set(held)),
                     "unreadable": len(unreadable.get(node, {})), "acked_missing": len(missing),
                     "examples": [{"body": o.value, "queue_id": o.queue_id, "offset": o.offset}
                                  for o in missing[:PER_NODE_EXAMPLES]]}
    return out


def _nonmonotonic(proc: str, ops: list[Op]) -> list[dict[str, Any]]:
    """A send acknowledged before another was invoked must sit at a lower offset of its queue."""
    out = []
    # (invoke, complete, queue, offset, body) of every placed send, by invocation
    placed = sorted((o.invoke, o.complete, o.queue_id, o.offset, o.value) for o in ops
                    if o.queue_id is not None and o.offset is not None and o.complete is not None)
    done: list[tuple[float, int, int, int, str | None]] = []  # heap by completion: (complete, i, queue, offset, body)
    best: dict[int, tuple[int, str | None]] = {}  # per queue, the highest offset of a send completed so far
    for i, (invoke, complete, q, off, body) in enumerate(placed):  # type: ignore[misc]
        while done and done[0][0] < invoke:
            _, _, dq, doff, dbody = heapq.heappop(done)
            if dq not in best or doff > best[dq][0]:
                best[dq] = (doff, dbody)
        prev = best.get(q)
        if prev is not None and off <= prev[0]:
            out.append({"producer": proc, "queue_id": q, "earlier": prev[1], "earlier_offset": prev[0],
                        "later": body, "later_offset": off, "at": round(invoke, 3)})
        heapq.heappush(done, (complete, i, q, off, body))
    return out


def _offsets_backwards(ops: list[Op]) -> list[dict[str, Any]]:
    out: list[dict[str, Any]] = []
    seen_max: dict[tuple[str, int], int] = {}
    # 1. Answers to commits, in real-time order: the stored offset never decreases.
    commits: dict[tuple[str, int], list[Op]] = defaultdict(list)
    for o in ops:
        if o.kind == COMMIT and o.outcome == OK and o.queue_id is not None and o.offset is not None:
            commits[(o.process, o.queue_id)].append(o)
    for key, cops in sorted(commits.items()):
        answers = sorted((o.invoke, o.complete or o.invoke, o.offset or 0) for o in cops)
        done: list[tuple[float, int]] = []  # heap of (complete, offset)
        best = -1
        for invoke, complete, off in answers:
            while done and done[0][0] < invoke:
                best = max(best, heapq.heappop(done)[1])
            if off < best:
                out.append({"group": key[0], "queue_id": key[1], "from": best, "to": off,
                            "seen": "answers to commits", "at": round(invoke, 3)})
            heapq.heappush(done, (complete, off))
        seen_max[key] = max(a[2] for a in answers)
    # 2. One node over one process lifetime: its answers never go back.
    reads = sorted((o for o in ops if o.kind == OFFSETS and o.outcome == OK and o.detail),
                   key=lambda o: o.complete or o.invoke)
    per_node: dict[tuple[str, Any, str, int], int] = {}
    for o in reads:
        d = o.detail or {}
        if d.get("final"):
            continue
        for q, off in (d.get("offsets") or {}).items():
            life = (o.node or "?", d.get("incarnation"), o.process, int(q))
            v = -1 if off is None else int(off)
            prev = per_node.get(life)
            if prev is not None and v < prev:
                out.append({"group": o.process, "queue_id": int(q), "from": prev, "to": v, "node": o.node,
                            "seen": "one node's answers", "at": round(o.invoke, 3)})
            per_node[life] = v if prev is None else max(prev, v)
            seen_max[(o.process, int(q))] = max(seen_max.get((o.process, int(q)), -1), v)
    # 3. At the end every node holds at least what was ever seen committed.
    for o in reads:
        d = o.detail or {}
        if not d.get("final"):
            continue
        for q, off in (d.get("offsets") or {}).items():
            v = -1 if off is None else int(off)
            before = seen_max.get((o.process, int(q)), -1)
            if v < before:
                out.append({"group": o.process, "queue_id": int(q), "from": before, "to": v, "node": o.node,
                            "seen": "final answer below an earlier one", "at": round(o.invoke, 3)})
    return out


# ---------------------------------------------------------------------------------
# availability
# ---------------------------------------------------------------------------------
def percentile(xs: Iterable[float], q: float) -> float | None:
    """Nearest-rank percentile (``q`` in 0..1); None for no data."""
    s = sorted(xs)
    if not s:
        return None
    k = min(len(s) - 1, max(0, math.ceil(q * len(s)) - 1))
    return round(s[k], 4)


def _stats(xs: list[float]) -> dict[str, Any]:
    return {"count": len(xs), "p50_s": percentile(xs, 0.5), "p90_s": percentile(xs, 0.9),
            "p99_s": percentile(xs, 0.99), "max_s": round(max(xs), 4) if xs else None}


def fault_windows(ops: Iterable[Op]) -> list[Op]:
    """Faults that were injected, in order of start."""
    return sorted((o for o in ops if o.kind == FAULT and o.outcome == OK), key=lambda o: o.invoke)


def availability(history: History | Iterable[Op], steady: str = "steady", settle_s: float = 5.0) -> dict[str, Any]:
    """Write availability around each fault, measured on the ``steady`` sender
    (one send every few milliseconds, never waiting for the previous one):

    - ``unavailable_s``: from the fault's start to the first acknowledgement of
      a send invoked after it (after a leader kill: the failover time);
    - ``longest_gap_s``: the longest time without any acknowledgement from the
      fault's start to ``settle_s`` after its end (or the next fault's start);
    - ``refused`` / ``unknown``: sends invoked during the fault that failed or
      whose outcome is unknown.

    Plus ``failover``: ``unavailable_s`` of every leader kill (p50, max, and
    whether the goal of 0.25 s median, 1.5 s worst is met) and
    ``latency_by_phase``: acknowledged send latency of every producer with no
    fault active (``calm``) or under each kind of fault."""
    ops = list(history)
    steady_sends = sorted((o for o in ops if o.kind == SEND and o.process == steady), key=lambda o: o.invoke)
    acked = [(o.invoke, o.complete) for o in steady_sends if o.outcome == OK and o.complete is not None]
    invokes = [a[0] for a in acked]  # acked is sorted by invoke too
    suffix_min = [0.0] * len(acked)  # earliest completion among acked sends invoked at or after i
    m = float("inf")
    for i in range(len(acked) - 1, -1, -1):
        m = min(m, acked[i][1])  # type: ignore[type-var]
        suffix_min[i] = m
    ack_times: list[float] = sorted(a[1] for a in acked)  # type: ignore[misc]
    all_invokes = [o.invoke for o in steady_sends]

    faults: list[dict[str, Any]] = []
    windows = fault_windows(ops)
    for k, f in enumerate(windows):
        start, end = f.invoke, f.complete if f.complete is not None else f.invoke
        i = bisect.bisect_left(invokes, start)
        unavailable = round(suffix_min[i] - start, 4) if i < len(acked) else None
        w_end = end + settle_s if k + 1 == len(windows) else max(end, min(end + settle_s, windows[k + 1].invoke))
        lo, hi = bisect.bisect_left(ack_times, start), bisect.bisect_right(ack_times, w_end)
        # Up to the window's end, or the last acknowledgement of the run if that came earlier.
        points = [start, *ack_times[lo:hi], min(w_end, ack_times[-1]) if ack_times else start]
        gap = max((b - a for a, b in zip(points, points[1:])), default=0.0)
        a, b = bisect.bisect_left(all_invokes, start), bisect.bisect_right(all_invokes, end)
        window = steady_sends[a:b]
        faults.append({"fault": f.value, "nodes": f.node, "start": round(start, 3), "end": round(end, 3),
                       "unavailable_s": unavailable, "longest_gap_s": round(max(gap, 0.0), 4),
                       "refused": sum(1 for o in window if o.outcome == FAIL),
                       "unknown": sum(1 for o in window if o.outcome not in (OK, FAIL)),
                       **({"detail": f.detail} if f.detail else {})})
    kills: list[float | None] = [x["unavailable_s"] for x in faults if x["fault"] == "kill-leader"]
    measured = [x for x in kills if x is not None]
    p50, worst = percentile(measured, 0.5), (round(max(measured), 4) if measured else None)
    met = None
    if kills:
        met = bool(len(measured) == len(kills) and p50 is not None and worst is not None
                   and p50 <= FAILOVER_GOAL_P50_S and worst <= FAILOVER_GOAL_MAX_S)
    failover = {"count": len(kills), "unmeasured": len(kills) - len(measured), "p50_s": p50, "max_s": worst,
                "each_s": kills, "goal": {"p50_s": FAILOVER_GOAL_P50_S, "max_s": FAILOVER_GOAL_MAX_S}, "goal_met": met}
    return {"faults": faults, "failover": failover, "latency_by_phase": latency_by_phase(ops)}


def latency_by_phase(ops: Iterable[Op]) -> dict[str, dict[str, Any]]:
    """Acknowledged send latency (seconds) by what was going on when the send started."""
    ops = list(ops)
    windows = fault_windows(ops)
    starts = [w.invoke for w in windows]
    phases: dict[str, list[float]] = defaultdict(list)
    for o in ops:
        if o.kind != SEND or o.outcome != OK or o.complete is None:
            continue
        i = bisect.bisect_right(starts, o.invoke) - 1
        phase = "calm"
        if i >= 0:
            w = windows[i]
            if o.invoke <= (w.complete if w.complete is not None else w.invoke):
                phase = str(w.value)
        phases[phase].append(o.complete - o.invoke)
    return {k: _stats(v) for k, v in sorted(phases.items())}
