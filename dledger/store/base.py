"""The storage seams of dledger, as small protocols with their contracts.

``LogStorage`` is the read-only view of the *durable* log that the pure core
reads (in the manner of etcd/raft's ``Storage``): the core keeps only the
entries not yet persisted in memory and asks the store for the rest.
``LogStore`` adds the writes the runtime makes; ``HardStateStore`` keeps
``(term, voted_for)``; ``MetaStore`` keeps the node's few small records
(snapshots, the recovering marker, the data-directory identity). Each has a
file implementation (``file_store``, ``hard_state``, ``meta``) and a memory
one (``memory``): a runtime given the memory ones touches no disk.

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

    Damage found on the medium (protocol-aware recovery, see ``file_store``):
    - ``lost_entries_on_open``: opening had to cut durable entries it could not
      trust; the node then rejoins as if its disk were wiped past that point.
    - ``has_damage`` / ``damaged()``: entries known damaged in place, as
      ``(index, term)``; they are not served until ``repair(entry)`` writes a
      peer's intact copy (True if it was accepted).
    - ``check_at(position)``: a reader found bad bytes at ``position``: check
      the entry holding it (recording it as damaged if it is); its index, or
      None if no retained entry holds it.
    A store whose medium cannot be damaged (memory) answers False, [] and
    False, and ``check_at`` only locates the entry.
    """

    lost_entries_on_open: bool

    def append(self, entries: Sequence[Entry]) -> None: ...

    def flush(self) -> None: ...

    def body_position(self, index: int) -> int: ...

    def body_positions(self, lo: int, hi: int) -> list[int]:
        """``body_position`` of each entry ``lo .. hi`` (inclusive)."""
        ...

    def read_at(self, position: int, size: int) -> bytes: ...

    def compact(self, index: int) -> None: ...

    def reset(self, meta: SnapshotMeta) -> None: ...

    def close(self) -> None: ...

    @property
    def has_damage(self) -> bool: ...

    def damaged(self) -> list[tuple[int, int]]: ...

    def repair(self, entry: Entry) -> bool: ...

    def check_at(self, position: int) -> int | None: ...


class HardStateStore(Protocol):
    """Durable ``(term, voted_for)``. ``save`` returns only once the state is on
    stable storage: a node must not vote or campaign before that (§5.1)."""

    def load(self) -> HardState: ...

    def save(self, state: HardState) -> None: ...


class MetaStore(Protocol):
    """A node's few small durable records, each a whole ``bytes`` value under a
    name: ``snapshots/<20-digit index>`` (``dledger.store.snapshots``),
    ``recovering`` (the runtime's marker) and ``meta/identity`` and
    ``meta/peers`` (``dledger.store.identity``). Names are relative paths with
    ``/`` between a folder and a record, one folder level at most.

    Contract:
    - ``read(name)``: the value last written, or None if there is none.
    - ``write(name, data)``: replace the value atomically and durably: after a
      crash at any point a reader finds the old value or the new, never a mix.
    - ``delete(name)``: remove it (nothing if there is none).
    - ``rename(name, new_name)``: move a value (kept aside as damaged).
    - ``names(folder)``: the record names directly in ``folder`` (without the
      folder), in no particular order; [] for a folder never written.
    I/O errors raise ``StorageFailure``.
    """

    def read(self, name: str) -> bytes | None: ...

    def write(self, name: str, data: bytes) -> None: ...

    def delete(self, name: str) -> None: ...

    def rename(self, name: str, new_name: str) -> None: ...

    def names(self, folder: str) -> list[str]: ...
