"""Who this data directory is, and who its peers' data directories were: ``<data>/meta/``.

Raft's safety rests on every node remembering what it acknowledged and voted.
A node whose disk was wiped or replaced has forgotten both, and if it votes it
can help a lagging node win an election without committed entries. So every
data directory gets an *identity* when it is created: a random 64-bit id. Each
node remembers the id of every peer it has talked to (from the peer's
transport hello, ``dledger.transport``) and, in its own hello, tells each peer
the id it knows it under. A node told "I know you as X" where X is not its id
(nor one it has already acknowledged, below) holds another data directory than
the one its peers knew: it lost its data, and rejoins as a non-voter until it
has caught up (the runtime's ``recovering``).

Rules, and why:

- A peer's id is recorded the first time it is seen and never overwritten. If
  a wiped node's new hello reached us before our hello reached it, overwriting
  would make us tell it its new id and it would never learn it lost data; a
  memory that keeps the old id always tells it.
- A node told an id it does not hold first persists its recovering marker
  (the runtime), then adds that id to its *former* ids, so the same peer's
  next hellos do not make it recover again once it has caught up. A data
  directory wiped again loses its former ids with everything else, and the
  next hello sends it back to recovering: the safe side.
- Adopt mode: a data directory that holds a log but no readable identity file
  (written by a version without identities, or the file was damaged) is not a
  wiped one: its log is intact. It gets a new id flagged *adopt*: the first
  id a peer says it knows it under is taken as its own (the old one goes to
  its former ids) instead of being taken for data loss; a peer naming its
  current id ends adopt mode too. An empty data directory is never in adopt
  mode: whatever it was, it holds nothing now.
- A damaged peers file is dropped with an error in the log (the node then
  cannot warn a peer that comes back wiped until it meets it again); it never
  stops the node.

File ``<data>/meta/identity`` (big-endian)::

    offset  size  field
    ------  ----  --------------------------------------------------------------
         0     4  magic b"DLID"
         4     4  CRC32 (zlib.crc32) of every byte from offset 8 to the end
         8     1  format version, 1
         9     1  flags: bit 0 = adopt (see above); other bits 0
        10     8  id: unsigned, random, never 0
        18     2  n: number of former ids, at most MAX_FORMER_IDS
        20    8n  former ids, unsigned 64-bit each, oldest first

File ``<data>/meta/peers`` (big-endian)::

    offset  size  field
    ------  ----  --------------------------------------------------------------
         0     4  magic b"DLPR"
         4     4  CRC32 of every byte from offset 8 to the end
         8     1  format version, 1
         9     1  reserved, 0
        10     2  n: number of records
        12     .  n records, each: u16 length L of the peer's node id, L bytes of
                  the node id in UTF-8, u64 id of that peer's data directory

Both are small and written whole through a ``MetaStore`` (on disk:
``write_atomically``: temp file, fsync, rename, directory fsync; a node without
a disk keeps them in a ``MemoryMetaStore``): rarely, when a peer is seen for the first time or
the identity changes, on the event loop (a few fsyncs per data directory
lifetime, not worth a thread). Anything else in the file (a wrong magic,
length, version or CRC) counts as damaged.
"""

from __future__ import annotations

import logging
import os
import struct
import zlib
from pathlib import Path
from typing import Callable, Final

from raftmq.dledger.store.base import MetaStore
from raftmq.dledger.store.meta import FileMetaStore

log = logging.getLogger(__name__)

META_DIR: Final = "meta"
IDENTITY_FILE: Final = "identity"
PEERS_FILE: Final = "peers"
DAMAGED_SUFFIX: Final = ".damaged"

IDENTITY_MAGIC: Final = b"DLID"
PEERS_MAGIC: Final = b"DLPR"
FORMAT_VERSION: Final = 1
FLAG_ADOPT: Final = 0x01
MAX_FORMER_IDS: Final = 64
MAX_ID: Final = (1 << 64) - 1
_IDENTITY: Final = f"{META_DIR}/{IDENTITY_FILE}"  # record names in a MetaStore
_PEERS: Final = f"{META_DIR}/{PEERS_FILE}"

_HEAD = struct.Struct(">4sI")  # magic, crc
_IDENTITY_BODY = struct.Struct(">BBQH")  # version, flags, id, n former
_PEERS_BODY = struct.Struct(">BBH")  # version, reserved, n records
_U16 = struct.Struct(">H")
_U64 = struct.Struct(">Q")


class IdentityFileError(ValueError):
    """A meta file is damaged (the message says how)."""


def new_id() -> int:
    """A random data-directory id (never 0, so 0 can never be mistaken for one)."""
    while True:
        v = int.from_bytes(os.urandom(8), "big")
        if v:
            return v


def fmt_id(v: int | None) -> str:
    """An id as 16 hex digits for the log; ``none`` for no id."""
    return "none" if v is None else f"{v:016x}"


# -- byte formats (pure) --------------------------------------------------------------


def _seal(magic: bytes, body: bytes) -> bytes:
    return _HEAD.pack(magic, zlib.crc32(body)) + body


def _open(magic: bytes, raw: bytes, what: str) -> bytes:
    if len(raw) < _HEAD.size:
        raise IdentityFileError(f"{what}: {len(raw)} bytes, shorter than its {_HEAD.size}-byte header")
    got_magic, crc = _HEAD.unpack_from(raw)
    if got_magic != magic:
        raise IdentityFileError(f"{what}: magic {got_magic!r}, expected {magic!r}")
    body = raw[_HEAD.size:]
    if zlib.crc32(body) != crc:
        raise IdentityFileError(f"{what}: CRC mismatch")
    return body


def encode_identity(own_id: int, former: tuple[int, ...], adopt: bool) -> bytes:
    """The bytes of the identity file (module docstring)."""
    if not 0 < own_id <= MAX_ID:
        raise ValueError(f"id must be in 1..2**64-1, not {own_id}")
    former = former[-MAX_FORMER_IDS:]
    body = _IDENTITY_BODY.pack(FORMAT_VERSION, FLAG_ADOPT if adopt else 0, own_id, len(former))
    return _seal(IDENTITY_MAGIC, body + b"".join(_U64.pack(f) for f in former))


def decode_identity(raw: bytes) -> tuple[int, tuple[int, ...], bool]:
    """``(id, former ids, adopt)`` from the identity file's bytes; IdentityFileError if damaged."""
    body = _open(IDENTITY_MAGIC, raw, "identity file")
    if len(body) < _IDENTITY_BODY.size:
        raise IdentityFileError(f"identity file: body of {len(body)} bytes, need {_IDENTITY_BODY.size}")
    version, flags, own_id, n = _IDENTITY_BODY.unpack_from(body)
    if version != FORMAT_VERSION:
        raise IdentityFileError(f"identity file: format version {version}, this node reads {FORMAT_VERSION}")
    if flags & ~FLAG_ADOPT:
        raise IdentityFileError(f"identity file: unknown flags {flags:#x}")
    if own_id == 0:
        raise IdentityFileError("identity file: id 0")
    if n > MAX_FORMER_IDS or len(body) != _IDENTITY_BODY.size + 8 * n:
        raise IdentityFileError(f"identity file: {n} former ids do not fit its {len(body)}-byte body")
    former = tuple(_U64.unpack_from(body, _IDENTITY_BODY.size + 8 * i)[0] for i in range(n))
    return own_id, former, bool(flags & FLAG_ADOPT)


def encode_peers(peers: dict[str, int]) -> bytes:
    """The bytes of the peers file (module docstring), records sorted by node id."""
    parts = [_PEERS_BODY.pack(FORMAT_VERSION, 0, len(peers))]
    for name in sorted(peers):
        raw = name.encode()
        parts += [_U16.pack(len(raw)), raw, _U64.pack(peers[name])]
    return _seal(PEERS_MAGIC, b"".join(parts))


def decode_peers(raw: bytes) -> dict[str, int]:
    """Peer node id -> data-directory id from the peers file's bytes; IdentityFileError if damaged."""
    body = _open(PEERS_MAGIC, raw, "peers file")
    if len(body) < _PEERS_BODY.size:
        raise IdentityFileError(f"peers file: body of {len(body)} bytes, need {_PEERS_BODY.size}")
    version, _, n = _PEERS_BODY.unpack_from(body)
    if version != FORMAT_VERSION:
        raise IdentityFileError(f"peers file: format version {version}, this node reads {FORMAT_VERSION}")
    out: dict[str, int] = {}
    pos = _PEERS_BODY.size
    try:
        for _ in range(n):
            (length,) = _U16.unpack_from(body, pos)
            pos += 2
            if pos + length + 8 > len(body):
                raise IdentityFileError("peers file: a record runs past the end")
            name = body[pos:pos + length].decode()
            pos += length
            (peer_id,) = _U64.unpack_from(body, pos)
            pos += 8
            out[name] = peer_id
    except (struct.error, UnicodeDecodeError) as exc:
        raise IdentityFileError(f"peers file: {exc}") from None
    if pos != len(body):
        raise IdentityFileError(f"peers file: {len(body) - pos} bytes after the last record")
    return out


# -- the data directory's identity ---------------------------------------------------


class DataDirIdentity:
    """This data directory's id and what it remembers of its peers' (module docstring).

    Open it with ``open``; the transport asks ``id`` and ``known`` for its
    hellos and reports every hello received through ``check_known_as``,
    ``acknowledge_lost`` and ``remember``. Writes raise ``StorageFailure``.
    """

    def __init__(self, records: MetaStore, own_id: int, former: tuple[int, ...], adopt: bool,
                 peers: dict[str, int], node_id: str = "") -> None:
        self._records = records
        self._id = own_id
        self._former = former
        self._adopt = adopt
        self._peers = dict(peers)
        self._node = node_id  # for the log only

    @classmethod
    def open(cls, where: Path | str | MetaStore, *, has_data: bool, node_id: str = "") -> DataDirIdentity:
        """Load the identity and the peers' ids, creating the identity where it is
        missing or damaged. ``where`` is a data directory (its ``meta/`` files)
        or any ``MetaStore`` (the records ``meta/identity`` and ``meta/peers``:
        a node without a disk keeps them in memory).

        ``has_data``: the data directory holds a log or a hard state. Then a
        missing or damaged identity means an older version or a damaged file,
        not a wiped disk: the new id is in adopt mode (module docstring).
        """
        records = FileMetaStore(where, folders=(META_DIR,)) if isinstance(where, (str, Path)) else where
        problem = None
        raw = records.read(_IDENTITY)
        try:
            if raw is None:
                problem = "missing"
            else:
                own_id, former, adopt = decode_identity(raw)
        except IdentityFileError as exc:
            problem = str(exc)
            records.rename(_IDENTITY, _IDENTITY + DAMAGED_SUFFIX)
        if problem is not None:
            own_id, former, adopt = new_id(), (), has_data
            records.write(_IDENTITY, encode_identity(own_id, former, adopt))
            if problem == "missing" and not has_data:
                log.info("node=%s new data directory id=%s", node_id, fmt_id(own_id))
            elif problem == "missing":
                log.warning("node=%s data directory holds a log but no identity (an older version): new id=%s, "
                            "adopting the id the first peer knows it under", node_id, fmt_id(own_id))
            elif has_data:
                log.error("node=%s identity file damaged (%s; kept as %s%s): new id=%s, adopting the id the first "
                          "peer knows it under", node_id, problem, IDENTITY_FILE, DAMAGED_SUFFIX, fmt_id(own_id))
            else:
                log.warning("node=%s identity file damaged (%s) in an empty data directory: new id=%s", node_id,
                            problem, fmt_id(own_id))
        raw = records.read(_PEERS)
        try:
            peers = {} if raw is None else decode_peers(raw)
        except IdentityFileError as exc:
            log.error("node=%s peers file damaged (%s): forgetting the peers' ids until they are seen again",
                      node_id, exc)
            peers = {}
        return cls(records, own_id, former, adopt, peers, node_id)

    @property
    def id(self) -> int:
        return self._id

    @property
    def former(self) -> tuple[int, ...]:
        """Ids this data directory was told it replaced (or held before adopting one)."""
        return self._former

    @property
    def adopting(self) -> bool:
        return self._adopt

    def known(self, peer: str) -> int | None:
        """The id we remember ``peer``'s data directory by, if we have seen it."""
        return self._peers.get(peer)

    def remembered(self) -> dict[str, int]:
        return dict(self._peers)

    def check_known_as(self, peer: str, known_as: int) -> bool:
        """``peer`` says it knows us as ``known_as``: True if that means this data
        directory is not the one it knew (data lost). The caller then makes the
        node recover durably and calls ``acknowledge_lost``. In adopt mode the
        id is adopted (persisted) instead, and False returned."""
        if known_as == self._id:
            if self._adopt:
                self._save(self._id, self._former, adopt=False)
                log.info("node=%s peer=%s confirms id=%s", self._node, peer, fmt_id(known_as))
            return False
        if known_as in self._former:
            return False
        if self._adopt:
            log.warning("node=%s peer=%s knows this data directory as id=%s: adopting it (was %s)", self._node,
                        peer, fmt_id(known_as), fmt_id(self._id))
            self._save(known_as, self._former + (self._id,), adopt=False)
            return False
        return True

    def acknowledge_lost(self, known_as: int) -> None:
        """Record that this data directory replaced ``known_as`` (after the node
        made its recovery durable), so that id no longer means new data loss."""
        if known_as not in self._former and known_as != self._id:
            self._save(self._id, self._former + (known_as,), adopt=self._adopt)

    def remember(self, peer: str, peer_id: int) -> None:
        """``peer`` said its data directory's id is ``peer_id``: recorded if it is
        the first we hear of it; a different one is kept out (module docstring)."""
        old = self._peers.get(peer)
        if old == peer_id:
            return
        if old is not None:
            log.info("node=%s peer=%s now has id=%s, remembered as %s: it lost its data (it is told so)",
                     self._node, peer, fmt_id(peer_id), fmt_id(old))
            return
        peers = dict(self._peers)
        peers[peer] = peer_id
        self._records.write(_PEERS, encode_peers(peers))
        self._peers = peers
        log.info("node=%s peer=%s id=%s remembered", self._node, peer, fmt_id(peer_id))

    def _save(self, own_id: int, former: tuple[int, ...], adopt: bool) -> None:
        former = former[-MAX_FORMER_IDS:]
        self._records.write(_IDENTITY, encode_identity(own_id, former, adopt))
        self._id, self._former, self._adopt = own_id, former, adopt


def apply_hello(ident: DataDirIdentity, peer: str, data_id: int | None, known_as: int | None,
                on_lost_data: Callable[[str, int], None]) -> None:
    """What a peer's hello says about identities (module docstring), applied
    before anything after it is delivered: a lost-data verdict is made durable
    first (``on_lost_data``), then acknowledged; then the sender's id is
    remembered. A failed write raises: the transport drops the connection and
    the peer's next hello tries again. Every transport calls this."""
    if known_as is not None and ident.check_known_as(peer, known_as):
        on_lost_data(peer, known_as)
        ident.acknowledge_lost(known_as)
    if data_id is not None:
        ident.remember(peer, data_id)
