"""TCP transport between the nodes of one dledger cluster.

Connections are one-way. Each node dials one long-lived connection to every
peer and sends everything for that peer over it; it receives on the
connections its peers dialed to its listener. The byte format (length-prefixed
msgpack frames, a hello first) is described in ``dledger.codec``.

Sending (``send``) never blocks and never fails: the message goes on the
peer's bounded queue, and one writer task per peer turns everything queued
into frames and hands them to the socket in one write, then waits for the
socket to drain (under load, many frames per syscall). A full queue drops the
message; so does a failed dial drop what was queued for it. Raft tolerates
lost messages (the leader retransmits from its progress), so this trades
nothing for a bounded memory footprint. A lost connection is redialed with
exponential backoff and jitter.

Receiving: an accepted connection must send a hello naming a known peer of
the same cluster and, when the node has a cluster secret, finish the
challenge-response handshake (``dledger.codec``, ``dledger.peer_auth``: the
only frames that flow from acceptor to dialer) within ``hello_timeout_ms``;
then each frame is decoded and handed to ``on_message`` synchronously, after
checking that it comes from the hello's node and is addressed to us. Anything
malformed or unexpected (garbage, an oversized length, a wrong cluster, a
spoofed sender, a wrong proof, silence) closes that connection only; the node
and its other connections carry on. Refusals before the handshake is done are
logged at most once a minute per source address (``dledger.refusal_log``),
with the count suppressed since. Without a secret there is no
authentication: the node says so once at start.

Bounds: at most ``max_handshakes`` connections in their handshake (more are
closed at once), at most ``MAX_HELLO_BYTES`` buffered before it is done, at
most ``max_inbound_per_peer`` connections per authenticated peer (a newer
one replaces the oldest), and at most ``max_buffered_bytes`` of unfinished
frames over all connections before reading pauses (``PeerTransport._account``).
With ``dledger.peer_security``'s TLS contexts the listener and the dials run
over TLS, the handshake inside it.

A dialer with a secret sends the version-2 hello, waits for the acceptor's
challenge and checks it before anything else: until its proof is sent the
connection is not the peer's ``conn``, so its messages stay queued.

Data-directory identities (``dledger.store.identity``): each hello carries
the id of the sender's data directory and the id under which the sender
remembers the receiver's. On an accepted hello the receiver first checks the
latter: naming an id this data directory does not hold means the node lost
its data, and ``on_lost_data(peer, known_as)`` makes it recover (durably)
before any frame after that hello is delivered. Every message from a peer
arrives on the connection that peer dialed, behind its hello, so no vote
request reaches the core of a node that lost its data before it knows. Then
the sender's id is remembered, for the hellos we send it. A peer whose hello
came in the older form without ids is sent that form too (an older node
refuses the longer one); a peer whose hello has not arrived yet gets the new
form.

``on_peer_down(peer)`` is called when the last incoming connection from a
peer closes: its process has probably died, and the runtime can start an
election at once instead of waiting out an election timeout.

The incoming side is an ``asyncio.Protocol`` (``_Inbound``) rather than a
stream reader: frames are split straight out of each read's ``bytes``
(``codec.FrameDecoder``), with no task switch and no copy per frame.
"""

from __future__ import annotations

import asyncio
import errno
import logging
import os
import random
import socket
from collections import deque
from dataclasses import dataclass
from typing import Callable, Final, Protocol, cast

from raftmq.dledger import codec, peer_auth
from raftmq.dledger.core.messages import Message
from raftmq.dledger.errors import CodecError, PeerViolation, StorageFailure
from raftmq.dledger.peer_security import PeerSecurity
from raftmq.dledger.refusal_log import RefusalLog
from raftmq.dledger.store.identity import DataDirIdentity, apply_hello

log = logging.getLogger(__name__)

_MAX_U32: Final = (1 << 32) - 1


@dataclass(slots=True, frozen=True)
class TransportConfig:
    """Settings of a ``PeerTransport``; units are in the field names.

    - ``max_frame_bytes``: largest frame payload sent to or accepted from a
      peer. Must exceed the largest AppendEntries (the core's
      ``max_batch_bytes`` plus about 16 bytes an entry) and the largest
      snapshot; a longer message is dropped by the sender (logged as an error)
      and a longer incoming length closes the connection. Default 64 MiB.
    - ``send_queue_frames``: messages queued per peer, beyond which ``send``
      drops. With 64 in-flight AppendEntries of 1 MiB a peer, 4096 leaves
      ample room for heartbeats and replies.
    - ``write_batch_bytes``: a writer coalesces queued frames into one write
      until the batch reaches this many bytes (one frame may exceed it); it
      waits for the socket to drain once more than twice this is buffered.
    - ``reconnect_min_ms`` / ``reconnect_max_ms``: bounds of the jittered
      exponential backoff between dial attempts (min <= max).
    - ``connect_timeout_ms``: how long a dial may take.
    - ``hello_timeout_ms``: how long an accepted connection may take to send
      its hello and finish the handshake (and a TLS handshake may take) before
      it is closed; also how long a dialer waits for the acceptor's challenge.
    - ``max_handshakes``: accepted connections that may be in their handshake
      at once; a connection beyond that is closed at once (a flood of
      connections that never say hello costs a bounded number of sockets).
    - ``max_buffered_bytes``: bytes of unfinished frames that all incoming
      connections together may hold; beyond it a connection that receives more
      of an unfinished frame stops being read (TCP pushes back on its sender)
      until the total falls. One connection holds at most ``max_frame_bytes``
      plus one read.
    - ``max_inbound_per_peer``: incoming connections kept per authenticated
      peer; a newer one replaces the oldest.
    """

    max_frame_bytes: int = codec.MAX_FRAME_BYTES
    send_queue_frames: int = 4096
    write_batch_bytes: int = 1 << 20
    reconnect_min_ms: int = 20
    reconnect_max_ms: int = 1000
    connect_timeout_ms: int = 1000
    hello_timeout_ms: int = 1000
    max_handshakes: int = 64
    max_buffered_bytes: int = 256 << 20
    max_inbound_per_peer: int = 2

    def __post_init__(self) -> None:
        if not codec.MAX_HELLO_BYTES <= self.max_frame_bytes <= _MAX_U32:
            raise ValueError(f"max_frame_bytes must be between {codec.MAX_HELLO_BYTES} and {_MAX_U32}, "
                             f"got {self.max_frame_bytes}")
        if self.send_queue_frames < 1:
            raise ValueError(f"send_queue_frames must be at least 1, got {self.send_queue_frames}")
        if self.write_batch_bytes < 1:
            raise ValueError(f"write_batch_bytes must be at least 1, got {self.write_batch_bytes}")
        if self.reconnect_min_ms < 1:
            raise ValueError(f"reconnect_min_ms must be at least 1, got {self.reconnect_min_ms}")
        if self.reconnect_max_ms < self.reconnect_min_ms:
            raise ValueError(f"reconnect_max_ms must be at least reconnect_min_ms={self.reconnect_min_ms}, "
                             f"got {self.reconnect_max_ms}")
        if self.connect_timeout_ms < 1:
            raise ValueError(f"connect_timeout_ms must be at least 1, got {self.connect_timeout_ms}")
        if self.hello_timeout_ms < 1:
            raise ValueError(f"hello_timeout_ms must be at least 1, got {self.hello_timeout_ms}")
        if self.max_handshakes < 1:
            raise ValueError(f"max_handshakes must be at least 1, got {self.max_handshakes}")
        if self.max_buffered_bytes < 1:
            raise ValueError(f"max_buffered_bytes must be at least 1, got {self.max_buffered_bytes}")
        if self.max_inbound_per_peer < 1:
            raise ValueError(f"max_inbound_per_peer must be at least 1, got {self.max_inbound_per_peer}")


class Transport(Protocol):
    """The seam between a dledger runtime and its network: what ``DLedger`` calls.

    Contract (``PeerTransport`` over TCP, ``MemoryTransport`` within one event
    loop, see ``dledger.memory_transport``):
    - ``start()`` / ``stop()``: begin and end taking part; ``stop`` is
      idempotent, ends every task the transport started, and calls none of
      this node's hooks for what it closes. A stopped transport is not started
      again.
    - ``send(msg)``: queue ``msg`` for ``msg.dst``; never blocks, never raises.
      A message may be lost (Raft retransmits); messages between two nodes
      that do arrive, arrive in the order sent.
    - ``flush()``: hand what ``send`` queued to the network now (the runtime
      calls it after each Ready's messages); a transport that only sends on
      ``flush`` must also flush by itself soon after a ``send``.
    - Received messages go to ``TransportHooks.on_message`` on the event loop,
      one at a time, only from peers and addressed to this node, each behind
      its sender's hello (identities: ``dledger.store.identity.apply_hello``).
    """

    async def start(self) -> None: ...

    async def stop(self) -> None: ...

    def send(self, msg: Message) -> None: ...

    def flush(self) -> None: ...


@dataclass(slots=True, frozen=True)
class TransportHooks:
    """What a runtime gives the transport it makes (``TransportFactory``): its
    node id, where received messages go (``on_message``), whom to tell that a
    peer's connection closed (``on_peer_down(peer)``: it probably died) and
    the data-directory identity checked against every hello, with
    ``on_lost_data(peer, known_as)`` for a hello that says this node lost its
    data (it must recover durably before returning)."""

    node_id: str
    on_message: Callable[[Message], None]
    on_peer_down: Callable[[str], None]
    identity: DataDirIdentity
    on_lost_data: Callable[[str, int], None]


# Makes a node's transport once its runtime has the hooks (``DLedger(transport=...)``).
TransportFactory = Callable[[TransportHooks], Transport]


class Backoff:
    """Delays between dial attempts to an unreachable peer: exponential, with jitter.

    The n-th delay since the last ``reset`` is drawn uniformly from
    ``[c / 2, c]`` (but never below ``min_ms``), where
    ``c = min(min_ms * 2**n, max_ms)``: a restarted peer is found again within
    about ``max_ms``, a dead one costs little, and nodes restarted together do
    not dial in lockstep. Randomness comes from the ``rng`` given (seedable).
    """

    __slots__ = ("_min_ms", "_max_ms", "_ceiling_ms", "_rng")

    def __init__(self, min_ms: float, max_ms: float, rng: random.Random) -> None:
        self._min_ms = min_ms
        self._max_ms = max_ms
        self._ceiling_ms = min_ms
        self._rng = rng

    def next_ms(self) -> float:
        c = self._ceiling_ms
        self._ceiling_ms = min(c * 2, self._max_ms)
        return self._rng.uniform(max(self._min_ms, c / 2), c)

    def reset(self) -> None:
        self._ceiling_ms = self._min_ms


class _Peer:
    """What the transport keeps per peer: the outgoing queue and connection, and counters."""

    __slots__ = ("id", "addr", "queue", "wake", "task", "conn", "sent", "dropped", "received", "inbound",
                 "dial_failures", "legacy_hello", "inbound_conns")

    def __init__(self, peer_id: str, addr: tuple[str, int]) -> None:
        self.id = peer_id
        self.addr = addr
        self.queue: deque[Message] = deque()
        self.wake = asyncio.Event()  # set when the queue gains a message or the connection is lost
        self.task: asyncio.Task[None] | None = None
        self.conn: _Outbound | None = None
        self.sent = 0  # messages written to the socket
        self.dropped = 0  # messages discarded: queue full, dial failed, unencodable or too large
        self.received = 0  # messages delivered to on_message from this peer
        self.inbound = 0  # incoming connections from this peer that passed the hello
        self.dial_failures = 0  # consecutive failed dials (to log only the first at INFO)
        self.legacy_hello = False  # its last hello had no ids (an older node): send it the older form
        self.inbound_conns: deque[_Inbound] = deque()  # those connections, oldest first


class _Outbound(asyncio.Protocol):
    """The dialing side of a peer connection. With a cluster secret it first reads the
    acceptor's challenge (``expect_challenge``) and answers it; after that it is
    write-only: anything received is a protocol error. Its closing wakes the writer."""

    def __init__(self, wake: asyncio.Event, label: str) -> None:
        self.transport: asyncio.Transport | None = None
        self.closed = False
        self._wake = wake
        self._label = label  # "node=... peer=..." for the log
        self._paused = False
        self._resumed: asyncio.Future[None] | None = None
        self._challenge: tuple[bytes, str, str, str, bytes] | None = None  # secret, cluster, me, peer, nd
        self._pre = bytearray()
        self.authenticated: asyncio.Future[None] | None = None

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.transport = cast(asyncio.Transport, transport)  # uvloop's is not a subclass

    def expect_challenge(self, secret: bytes, cluster: str, me: str, peer: str, nd: bytes) -> None:
        """Wait for the acceptor's challenge to the hello with nonce ``nd``: ``authenticated``
        resolves once it is verified and answered, fails if it is wrong or never comes."""
        self._challenge = (secret, cluster, me, peer, nd)
        self.authenticated = asyncio.get_running_loop().create_future()
        if self.closed:
            self._fail(ConnectionResetError("closed by the peer before its challenge"))

    def _fail(self, exc: Exception) -> None:
        fut = self.authenticated
        if fut is not None and not fut.done():
            fut.set_exception(exc)
            fut.exception()  # retrieved here: the writer may be gone already

    def data_received(self, data: bytes) -> None:
        assert self.transport is not None
        fut = self.authenticated
        if fut is None or fut.done() or self._challenge is None:
            log.warning("%s reason='peer wrote on our outgoing connection': closing it", self._label)
            self.transport.abort()
            return
        pre = self._pre
        pre += data
        try:
            if len(pre) < codec.FRAME_HEADER_BYTES:
                return
            (n,) = codec.FRAME_HEADER.unpack_from(pre)
            if n > codec.MAX_HELLO_BYTES:
                raise CodecError(f"challenge frame length {n} exceeds {codec.MAX_HELLO_BYTES}")
            if len(pre) < codec.FRAME_HEADER_BYTES + n:
                return
            if len(pre) > codec.FRAME_HEADER_BYTES + n:
                raise CodecError("the acceptor wrote more than its challenge")
            na, proof_a = peer_auth.decode_challenge(bytes(pre[codec.FRAME_HEADER_BYTES:]))
            secret, cluster, me, peer, nd = self._challenge
            if not peer_auth.proof_ok(peer_auth.acceptor_proof(secret, cluster, peer, me, nd, na), proof_a):
                raise CodecError("wrong challenge proof: the acceptor's cluster secret differs from ours "
                                 "(or it is not our peer)")
        except CodecError as exc:
            self._fail(exc)
            self.transport.abort()
            return
        self._pre = bytearray()
        self.transport.write(codec.frame(peer_auth.encode_proof(peer_auth.dialer_proof(secret, cluster, me, peer,
                                                                                           na, nd))))
        fut.set_result(None)

    def connection_lost(self, exc: Exception | None) -> None:
        self.closed = True
        self._fail(ConnectionResetError("closed by the peer during the handshake: it may have no cluster "
                                        "secret or another one (see its log)"))
        self._wake.set()
        self._release()

    @property
    def paused(self) -> bool:
        return self._paused

    def pause_writing(self) -> None:
        self._paused = True

    def resume_writing(self) -> None:
        self._paused = False
        self._release()

    def _release(self) -> None:
        fut = self._resumed
        if fut is not None and not fut.done():
            fut.set_result(None)

    async def drain(self) -> None:
        """Wait until the socket's write buffer is below its high-water mark; raise
        ConnectionResetError once the connection is lost."""
        if self._paused and not self.closed:
            self._resumed = asyncio.get_running_loop().create_future()
            await self._resumed
        if self.closed:
            raise ConnectionResetError("connection lost")


class _Inbound(asyncio.Protocol):
    """One accepted connection: the handshake (hello, and with a secret the challenge and
    the dialer's proof), then frames decoded and delivered in order."""

    def __init__(self, owner: PeerTransport) -> None:
        self._owner = owner
        self._transport: asyncio.Transport | None = None
        self._addr = "?"
        self._host = "?"
        self._peer: _Peer | None = None  # set once the handshake is done
        self._hello: codec.Hello | None = None  # a version-2 hello waiting for its proof
        self._claimed: _Peer | None = None  # the peer that hello names
        self._na = b""  # our nonce in the challenge
        self._pre: bytearray | None = bytearray()  # bytes received before the handshake is done
        self._frames = codec.FrameDecoder(owner.config.max_frame_bytes)
        self._hello_timer: asyncio.TimerHandle | None = None
        self._handshaking = False  # counted in owner._handshakes
        self.buffered = 0  # bytes of an unfinished frame, counted in owner._buffered
        self.reading_paused = False

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self._transport = cast(asyncio.Transport, transport)  # uvloop's is not a subclass
        peername = transport.get_extra_info("peername")
        if isinstance(peername, tuple) and len(peername) >= 2:
            self._addr = f"{peername[0]}:{peername[1]}"
            self._host = str(peername[0])
        owner = self._owner
        owner._inbound.add(self)
        if owner._handshakes >= owner.config.max_handshakes:
            self._refuse(f"max_handshakes={owner.config.max_handshakes} connections are in their handshake")
            return
        owner._handshakes += 1
        self._handshaking = True
        timeout_s = owner.config.hello_timeout_ms / 1000
        self._hello_timer = asyncio.get_running_loop().call_later(timeout_s, self._hello_timed_out)

    def close(self) -> None:
        if self._transport is not None:
            self._transport.close()

    def _reject(self, reason: str) -> None:
        peer = self._peer.id if self._peer is not None else None
        log.warning("node=%s peer=%s addr=%s reason=%r: closing incoming connection", self._owner.node_id,
                    peer, self._addr, reason)
        assert self._transport is not None
        self._transport.abort()

    def _refuse(self, reason: str) -> None:
        """Close a connection that has not completed its handshake, logging at most once a
        minute per source address (``RefusalLog``)."""
        self._owner._log_refusal(self._host, self._addr, reason)
        assert self._transport is not None
        self._transport.abort()

    def _hello_timed_out(self) -> None:
        self._hello_timer = None
        if self._peer is None:
            self._refuse(f"no handshake within hello_timeout_ms={self._owner.config.hello_timeout_ms}")

    def data_received(self, data: bytes) -> None:
        try:
            if self._peer is None:
                rest = self._read_handshake(data)
                if not rest:
                    return
                data = rest
            self._deliver(data)
            self._owner._account(self, self._frames.buffered_bytes)
        except CodecError as exc:
            if self._peer is None:
                self._refuse(str(exc))
            else:
                self._reject(str(exc))
        except StorageFailure as exc:  # what a hello told us could not be made durable: retried on redial
            self._reject(str(exc))
        except Exception as exc:  # a bug here must cost this connection only, never the node
            log.exception("node=%s addr=%s reason=internal-error: closing incoming connection",
                          self._owner.node_id, self._addr)
            self._reject(f"{type(exc).__name__}: {exc}")

    def _read_handshake(self, data: bytes) -> bytes:
        """Accumulate the handshake's frames (each at most ``MAX_HELLO_BYTES``); once it is
        done, return the bytes after it."""
        pre = self._pre
        assert pre is not None
        pre += data
        while self._peer is None:
            if len(pre) < codec.FRAME_HEADER_BYTES:
                return b""
            (n,) = codec.FRAME_HEADER.unpack_from(pre)
            if n > codec.MAX_HELLO_BYTES:
                raise CodecError(f"handshake frame length {n} exceeds the hello limit of {codec.MAX_HELLO_BYTES}")
            end = codec.FRAME_HEADER_BYTES + n
            if len(pre) < end:
                return b""
            payload = bytes(pre[codec.FRAME_HEADER_BYTES:end])
            del pre[:end]
            if self._hello is None:
                self._on_hello(codec.decode_hello(payload))
            else:
                self._on_proof(payload)
        rest = bytes(pre)
        self._pre = None
        return rest

    def _on_hello(self, hello: codec.Hello) -> None:
        node, cluster = hello.node_id, hello.cluster
        owner = self._owner
        if cluster != owner.cluster:
            raise CodecError(f"hello from node {node!r} of cluster {cluster!r}, this is cluster {owner.cluster!r}")
        peer = owner._peers.get(node)
        if peer is None:
            raise CodecError(f"hello from {node!r}, which is not a peer of this node")
        secret = owner.security.secret
        if secret is None:
            if hello.nonce is not None:
                raise CodecError(f"authenticated (version 2) hello from {node!r}: that node has a cluster secret "
                                 "and this one has none (misconfiguration: give every node the same secret)")
            self._finish(peer, hello)
            return
        if hello.nonce is None:
            raise CodecError(f"hello from {node!r} without the version-2 proof: this node has a cluster secret "
                             "and the dialer has none (misconfiguration), or it is not a peer")
        self._hello, self._claimed = hello, peer
        self._na = os.urandom(codec.NONCE_BYTES)
        proof_a = peer_auth.acceptor_proof(secret, owner.cluster, owner.node_id, node, hello.nonce, self._na)
        assert self._transport is not None
        self._transport.write(codec.frame(peer_auth.encode_challenge(self._na, proof_a)))

    def _on_proof(self, payload: bytes) -> None:
        hello, peer, secret = self._hello, self._claimed, self._owner.security.secret
        assert hello is not None and hello.nonce is not None and peer is not None and secret is not None
        owner = self._owner
        expected = peer_auth.dialer_proof(secret, owner.cluster, hello.node_id, owner.node_id, self._na, hello.nonce)
        if not peer_auth.proof_ok(expected, peer_auth.decode_proof(payload)):
            raise CodecError(f"wrong handshake proof from a dialer naming {hello.node_id!r}: "
                             "its cluster secret differs from this node's")
        self._finish(peer, hello)

    def _finish(self, peer: _Peer, hello: codec.Hello) -> None:
        """The handshake is done: apply the hello's identities, then take frames from ``peer``."""
        owner = self._owner
        owner._check_identity(peer.id, hello)
        peer.legacy_hello = hello.data_id is None
        if self._hello_timer is not None:
            self._hello_timer.cancel()
            self._hello_timer = None
        self._end_handshake()
        self._peer = peer
        owner._inbound_opened(peer, self)
        log.info("node=%s peer=%s addr=%s incoming connection up%s", owner.node_id, peer.id, self._addr,
                 " (authenticated)" if owner.security.secret is not None else "")

    def _end_handshake(self) -> None:
        if self._handshaking:
            self._handshaking = False
            self._owner._handshakes -= 1

    def _deliver(self, data: bytes) -> None:
        peer = self._peer
        assert peer is not None
        owner = self._owner
        src, me = peer.id, owner.node_id
        decode, on_message = codec.decode, owner._on_message
        for payload in self._frames.feed(data):
            m = decode(payload)
            if m.src != src or m.dst != me:
                raise CodecError(f"{type(m).__name__} from {m.src} to {m.dst} on the connection from {src} to {me}")
            peer.received += 1
            try:
                on_message(m)
            except PeerViolation:  # logged by the runtime; this connection is done
                assert self._transport is not None
                self._transport.abort()
                return
            except Exception:
                log.exception("node=%s peer=%s reason=on_message-failed message=%s", me, src, type(m).__name__)

    def pause(self) -> None:
        if not self.reading_paused and self._transport is not None:
            self.reading_paused = True
            self._owner._paused.add(self)
            self._transport.pause_reading()

    def resume(self) -> None:
        self._owner._paused.discard(self)
        if self.reading_paused and self._transport is not None:
            self.reading_paused = False
            if not self._transport.is_closing():
                self._transport.resume_reading()

    def connection_lost(self, exc: Exception | None) -> None:
        if self._hello_timer is not None:
            self._hello_timer.cancel()
            self._hello_timer = None
        self._end_handshake()
        self._owner._inbound.discard(self)
        self._owner._paused.discard(self)
        self.reading_paused = False
        self._owner._account(self, 0)
        if self._peer is not None:
            self._owner._inbound_closed(self._peer, self, self._addr, exc)


class _HandshakeFailed(Exception):
    """Our dial's handshake failed: no challenge, a wrong proof, or closed by the peer."""


class PeerTransport:
    """Messages to and from the other nodes of one cluster over TCP (see the module docstring).

    ``peers`` maps each other node's id to the (host, port) of its listener;
    ``listen`` is our own (port 0 picks a free port, then see ``listen_port``).
    ``on_message`` is called on the event loop, synchronously, for every
    valid message received, in the order its sender sent it. ``seed`` seeds
    the reconnect jitter. A stopped transport cannot be started again.
    """

    def __init__(
        self,
        node_id: str,
        cluster: str,
        listen: tuple[str, int],
        peers: dict[str, tuple[str, int]],
        on_message: Callable[[Message], None],
        config: TransportConfig = TransportConfig(),
        on_peer_down: Callable[[str], None] | None = None,
        seed: int | None = None,
        identity: DataDirIdentity | None = None,
        on_lost_data: Callable[[str, int], None] | None = None,
        security: PeerSecurity = PeerSecurity(),
    ) -> None:
        if (identity is None) != (on_lost_data is None):
            raise ValueError("identity and on_lost_data go together")
        self.node_id = node_id
        self.cluster = cluster
        self.listen = listen
        self.config = config
        self.listen_port: int = listen[1]
        self._on_message = on_message
        self._on_peer_down = on_peer_down
        self._peers = {p: _Peer(p, addr) for p, addr in peers.items() if p != node_id}
        self._rng = random.Random(seed)
        self._identity = identity
        self._on_lost_data = on_lost_data
        self._legacy_hello_frame = codec.frame(codec.encode_hello(node_id, cluster))
        self._server: asyncio.Server | None = None
        self._inbound: set[_Inbound] = set()
        self._dirty: set[_Peer] = set()  # peers with messages queued since the last flush
        self.security = security
        self._refusals = RefusalLog()  # refused handshakes, logged once a minute per source
        self._handshakes = 0  # accepted connections in their handshake
        self._buffered = 0  # bytes of unfinished frames held by all incoming connections
        self._paused: set[_Inbound] = set()  # incoming connections not read while over max_buffered_bytes
        self._loop: asyncio.AbstractEventLoop | None = None
        self._state = "new"  # -> "running" -> "stopped"

    # -- lifecycle ------------------------------------------------------------------

    async def start(self) -> None:
        """Bind the listener and start dialing every peer."""
        if self._state != "new":
            raise RuntimeError(f"transport of node {self.node_id} is {self._state}; create a new one")
        loop = asyncio.get_running_loop()
        self._loop = loop
        for attempt in range(50):
            try:
                self._server = await loop.create_server(
                    lambda: _Inbound(self), self.listen[0], self.listen[1], reuse_address=True,
                    ssl=self.security.server_ssl,
                    ssl_handshake_timeout=self.config.hello_timeout_ms / 1000 if self.security.server_ssl else None)
                break
            except OSError as exc:
                # A peer's dial can briefly self-connect on our port before we
                # listen (it lets go at once): retry for a moment, then give up.
                if exc.errno != errno.EADDRINUSE or attempt == 49:
                    raise
                await asyncio.sleep(0.02)
        self.listen_port = self._server.sockets[0].getsockname()[1]
        self._state = "running"
        for p in self._peers.values():
            p.task = asyncio.create_task(self._run_peer(p), name=f"dledger-send-{self.node_id}-{p.id}")
        log.info("node=%s cluster=%s listening on %s:%d peers=%s tls=%s", self.node_id, self.cluster,
                 self.listen[0], self.listen_port, ",".join(self._peers), self.security.server_ssl is not None)
        if self.security.secret is None:
            log.warning("node=%s the peer port %s:%d is unauthenticated: anyone who reaches it can act as a peer. "
                        "Set cluster_secret_file (or the environment variable RAFTMQ_CLUSTER_SECRET) to the same "
                        "secret of at least 16 bytes on every node", self.node_id, self.listen[0], self.listen_port)

    async def stop(self) -> None:
        """Close the listener and every connection and end the writer tasks. Idempotent.

        ``on_peer_down`` is not called for connections this closes.
        """
        if self._state == "stopped":
            return
        self._state = "stopped"
        if self._server is not None:
            self._server.close()
        for conn in list(self._inbound):
            conn.close()
        tasks = [p.task for p in self._peers.values() if p.task is not None]
        for t in tasks:
            t.cancel()
        # If stop() itself is cancelled, gather raises CancelledError here and it propagates.
        results = await asyncio.gather(*tasks, return_exceptions=True)
        for t, r in zip(tasks, results):
            if isinstance(r, Exception):
                log.error("node=%s task=%s failed: %r", self.node_id, t.get_name(), r, exc_info=r)
        if self._server is not None:
            await self._server.wait_closed()

    # -- sending --------------------------------------------------------------------

    def send(self, msg: Message) -> None:
        """Queue ``msg`` for ``msg.dst``; never blocks. Dropped (and counted) when that peer's
        queue is full; dropped with a debug log when ``msg.dst`` is not a peer."""
        p = self._peers.get(msg.dst)
        if p is None:
            log.debug("node=%s dst=%s reason=unknown-peer: dropping %s", self.node_id, msg.dst, type(msg).__name__)
            return
        q = p.queue
        if len(q) >= self.config.send_queue_frames:
            p.dropped += 1
            return
        q.append(msg)
        dirty = self._dirty
        if not dirty:
            # For callers that do not flush. The loop is kept from start():
            # get_running_loop() costs a getpid() call per send on CPython 3.11.
            (self._loop or asyncio.get_running_loop()).call_soon(self.flush)
        dirty.add(p)

    def flush(self) -> None:
        """Write what ``send`` queued now, straight from the caller, where the
        connection is up and not pushing back; else leave it to the peer's writer
        task. The runtime calls this after each Ready's messages: one write per
        peer per Ready, and no event loop iteration between Raft and the socket."""
        dirty = self._dirty
        while dirty:
            p = dirty.pop()
            conn = p.conn
            if conn is None or conn.closed or conn.paused or conn.transport is None:
                p.wake.set()  # the writer dials, waits for the socket, or drops
                continue
            parts, count = self._encode_batch(p)
            if parts:
                conn.transport.writelines(parts)
                p.sent += count
            if p.queue:
                p.wake.set()  # more than a batch: the writer goes on, minding pushback

    def connected(self, peer_id: str) -> bool:
        """Whether our outgoing connection to ``peer_id`` is established."""
        p = self._peers.get(peer_id)
        return p is not None and p.conn is not None and not p.conn.closed

    def stats(self) -> dict[str, dict[str, int | bool]]:
        """Per peer: ``connected`` (outgoing), ``sent``, ``dropped``, ``queued`` (messages), and
        ``received`` (messages) and ``inbound`` (connections) for the incoming side."""
        return {
            p.id: {
                "connected": p.conn is not None and not p.conn.closed,
                "sent": p.sent,
                "dropped": p.dropped,
                "queued": len(p.queue),
                "received": p.received,
                "inbound": p.inbound,
            }
            for p in self._peers.values()
        }

    async def _run_peer(self, p: _Peer) -> None:
        """The writer task of one peer: dial, pump the queue into the connection, redial."""
        cfg = self.config
        loop = asyncio.get_running_loop()
        backoff = Backoff(cfg.reconnect_min_ms, cfg.reconnect_max_ms, self._rng)
        while True:
            conn = await self._dial(p)
            if conn is None:
                # What was queued for an unreachable peer is stale by the time it
                # is back; Raft resends whatever still matters.
                p.dropped += len(p.queue)
                p.queue.clear()
            else:
                up_since = loop.time()
                try:
                    await self._pump(p, conn)
                except _HandshakeFailed as exc:
                    self._log_refusal(f"dial:{p.id}", f"{p.addr[0]}:{p.addr[1]}", f"handshake with {p.id} failed: {exc}")
                except OSError as exc:  # ConnectionError included
                    log.info("node=%s peer=%s reason=%r: outgoing connection lost", self.node_id, p.id, str(exc))
                except Exception:  # a bug: lose this connection, not every later message to the peer
                    log.exception("node=%s peer=%s reason=internal-error: closing outgoing connection",
                                  self.node_id, p.id)
                finally:
                    p.conn = None
                    assert conn.transport is not None
                    conn.transport.close()
                if loop.time() - up_since >= cfg.reconnect_max_ms / 1000:
                    backoff.reset()  # it was healthy: redial quickly
            await asyncio.sleep(backoff.next_ms() / 1000)

    async def _dial(self, p: _Peer) -> _Outbound | None:
        loop = asyncio.get_running_loop()
        label = f"node={self.node_id} peer={p.id}"
        try:
            async with asyncio.timeout(self.config.connect_timeout_ms / 1000):
                # Dial from our own listen address: peers (and a test's packet
                # filter) then see which node a connection comes from.
                client_ssl = self.security.client_ssl
                tr, conn = await loop.create_connection(
                    lambda: _Outbound(p.wake, label), p.addr[0], p.addr[1], local_addr=(self.listen[0], 0),
                    ssl=client_ssl, ssl_handshake_timeout=self.config.hello_timeout_ms / 1000 if client_ssl else None)
        except (OSError, TimeoutError) as exc:
            p.dial_failures += 1
            level = logging.INFO if p.dial_failures == 1 else logging.DEBUG
            log.log(level, "node=%s peer=%s addr=%s:%d reason=%r: dial failed (attempt %d)", self.node_id, p.id,
                    p.addr[0], p.addr[1], str(exc) or type(exc).__name__, p.dial_failures)
            return None
        # uvloop calls connection_made on the next loop iteration; the transport is ours already.
        conn.transport = tr
        if conn.transport.get_extra_info("sockname") == conn.transport.get_extra_info("peername"):
            # TCP self-connect: the peer is not listening and the kernel gave us
            # its port as our ephemeral one. Holding it would keep the peer from
            # binding its listener; let go at once and dial again later.
            conn.transport.abort()
            p.dial_failures += 1
            log.debug("node=%s peer=%s self-connected to %s:%d; dropped", self.node_id, p.id, p.addr[0], p.addr[1])
            return None
        p.dial_failures = 0
        sock = conn.transport.get_extra_info("socket")
        if sock is not None:
            sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        # Room for two batches before the writer waits for the socket: with the
        # default 64 KiB mark every batch would pause and resume the writer
        # (measured: about 15% fewer AppendEntries per second).
        conn.transport.set_write_buffer_limits(high=2 * self.config.write_batch_bytes)
        return conn

    async def _pump(self, p: _Peer, conn: _Outbound) -> None:
        """Write the hello, then everything queued, batch after batch, until the connection is lost."""
        tr = conn.transport
        assert tr is not None
        secret = self.security.secret
        if secret is None:
            tr.write(self._hello_frame(p))
        else:
            nd = os.urandom(codec.NONCE_BYTES)
            conn.expect_challenge(secret, self.cluster, self.node_id, p.id, nd)
            tr.write(self._hello_frame(p, nd))
            assert conn.authenticated is not None
            try:
                async with asyncio.timeout(self.config.hello_timeout_ms / 1000):
                    await conn.authenticated
            except TimeoutError:
                raise _HandshakeFailed(f"no challenge within hello_timeout_ms={self.config.hello_timeout_ms}: "
                                       "the peer may have no cluster secret") from None
            except (CodecError, ConnectionError) as exc:
                raise _HandshakeFailed(str(exc)) from None
        p.conn = conn
        log.info("node=%s peer=%s addr=%s:%d outgoing connection up", self.node_id, p.id, p.addr[0], p.addr[1])
        q, wake = p.queue, p.wake
        while not conn.closed:
            if not q:
                wake.clear()
                if not conn.closed:  # re-checked after clear(): connection_lost sets wake too
                    await wake.wait()
                continue
            parts, count = self._encode_batch(p)
            if parts:
                # One write for the whole batch (3.11 joins the parts; 3.12+ uses sendmsg).
                tr.writelines(parts)
                p.sent += count
            await conn.drain()
        raise ConnectionResetError("closed by the peer")

    def _hello_frame(self, p: _Peer, nonce: bytes | None = None) -> bytes:
        """The hello for a new connection to ``p``: our data directory's id and the
        id we remember ``p``'s by, as of now (both change: adoption, first contact);
        with the handshake's ``nonce``, the version-2 hello."""
        ident = self._identity
        if nonce is not None:
            data_id, known_as = (ident.id, ident.known(p.id)) if ident is not None else (None, None)
            return codec.frame(codec.encode_hello(self.node_id, self.cluster, data_id, known_as, nonce))
        if ident is None or p.legacy_hello:
            return self._legacy_hello_frame
        return codec.frame(codec.encode_hello(self.node_id, self.cluster, ident.id, ident.known(p.id)))

    def _encode_batch(self, p: _Peer) -> tuple[list[bytes], int]:
        """Frames for the messages at the head of ``p``'s queue, up to ``write_batch_bytes``."""
        q = p.queue
        limit, batch_bytes = self.config.max_frame_bytes, self.config.write_batch_bytes
        encode, header = codec.encode, codec.FRAME_HEADER.pack
        parts: list[bytes] = []
        size = count = 0
        while q and size < batch_bytes:
            m = q.popleft()
            try:
                payload = encode(m)
            except CodecError as exc:
                p.dropped += 1
                log.error("node=%s peer=%s reason=%r: dropping unencodable %s", self.node_id, p.id, str(exc),
                          type(m).__name__)
                continue
            n = len(payload)
            if n > limit:
                p.dropped += 1
                log.error("node=%s peer=%s reason=frame-too-large bytes=%d max_frame_bytes=%d: dropping %s",
                          self.node_id, p.id, n, limit, type(m).__name__)
                continue
            parts.append(header(n))
            parts.append(payload)
            size += 4 + n
            count += 1
        return parts, count

    # -- receiving ----------------------------------------------------------------

    def _check_identity(self, peer: str, hello: codec.Hello) -> None:
        """What a hello says about identities (module docstring), before anything
        after it is delivered: a lost-data verdict is made durable first, then
        acknowledged; then the sender's id is remembered. A failed write raises:
        the connection is closed and the peer's redial tries again."""
        ident = self._identity
        if ident is None:
            return
        assert self._on_lost_data is not None
        apply_hello(ident, peer, hello.data_id, hello.known_as, self._on_lost_data)

    def _log_refusal(self, key: str, addr: str, reason: str) -> None:
        """One WARNING for a refused handshake, at most once a minute per ``key``."""
        assert self._loop is not None
        suppressed = self._refusals.note(key, self._loop.time())
        if suppressed is not None:
            log.warning("node=%s addr=%s reason=%r: refused peer connection (%d more from %s refused since "
                        "the last such line, at most one a minute)", self.node_id, addr, reason, suppressed, key)

    def _account(self, conn: _Inbound, buffered: int) -> None:
        """``conn`` now holds ``buffered`` bytes of an unfinished frame: keep the total under
        ``max_buffered_bytes`` by pausing connections that add to it (TCP then pushes back
        on their senders) and resuming them all once it is back under. Should every
        connection holding bytes be paused, none could finish a frame: the one holding
        the most reads on alone, so the total stays under the cap plus one frame
        (``max_frame_bytes``) and a read per connection."""
        self._buffered += buffered - conn.buffered
        conn.buffered = buffered
        cap = self.config.max_buffered_bytes
        if self._buffered <= cap:
            for c in list(self._paused):
                c.resume()
            return
        if buffered > 0:
            conn.pause()
        holders = [c for c in self._inbound if c.buffered > 0]
        if holders and all(c.reading_paused for c in holders):
            max(holders, key=lambda c: c.buffered).resume()

    def _inbound_opened(self, p: _Peer, conn: _Inbound) -> None:
        p.inbound += 1
        p.inbound_conns.append(conn)
        if len(p.inbound_conns) > self.config.max_inbound_per_peer:
            oldest = p.inbound_conns.popleft()
            log.info("node=%s peer=%s reason='max_inbound_per_peer=%d': closing its oldest incoming connection",
                     self.node_id, p.id, self.config.max_inbound_per_peer)
            oldest.close()

    def _inbound_closed(self, p: _Peer, conn: _Inbound, addr: str, exc: Exception | None) -> None:
        if conn in p.inbound_conns:
            p.inbound_conns.remove(conn)
        p.inbound -= 1
        log.info("node=%s peer=%s addr=%s reason=%r: incoming connection closed", self.node_id, p.id, addr,
                 str(exc) if exc else "eof")
        if p.inbound == 0 and self._state == "running" and self._on_peer_down is not None:
            try:
                self._on_peer_down(p.id)
            except Exception:
                log.exception("node=%s peer=%s reason=on_peer_down-failed", self.node_id, p.id)
