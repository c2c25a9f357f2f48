"""The fault schedule of a chaos run: pure, planned up front from the seed.

``plan`` lays out one fault at a time: the first after ``warmup_s``, then one
every ``interval_s`` (jittered by up to a quarter in ``random`` mode), each
lasting ``fault_s`` (a pause or partition lasts that long; a killed node
stays down that long), the last ending ``settle_s`` before the run does.
``random`` draws each fault from the weighted mix; ``cycle`` takes them in
turn. Every choice the nemesis makes later (which node among the live ones,
which partition shape, how many bytes to tear, which file to damage and how,
and a seed for the damage's own draws: which entry, byte and bit) is drawn
here, so a seed replays the same schedule; only "the leader" and what the
target's files hold are known when the fault starts.

Storage faults (on the target, stopped with SIGKILL first, restarted after):
``torn-tail`` (the last bytes of its last log segment), ``corrupt`` (one bit of
a committed log entry, ``how`` says header or body), ``corrupt-derived`` (a
derived file: ``target`` consumequeue, indexfile or checkpoint, damaged as
``how`` says, see ``chaos.damage.DERIVED``), ``wipe`` (the whole data
directory). ``kill-all`` stops every node at once. ``forge`` sends forged peer
frames to the target from a process without the cluster secret
(``chaos.forge_fault``).
"""

from __future__ import annotations

import random
from dataclasses import asdict, dataclass
from typing import Any, Final, Mapping

from raftmq.chaos.damage import DERIVED

FAULTS: Final = ("kill-leader", "kill", "pause-leader", "pause", "partition", "torn-tail", "wipe", "corrupt",
                 "corrupt-derived", "kill-all", "forge")
DEFAULT_FAULTS: Final = ("kill-leader", "kill", "pause-leader", "pause", "partition")
PARTITIONS: Final = ("isolate-leader", "halves", "ring")
LEADER_FAULTS: Final = frozenset({"kill-leader", "pause-leader"})
CORRUPT_REGIONS: Final = ("header", "body")


@dataclass(slots=True, frozen=True)
class PlannedFault:
    """One fault. ``pick`` (0..1) chooses the target among candidates sorted by
    node id; ``shape`` is the partition's; ``tear_bytes`` and ``corrupt`` say
    how a torn tail is torn; ``target`` and ``how`` say what ``corrupt`` /
    ``corrupt-derived`` damage, and ``damage_seed`` seeds their draws."""

    at_s: float
    fault: str
    duration_s: float
    pick: float
    shape: str | None = None
    tear_bytes: int = 0
    corrupt: bool = False
    target: str | None = None
    how: str | None = None
    damage_seed: int = 0

    def to_json(self) -> dict[str, Any]:
        return {k: v for k, v in asdict(self).items() if v not in (None, 0, False) or k in ("at_s", "pick")}


def parse_mix(text: str) -> dict[str, float]:
    """``"all"``, ``"kill-leader,pause"`` or with weights ``"kill-leader=3,partition=1"``."""
    text = text.strip()
    if text in ("", "all"):
        return {f: 1.0 for f in (FAULTS if text == "all" else DEFAULT_FAULTS)}
    mix: dict[str, float] = {}
    for part in text.split(","):
        part = part.strip()
        if not part:
            continue
        name, _, weight = part.partition("=")
        name = name.strip()
        if name == "all":
            for f in FAULTS:
                mix.setdefault(f, 1.0)
            continue
        if name not in FAULTS:
            raise ValueError(f"faults: unknown fault {name!r}; choose from {', '.join(FAULTS)} (or 'all')")
        try:
            w = float(weight) if weight else 1.0
        except ValueError:
            raise ValueError(f"faults: weight of {name} must be a number, not {weight!r}") from None
        if w < 0:
            raise ValueError(f"faults: weight of {name} must not be negative")
        mix[name] = w
    if not any(w > 0 for w in mix.values()):
        raise ValueError("faults: at least one fault with a positive weight is needed")
    return mix


def plan(seed: int, mix: Mapping[str, float], *, duration_s: float, interval_s: float, fault_s: float,
         mode: str = "random", warmup_s: float = 3.0, settle_s: float = 2.0) -> list[PlannedFault]:
    """The faults of a run, in order of start (see the module docstring)."""
    if mode not in ("random", "cycle"):
        raise ValueError(f"schedule: 'random' or 'cycle', not {mode!r}")
    rng = random.Random(seed)
    names = [f for f in FAULTS if mix.get(f, 0) > 0]
    weights = [mix[f] for f in names]
    if not names:
        return []
    out: list[PlannedFault] = []
    t = warmup_s
    k = 0
    while True:
        dur = fault_s if mode == "cycle" else round(fault_s * rng.uniform(0.75, 1.25), 3)
        if t + dur + settle_s > duration_s:
            break
        name = names[k % len(names)] if mode == "cycle" else rng.choices(names, weights)[0]
        shape = None
        if name == "partition":
            shape = rng.choice(PARTITIONS)
        p = round(rng.random(), 6)
        # Draws only for the faults that use them, so adding a fault kind leaves the
        # schedules of the others (for a seed and mix without it) as they were.
        extra: dict[str, Any] = {}
        if name == "torn-tail":
            extra = {"tear_bytes": rng.randint(1, 4096), "corrupt": rng.random() < 0.5}
        elif name == "corrupt":
            extra = {"target": "log", "how": rng.choice(CORRUPT_REGIONS), "damage_seed": rng.randrange(1 << 31)}
        elif name == "corrupt-derived":
            target = rng.choice(sorted(DERIVED))
            extra = {"target": target, "how": rng.choice(DERIVED[target]), "damage_seed": rng.randrange(1 << 31)}
        out.append(PlannedFault(round(t, 3), name, dur, p, shape, **extra))
        k += 1
        step = interval_s if mode == "cycle" else interval_s * rng.uniform(0.75, 1.25)
        t += max(step, dur + 0.5)
    return out


def pick(candidates: list[str], p: float) -> str:
    """The candidate that ``p`` (0..1) falls on, among ids sorted."""
    c = sorted(candidates)
    return c[min(len(c) - 1, int(p * len(c)))]
