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

Pure: time comes in as ``now_ms`` arguments.
"""

from __future__ import annotations

from dataclasses import dataclass, field


@dataclass(slots=True)
class _Lock:
    client_id: str
    expires_ms: int


@dataclass(slots=True)
class ConsumerGroups:
    session_timeout_ms: int = 6000
    max_lease_ms: int = 10_000
    hold_off_until_ms: int = 0
    _members: dict[tuple[str, str], dict[str, int]] = field(default_factory=dict)  # (group, topic) -> client -> last hb
    _locks: dict[tuple[str, str, int], _Lock] = field(default_factory=dict)

    def became_leader(self, now_ms: int) -> None:
        """Forget everything and refuse locks until the old leader's have expired."""
        self._members.clear()
        self._locks.clear()
        self.hold_off_until_ms = now_ms + self.max_lease_ms

    def heartbeat(self, group: str, topic: str, client_id: str, now_ms: int) -> list[str]:
        self._members.setdefault((group, topic), {})[client_id] = now_ms
        return self.live(group, topic, now_ms)

    def live(self, group: str, topic: str, now_ms: int) -> list[str]:
        members = self._members.get((group, topic), {})
        for cid in [c for c, t in members.items() if now_ms - t > self.session_timeout_ms]:
            del members[cid]
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
                released.append(q)
        return released
