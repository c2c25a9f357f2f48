"""The record of a chaos run: every operation, its outcome and its times.

One ``Op`` per operation, appended when it is invoked and completed in place
when its answer comes (or does not). Times are seconds since the start of the
run on the monotonic clock. ``outcome`` is Jepsen's:

- ``ok``: done (a send acknowledged, a pull answered, a fault injected);
- ``fail``: definitely not done (a 4xx, a refusal before anything was sent, a
  fault that could not be injected);
- ``info``: unknown (a timeout or a connection lost after the request left:
  a send may or may not have been stored).

Kinds of operation (``kind``) and what their fields hold:

| kind | process | node | value | queue_id, offset | detail |
|---|---|---|---|---|---|
| ``send`` | producer id (``p1``, ``r1``, ``steady``) | node that acked | message body (unique) | where it was stored | error text |
| ``pull`` | reader id | node read from | - | queue, first offset asked | ``messages``: ``[[offset, body], ...]`` |
| ``deliver`` | ``<group>/<consumer>`` | - | body | queue, offset | - |
| ``commit`` | consumer group | - | - | queue, offset stored (as answered) | ``asked``: offset sent |
| ``offsets`` | consumer group | node read from | - | - | ``offsets`` ``{queue: offset}``, ``incarnation``, ``final`` |
| ``fault`` | ``nemesis`` | target node ids | fault name | - | what was done, or why not |
| ``crash`` | ``nemesis`` | node id | exit status | - | log tail |
| ``converge`` | ``runner`` | - | - | - | applied indexes seen |

Appending is a ``list.append`` from the event loop's thread (or a worker
thread: the GIL makes one append atomic), so every asyncio task may record.
``dump`` writes JSON lines (gzip when the name ends in ``.gz``).
"""

from __future__ import annotations

import gzip
import json
from dataclasses import dataclass, fields
from typing import IO, Any, Final, Iterable, Iterator

OK: Final = "ok"
FAIL: Final = "fail"
INFO: Final = "info"

SEND: Final = "send"
PULL: Final = "pull"
DELIVER: Final = "deliver"
COMMIT: Final = "commit"
OFFSETS: Final = "offsets"
FAULT: Final = "fault"
CRASH: Final = "crash"
CONVERGE: Final = "converge"


@dataclass(slots=True)
class Op:
    """One operation. ``complete`` is None (and ``outcome`` None) while it is in flight."""

    process: str
    kind: str
    invoke: float
    complete: float | None = None
    outcome: str | None = None
    value: str | None = None
    queue_id: int | None = None
    offset: int | None = None
    node: str | None = None
    detail: dict[str, Any] | None = None

    def to_json(self) -> dict[str, Any]:
        return {f.name: getattr(self, f.name) for f in fields(self) if getattr(self, f.name) is not None}


_FIELDS = frozenset(f.name for f in fields(Op))


class History:
    """An append-only list of ``Op`` with the run's clock."""

    def __init__(self, ops: Iterable[Op] = (), *, clock: Any = None) -> None:
        self.ops: list[Op] = list(ops)
        self._clock = clock

    def now(self) -> float:
        if self._clock is None:
            raise RuntimeError("this history has no clock (built from a list)")
        return float(self._clock())

    def __len__(self) -> int:
        return len(self.ops)

    def __iter__(self) -> Iterator[Op]:
        return iter(self.ops)

    def add(self, op: Op) -> Op:
        self.ops.append(op)
        return op

    def invoke(self, process: str, kind: str, **kw: Any) -> Op:
        """Record the start of an operation now; complete it with ``complete``."""
        return self.add(Op(process, kind, self.now(), **kw))

    def complete(self, op: Op, outcome: str, **kw: Any) -> Op:
        op.complete = self.now()
        op.outcome = outcome
        for k, v in kw.items():
            setattr(op, k, v)
        return op

    def event(self, process: str, kind: str, outcome: str = OK, **kw: Any) -> Op:
        """An instantaneous operation (invoked and completed now)."""
        t = self.now()
        return self.add(Op(process, kind, t, t, outcome, **kw))

    def of(self, kind: str) -> list[Op]:
        return [o for o in self.ops if o.kind == kind]

    def finish_pending(self) -> int:
        """Mark operations still in flight as unknown (the run ended under them)."""
        n = 0
        for o in self.ops:
            if o.outcome is None:
                o.outcome = INFO
                n += 1
        return n

    # -- JSON lines ---------------------------------------------------------------
    def write(self, f: IO[str]) -> None:
        for o in self.ops:
            f.write(json.dumps(o.to_json(), separators=(",", ":")))
            f.write("\n")

    def dump(self, path: str) -> None:
        opener = gzip.open if str(path).endswith(".gz") else open
        with opener(path, "wt", encoding="utf-8") as f:  # type: ignore[operator]
            self.write(f)

    @classmethod
    def parse(cls, lines: Iterable[str]) -> "History":
        ops = []
        for line in lines:
            if line.strip():
                d = json.loads(line)
                ops.append(Op(**{k: v for k, v in d.items() if k in _FIELDS}))
        return cls(ops)

    @classmethod
    def load(cls, path: str) -> "History":
        opener = gzip.open if str(path).endswith(".gz") else open
        with opener(path, "rt", encoding="utf-8") as f:  # type: ignore[operator]
            return cls.parse(f)
