"""Throughput of ``FileLogStore``: appends of 1 KiB entries in batches of 100
(the runtime's group commit: append, then flush, per batch) under both flush
policies, reads of the tail (cache) and of older entries (disk), and the time
to reopen (tail recovery).

Run: ``python -m dledger.tools.bench_store [--entries N] [--dir PATH]``. A
command-line tool, so it prints.
"""

from __future__ import annotations

import argparse
import shutil
import tempfile
import time
from pathlib import Path

from raftmq.dledger.core.messages import Entry
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


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--entries", type=int, default=200_000)
    ap.add_argument("--sync-entries", type=int, default=20_000)
    ap.add_argument("--batch", type=int, default=100)
    ap.add_argument("--size", type=int, default=1024)
    ap.add_argument("--segment-bytes", type=int, default=64 << 20)
    ap.add_argument("--dir", type=Path, default=None, help="where to write (default: a temp dir)")
    args = ap.parse_args()
    root = Path(tempfile.mkdtemp(prefix="bench-store-", dir=args.dir))
    try:
        for flush, n in (("async", args.entries), ("sync", args.sync_entries)):
            cfg = StoreConfig(segment_bytes=args.segment_bytes, flush=flush)
            secs, store = _append(root / flush, cfg, n, args.batch, args.size)
            print(f"append flush={flush}: {n} entries of {args.size} B in batches of {args.batch}: "
                  f"{n / secs:,.0f} entries/s ({n * args.size / secs / 2**20:,.0f} MiB/s)")
            if flush == "async":
                last = store.last_index()
                t0 = time.perf_counter()
                got = 0
                for lo in range(last - 50_000 + 1 if last > 50_000 else 1, last + 1, args.batch):
                    got += len(store.entries(lo, min(lo + args.batch, last + 1), 1 << 30))
                secs = time.perf_counter() - t0
                print(f"read tail (cache): {got / secs:,.0f} entries/s")
                store.close()
                store = FileLogStore(root / flush, StoreConfig(segment_bytes=args.segment_bytes, cache_bytes=0))
                t0 = time.perf_counter()
                got = 0
                for lo in range(1, last + 1, args.batch):
                    got += len(store.entries(lo, min(lo + args.batch, last + 1), 1 << 30))
                secs = time.perf_counter() - t0
                print(f"read from disk (CRC checked): {got / secs:,.0f} entries/s")
                store.close()
                t0 = time.perf_counter()
                FileLogStore(root / flush, StoreConfig(segment_bytes=args.segment_bytes)).close()
                print(f"reopen with tail recovery ({last} entries, {args.segment_bytes >> 20} MiB segments): "
                      f"{time.perf_counter() - t0:.2f} s")
            else:
                store.close()
    finally:
        shutil.rmtree(root, ignore_errors=True)


if __name__ == "__main__":
    main()
