"""The broker's derived on-disk stores, rebuilt by applying the log.

- :mod:`broker.store.consume_queue`: per topic and queue, fixed 20-byte
  entries mapping queue offsets to CommitLog physical offsets.
- :mod:`broker.store.index_file`: hash index from message keys to physical
  offsets and store times.

Both are plain file code (no asyncio, no clock): the state machine drives
them, and the same sequence of calls yields byte-identical files on every
replica. Each module documents its format byte by byte.
"""

from __future__ import annotations

__all__ = ["CorruptStore"]


class CorruptStore(Exception):
    """A store file is inconsistent in a way a torn tail cannot explain (a
    missing or short file in the middle, a checkpoint beyond what is on disk).
    Fatal for the node: carrying on would serve wrong offsets."""
