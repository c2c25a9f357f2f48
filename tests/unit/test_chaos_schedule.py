"""The chaos fault schedule: planned from the seed alone, within the run, and
the fault mix parsed with its weights."""

from __future__ import annotations

import pytest

from raftmq.chaos.netns import cut_pairs
from raftmq.chaos.damage import DERIVED
from raftmq.chaos.schedule import DEFAULT_FAULTS, FAULTS, parse_mix, pick, plan


def test_the_same_seed_plans_the_same_schedule_and_another_seed_another() -> None:
    mix = parse_mix("all")
    a = plan(7, mix, duration_s=120, interval_s=5, fault_s=2)
    assert a == plan(7, mix, duration_s=120, interval_s=5, fault_s=2)
    assert a != plan(8, mix, duration_s=120, interval_s=5, fault_s=2)


def test_faults_are_one_at_a_time_and_end_before_the_run_settles() -> None:
    faults = plan(3, parse_mix("all"), duration_s=60, interval_s=4, fault_s=2, warmup_s=3, settle_s=2)
    assert faults and faults[0].at_s == 3
    for a, b in zip(faults, faults[1:]):
        assert b.at_s >= a.at_s + a.duration_s
    assert faults[-1].at_s + faults[-1].duration_s + 2 <= 60


def test_cycle_takes_every_fault_in_turn() -> None:
    faults = plan(0, parse_mix("kill-leader,pause,partition"), duration_s=40, interval_s=5, fault_s=2,
                  mode="cycle")
    assert [f.fault for f in faults[:6]] == ["kill-leader", "pause", "partition"] * 2
    assert [f.at_s for f in faults[:3]] == [3.0, 8.0, 13.0]


def test_weights_shape_the_random_mix() -> None:
    faults = plan(1, parse_mix("kill-leader=9,pause=1"), duration_s=4000, interval_s=4, fault_s=1)
    kills = sum(f.fault == "kill-leader" for f in faults)
    assert kills > 0.8 * len(faults) and kills < len(faults)


def test_fault_mix_parsing() -> None:
    assert parse_mix("all") == {f: 1.0 for f in FAULTS}
    assert parse_mix("") == {f: 1.0 for f in DEFAULT_FAULTS}
    assert parse_mix("kill-leader=2, wipe") == {"kill-leader": 2.0, "wipe": 1.0}
    with pytest.raises(ValueError, match="unknown fault 'explode'"):
        parse_mix("explode")
    with pytest.raises(ValueError, match="positive weight"):
        parse_mix("kill=0")


def test_torn_tails_and_partitions_carry_their_planned_details() -> None:
    faults = plan(5, {"torn-tail": 1.0, "partition": 1.0}, duration_s=400, interval_s=4, fault_s=1)
    torn = [f for f in faults if f.fault == "torn-tail"]
    parts = [f for f in faults if f.fault == "partition"]
    assert torn and all(1 <= f.tear_bytes <= 4096 for f in torn) and {f.corrupt for f in torn} == {True, False}
    assert {f.shape for f in parts} == {"isolate-leader", "halves", "ring"}


def test_pick_chooses_among_sorted_ids() -> None:
    assert pick(["n3", "n1", "n2"], 0.0) == "n1" and pick(["n3", "n1", "n2"], 0.999) == "n3"
    assert pick(["n2"], 0.7) == "n2"


def test_partition_cuts_only_pairs_that_share_no_side() -> None:
    hosts = ["a", "b", "c", "d", "e"]
    assert cut_pairs(hosts[:3], [["a"], ["b", "c"]]) == [("a", "b"), ("a", "c")]
    ring = [[hosts[i], hosts[(i + 1) % 5]] for i in range(5)]  # each node sees its two neighbours
    cut = cut_pairs(hosts, ring)
    assert sorted(cut) == [("a", "c"), ("a", "d"), ("b", "d"), ("b", "e"), ("c", "e")]


def test_a_mix_without_the_storage_faults_plans_what_it_planned_before_they_existed() -> None:
    # Planned by the schedule of before corrupt, corrupt-derived and kill-all: a seed replays
    # the same run it did then.
    faults = plan(101, parse_mix("kill-leader,torn-tail,partition,wipe"), duration_s=40, interval_s=6, fault_s=2)
    assert [(f.at_s, f.fault, f.duration_s, f.pick, f.shape, f.tear_bytes, f.corrupt) for f in faults] == [
        (3.0, "kill-leader", 2.081, 0.965251, None, 0, False),
        (10.272, "torn-tail", 1.967, 0.214523, None, 1817, False),
        (16.228, "partition", 2.283, 0.070355, "halves", 0, False), (21.308, "wipe", 1.589, 0.366515, None, 0, False),
        (27.223, "torn-tail", 1.826, 0.403894, None, 1707, True),
        (33.126, "torn-tail", 1.712, 0.624914, None, 2692, False)]


def test_storage_faults_carry_what_to_damage_and_a_seed_for_it() -> None:
    assert {"corrupt", "corrupt-derived", "kill-all"} <= set(parse_mix("all"))
    assert not {"corrupt", "corrupt-derived", "kill-all"} & set(DEFAULT_FAULTS)
    faults = plan(9, {"corrupt": 1.0, "corrupt-derived": 1.0, "kill-all": 1.0}, duration_s=2000, interval_s=4,
                  fault_s=1)
    corrupt = [f for f in faults if f.fault == "corrupt"]
    derived = [f for f in faults if f.fault == "corrupt-derived"]
    kill_all = [f for f in faults if f.fault == "kill-all"]
    assert corrupt and derived and kill_all
    assert {(f.target, f.how) for f in corrupt} == {("log", "header"), ("log", "body")}
    assert {(f.target, f.how) for f in derived} == {(t, h) for t, hows in DERIVED.items() for h in hows}
    seeds = [f.damage_seed for f in corrupt + derived]
    assert len(set(seeds)) == len(seeds)
    assert all(f.target is None and f.damage_seed == 0 for f in kill_all)
    assert faults == plan(9, {"corrupt": 1.0, "corrupt-derived": 1.0, "kill-all": 1.0}, duration_s=2000,
                          interval_s=4, fault_s=1)
    assert corrupt[0].to_json()["how"] == corrupt[0].how and "damage_seed" in corrupt[0].to_json()
