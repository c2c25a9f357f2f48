"""The record of a chaos run: every operation with its outcome and times.

Times are seconds since the start of the run (``time.monotonic`` based).
``outcome`` is ``ok`` (acknowledged), ``fail`` (definitely not done: a 4xx,
or refused before sending) or ``info`` (outcome unknown: a timeout, a
connection lost mid-request).
"""

from __future__ import annotations

import json
from dataclasses import asdict, dataclass, field
from typing import Any, Iterable


@dataclass(slots=True)
class Op:
    process: str  # producer or consumer id, or "nemesis"
    kind: str  # send | deliver | commit | fault
    invoke: float
    complete: float | None = None
    outcome: str = "ok"
    value: str | None = None  # the message body (unique per send)
    queue_id: int | None = None
    offset: int | None = None
    node: str | None = None
    detail: dict[str, Any] = field(default_factory=dict)


@dataclass(slots=True)
class History:
    ops: list[Op] = field(default_factory=list)

    def add(self, op: Op) -> Op:
        self.ops.append(op)
        return op

    def of(self, kind: str) -> list[Op]:
        return [o for o in self.ops if o.kind == kind]

    def dump(self, path: str) -> None:
        with open(path, "w") as f:
            for o in self.ops:
                f.write(json.dumps(asdict(o)) + "\n")

    @classmethod
    def load(cls, lines: Iterable[str]) -> "History":
        return cls([Op(**json.loads(line)) for line in lines if line.strip()])
