"""The broker checkpoint's framing (broker.store.checkpoint): whatever part of
the file is damaged (magic, version, reserved, length, CRC, body), cut short
or extended, it is reported as damaged, never decoded into a state; the
version-1 file (a bare msgpack map) still loads."""

from __future__ import annotations

import struct
import zlib

import msgpack
import pytest

from raftmq.broker.store import checkpoint as ck

DOC = {
    "index": 42,
    "topics": {"orders": 2},
    "offsets": [["g", "orders", 0, 7]],
    "dedup": [["p", [[1, 0, [0, 0, [100, 200]]]]]],
    "time_marks": [[1_700_000_000_000, 3]],
    "queues": [["orders", 0, 0, 500, [[0, 500, 0x1234ABCD]]], ["orders", 1, 0, 0, []]],
    "index_marker": 500,
    "index_files": [[0, 500_000, 2_000_000, 500, 0xDEADBEEF, 0x0BADF00D, 1, 2, 3, 4]],
}

# Byte regions of the header, from the module docstring.
REGIONS = {"magic": range(0, 4), "version": range(4, 6), "reserved": range(6, 8), "body_bytes": range(8, 12),
           "crc32": range(12, 16)}


def test_encode_lays_out_magic_version_length_crc_then_the_msgpack_body() -> None:
    raw = ck.encode(DOC)
    magic, version, reserved, n, crc = struct.unpack_from(">IHHII", raw)
    body = raw[16:]
    assert (magic, version, reserved) == (0x524D4350, 2, 0) and raw[:4] == b"RMCP"
    assert n == len(body) == len(raw) - 16
    assert crc == zlib.crc32(raw[:12] + body)
    assert msgpack.unpackb(body, raw=False, strict_map_key=False) == DOC
    assert ck.decode(raw) == (2, DOC)


@pytest.mark.parametrize("region", [*REGIONS, "body"])
def test_every_single_bit_flip_in_each_region_is_detected(region: str) -> None:
    raw = ck.encode(DOC)
    positions = REGIONS[region] if region != "body" else range(16, len(raw))
    for pos in positions:
        for bit in range(8):
            damaged = bytearray(raw)
            damaged[pos] ^= 1 << bit
            with pytest.raises(ck.DamagedCheckpoint):
                ck.decode(bytes(damaged))


def test_a_flipped_applied_index_is_detected_not_loaded() -> None:
    """The issue's case: 42 -> 40 in the applied index re-applied two entries."""
    raw = ck.encode(DOC)
    at = raw.index(b"\xa5index") + 6  # fixstr "index", then the value: positive fixint 42
    assert raw[at] == 42
    damaged = raw[:at] + bytes([40]) + raw[at + 1:]
    with pytest.raises(ck.DamagedCheckpoint, match="CRC mismatch"):
        ck.decode(damaged)


def test_every_truncation_and_any_trailing_bytes_are_detected() -> None:
    raw = ck.encode(DOC)
    for n in range(len(raw)):
        with pytest.raises(ck.DamagedCheckpoint):
            ck.decode(raw[:n])
    with pytest.raises(ck.DamagedCheckpoint):
        ck.decode(raw + b"\0")


def test_another_version_with_a_good_crc_is_refused() -> None:
    raw = bytearray(ck.encode(DOC))
    struct.pack_into(">H", raw, 4, 3)
    struct.pack_into(">I", raw, 12, zlib.crc32(bytes(raw[:12]) + bytes(raw[16:])))
    with pytest.raises(ck.DamagedCheckpoint, match="unsupported version 3"):
        ck.decode(bytes(raw))


def test_a_body_that_is_not_a_map_is_refused_even_with_a_good_crc() -> None:
    body = msgpack.packb([1, 2, 3])
    head = struct.pack(">IHHI", ck.MAGIC, ck.VERSION, 0, len(body))
    raw = head + struct.pack(">I", zlib.crc32(head + body)) + body
    with pytest.raises(ck.DamagedCheckpoint, match="not a map"):
        ck.decode(raw)


def test_a_version_1_checkpoint_still_loads() -> None:
    legacy = {"index": 9, "topics": {"t": 1}, "offsets": [], "dedup": [], "queues": [["t", 0, 5]],
              "index_marker": 5}
    assert ck.decode(msgpack.packb(legacy, use_bin_type=True)) == (1, legacy)


@pytest.mark.parametrize("raw", [b"", b"\x00", b"garbage that is not msgpack", b"\x83\xa1a", bytes(range(256)),
                                 msgpack.packb({"index": 1}) + b"x", msgpack.packb([1])])
def test_garbage_and_damaged_version_1_files_are_detected(raw: bytes) -> None:
    with pytest.raises(ck.DamagedCheckpoint):
        ck.decode(raw)


def test_no_single_bit_flip_of_the_magic_reads_as_a_version_1_map() -> None:
    """A damaged magic must not send a version-2 file down the version-1 path
    and have it accepted there (module docstring)."""
    raw = ck.encode(DOC)
    for pos in REGIONS["magic"]:
        for bit in range(8):
            damaged = bytearray(raw)
            damaged[pos] ^= 1 << bit
            with pytest.raises(ck.DamagedCheckpoint, match="version-1|magic"):
                ck.decode(bytes(damaged))
