"""The storage seams of dledger, as small protocols with their contracts.

``LogStorage`` is the read-only view of the *durable* log that the pure core
reads (in the manner of etcd/raft's ``Storage``): the core keeps only the
entries not yet persisted in memory and asks the store for the rest.
``LogStore`` adds the writes the runtime makes; ``HardStateStore`` keeps
``(term, voted_for)``.

Index conventions: entries are numbered from 1. After prefix deletion or a
snapshot install the log starts at ``first_index()``, and the entry just
before it (the snapshot point) still has a known term: ``term(first_index() - 1)``
answers it. An empty log has ``last_index() == first_index() - 1``.
"""

from __future__ import annotations

from typing import Protocol, Sequence

from raftmq.dledger.core.messages import Entry, HardState, SnapshotMeta


class LogStorage(Protocol):
    """Read-only view of the durable log. Every method is cheap and synchronous."""

    def first_index(self) -> int:
        """Index of the oldest retained entry (1 for a log never compacted)."""

    def last_index(self) -> int:
        """Index of the newest durable entry (``first_index() - 1`` when empty)."""

    def term(self, index: int) -> int:
        """Term of the entry at ``index``; for ``first_index() - 1`` the snapshot
        term (0 for index 0). Raises ``IndexError`` outside that range."""

    def entries(self, lo: int, hi: int, max_bytes: int) -> list[Entry]:
        """Entries ``lo`` .. ``hi - 1``, stopping once their data exceeds
        ``max_bytes`` (but always at least one). Raises ``IndexError`` if ``lo``
        is below ``first_index()`` or ``hi - 1`` beyond ``last_index()``."""

    def snapshot_meta(self) -> SnapshotMeta:
        """The snapshot point: (first_index() - 1, its term, position of first_index())."""


class LogStore(LogStorage, Protocol):
    """The durable, appendable log the runtime writes.

    Contract:
    - ``append(entries)``: ``entries`` are consecutive and the first index is
      at most ``last_index() + 1``. Every stored entry at or after
      ``entries[0].index`` is dropped first (a conflict truncation decided by
      the core), then the entries are written. Written means handed to the OS;
      ``flush()`` makes the batch durable per the flush policy. One write per
      batch, not per entry.
    - ``flush()``: ``async`` policy: nothing more (data already with the OS);
      ``sync`` policy: fdatasync of the files written since the last flush.
    - ``body_position(index)``: byte position of the entry's body in the
      commitlog; identical on every replica that stores the same entries.
    - ``read_at(position, size)``: one positional read from the commitlog.
    - ``compact(index)``: prefix deletion for retention; drops whole segments
      whose entries are all ``<= index``; ``first_index()`` moves accordingly.
    - ``reset(meta)``: drop everything and restart the log empty after the
      snapshot point ``meta`` (follower installing a snapshot).
    """

    def append(self, entries: Sequence[Entry]) -> None: ...

    def flush(self) -> None: ...

    def body_position(self, index: int) -> int: ...

    def read_at(self, position: int, size: int) -> bytes: ...

    def compact(self, index: int) -> None: ...

    def reset(self, meta: SnapshotMeta) -> None: ...

    def close(self) -> None: ...


class HardStateStore(Protocol):
    """Durable ``(term, voted_for)``. ``save`` returns only once the state is on
    stable storage: a node must not vote or campaign before that (§5.1)."""

    def load(self) -> HardState: ...

    def save(self, state: HardState) -> None: ...
