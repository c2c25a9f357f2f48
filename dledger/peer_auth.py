"""The cluster secret's challenge-response between two peers: pure functions.

The handshake (protocol version 2) is described in ``dledger.codec``'s module
docstring; this module holds the parts without I/O: the two proofs and the
challenge and proof frames' payloads. ``dledger.transport`` runs the
handshake on real connections, ``dledger.tools.forge`` on a forger's.

A proof is ``HMAC-SHA256(secret, label | cluster | id | id | nonce | nonce)``
where ``|`` puts each field behind its 4-byte big-endian length, so that
``("ab", "c")`` and ``("a", "bc")`` never give the same bytes.
"""

from __future__ import annotations

import hashlib
import hmac
import struct
from typing import Any, Final

import msgpack

from raftmq.dledger.codec import NONCE_BYTES
from raftmq.dledger.errors import CodecError

CHALLENGE: Final = 101
"""Type of the acceptor's challenge frame ``[101, na, proof_a]``."""
PROOF: Final = 102
"""Type of the dialer's answer ``[102, proof_d]``."""
PROOF_BYTES: Final = hashlib.sha256().digest_size  # 32
MIN_SECRET_BYTES: Final = 16
"""Shortest cluster secret a node accepts."""

_ACCEPTOR_LABEL: Final = b"raftmq-peer-v2 acceptor"
_DIALER_LABEL: Final = b"raftmq-peer-v2 dialer"
_LEN: Final = struct.Struct(">I")


def _mac(secret: bytes, label: bytes, fields: tuple[bytes, ...]) -> bytes:
    parts = [label]
    for f in fields:
        parts.append(_LEN.pack(len(f)))
        parts.append(f)
    return hmac.new(secret, b"".join(parts), hashlib.sha256).digest()


def acceptor_proof(secret: bytes, cluster: str, acceptor: str, dialer: str, nd: bytes, na: bytes) -> bytes:
    """``proof_a``: the acceptor holds ``secret`` (answers the dialer's nonce ``nd``)."""
    return _mac(secret, _ACCEPTOR_LABEL, (cluster.encode(), acceptor.encode(), dialer.encode(), nd, na))


def dialer_proof(secret: bytes, cluster: str, dialer: str, acceptor: str, na: bytes, nd: bytes) -> bytes:
    """``proof_d``: the dialer holds ``secret`` (answers the acceptor's nonce ``na``)."""
    return _mac(secret, _DIALER_LABEL, (cluster.encode(), dialer.encode(), acceptor.encode(), na, nd))


def proof_ok(expected: bytes, got: bytes) -> bool:
    """Whether ``got`` is ``expected``, compared in constant time."""
    return hmac.compare_digest(expected, got)


def encode_challenge(na: bytes, proof_a: bytes) -> bytes:
    """The acceptor's challenge payload ``[101, na, proof_a]``."""
    return msgpack.packb([CHALLENGE, na, proof_a], use_bin_type=True)


def encode_proof(proof_d: bytes) -> bytes:
    """The dialer's answer payload ``[102, proof_d]``."""
    return msgpack.packb([PROOF, proof_d], use_bin_type=True)


def _unpack(payload: bytes | bytearray | memoryview, code: int, n: int, what: str) -> list[Any]:
    try:
        o = msgpack.unpackb(payload, raw=False, max_str_len=0, max_map_len=0, max_ext_len=0, max_array_len=4,
                            max_bin_len=64)
    except (msgpack.UnpackException, ValueError, TypeError, OverflowError) as exc:
        raise CodecError(f"expected a {what} frame, got undecodable bytes ({type(exc).__name__})") from None
    if type(o) is not list or len(o) != n or type(o[0]) is not int or o[0] != code:
        raise CodecError(f"expected a {what} frame [{code}, ...], got {o!r:.60}")
    return o


def decode_challenge(payload: bytes | bytearray | memoryview) -> tuple[bytes, bytes]:
    """``(na, proof_a)`` from a challenge payload; CodecError for anything else."""
    o = _unpack(payload, CHALLENGE, 3, "challenge")
    na, proof = o[1], o[2]
    if type(na) is not bytes or len(na) != NONCE_BYTES or type(proof) is not bytes or len(proof) != PROOF_BYTES:
        raise CodecError(f"challenge must hold a {NONCE_BYTES}-byte nonce and a {PROOF_BYTES}-byte proof")
    return na, proof


def decode_proof(payload: bytes | bytearray | memoryview) -> bytes:
    """``proof_d`` from a proof payload; CodecError for anything else."""
    proof = _unpack(payload, PROOF, 2, "proof")[1]
    if type(proof) is not bytes or len(proof) != PROOF_BYTES:
        raise CodecError(f"proof must be a {PROOF_BYTES}-byte bin")
    return proof
