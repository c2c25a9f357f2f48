"""FileLogStore behaves like the reference MemoryLogStore under random sequences
of appends (with conflict truncations), compactions, snapshot resets, flushes
and reopens (hypothesis stateful testing against the naive model)."""

from __future__ import annotations

import shutil
import tempfile
from pathlib import Path

from hypothesis import HealthCheck, settings
from hypothesis import strategies as st
from hypothesis.stateful import RuleBasedStateMachine, invariant, rule

from raftmq.dledger.core.messages import Entry, EntryKind, SnapshotMeta
from raftmq.dledger.store.file_store import FileLogStore, StoreConfig
from raftmq.dledger.store.memory import MemoryLogStore


class _LogModel(RuleBasedStateMachine):
    """Subclasses choose the segment size. With one big segment positions are
    compared directly; with small ones (the memory store does not model rollover)
    through ``read_at(body_position(i), len(data))``."""

    segment_bytes = 1 << 20
    compare_positions = True

    def __init__(self) -> None:
        super().__init__()
        self.dir = Path(tempfile.mkdtemp(prefix="store-model-"))
        self.cache_bytes = 600
        self.file = self._open()
        self.mem = MemoryLogStore()
        self.term = 1

    def _open(self) -> FileLogStore:
        return FileLogStore(self.dir, StoreConfig(segment_bytes=self.segment_bytes, index_file_entries=5,
                                                  cache_bytes=self.cache_bytes, flush="sync"))

    def teardown(self) -> None:
        self.file.close()
        shutil.rmtree(self.dir, ignore_errors=True)

    @rule(data=st.data(), count=st.integers(1, 8), sizes=st.lists(st.integers(0, 180), min_size=8, max_size=8),
          new_term=st.booleans(), noop=st.booleans())
    def append(self, data: st.DataObject, count: int, sizes: list[int], new_term: bool, noop: bool) -> None:
        first = data.draw(st.integers(self.mem.first_index(), self.mem.last_index() + 1), label="first")
        if new_term:
            self.term += 1
        entries = [Entry(self.term, first + k, bytes([(first + k + self.term) % 251]) * sizes[k],
                         EntryKind.NOOP if noop and k == 0 else EntryKind.NORMAL) for k in range(count)]
        self.mem.append(entries)
        self.file.append(entries)
        self.file.flush()

    @rule(data=st.data())
    def compact(self, data: st.DataObject) -> None:
        index = data.draw(st.integers(self.mem.first_index() - 1, self.mem.last_index() + 2), label="index")
        self.mem.compact(index)
        self.file.compact(index)

    @rule(index_ahead=st.integers(0, 50), position_ahead=st.integers(0, 3000))
    def reset(self, index_ahead: int, position_ahead: int) -> None:
        self.term += 1
        meta = SnapshotMeta(self.mem.last_index() + index_ahead, self.term, self.mem.snapshot_meta().next_position
                            + position_ahead)
        self.mem.reset(meta)
        self.file.reset(meta)

    @rule(cache=st.sampled_from([0, 600, 1 << 20]))
    def reopen(self, cache: int) -> None:
        self.file.close()
        self.cache_bytes = cache
        self.file = self._open()

    @invariant()
    def same_log(self) -> None:
        mem, file = self.mem, self.file
        assert file.last_index() == mem.last_index()
        # the file store may keep more of the prefix (whole segments only), never less
        assert file.first_index() <= mem.first_index()
        lo, hi = mem.first_index(), mem.last_index()
        assert file.term(file.first_index() - 1) is not None
        for i in range(lo - 1, hi + 1):
            assert file.term(i) == mem.term(i), i
        if hi >= lo:
            assert file.entries(lo, hi + 1, 1 << 30) == mem.entries(lo, hi + 1, 1 << 30)
            assert file.entries(lo, hi + 1, 200) == mem.entries(lo, hi + 1, 200)
        for e in mem.entries(lo, hi + 1, 1 << 30) if hi >= lo else []:
            p = file.body_position(e.index)
            if self.compare_positions:
                assert p == mem.body_position(e.index)
            if e.data:
                assert file.read_at(p, len(e.data)) == e.data


class _SmallSegments(_LogModel):
    segment_bytes = 256
    compare_positions = False


_settings = settings(max_examples=60, stateful_step_count=25, deadline=None,
                     suppress_health_check=[HealthCheck.too_slow])

TestFileStoreMatchesMemoryOneSegment = _LogModel.TestCase
TestFileStoreMatchesMemoryOneSegment.settings = _settings
TestFileStoreMatchesMemorySmallSegments = _SmallSegments.TestCase
TestFileStoreMatchesMemorySmallSegments.settings = _settings
