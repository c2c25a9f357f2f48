"""Seeded random simulation of dledger clusters (see ``cluster.py``).

Each seed is its own test: 3- or 5-node groups, one of several fault mixes
(calm, lossy, partitions, crashes, chaos), a fault phase of
``RAFTMQ_SIM_STEPS`` steps with every invariant checked after every step,
then a liveness phase. A failing seed prints its last 200 events and the
command that replays it exactly.

Environment:

- ``RAFTMQ_SIM_SEEDS``: how many seeds the default run covers (default 500;
  plus an eighth of that for each harsher mix of ``cluster.EXTRA_MIXES``);
- ``RAFTMQ_SIM_STEPS``: fault-phase steps per seed (default 3000);
- ``RAFTMQ_SIM_SEED``: replay this one seed (``test_replay``), with
  ``RAFTMQ_SIM_NODES`` / ``RAFTMQ_SIM_MIX`` if the failure named them;
- ``RAFTMQ_SIM_SLOW_SEEDS``: seeds per chunk of the opt-in slow run
  (``-m slow``; default 500 per chunk, 20 chunks, 5000 steps each).

``regression_seeds.txt`` lists every seed that ever failed; they always run.
"""

from __future__ import annotations

import hashlib
import os
import subprocess
import sys
from pathlib import Path

import pytest

from .cluster import EXTRA_MIXES, SimFailure, run_seed, seed_plan

HERE = Path(__file__).resolve().parent
ROOT = HERE.parent.parent

SEEDS = int(os.environ.get("RAFTMQ_SIM_SEEDS", "500"))
STEPS = int(os.environ.get("RAFTMQ_SIM_STEPS", "3000"))
ONE_SEED = os.environ.get("RAFTMQ_SIM_SEED")
NODES = int(os.environ["RAFTMQ_SIM_NODES"]) if os.environ.get("RAFTMQ_SIM_NODES") else None
MIX = os.environ.get("RAFTMQ_SIM_MIX") or None
SLOW_CHUNK = int(os.environ.get("RAFTMQ_SIM_SLOW_SEEDS", "500"))
SLOW_STEPS = int(os.environ.get("RAFTMQ_SIM_STEPS", "5000"))
SLOW_FIRST_SEED = 100_000



def _seed_id(seed: int) -> str:
    n, mix = seed_plan(seed)
    return f"s{seed}-{n}n-{mix}"


def _regressions() -> list[object]:
    """``seed [nodes=N] [steps=S] [mix=M]  # why`` per line of regression_seeds.txt."""
    out = []
    path = HERE / "regression_seeds.txt"
    for line in path.read_text().splitlines():
        body = line.split("#", 1)[0].strip()
        if not body:
            continue
        seed, *opts = body.split()
        kw = dict(o.split("=", 1) for o in opts)
        nodes = int(kw["nodes"]) if "nodes" in kw else None
        steps = int(kw.get("steps", STEPS))
        out.append(pytest.param(int(seed), nodes, steps, kw.get("mix"), id=f"r{seed}-{steps}"))
    return out


@pytest.mark.parametrize("seed", range(1, SEEDS + 1), ids=_seed_id)
def test_seed(seed: int) -> None:
    run_seed(seed, NODES, STEPS, mix=MIX)


EXTRA_SEEDS = max(3, SEEDS // 8)


@pytest.mark.parametrize(
    "seed, mix",
    [(seed, m.name) for m in EXTRA_MIXES for seed in range(1, EXTRA_SEEDS + 1)],
    ids=lambda v: str(v),
)
def test_seed_harsh_mix(seed: int, mix: str) -> None:
    """The harsher fault mixes (``cluster.EXTRA_MIXES``) on their own seeds."""
    run_seed(seed, NODES, STEPS, mix=mix)


@pytest.mark.parametrize("seed, nodes, steps, mix", _regressions())
def test_regression_seed(seed: int, nodes: int | None, steps: int, mix: str | None) -> None:
    run_seed(seed, nodes, steps, mix=mix)


@pytest.mark.skipif(ONE_SEED is None, reason="set RAFTMQ_SIM_SEED=<seed> to replay one seed")
def test_replay() -> None:
    """Replays one seed with the full event trace printed (use ``-s``)."""
    res = run_seed(int(ONE_SEED or 0), NODES, STEPS, mix=MIX, full_trace=True)
    print("\n".join(res.trace))
    print(f"seed={res.seed} nodes={res.nodes} mix={res.mix} steps={res.steps} ticks={res.ticks} {res.stats}")


def _digest(lines: list[str]) -> str:
    return hashlib.sha256("\n".join(lines).encode()).hexdigest()


def test_same_seed_gives_the_same_trace() -> None:
    """Replay is exact: a seed run twice gives the same full event trace."""
    a = run_seed(4242, 5, 1500, mix="chaos", full_trace=True)
    b = run_seed(4242, 5, 1500, mix="chaos", full_trace=True)
    assert len(a.trace) > 1500
    assert a.trace == b.trace
    assert a.stats == b.stats
    c = run_seed(4243, 5, 1500, mix="chaos", full_trace=True)
    assert c.trace != a.trace


def test_same_seed_gives_the_same_trace_in_another_process() -> None:
    """Nothing in the run depends on the process: str hashing (set order) differs
    between these interpreters, the trace must not."""
    code = (
        "import hashlib, logging; logging.disable(logging.CRITICAL)\n"
        "from tests.sim.cluster import run_seed\n"
        "r = run_seed(777, 3, 1200, mix='chaos', full_trace=True)\n"
        "print(hashlib.sha256('\\n'.join(r.trace).encode()).hexdigest())\n"
    )
    digests = set()
    for hash_seed in ("1", "2"):
        # Keep the caller's PYTHONPATH too: it may be what maps ``raftmq`` to this tree.
        path = os.pathsep.join(p for p in (str(ROOT), os.environ.get("PYTHONPATH", "")) if p)
        env = dict(os.environ, PYTHONHASHSEED=hash_seed, PYTHONPATH=path)
        out = subprocess.run([sys.executable, "-c", code], cwd=ROOT, env=env, capture_output=True, text=True,
                             check=True)
        digests.add(out.stdout.strip())
    here = _digest(run_seed(777, 3, 1200, mix="chaos", full_trace=True).trace)
    assert digests == {here}


def test_failure_names_seed_step_invariant_and_replay_command(capsys: pytest.CaptureFixture[str]) -> None:
    """What a failing seed reports (using a core that commits without a majority)."""
    from .test_checker_catches_bugs import CommitsWithoutMajority

    with pytest.raises(SimFailure) as info:
        run_seed(5, 3, 500, core_cls=CommitsWithoutMajority)
    msg = str(info.value)
    assert "seed=5" in msg and "step=" in msg and "invariant=commit-needs-majority" in msg
    assert "RAFTMQ_SIM_SEED=5" in msg
    printed = capsys.readouterr().out
    assert "last 200 events" in printed or "last " in printed
    assert len(info.value.trace_lines) > 10


@pytest.mark.slow
@pytest.mark.parametrize("chunk", range(20))
def test_many_seeds(chunk: int) -> None:
    """Opt-in (``-m slow``): 20 chunks of ``RAFTMQ_SIM_SLOW_SEEDS`` seeds, longer runs.
    Reports every failing seed of the chunk, not only the first."""
    first = SLOW_FIRST_SEED + chunk * SLOW_CHUNK
    failures = []
    for seed in range(first, first + SLOW_CHUNK):
        try:
            run_seed(seed, NODES, SLOW_STEPS, mix=MIX, quiet=True)
        except SimFailure as f:
            failures.append(str(f).splitlines()[0] + f"\n  replay: {str(f).splitlines()[-1]}")
    assert not failures, f"{len(failures)} failing seeds:\n" + "\n".join(failures)


def test_the_fault_mixes_really_exercise_the_core() -> None:
    """Guard against a simulator that silently stopped doing anything: across a
    few seeds there are elections, crashes and restarts, partitions, lost and
    duplicated messages, snapshots installed, transfers, acknowledged writes."""
    total: dict[str, int] = {}
    for seed in range(1, 25):
        res = run_seed(seed, None, 2000)
        for k, v in res.stats.items():
            total[k] = total.get(k, 0) + v
    for key in ("leaders", "crashes", "restarts", "partitions", "compactions", "snapshots_installed",
                "transfers", "campaigns", "dropped", "acked"):
        assert total[key] > 0, (key, total)
    assert total["leaders"] > 24 * 2
    assert total["acked"] > 24 * 50
