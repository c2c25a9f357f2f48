"""Storage damage done to a stopped node's data directory: one flipped bit in a
committed Raft log entry (``corrupt``), or a damaged file derived from the log
(``corrupt-derived``: a ConsumeQueue, an IndexFile or the broker checkpoint).

Chaos may import only ``client`` and the standard library, so the on-disk
formats are read here with ``struct``, from their documentation in the module
docstrings of the code that writes them (the unit tests check this parser
against files written by that code):

- ``dledger/store/log_start.py``: ``<data>/dledger/meta/log_start``, 44 bytes,
  ``>IHHQQQQ`` (magic 0xDEDE5A01, version, flags, segment_bytes, snapshot
  index, snapshot term, next_position) then a CRC32 of those 40 bytes. The
  retained log starts at entry ``index + 1``.
- ``dledger/store/index_file.py``: ``<data>/dledger/index/<20-digit first
  index>``, 24-byte records ``>QQIB3x`` (frame position, term, frame size,
  kind); the record of entry N is at byte ``(N - first) * 24`` of its file;
  files are not preallocated (a file holds ``size // 24`` records).
- ``dledger/store/entry_format.py``: ``<data>/dledger/commitlog/<20-digit
  start position>`` (``file_store.py``, ``segment.py``): a frame is a 32-byte
  header ``>IIQQB3xI`` (magic 0xDEDE0E01, total size, term, index, kind, 3
  reserved bytes, CRC32 of the body) followed by the body; a frame at global
  position P lies in the segment with the largest start <= P, at ``P - start``.
- ``broker/store/consume_queue.py``: ``<data>/consumequeue/<topic>/<queueId>/
  <20-digit first queue offset>``, 20-byte entries ``>QIq`` (physical offset,
  size, tag hash); ``<queue dir>/min_offset`` (``>QI``: u64, CRC32) marks
  where reading starts.
- ``broker/store/index_file.py``: ``<data>/index/<20 digits>``: a 40-byte
  header ``>QQQQII`` (begin_ts, end_ts, begin_phys, end_phys, slot_count S,
  entry_count N), S 4-byte slots from byte 40, then 28-byte entries ``>IQIQI``
  (key hash, physical offset, size, store time, previous entry); entry e
  (1-based) at ``40 + 4*S + 28*(e - 1)``.
- ``broker/statemachine.py``: ``<data>/broker/checkpoint`` (msgpack; only its
  length matters here).

Every function takes a ``random.Random`` so that a seed replays the same
damage on the same files, and returns a JSON-ready description of exactly
what it did (file, byte offset, bit, values before and after), which the run
records in its history. Plain file work: call from a worker thread.
"""

from __future__ import annotations

import os
import random
import struct
import zlib
from bisect import bisect_right
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Final

# -- dledger formats ------------------------------------------------------------------
LOG_START: Final = struct.Struct(">IHHQQQQ")  # dledger/store/log_start.py, then a u32 crc
LOG_START_MAGIC: Final = 0xDEDE5A01
INDEX_RECORD: Final = struct.Struct(">QQIB3x")  # dledger/store/index_file.py
FRAME_HEADER: Final = struct.Struct(">IIQQB3xI")  # dledger/store/entry_format.py
ENTRY_MAGIC: Final = 0xDEDE0E01
ENTRY_KINDS: Final = frozenset({0, 1})  # EntryKind NORMAL, NOOP
# The frame header's fields by byte range. The reserved bytes 25..27 are left out:
# no reader looks at them, so a flip there would damage nothing.
HEADER_FIELDS: Final = (("magic", 0, 4), ("total_size", 4, 8), ("term", 8, 16), ("index", 16, 24),
                        ("kind", 24, 25), ("body_crc", 28, 32))
# -- broker formats ---------------------------------------------------------------------
CQ_ENTRY: Final = struct.Struct(">QIq")  # broker/store/consume_queue.py
CQ_FIELDS: Final = (("phys_offset", 0, 8), ("size", 8, 12), ("tag_hash", 12, 20))
CQ_MIN_OFFSET: Final = struct.Struct(">QI")
IDX_HEADER: Final = struct.Struct(">QQQQII")  # broker/store/index_file.py
IDX_HEADER_FIELDS: Final = (("begin_ts", 0, 8), ("end_ts", 8, 16), ("begin_phys", 16, 24), ("end_phys", 24, 32),
                            ("slot_count", 32, 36), ("entry_count", 36, 40))
IDX_SLOT_BYTES: Final = 4
IDX_ENTRY: Final = struct.Struct(">IQIQI")
IDX_ENTRY_FIELDS: Final = (("key_hash", 0, 4), ("phys_offset", 4, 12), ("size", 12, 16), ("store_ts_ms", 16, 24),
                           ("prev_entry", 24, 28))

# What corrupt-derived does to each kind of derived file.
DERIVED: Final = {
    "consumequeue": ("truncate", "tear", "delete", "flip"),
    "indexfile": ("delete", "flip"),
    "checkpoint": ("truncate", "garbage", "flip"),
}
PICK_ATTEMPTS: Final = 64  # entries tried before giving up on finding a sound one to damage

assert LOG_START.size == 40 and INDEX_RECORD.size == 24 and FRAME_HEADER.size == 32
assert CQ_ENTRY.size == 20 and IDX_HEADER.size == 40 and IDX_ENTRY.size == 28


def _numbered(directory: Path) -> list[tuple[int, Path]]:
    """The files of ``directory`` named by 20 decimal digits, sorted by number."""
    try:
        names = os.listdir(directory)
    except FileNotFoundError:
        return []
    return sorted((int(n), directory / n) for n in names if len(n) == 20 and n.isdigit())


def flip_bit(path: Path, offset: int, bit: int) -> tuple[int, int]:
    """Flip bit ``bit`` (0 = least significant) of the byte at ``offset``; returns the
    byte before and after."""
    with open(path, "r+b") as f:
        f.seek(offset)
        raw = f.read(1)
        if len(raw) != 1:
            raise ValueError(f"{path}: no byte at offset {offset}")
        new = raw[0] ^ (1 << bit)
        f.seek(offset)
        f.write(bytes([new]))
    return raw[0], new


def _field(fields: tuple[tuple[str, int, int], ...], byte: int) -> str:
    return next(name for name, lo, hi in fields if lo <= byte < hi)


# ---------------------------------------------------------------------------------------
# the Raft log
# ---------------------------------------------------------------------------------------
@dataclass(slots=True, frozen=True)
class LogStart:
    """``<data>/dledger/meta/log_start``: the retained log starts at ``index + 1``."""

    segment_bytes: int
    index: int
    term: int
    next_position: int


@dataclass(slots=True, frozen=True)
class FrameLocation:
    """Where entry ``index`` is, as the index says: global ``position`` and ``size`` of
    its frame, and the segment file and offset in it that hold the frame."""

    index: int
    term: int
    kind: int
    position: int
    size: int
    segment: Path
    segment_offset: int


def read_log_start(log_dir: Path) -> LogStart | None:
    """The log-start checkpoint of the log under ``log_dir`` (``<data>/dledger``), or
    None when absent or damaged."""
    try:
        raw = (log_dir / "meta" / "log_start").read_bytes()
    except FileNotFoundError:
        return None
    if len(raw) != LOG_START.size + 4 or zlib.crc32(raw[:40]) != struct.unpack_from(">I", raw, 40)[0]:
        return None
    magic, _version, _flags, segment_bytes, index, term, next_position = LOG_START.unpack_from(raw)
    if magic != LOG_START_MAGIC:
        return None
    return LogStart(segment_bytes, index, term, next_position)


def index_range(log_dir: Path) -> tuple[int, int]:
    """``(first, last)`` entry indexes whose records the index files hold,
    contiguously from the first file, at or after the log start; ``last < first``
    when none."""
    files = _numbered(log_dir / "index")
    if not files:
        return 1, 0
    first = files[0][0]
    end = first
    for start, path in files:
        if start != end:
            break  # a gap: the store drops files after it
        end = start + path.stat().st_size // INDEX_RECORD.size
    ls = read_log_start(log_dir)
    return max(first, (ls.index + 1) if ls else 1), end - 1


def locate(log_dir: Path, index: int) -> FrameLocation | None:
    """Where the index says entry ``index``'s frame is (None if it holds no record)."""
    files = _numbered(log_dir / "index")
    i = bisect_right([f for f, _ in files], index) - 1
    if i < 0:
        return None
    first, path = files[i]
    with open(path, "rb") as f:
        f.seek((index - first) * INDEX_RECORD.size)
        raw = f.read(INDEX_RECORD.size)
    if len(raw) < INDEX_RECORD.size:
        return None
    position, term, size, kind = INDEX_RECORD.unpack(raw)
    segs = _numbered(log_dir / "commitlog")
    j = bisect_right([s for s, _ in segs], position) - 1
    if j < 0:
        return None
    start, seg = segs[j]
    return FrameLocation(index, term, kind, position, size, seg, position - start)


def frame_problem(loc: FrameLocation) -> str | None:
    """What is wrong with the frame at ``loc`` (checked as the store checks it:
    magic, header against the index record, kind, body CRC), or None if sound."""
    with open(loc.segment, "rb") as f:
        f.seek(loc.segment_offset)
        frame = f.read(loc.size)
    return _frame_bytes_problem(loc, frame)


def _frame_bytes_problem(loc: FrameLocation, frame: bytes) -> str | None:
    if loc.size < FRAME_HEADER.size or len(frame) < loc.size:
        return f"short frame ({len(frame)} of {loc.size} bytes)"
    magic, size, term, index, kind, crc = FRAME_HEADER.unpack_from(frame)
    if magic != ENTRY_MAGIC:
        return f"bad magic {magic:#010x}"
    if (size, term, index, kind) != (loc.size, loc.term, loc.index, loc.kind):
        return f"header (size={size} term={term} index={index} kind={kind}) does not match the index"
    if kind not in ENTRY_KINDS:
        return f"unknown kind {kind}"
    if zlib.crc32(frame[FRAME_HEADER.size:]) != crc:
        return "body crc mismatch"
    return None


def log_entries(log_dir: Path, upto: int) -> dict[int, tuple[int, int, int, int] | str]:
    """Every retained entry up to ``upto`` as the node's disk holds it: ``(term,
    kind, size, body CRC)`` when its frame is sound and agrees with its index
    record, else what is wrong (``frame_problem``). For comparing the nodes'
    logs after a run: committed entries must be identical everywhere (Raft's
    Log Matching property), so a damaged one that was accepted shows up."""
    lo, hi = index_range(log_dir)
    hi = min(hi, upto)
    out: dict[int, tuple[int, int, int, int] | str] = {}
    if hi < lo:
        return out
    segs = _numbered(log_dir / "commitlog")
    starts = [s for s, _ in segs]
    handles: dict[int, Any] = {}
    try:
        for first, path in _numbered(log_dir / "index"):
            raw = path.read_bytes()
            for k in range(max(0, lo - first), min(len(raw) // INDEX_RECORD.size, hi - first + 1)):
                index = first + k
                position, term, size, kind = INDEX_RECORD.unpack_from(raw, k * INDEX_RECORD.size)
                j = bisect_right(starts, position) - 1
                if j < 0:
                    out[index] = f"no segment holds position {position}"
                    continue
                f = handles.get(j)
                if f is None:
                    f = handles[j] = open(segs[j][1], "rb")
                loc = FrameLocation(index, term, kind, position, size, segs[j][1], position - starts[j])
                f.seek(loc.segment_offset)
                frame = f.read(size)
                problem = _frame_bytes_problem(loc, frame)
                out[index] = problem if problem else (term, kind, size, FRAME_HEADER.unpack_from(frame)[5])
    finally:
        for f in handles.values():
            f.close()
    return out


def corrupt_log_entry(data_dir: Path, rng: random.Random, *, max_index: int, region: str | None = None,
                      index: int | None = None) -> dict[str, Any]:
    """Flip one bit in the frame of one committed entry of the node's Raft log.

    The entry is ``index``, or drawn from the retained log up to ``max_index`` (an
    index known committed: the commit index the node reported before it was
    stopped) among entries whose frame is sound. ``region`` is ``"header"`` (a
    byte of a header field) or ``"body"`` (drawn when None; an entry with an
    empty body gets ``"header"``). Returns what was flipped: entry index and
    term, segment, byte offset in the segment and in the frame, field, bit."""
    log_dir = data_dir / "dledger"
    lo, hi = index_range(log_dir)
    hi = min(hi, max_index)
    if index is not None:
        lo = hi = index
    if hi < lo:
        return {"damaged": False, "why": f"no committed entry on disk (retained {lo}..{hi}, commit {max_index})"}
    if region is None:
        region = rng.choice(("header", "body"))
    loc: FrameLocation | None = None
    tried: list[str] = []
    for _ in range(PICK_ATTEMPTS if index is None else 1):
        cand = locate(log_dir, rng.randint(lo, hi))
        if cand is None:
            continue
        problem = frame_problem(cand)
        if problem is None:
            loc = cand
            break
        if len(tried) < 4:
            tried.append(f"entry {cand.index}: {problem}")
    if loc is None:
        return {"damaged": False, "why": f"no sound frame found in entries {lo}..{hi}", "tried": tried}
    body = loc.size - FRAME_HEADER.size
    if region == "body" and body == 0:
        region = "header"
    if region == "header":
        name, a, b = rng.choice(HEADER_FIELDS)
        byte = rng.randrange(a, b)
    else:
        byte = FRAME_HEADER.size + rng.randrange(body)
        name = "body"
    bit = rng.randrange(8)
    offset = loc.segment_offset + byte
    before, after = flip_bit(loc.segment, offset, bit)
    return {"damaged": True, "file": str(loc.segment.relative_to(data_dir)), "entry_index": loc.index,
            "entry_term": loc.term, "entry_kind": loc.kind, "frame_position": loc.position, "frame_size": loc.size,
            "region": region, "field": name, "byte_in_frame": byte, "offset": offset, "bit": bit,
            "before": before, "after": after, "committed_up_to": max_index, "retained": [lo, hi]}


# ---------------------------------------------------------------------------------------
# derived files
# ---------------------------------------------------------------------------------------
def _cq_min_offset(qdir: Path) -> int:
    try:
        raw = (qdir / "min_offset").read_bytes()
    except FileNotFoundError:
        return 0
    if len(raw) != CQ_MIN_OFFSET.size:
        return 0
    value, crc = CQ_MIN_OFFSET.unpack(raw)
    return value if zlib.crc32(raw[:8]) == crc else 0


def consume_queue_files(data_dir: Path) -> list[tuple[str, int, int, Path]]:
    """``(topic, queue id, first queue offset, path)`` of every non-empty ConsumeQueue
    file, sorted."""
    out = []
    root = data_dir / "consumequeue"
    for topic in sorted(os.listdir(root)) if root.is_dir() else []:
        tdir = root / topic
        if not tdir.is_dir():
            continue
        for q in sorted((n for n in os.listdir(tdir) if n.isdigit()), key=int):
            for first, path in _numbered(tdir / q):
                if path.stat().st_size >= CQ_ENTRY.size:
                    out.append((topic, int(q), first, path))
    return out


def damage_consume_queue(data_dir: Path, rng: random.Random, how: str) -> dict[str, Any]:
    """Damage one ConsumeQueue file: ``truncate`` (to fewer whole entries), ``tear``
    (to a length that is not a whole number of entries), ``delete``, or ``flip``
    (one bit of one entry at or above the queue's ``min_offset``)."""
    files = consume_queue_files(data_dir)
    if not files:
        return {"damaged": False, "why": "no ConsumeQueue file with entries"}
    topic, q, first, path = rng.choice(files)
    size = path.stat().st_size
    n = size // CQ_ENTRY.size
    out: dict[str, Any] = {"damaged": True, "file": str(path.relative_to(data_dir)), "topic": topic, "queue_id": q,
                           "how": how, "size_before": size, "entries_before": n}
    if how == "truncate":
        keep = rng.randrange(n)
        os.truncate(path, keep * CQ_ENTRY.size)
        out.update(size_after=keep * CQ_ENTRY.size, entries_after=keep)
    elif how == "tear":
        keep = rng.randrange(n) * CQ_ENTRY.size + rng.randrange(1, CQ_ENTRY.size)
        os.truncate(path, keep)
        out.update(size_after=keep)
    elif how == "delete":
        path.unlink()
        out.update(size_after=None)
    elif how == "flip":
        lo = max(0, min(n - 1, _cq_min_offset(path.parent) - first))
        i = rng.randrange(lo, n)
        byte = rng.randrange(CQ_ENTRY.size)
        bit = rng.randrange(8)
        offset = i * CQ_ENTRY.size + byte
        before, after = flip_bit(path, offset, bit)
        out.update(queue_offset=first + i, field=_field(CQ_FIELDS, byte), byte_in_entry=byte, offset=offset, bit=bit,
                   before=before, after=after)
    else:
        raise ValueError(f"consumequeue: unknown damage {how!r}")
    return out


def damage_index_file(data_dir: Path, rng: random.Random, how: str) -> dict[str, Any]:
    """Damage one IndexFile: ``delete`` it, or ``flip`` one bit of its header, of a
    slot in use or of an entry in use (one of the three drawn alike)."""
    files = [(first, p) for first, p in _numbered(data_dir / "index") if p.stat().st_size >= IDX_HEADER.size]
    if not files:
        return {"damaged": False, "why": "no IndexFile"}
    first, path = rng.choice(files)
    out: dict[str, Any] = {"damaged": True, "file": str(path.relative_to(data_dir)), "how": how,
                           "size_before": path.stat().st_size}
    if how == "delete":
        path.unlink()
        return out
    if how != "flip":
        raise ValueError(f"indexfile: unknown damage {how!r}")
    with open(path, "rb") as f:
        header = f.read(IDX_HEADER.size)
        *_, slots, count = IDX_HEADER.unpack(header)
        entries_at = IDX_HEADER.size + IDX_SLOT_BYTES * slots
        part = rng.choice(("header", "slot", "entry")) if count > 0 and slots > 0 else "header"
        if part == "header":
            byte = rng.randrange(IDX_HEADER.size)
            offset, name = byte, _field(IDX_HEADER_FIELDS, byte)
        else:
            e = rng.randint(1, count)  # an entry in use; its slot is key_hash % S
            at = entries_at + IDX_ENTRY.size * (e - 1)
            f.seek(at)
            key_hash = IDX_ENTRY.unpack(f.read(IDX_ENTRY.size))[0]
            # The keys whose lookups this may spoil: those of the entry's hash (and,
            # for a slot, every key hashing to it: key_hash % slot_count).
            out.update(key_hash=key_hash, slot=key_hash % slots)
            if part == "slot":
                offset = IDX_HEADER.size + IDX_SLOT_BYTES * (key_hash % slots) + rng.randrange(IDX_SLOT_BYTES)
                name = f"slot {key_hash % slots}"
            else:
                byte = rng.randrange(IDX_ENTRY.size)
                offset, name = at + byte, f"entry {e} {_field(IDX_ENTRY_FIELDS, byte)}"
    bit = rng.randrange(8)
    before, after = flip_bit(path, offset, bit)
    out.update(part=part, field=name, offset=offset, bit=bit, before=before, after=after, entry_count=count,
               slot_count=slots)
    return out


def damage_checkpoint(data_dir: Path, rng: random.Random, how: str) -> dict[str, Any]:
    """Damage the broker checkpoint: ``truncate`` it (to a shorter length, possibly
    0), replace it with ``garbage`` of the same length, or ``flip`` one bit."""
    path = data_dir / "broker" / "checkpoint"
    try:
        size = path.stat().st_size
    except FileNotFoundError:
        return {"damaged": False, "why": "no checkpoint"}
    if size == 0:
        return {"damaged": False, "why": "the checkpoint is empty"}
    out: dict[str, Any] = {"damaged": True, "file": str(path.relative_to(data_dir)), "how": how, "size_before": size}
    if how == "truncate":
        keep = rng.randrange(size)
        os.truncate(path, keep)
        out.update(size_after=keep)
    elif how == "garbage":
        with open(path, "r+b") as f:
            f.write(rng.randbytes(size))
    elif how == "flip":
        offset, bit = rng.randrange(size), rng.randrange(8)
        before, after = flip_bit(path, offset, bit)
        out.update(offset=offset, bit=bit, before=before, after=after)
    else:
        raise ValueError(f"checkpoint: unknown damage {how!r}")
    return out


_DAMAGE = {"consumequeue": damage_consume_queue, "indexfile": damage_index_file, "checkpoint": damage_checkpoint}


def damage_derived(data_dir: Path, rng: random.Random, target: str, how: str) -> dict[str, Any]:
    """Damage a derived file of kind ``target`` (a key of ``DERIVED``) as ``how``
    says; when the node has no such file yet, the next kind in ``DERIVED``'s
    order is damaged instead (the same way if it allows it, else its first) and
    the result says so."""
    if target not in DERIVED or how not in DERIVED[target]:
        raise ValueError(f"corrupt-derived: no damage {target}/{how}")
    kinds = list(DERIVED)
    k = kinds.index(target)
    skipped = []
    for t in kinds[k:] + kinds[:k]:
        res = _DAMAGE[t](data_dir, rng, how if how in DERIVED[t] else DERIVED[t][0])
        if res.get("damaged"):
            return {"target": t, **res, **({"instead_of": target, "skipped": skipped} if t != target else {})}
        skipped.append(f"{t}: {res.get('why')}")
    return {"damaged": False, "target": target, "why": "; ".join(skipped)}


__all__ = ["DERIVED", "FrameLocation", "LogStart", "corrupt_log_entry", "damage_checkpoint", "damage_consume_queue",
           "damage_derived", "damage_index_file", "flip_bit", "frame_problem", "index_range", "locate",
           "log_entries", "read_log_start"]
