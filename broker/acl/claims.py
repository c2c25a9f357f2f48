"""Which user a consumer's ``client_id`` belongs to, per group.

Queue locks and membership are keyed by the ``client_id`` a consumer picks,
and ``GET .../members`` shows every member's id: without more, any consumer
of a group could heartbeat, lock or unlock under another's id and take its
queues. With ACL on, the first user to use a ``client_id`` in a group holds
it; another user's request with that id is refused (403 ``client_id_taken``).
A claim lapses ``hold_ms`` after its last use: by then the member has left
the group (session timeout) and every lock it held has expired (lease).

Leader-local, like the locks it guards (``broker.consumer_groups``); a new
leader learns claims again from the next requests. Pure: time comes in as
``now_ms``.
"""

from __future__ import annotations


class ClientClaims:
    def __init__(self, hold_ms: int) -> None:
        self.hold_ms = hold_ms
        self._claims: dict[tuple[str, str], tuple[str, int]] = {}  # (group, client_id) -> (access key, last use)
        self._prune_at = 1024  # prune lapsed claims when the table grows past this (amortized)

    def claim(self, group: str, client_id: str, access_key: str, now_ms: int) -> str | None:
        """Record that ``access_key`` uses ``client_id`` in ``group`` now; the
        other user holding it, if any (then nothing changes)."""
        key = (group, client_id)
        held = self._claims.get(key)
        if held is not None and held[0] != access_key and now_ms - held[1] <= self.hold_ms:
            return held[0]
        self._claims[key] = (access_key, now_ms)
        if len(self._claims) > self._prune_at:
            self._claims = {k: v for k, v in self._claims.items() if now_ms - v[1] <= self.hold_ms}
            self._prune_at = max(1024, 2 * len(self._claims))
        return None

    def __len__(self) -> int:
        return len(self._claims)
