"""The broker checkpoint file's framing: magic, version, length and CRC32
around a msgpack body, so that a damaged checkpoint is detected and the
derived state rebuilt from the log, never loaded.

``<data>/broker/checkpoint`` (written by :class:`broker.statemachine.BrokerState`
with ``dledger.write_atomically``: temporary file, fsync, rename, directory
fsync). Layout, integers big-endian and unsigned::

    offset  size  field
    0       4     magic       0x524D4350 (b"RMCP")
    4       2     version     2 (version 1 was the bare msgpack map, below)
    6       2     reserved    0
    8       4     body_bytes  n, the length of the body
    12      4     crc32       zlib.crc32 of bytes 0..12 followed by the body
    16      n     body        msgpack map (its fields: broker.statemachine)

The file is exactly ``16 + n`` bytes. The CRC covers everything but itself,
so any damage to the header or the body is caught; a file too short for a
header, longer or shorter than ``16 + n``, or of another version is damaged
too.

Version 1 (written before this framing) is the msgpack map alone, with no
check of its own. It is recognised by not starting with the magic: a
msgpack map starts with a byte 0x80..0x8F, 0xDE or 0xDF, and no single-bit
flip of the magic's first byte 0x52 gives one of those, so a damaged
version-2 file is never taken for a version-1 one. A version-1 file loads
when it decodes to exactly one map.
"""

from __future__ import annotations

import struct
import zlib
from typing import Any, Final

import msgpack

__all__ = ["MAGIC", "VERSION", "HEADER_BYTES", "DamagedCheckpoint", "encode", "decode"]

MAGIC: Final = 0x524D4350  # b"RMCP"
VERSION: Final = 2
LEGACY_VERSION: Final = 1
HEADER_BYTES: Final = 16
_HEAD = struct.Struct(">IHHI")  # magic, version, reserved, body_bytes: the 12 bytes the CRC starts with
_CRC = struct.Struct(">I")


class DamagedCheckpoint(ValueError):
    """The checkpoint's bytes are not a checkpoint this code wrote: short,
    long, wrong magic or version, CRC mismatch, or an undecodable body."""


def encode(doc: dict[str, Any]) -> bytes:
    """The file's bytes for ``doc`` (a msgpack-able map)."""
    body = msgpack.packb(doc, use_bin_type=True)
    head = _HEAD.pack(MAGIC, VERSION, 0, len(body))
    return head + _CRC.pack(zlib.crc32(body, zlib.crc32(head))) + body


def decode(raw: bytes) -> tuple[int, dict[str, Any]]:
    """``(version, doc)`` from the file's bytes; :class:`DamagedCheckpoint`
    if they are not a whole checkpoint."""
    if raw[:4] != MAGIC.to_bytes(4, "big"):
        return LEGACY_VERSION, _decode_legacy(raw)
    if len(raw) < HEADER_BYTES:
        raise DamagedCheckpoint(f"{len(raw)} bytes, shorter than the {HEADER_BYTES}-byte header")
    _, version, reserved, n = _HEAD.unpack_from(raw, 0)
    (crc,) = _CRC.unpack_from(raw, 12)
    if len(raw) != HEADER_BYTES + n:
        raise DamagedCheckpoint(f"{len(raw)} bytes, the header says {HEADER_BYTES + n}")
    actual = zlib.crc32(memoryview(raw)[HEADER_BYTES:], zlib.crc32(memoryview(raw)[:12]))
    if actual != crc:
        raise DamagedCheckpoint(f"CRC mismatch: stored {crc:#010x}, computed {actual:#010x}")
    if version != VERSION or reserved != 0:
        raise DamagedCheckpoint(f"unsupported version {version} (reserved {reserved}); this node reads {VERSION}")
    try:
        doc = msgpack.unpackb(memoryview(raw)[HEADER_BYTES:], raw=False, strict_map_key=False)
    except Exception as exc:  # msgpack raises several unrelated types on garbage
        raise DamagedCheckpoint(f"undecodable body: {exc}") from None
    if not isinstance(doc, dict):
        raise DamagedCheckpoint(f"the body is a {type(doc).__name__}, not a map")
    return VERSION, doc


def _decode_legacy(raw: bytes) -> dict[str, Any]:
    if not raw or not (0x80 <= raw[0] <= 0x8F or raw[0] in (0xDE, 0xDF)):
        raise DamagedCheckpoint(f"neither the magic {MAGIC:#010x} nor a version-1 msgpack map "
                                f"(first bytes {raw[:4].hex() or 'none'})")
    try:
        doc = msgpack.unpackb(raw, raw=False, strict_map_key=False)
    except Exception as exc:  # msgpack raises several unrelated types on garbage
        raise DamagedCheckpoint(f"undecodable version-1 checkpoint: {exc}") from None
    if not isinstance(doc, dict):
        raise DamagedCheckpoint("a version-1 checkpoint that is not a map")
    return doc
