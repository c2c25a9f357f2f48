"""Wire format of the peer protocol: messages as msgpack arrays in length-prefixed frames.

Pure: values in, bytes out and back; no sockets (``dledger.transport`` does the I/O).

Frame
-----
Everything on a peer connection is a sequence of frames::

    offset  size  field    meaning
    ------  ----  -------  -----------------------------------------------------
         0     4  length   unsigned 32-bit big-endian: number of payload bytes
         4     n  payload  one msgpack document, n = length (0 <= n <= max_frame_bytes)

A receiver rejects a length above its ``max_frame_bytes`` (default
``MAX_FRAME_BYTES`` = 64 MiB) before buffering the payload, so a hostile or
corrupt length cannot make it allocate gigabytes.

The first frame a dialer sends on a connection is the hello (``encode_hello``);
every later frame holds one message (``encode``). Frames only flow from the
dialer to the listener: a node sends on the connection it dialed and receives
on the connections its peers dialed.

Hello payload
-------------
A msgpack array of 6 items (or 4, from a node older than data-directory ids)::

    [100, protocol_version, node_id, cluster, data_id, known_as]
    [100, protocol_version, node_id, cluster]

``100`` is not a message type, so a message sent first is rejected;
``protocol_version`` is ``PROTOCOL_VERSION`` (1); ``node_id`` and ``cluster``
are non-empty strings of at most ``MAX_ID_CHARS`` characters. ``data_id`` is
the id of the sender's data directory and ``known_as`` the id under which the
sender remembers the receiver's (``dledger.store.identity``): each an
unsigned integer in 1..2**64-1, or nil when the sender has none (``known_as``:
it has never seen the receiver). A receiver accepts both lengths; a node of
the older version accepts only the 4-item form, so a sender uses it towards
a peer whose own hello came in that form (``dledger.transport``).

Authenticated hello (protocol version 2)
----------------------------------------
A node with a cluster secret (``cluster_secret_file`` or the environment
variable ``RAFTMQ_CLUSTER_SECRET``) opens every connection with a 7-item
hello carrying a fresh 16-byte random nonce ``nd`` (a bin)::

    [100, 2, node_id, cluster, data_id, known_as, nd]

and both sides prove that they hold the secret before any Raft frame is
decoded. This is the only time frames flow from the acceptor to the dialer::

    dialer -> acceptor   hello [100, 2, dialer_id, cluster, data_id, known_as, nd]
    acceptor -> dialer   challenge [101, na, proof_a]
    dialer -> acceptor   proof [102, proof_d]
    dialer -> acceptor   messages, as above

    proof_a = HMAC-SHA256(secret, "raftmq-peer-v2 acceptor" | cluster | acceptor_id | dialer_id | nd | na)
    proof_d = HMAC-SHA256(secret, "raftmq-peer-v2 dialer" | cluster | dialer_id | acceptor_id | na | nd)

``na`` is the acceptor's fresh 16-byte nonce, each proof 32 bytes (bins);
``|`` joins fields each behind its 4-byte big-endian length, so no two field
lists give the same bytes (``dledger.peer_auth``). The dialer checks
``proof_a`` before it sends anything else (an impostor acceptor gets no Raft
frame); the acceptor checks ``proof_d`` before it applies the hello's
data-directory ids or delivers a message. Proofs are compared in constant
time (``hmac.compare_digest``). Fresh nonces on both sides make a recorded
handshake useless on another connection; the distinct labels and the order
of the ids make one side's proof useless as the other's. A node with a secret
refuses a version-1 hello, and one without a secret refuses a version-2
hello: a secret on one side only is a misconfiguration that both sides log.

Message payload
---------------
A msgpack array ``[type, term, src, dst, fields...]``; ``term`` is an
unsigned integer, ``src`` and ``dst`` node ids (as in the hello)::

    type  message               fields after dst
    ----  --------------------  -------------------------------------------------
       1  AppendEntries         prev_log_index, prev_log_term, leader_commit, entries
       2  AppendEntriesReply    success, match_index, reject_index, hint_index, hint_term
       3  RequestVote           last_log_index, last_log_term, pre_vote, transfer
       4  RequestVoteReply      granted, pre_vote
       5  TimeoutNow            (none)
       6  InstallSnapshot       meta_index, meta_term, meta_next_position, data
       7  InstallSnapshotReply  match_index
       8  FetchEntry            index
       9  FetchEntryReply       entry

In ``FetchEntry`` and ``FetchEntryReply`` ``term`` is the term of the entry
asked for (they repair a damaged entry in place and are not Raft messages).

``entries`` is an array of entries, each a 4-item array
``[term, index, kind, data]``: ``kind`` is ``EntryKind`` (0 NORMAL, 1 NOOP),
``data`` a msgpack bin (never a str), and the indexes run consecutively from
``prev_log_index + 1`` (Raft §5.3: the entries follow the matched prefix).
Integers (terms, indexes, commit and match indexes, positions) are unsigned and
at most ``MAX_TERM`` = ``MAX_INDEX`` = 2**62-1 (``dledger.core.messages``):
a frame with a larger one is refused, so that ``term + 1`` always encodes. Flags are msgpack booleans
(never 0/1); snapshot ``data`` is a bin.

An entry is a positional array rather than a map so that neither side builds
a dict per entry: AppendEntries carrying hundreds of entries is the
replication hot path. ``decode`` validates every field's type and range and
raises ``CodecError`` for anything else, whatever the bytes.
"""

from __future__ import annotations

import struct
from dataclasses import dataclass
from typing import Any, Callable, Final, Iterator

import msgpack

from raftmq.dledger.core.messages import (
    AppendEntries,
    AppendEntriesReply,
    MAX_INDEX,
    MAX_TERM,
    Entry,
    EntryKind,
    InstallSnapshot,
    InstallSnapshotReply,
    FetchEntry,
    FetchEntryReply,
    Message,
    NodeId,
    RequestVote,
    RequestVoteReply,
    Snapshot,
    SnapshotMeta,
    TimeoutNow,
)
from raftmq.dledger.errors import CodecError

FRAME_HEADER: Final = struct.Struct(">I")
FRAME_HEADER_BYTES: Final = FRAME_HEADER.size  # 4
MAX_FRAME_BYTES: Final = 64 << 20
"""Default largest payload a receiver accepts (the transport's ``max_frame_bytes``)."""
MAX_HELLO_BYTES: Final = 1024
"""Largest hello payload: a connection that has not said who it is may not make us buffer more."""
MAX_ID_CHARS: Final = 128
"""Longest node id or cluster name on the wire."""
PROTOCOL_VERSION: Final = 1
AUTH_PROTOCOL_VERSION: Final = 2
"""The hello version of a node with a cluster secret (the challenge-response below)."""
NONCE_BYTES: Final = 16
"""Length of the handshake's random nonces."""

HELLO: Final = 100
APPEND_ENTRIES: Final = 1
APPEND_ENTRIES_REPLY: Final = 2
REQUEST_VOTE: Final = 3
REQUEST_VOTE_REPLY: Final = 4
TIMEOUT_NOW: Final = 5
INSTALL_SNAPSHOT: Final = 6
INSTALL_SNAPSHOT_REPLY: Final = 7
FETCH_ENTRY: Final = 8
FETCH_ENTRY_REPLY: Final = 9

assert FRAME_HEADER_BYTES == 4

# One packer for the module: msgpack's C packer holds the GIL for a whole
# pack() and resets its buffer after an error, so sharing it is safe, and it
# saves allocating a packer (and its buffer) per message.
_pack: Callable[[Any], bytes] = msgpack.Packer(use_bin_type=True).pack

# Exceptions msgpack (and our own unpacking of arrays) raise on bad input.
_UNPACK_ERRORS: Final = (msgpack.UnpackException, ValueError, TypeError, IndexError, KeyError,
                         OverflowError, RecursionError)
_KINDS: Final = {int(k): k for k in EntryKind}


def _unpack(payload: bytes | bytearray | memoryview) -> Any:
    """The msgpack document in ``payload``: maps and ext types are refused outright, strings
    are capped at the UTF-8 size of the longest id (a message has no other strings), arrays
    and bins at the payload's size; trailing bytes are an error."""
    try:
        return msgpack.unpackb(payload, raw=False, use_list=True, max_str_len=MAX_ID_CHARS * 4,
                               max_map_len=0, max_ext_len=0)
    except _UNPACK_ERRORS as exc:
        raise CodecError(f"undecodable payload ({type(exc).__name__}: {exc})") from None


# --- encoding ------------------------------------------------------------------


def _enc_append_entries(m: AppendEntries) -> list[Any]:
    return [APPEND_ENTRIES, m.term, m.src, m.dst, m.prev_log_index, m.prev_log_term, m.leader_commit,
            [(e.term, e.index, e.kind, e.data) for e in m.entries]]


def _enc_append_entries_reply(m: AppendEntriesReply) -> list[Any]:
    return [APPEND_ENTRIES_REPLY, m.term, m.src, m.dst, m.success, m.match_index, m.reject_index,
            m.hint_index, m.hint_term]


def _enc_request_vote(m: RequestVote) -> list[Any]:
    return [REQUEST_VOTE, m.term, m.src, m.dst, m.last_log_index, m.last_log_term, m.pre_vote, m.transfer]


def _enc_request_vote_reply(m: RequestVoteReply) -> list[Any]:
    return [REQUEST_VOTE_REPLY, m.term, m.src, m.dst, m.granted, m.pre_vote]


def _enc_timeout_now(m: TimeoutNow) -> list[Any]:
    return [TIMEOUT_NOW, m.term, m.src, m.dst]


def _enc_install_snapshot(m: InstallSnapshot) -> list[Any]:
    meta = m.snapshot.meta
    return [INSTALL_SNAPSHOT, m.term, m.src, m.dst, meta.index, meta.term, meta.next_position, m.snapshot.data]


def _enc_install_snapshot_reply(m: InstallSnapshotReply) -> list[Any]:
    return [INSTALL_SNAPSHOT_REPLY, m.term, m.src, m.dst, m.match_index]


def _enc_fetch_entry(m: FetchEntry) -> list[Any]:
    return [FETCH_ENTRY, m.term, m.src, m.dst, m.index]


def _enc_fetch_entry_reply(m: FetchEntryReply) -> list[Any]:
    e = m.entry
    return [FETCH_ENTRY_REPLY, m.term, m.src, m.dst, [e.term, e.index, int(e.kind), e.data]]


_ENCODERS: Final[dict[type, Callable[[Any], list[Any]]]] = {
    AppendEntries: _enc_append_entries,
    AppendEntriesReply: _enc_append_entries_reply,
    RequestVote: _enc_request_vote,
    RequestVoteReply: _enc_request_vote_reply,
    TimeoutNow: _enc_timeout_now,
    InstallSnapshot: _enc_install_snapshot,
    InstallSnapshotReply: _enc_install_snapshot_reply,
    FetchEntry: _enc_fetch_entry,
    FetchEntryReply: _enc_fetch_entry_reply,
}


def encode(msg: Message) -> bytes:
    """The msgpack payload of ``msg`` (without the frame's length prefix).

    Raises CodecError for something that is not a message or holds a value
    msgpack cannot carry (an integer beyond 64 bits, say). Field types are not
    re-checked here: a wrongly typed field is refused by the receiver's ``decode``.
    """
    try:
        return _pack(_ENCODERS[type(msg)](msg))
    except KeyError:
        raise CodecError(f"cannot encode {type(msg).__name__}: not a peer message") from None
    except (TypeError, ValueError, OverflowError, AttributeError) as exc:
        raise CodecError(f"cannot encode {type(msg).__name__}: {exc}") from None


@dataclass(slots=True, frozen=True)
class Hello:
    """The first frame of a connection: who is dialing, for which cluster, the id
    of its data directory and the id it remembers the receiver's by (None: not
    sent, by an older node, or not known)."""

    node_id: str
    cluster: str
    data_id: int | None = None
    known_as: int | None = None
    nonce: bytes | None = None  # the dialer's nonce of an authenticated (version 2) hello


def encode_hello(node_id: str, cluster_name: str, data_id: int | None = None, known_as: int | None = None,
                 nonce: bytes | None = None) -> bytes:
    """The hello payload: the 6-item form, or the older 4-item one when neither
    id is given (what a node without data-directory ids reads); with a
    ``nonce``, the 7-item version-2 form that opens the authenticated handshake
    (``dledger.peer_auth``)."""
    if nonce is not None:
        return _pack([HELLO, AUTH_PROTOCOL_VERSION, node_id, cluster_name, data_id, known_as, nonce])
    if data_id is None and known_as is None:
        return _pack([HELLO, PROTOCOL_VERSION, node_id, cluster_name])
    return _pack([HELLO, PROTOCOL_VERSION, node_id, cluster_name, data_id, known_as])


def frame(payload: bytes) -> bytes:
    """``payload`` behind its 4-byte big-endian length (one frame)."""
    return FRAME_HEADER.pack(len(payload)) + payload


# --- decoding ------------------------------------------------------------------


_MAX_FIELD: Final = max(MAX_TERM, MAX_INDEX)


def _nat(v: Any, name: str) -> int:
    """A term, index, commit, match or position: an integer in 0..MAX_TERM/MAX_INDEX
    (both 2**62-1), so that no node ever adopts a term whose successor cannot be encoded."""
    if type(v) is not int or not 0 <= v <= _MAX_FIELD:
        raise CodecError(f"{name} must be an integer in 0..{_MAX_FIELD}, not {v!r:.40}")
    return v


def _flag(v: Any, name: str) -> bool:
    if type(v) is not bool:
        raise CodecError(f"{name} must be a boolean, not {v!r:.40}")
    return v


def _name(v: Any, what: str) -> str:
    if type(v) is not str or not 0 < len(v) <= MAX_ID_CHARS:
        raise CodecError(f"{what} must be a non-empty string of at most {MAX_ID_CHARS} characters, not {v!r:.40}")
    return v


def _arity(o: list[Any], n: int, what: str) -> None:
    if len(o) != n:
        raise CodecError(f"{what} must have {n} items, got {len(o)}")


def _dec_append_entries(o: list[Any]) -> AppendEntries:
    _arity(o, 8, "AppendEntries")
    prev_index = _nat(o[4], "prev_log_index")
    raw = o[7]
    if type(raw) is not list:
        raise CodecError("AppendEntries entries must be an array")
    entries: list[Entry] = []
    append = entries.append
    kinds = _KINDS
    expect = prev_index + 1
    # The hot loop: one unpacking and one combined test per entry, no dict.
    # Unpacking a non-array or an array of another length raises
    # TypeError/ValueError, which decode() turns into CodecError; a 4-char
    # str or 4-byte bin unpacks but fails the type tests.
    for et, ei, ek, ed in raw:
        if (type(ed) is not bytes or type(ei) is not int or ei != expect or type(et) is not int
                or not 0 <= et <= MAX_TERM or type(ek) is not int or ek not in kinds):
            raise CodecError(f"entry {ei!r:.20} (expected index {expect}): needs [term >= 0, index, kind 0|1, "
                             f"bin data], got [{type(et).__name__}, {type(ei).__name__}, {ek!r:.10}, "
                             f"{type(ed).__name__}]")
        append(Entry(et, ei, ed, kinds[ek]))
        expect += 1
    if expect - 1 > MAX_INDEX:
        raise CodecError(f"entries run past the largest index {MAX_INDEX}")
    return AppendEntries(_nat(o[1], "term"), NodeId(_name(o[2], "src")), NodeId(_name(o[3], "dst")), prev_index,
                         _nat(o[5], "prev_log_term"), tuple(entries), _nat(o[6], "leader_commit"))


def _dec_append_entries_reply(o: list[Any]) -> AppendEntriesReply:
    _arity(o, 9, "AppendEntriesReply")
    return AppendEntriesReply(_nat(o[1], "term"), NodeId(_name(o[2], "src")), NodeId(_name(o[3], "dst")),
                              _flag(o[4], "success"), _nat(o[5], "match_index"), _nat(o[6], "reject_index"),
                              _nat(o[7], "hint_index"), _nat(o[8], "hint_term"))


def _dec_request_vote(o: list[Any]) -> RequestVote:
    _arity(o, 8, "RequestVote")
    return RequestVote(_nat(o[1], "term"), NodeId(_name(o[2], "src")), NodeId(_name(o[3], "dst")),
                       _nat(o[4], "last_log_index"), _nat(o[5], "last_log_term"), _flag(o[6], "pre_vote"),
                       _flag(o[7], "transfer"))


def _dec_request_vote_reply(o: list[Any]) -> RequestVoteReply:
    _arity(o, 6, "RequestVoteReply")
    return RequestVoteReply(_nat(o[1], "term"), NodeId(_name(o[2], "src")), NodeId(_name(o[3], "dst")),
                            _flag(o[4], "granted"), _flag(o[5], "pre_vote"))


def _dec_timeout_now(o: list[Any]) -> TimeoutNow:
    _arity(o, 4, "TimeoutNow")
    return TimeoutNow(_nat(o[1], "term"), NodeId(_name(o[2], "src")), NodeId(_name(o[3], "dst")))


def _dec_install_snapshot(o: list[Any]) -> InstallSnapshot:
    _arity(o, 8, "InstallSnapshot")
    data = o[7]
    if type(data) is not bytes:
        raise CodecError(f"snapshot data must be a bin, not {type(data).__name__}")
    meta = SnapshotMeta(_nat(o[4], "snapshot index"), _nat(o[5], "snapshot term"),
                        _nat(o[6], "snapshot next_position"))
    return InstallSnapshot(_nat(o[1], "term"), NodeId(_name(o[2], "src")), NodeId(_name(o[3], "dst")),
                           Snapshot(meta, data))


def _dec_install_snapshot_reply(o: list[Any]) -> InstallSnapshotReply:
    _arity(o, 5, "InstallSnapshotReply")
    return InstallSnapshotReply(_nat(o[1], "term"), NodeId(_name(o[2], "src")), NodeId(_name(o[3], "dst")),
                                _nat(o[4], "match_index"))


def _dec_fetch_entry(o: list[Any]) -> FetchEntry:
    _arity(o, 5, "FetchEntry")
    return FetchEntry(_nat(o[1], "term"), NodeId(_name(o[2], "src")), NodeId(_name(o[3], "dst")),
                      _nat(o[4], "index"))


def _dec_fetch_entry_reply(o: list[Any]) -> FetchEntryReply:
    _arity(o, 5, "FetchEntryReply")
    raw = o[4]
    if type(raw) is not list or len(raw) != 4:
        raise CodecError("FetchEntryReply entry must be a 4-item array [term, index, kind, data]")
    et, ei, ek, ed = raw
    term = _nat(o[1], "term")
    if type(ed) is not bytes or type(ek) is not int or ek not in _KINDS or _nat(et, "entry term") != term:
        raise CodecError("FetchEntryReply entry needs [term (the message's), index, kind 0|1, bin data]")
    return FetchEntryReply(term, NodeId(_name(o[2], "src")), NodeId(_name(o[3], "dst")),
                           Entry(et, _nat(ei, "entry index"), ed, _KINDS[ek]))


_DECODERS: Final[dict[int, Callable[[list[Any]], Message]]] = {
    APPEND_ENTRIES: _dec_append_entries,
    APPEND_ENTRIES_REPLY: _dec_append_entries_reply,
    REQUEST_VOTE: _dec_request_vote,
    REQUEST_VOTE_REPLY: _dec_request_vote_reply,
    TIMEOUT_NOW: _dec_timeout_now,
    INSTALL_SNAPSHOT: _dec_install_snapshot,
    INSTALL_SNAPSHOT_REPLY: _dec_install_snapshot_reply,
    FETCH_ENTRY: _dec_fetch_entry,
    FETCH_ENTRY_REPLY: _dec_fetch_entry_reply,
}


def decode(payload: bytes | bytearray | memoryview) -> Message:
    """The message in one frame's payload, validated field by field.

    Raises CodecError, and nothing else, for any payload that is not exactly a
    message of the format above: undecodable msgpack, trailing bytes, an
    unknown type, a wrong number of items, a wrongly typed, negative or
    out-of-bounds (above 2**62-1) field,
    an over-long id, entries whose indexes do not follow ``prev_log_index``.
    """
    o = _unpack(payload)
    if type(o) is not list or not o:
        raise CodecError(f"a message must be a non-empty array, not {type(o).__name__}")
    code = o[0]
    dec = _DECODERS.get(code) if type(code) is int else None
    if dec is None:
        raise CodecError(f"unknown message type {code!r:.20}")
    try:
        return dec(o)
    except CodecError:
        raise
    except _UNPACK_ERRORS as exc:  # e.g. an entry that is not a 4-item array
        raise CodecError(f"malformed message of type {code}: {type(exc).__name__}: {exc}") from None


def _hello_id(v: Any, what: str) -> int | None:
    if v is None:
        return None
    if type(v) is not int or not 0 < v < 1 << 64:
        raise CodecError(f"{what} must be nil or an integer in 1..2**64-1, not {v!r:.40}")
    return v


def decode_hello(payload: bytes | bytearray | memoryview) -> Hello:
    """The ``Hello`` in a hello payload: version 1 in the 6-item or older 4-item
    form (ids None), or version 2 with 7 items (``nonce`` set); CodecError if it
    is anything else (a message, another protocol version, a malformed array)."""
    o = _unpack(payload)
    if type(o) is not list or len(o) not in (4, 6, 7) or type(o[0]) is not int or o[0] != HELLO:
        raise CodecError("expected a hello [100, version, node_id, cluster, data_id, known_as(, nonce)] "
                         "as the first frame")
    version = AUTH_PROTOCOL_VERSION if len(o) == 7 else PROTOCOL_VERSION
    if type(o[1]) is not int or o[1] != version:
        raise CodecError(f"protocol version {o[1]!r:.20} with {len(o)} hello items is not supported "
                         f"(this node speaks {PROTOCOL_VERSION} and {AUTH_PROTOCOL_VERSION})")
    node, cluster = _name(o[2], "hello node_id"), _name(o[3], "hello cluster")
    if len(o) == 4:
        return Hello(node, cluster)
    data_id, known_as = _hello_id(o[4], "hello data_id"), _hello_id(o[5], "hello known_as")
    if len(o) == 6:
        return Hello(node, cluster, data_id, known_as)
    if type(o[6]) is not bytes or len(o[6]) != NONCE_BYTES:
        raise CodecError(f"hello nonce must be a bin of {NONCE_BYTES} bytes, not {o[6]!r:.40}")
    return Hello(node, cluster, data_id, known_as, o[6])


# --- framing ---------------------------------------------------------------------


class FrameDecoder:
    """Splits a byte stream into frame payloads, whatever the read boundaries.

    ``feed`` takes the bytes of one read and yields, in order, the payloads
    they complete, as memoryviews (read-only; valid as long as the caller
    keeps them). Bytes of an unfinished frame are kept for the next ``feed``.
    The common case, whole frames within one read, copies nothing; a frame
    split across reads is gathered in a buffer and copied out once complete. A length
    above ``max_frame_bytes`` raises CodecError as soon as its 4 bytes are
    seen, after the frames before it and before its payload is buffered.
    Iterate each ``feed`` to the end (or drop the stream after an error).
    """

    __slots__ = ("max_frame_bytes", "_tail", "_need")

    def __init__(self, max_frame_bytes: int = MAX_FRAME_BYTES) -> None:
        self.max_frame_bytes = max_frame_bytes
        self._tail = bytearray()  # the start of an unfinished frame
        self._need = FRAME_HEADER_BYTES  # how long _tail must grow before a frame can complete

    @property
    def buffered_bytes(self) -> int:
        """Bytes of an unfinished frame held for the next ``feed``."""
        return len(self._tail)

    def feed(self, data: bytes) -> Iterator[memoryview]:
        tail = self._tail
        if tail:
            tail += data
            if len(tail) < self._need:
                return
            data = bytes(tail)
            tail.clear()
        view = memoryview(data).toreadonly()
        end = len(data)
        pos = 0
        unpack_from = FRAME_HEADER.unpack_from
        self._need = FRAME_HEADER_BYTES
        while end - pos >= 4:
            (n,) = unpack_from(data, pos)
            if n > self.max_frame_bytes:
                raise CodecError(f"frame length {n} exceeds max_frame_bytes={self.max_frame_bytes}")
            if end - pos - 4 < n:
                self._need = 4 + n
                break
            pos += 4 + n
            yield view[pos - n : pos]
        if pos < end:
            tail += view[pos:]
