"""Consumer group membership and queue locks, kept by the leader in memory
(as RocketMQ's broker keeps its ConsumerManager and RebalanceLockManager).

Membership is soft state: consumers heartbeat every second or so; one silent
for ``session_timeout_ms`` is dropped and the others rebalance. It is not
replicated: after a failover the new leader learns the members from their
next heartbeats.

Queue locks (for orderly consumption) carry a lease. A new leader does not
know the old leader's locks, so it grants none until one full lease has
passed since it took over (``hold_off_until_ms``): by then every lock granted
by the old leader has expired and its holder has stopped processing.

Groups are bounded: at most ``max_groups`` groups hold members or locks
here; a heartbeat or lock of one more is refused with ``TooManyGroups`` (409
``too_many_groups``) once the silent members and expired locks have been
swept out. A group whose last member left and whose locks expired is gone.

Pure: time comes in as ``now_ms`` arguments.
"""

from __future__ import annotations

from dataclasses import dataclass, field

from raftmq.broker.errors import TooManyGroups


@dataclass(slots=True)
class _Lock:
    client_id: str
    expires_ms: int


@dataclass(slots=True)
class ConsumerGroups:
    session_timeout_ms: int = 6000
    max_lease_ms: int = 10_000
    hold_off_until_ms: int = 0
    max_groups: int = 10_000
    _members: dict[tuple[str, str], dict[str, int]] = field(default_factory=dict)  # (group, topic) -> client -> last hb
    _locks: dict[tuple[str, str, int], _Lock] = field(default_factory=dict)
    _refs: dict[str, int] = field(default_factory=dict)  # group -> its keys in _members and _locks

    def became_leader(self, now_ms: int) -> None:
        """Forget everything and refuse locks until the old leader's have expired."""
        self._members.clear()
        self._locks.clear()
        self._refs.clear()
        self.hold_off_until_ms = now_ms + self.max_lease_ms

    def group_count(self) -> int:
        """Groups holding members or locks here."""
        return len(self._refs)

    def _admit(self, group: str, now_ms: int) -> None:
        """Room for ``group``: it is known, or fewer than ``max_groups`` are
        (after sweeping silent members and expired locks); else TooManyGroups."""
        if group in self._refs or len(self._refs) < self.max_groups:
            return
        self._sweep(now_ms)
        if len(self._refs) >= self.max_groups:
            raise TooManyGroups(f"{len(self._refs)} consumer groups have members or locks on this leader; the limit "
                                f"is {self.max_groups}", max_groups=self.max_groups)

    def _sweep(self, now_ms: int) -> None:
        for group, topic in list(self._members):
            self.live(group, topic, now_ms)
        for key in [k for k, lock in self._locks.items() if lock.expires_ms <= now_ms]:
            del self._locks[key]
            self._unref(key[0])

    def _unref(self, group: str) -> None:
        n = self._refs[group] - 1
        if n:
            self._refs[group] = n
        else:
            del self._refs[group]

    def heartbeat(self, group: str, topic: str, client_id: str, now_ms: int) -> list[str]:
        members = self._members.get((group, topic))
        if members is None:
            self._admit(group, now_ms)
            members = self._members[(group, topic)] = {}
            self._refs[group] = self._refs.get(group, 0) + 1
        members[client_id] = now_ms
        return self.live(group, topic, now_ms)

    def live(self, group: str, topic: str, now_ms: int) -> list[str]:
        members = self._members.get((group, topic), {})
        for cid in [c for c, t in members.items() if now_ms - t > self.session_timeout_ms]:
            del members[cid]
        if not members and (group, topic) in self._members:
            del self._members[(group, topic)]
            self._unref(group)
        return sorted(members)

    def members(self, group: str, topic: str, now_ms: int) -> list[dict[str, object]]:
        self.live(group, topic, now_ms)
        return [{"client_id": c, "last_heartbeat_ms": t} for c, t in sorted(self._members.get((group, topic), {}).items())]

    def lock(self, group: str, topic: str, client_id: str, queue_ids: list[int], lease_ms: int, now_ms: int) -> list[int]:
        """Grant or extend the lease on each queue not held by another client."""
        lease_ms = min(lease_ms, self.max_lease_ms)
        granted = []
        for q in queue_ids:
            key = (group, topic, q)
            cur = self._locks.get(key)
            if cur is not None and cur.client_id != client_id and cur.expires_ms > now_ms:
                continue
            if cur is None or cur.client_id != client_id:
                if now_ms < self.hold_off_until_ms:
                    continue  # a lock the previous leader granted may still be live
            if cur is None:
                self._admit(group, now_ms)
                self._refs[group] = self._refs.get(group, 0) + 1
            self._locks[key] = _Lock(client_id, now_ms + lease_ms)
            granted.append(q)
        return granted

    def unlock(self, group: str, topic: str, client_id: str, queue_ids: list[int]) -> list[int]:
        released = []
        for q in queue_ids:
            key = (group, topic, q)
            cur = self._locks.get(key)
            if cur is not None and cur.client_id == client_id:
                del self._locks[key]
                self._unref(group)
                released.append(q)
        return released
