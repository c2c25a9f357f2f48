"""``raftmq chaos restart-bench`` measures what it says: each restart really
verified, rebuilt or repaired what its name says, and the node caught up."""

from __future__ import annotations

import asyncio

import pytest

from raftmq.chaos.restart_bench import VARIANTS, run

pytestmark = pytest.mark.integration


def test_restart_bench_restarts_clean_rebuilds_derived_files_and_repairs_the_log() -> None:
    said: list[str] = []
    results = asyncio.run(run(4, "async", VARIANTS, 3, said.append))
    by = {r.variant: r for r in results}
    assert set(by) == set(VARIANTS)
    for r in results:
        assert r.log_mib >= 4 and r.applied_index > 0 and 0 < r.serving_s <= r.caught_up_s, r
    assert "checkpoint_loaded" in by["clean"].node_says and "rebuild_derived" not in by["clean"].node_says
    assert "rebuild_derived_done" in by["derived-damaged"].node_says
    assert "entry_repaired" in by["log-damaged"].node_says and "damaged_entry" in by["log-damaged"].node_says
