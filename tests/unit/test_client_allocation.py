"""The clustering allocation (RocketMQ's AllocateMessageQueueAveragely) and the
consumer's offset tracking: pure functions, no server."""

from __future__ import annotations

import itertools
import random

import pytest
from hypothesis import given
from hypothesis import strategies as st

from raftmq.client.consumer import OffsetTracker, allocate_averagely


def allocation(queues: list[int], members: list[str]) -> dict[str, list[int]]:
    return {m: allocate_averagely(queues, members, m) for m in members}


def test_eight_queues_three_consumers_get_contiguous_ranges_first_ones_larger() -> None:
    got = allocation(list(range(8)), ["c", "a", "b"])
    assert got == {"a": [0, 1, 2], "b": [3, 4, 5], "c": [6, 7]}


def test_more_consumers_than_queues_leaves_the_last_ones_idle() -> None:
    got = allocation([0, 1], ["a", "b", "c", "d"])
    assert got == {"a": [0], "b": [1], "c": [], "d": []}


def test_consumer_not_in_member_list_gets_nothing() -> None:
    assert allocate_averagely(range(4), ["a", "b"], "z") == []
    assert allocate_averagely([], ["a"], "a") == []


def test_single_consumer_gets_every_queue() -> None:
    assert allocate_averagely([3, 1, 2, 0], ["only"], "only") == [0, 1, 2, 3]


@given(st.integers(0, 64), st.lists(st.text(min_size=1, max_size=8), min_size=1, max_size=12, unique=True),
       st.randoms(use_true_random=False))
def test_every_queue_to_exactly_one_consumer_averagely_whatever_the_order(
        nqueues: int, members: list[str], rnd: random.Random) -> None:
    queues = list(range(nqueues))
    base = allocation(queues, members)
    shuffled_members, shuffled_queues = members[:], queues[:]
    rnd.shuffle(shuffled_members)
    rnd.shuffle(shuffled_queues)
    # Deterministic: the same answer for any order of the inputs.
    assert allocation(shuffled_queues, shuffled_members) == base
    owned = list(itertools.chain.from_iterable(base.values()))
    assert sorted(owned) == queues  # each queue exactly once
    sizes = [len(v) for v in base.values()]
    assert max(sizes) - min(sizes) <= 1  # averagely
    for qs in base.values():  # contiguous ranges
        assert qs == list(range(qs[0], qs[0] + len(qs))) if qs else True


def test_offset_tracker_commits_lowest_unhandled_offset() -> None:
    t = OffsetTracker(10)
    for o in (10, 11, 12):
        t.add(o)
    t.fetched_to(13)
    assert t.commit_offset() == 10
    t.done(11)
    assert t.commit_offset() == 10  # 10 still running: never skip it
    t.done(10)
    assert t.commit_offset() == 12
    t.done(12)
    assert t.commit_offset() == 13 and len(t) == 0


def test_offset_tracker_with_tag_filter_gap_commits_fetch_position() -> None:
    t = OffsetTracker(0)
    t.add(5)
    t.fetched_to(20)  # offsets 0-4 and 6-19 were filtered out by tags
    assert t.commit_offset() == 5
    t.done(5)
    assert t.commit_offset() == 20


@pytest.mark.asyncio
async def test_offset_tracker_limits_unhandled_messages() -> None:
    t = OffsetTracker(0)
    t.limit = 2
    t.add(0)
    t.add(1)
    assert not t._room.is_set()
    t.done(1)
    assert not t._room.is_set()  # the span from the oldest unhandled offset still counts
    t.done(0)
    assert t._room.is_set()
    await t.wait_room()
