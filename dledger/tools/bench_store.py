"""Throughput of ``FileLogStore``: appends of 1 KiB entries in batches of 100
(the runtime's group commit: append, then flush, per batch) under both flush
policies, reads of the tail (cache) and of older entries (disk), and the time
to reopen (tail recovery).

Run: ``python -m raftmq.dledger.tools.bench_store [--entries N] [--dir PATH]``. A
command-line tool, so it prints.
"""

from __future__ import annotations

import shutil
import tempfile
import time
from pathlib import Path

import click

from raftmq.dledger.core.messages import Entry
from raftmq.client.local.tool_command import ToolCommand
from raftmq.dledger.store.file_store import FileLogStore, StoreConfig


def _append(path: Path, config: StoreConfig, n: int, batch: int, size: int) -> tuple[float, FileLogStore]:
    store = FileLogStore(path, config)
    data = bytes(range(256)) * (size // 256) + b"x" * (size % 256)
    batches = [[Entry(1, i + k, data) for k in range(batch)] for i in range(1, n + 1, batch)]
    t0 = time.perf_counter()
    for b in batches:
        store.append(b)
        store.flush()
    return time.perf_counter() - t0, store


@click.command("python -m raftmq.dledger.tools.bench_store", cls=ToolCommand, help=__doc__.split("\n\n")[0],
               context_settings={"help_option_names": ["-h", "--help"]})
@click.option("--entries", type=click.IntRange(min=1), default=200_000, show_default=True,
              help="Entries appended under the async flush policy.")
@click.option("--sync-entries", type=click.IntRange(min=1), default=20_000, show_default=True,
              help="Entries appended under the sync flush policy (each batch fsync'ed: slower).")
@click.option("--batch", type=click.IntRange(min=1), default=100, show_default=True,
              help="Entries per append-then-flush batch.")
@click.option("--size", type=click.IntRange(min=1), default=1024, show_default=True,
              help="Bytes of data per entry.")
@click.option("--segment-bytes", type=click.IntRange(min=1), default=64 << 20, show_default=True,
              help="Size of one log segment file in bytes.")
@click.option("--dir", "where", type=click.Path(exists=True, file_okay=False, path_type=Path), default=None,
              help="An existing directory to write in (default: the temp directory); what is written is removed.")
def main(entries: int, sync_entries: int, batch: int, size: int, segment_bytes: int, where: Path | None) -> None:
    root = Path(tempfile.mkdtemp(prefix="bench-store-", dir=where))
    try:
        for flush, n in (("async", entries), ("sync", sync_entries)):
            cfg = StoreConfig(segment_bytes=segment_bytes, flush=flush)
            secs, store = _append(root / flush, cfg, n, batch, size)
            print(f"append flush={flush}: {n} entries of {size} B in batches of {batch}: "
                  f"{n / secs:,.0f} entries/s ({n * size / secs / 2**20:,.0f} MiB/s)")
            if flush == "async":
                last = store.last_index()
                t0 = time.perf_counter()
                got = 0
                for lo in range(last - 50_000 + 1 if last > 50_000 else 1, last + 1, batch):
                    got += len(store.entries(lo, min(lo + batch, last + 1), 1 << 30))
                secs = time.perf_counter() - t0
                print(f"read tail (cache): {got / secs:,.0f} entries/s")
                store.close()
                store = FileLogStore(root / flush, StoreConfig(segment_bytes=segment_bytes, cache_bytes=0))
                t0 = time.perf_counter()
                got = 0
                for lo in range(1, last + 1, batch):
                    got += len(store.entries(lo, min(lo + batch, last + 1), 1 << 30))
                secs = time.perf_counter() - t0
                print(f"read from disk (CRC checked): {got / secs:,.0f} entries/s")
                store.close()
                t0 = time.perf_counter()
                FileLogStore(root / flush, StoreConfig(segment_bytes=segment_bytes)).close()
                print(f"reopen with tail recovery ({last} entries, {segment_bytes >> 20} MiB segments): "
                      f"{time.perf_counter() - t0:.2f} s")
            else:
                store.close()
    finally:
        shutil.rmtree(root, ignore_errors=True)


if __name__ == "__main__":
    main()
