"""Consumer group membership and queue locks (pure, time passed in)."""

from raftmq.broker.consumer_groups import ConsumerGroups


def test_silent_member_leaves_after_session_timeout() -> None:
    g = ConsumerGroups(session_timeout_ms=1000)
    g.heartbeat("g", "t", "a", 0)
    assert g.heartbeat("g", "t", "b", 500) == ["a", "b"]
    assert g.heartbeat("g", "t", "b", 1200) == ["b"]


def test_lock_is_exclusive_until_lease_expires_and_renewable() -> None:
    g = ConsumerGroups(max_lease_ms=1000)
    assert g.lock("g", "t", "a", [0, 1], 1000, 0) == [0, 1]
    assert g.lock("g", "t", "b", [1, 2], 1000, 500) == [2]
    assert g.lock("g", "t", "a", [1], 1000, 900) == [1]  # renewal
    assert g.lock("g", "t", "b", [1], 1000, 1500) == []  # a's renewed lease runs to 1900
    assert g.lock("g", "t", "b", [1], 1000, 2000) == [1]


def test_unlock_only_releases_own_locks() -> None:
    g = ConsumerGroups()
    g.lock("g", "t", "a", [0], 1000, 0)
    assert g.unlock("g", "t", "b", [0]) == []
    assert g.unlock("g", "t", "a", [0]) == [0]
    assert g.lock("g", "t", "b", [0], 1000, 10) == [0]


def test_new_leader_grants_no_lock_until_old_leases_expired() -> None:
    g = ConsumerGroups(max_lease_ms=1000)
    g.became_leader(10_000)
    assert g.lock("g", "t", "a", [0], 1000, 10_500) == []
    assert g.lock("g", "t", "a", [0], 1000, 11_000) == [0]


def test_lease_is_capped() -> None:
    g = ConsumerGroups(max_lease_ms=1000)
    g.lock("g", "t", "a", [0], 60_000, 0)
    assert g.lock("g", "t", "b", [0], 1000, 1001) == [0]
