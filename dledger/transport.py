"""TCP transport between dledger peers.

Each node dials one long-lived connection to every peer and sends all its
messages for that peer over it; it accepts the peers' connections on its own
listener and reads their messages from those. Frames are length-prefixed
msgpack (``dledger.codec``); the first frame of a connection is a hello naming
the sender and the cluster.

- Sending never blocks: ``send`` puts the message on the peer's bounded queue
  and a writer task drains the whole queue into one ``write`` (batching under
  load). A full queue drops the message: Raft retransmits what matters.
- Reconnects use exponential backoff with jitter.
- Anything malformed or unexpected on an incoming connection (garbage, an
  oversized length, a wrong cluster, a message claiming another sender) is
  logged and that connection is dropped; the node carries on.
- ``on_peer_down(peer)`` fires when a peer's incoming connection closes: its
  process probably died, which lets followers elect a new leader quickly.
"""

from __future__ import annotations

import asyncio
import logging
import random
import socket
from collections import deque
from dataclasses import dataclass
from typing import Callable

from dledger import codec
from dledger.core.messages import Message
from dledger.errors import CodecError

log = logging.getLogger(__name__)


@dataclass(slots=True, frozen=True)
class TransportConfig:
    """- ``max_frame_bytes``: largest frame accepted (an AppendEntries batch or a snapshot).
    - ``send_queue_frames``: messages queued per peer before new ones are dropped.
    - ``reconnect_min_ms`` / ``reconnect_max_ms``: backoff bounds between dial attempts.
    - ``connect_timeout_ms``: dial timeout; also how long a new connection may take to say hello.
    """

    max_frame_bytes: int = 64 << 20
    send_queue_frames: int = 8192
    reconnect_min_ms: int = 20
    reconnect_max_ms: int = 1000
    connect_timeout_ms: int = 1000

    def __post_init__(self) -> None:
        if self.max_frame_bytes < 1024:
            raise ValueError("max_frame_bytes: must be at least 1024")
        if self.send_queue_frames < 1:
            raise ValueError("send_queue_frames: must be at least 1")
        if not 0 < self.reconnect_min_ms <= self.reconnect_max_ms:
            raise ValueError("reconnect_min_ms: must be positive and at most reconnect_max_ms")
        if self.connect_timeout_ms < 1:
            raise ValueError("connect_timeout_ms: must be positive")


class _Peer:
    __slots__ = ("id", "addr", "queue", "wake", "task", "connected", "sent", "dropped")

    def __init__(self, peer_id: str, addr: tuple[str, int]) -> None:
        self.id = peer_id
        self.addr = addr
        self.queue: deque[Message] = deque()
        self.wake = asyncio.Event()
        self.task: asyncio.Task[None] | None = None
        self.connected = False
        self.sent = 0
        self.dropped = 0


class PeerTransport:
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
    ) -> None:
        self.node_id = node_id
        self.cluster = cluster
        self.listen = listen
        self.config = config
        self._on_message = on_message
        self._on_peer_down = on_peer_down
        self._peers = {p: _Peer(p, a) for p, a in peers.items() if p != node_id}
        self._rng = random.Random(seed)
        self._server: asyncio.base_events.Server | None = None
        # Incoming connections and their handler tasks. On stop the connections
        # are closed (the handlers then end by themselves): cancelling a
        # start_server handler task makes Python 3.11 log a spurious error.
        self._readers: dict[asyncio.Task[None], asyncio.StreamWriter] = {}
        self._hello = codec.frame(codec.encode_hello(node_id, cluster))
        self.listen_port: int = listen[1]

    # ------------------------------------------------------------------
    async def start(self) -> None:
        self._server = await asyncio.start_server(self._accept, self.listen[0], self.listen[1],
                                                  reuse_address=True, limit=1 << 20)
        self.listen_port = self._server.sockets[0].getsockname()[1]
        for p in self._peers.values():
            p.task = asyncio.create_task(self._writer(p), name=f"dledger-send-{self.node_id}-{p.id}")

    async def stop(self) -> None:
        if self._server is not None:
            self._server.close()
        for w in self._readers.values():
            w.close()
        if self._readers:
            await asyncio.wait(list(self._readers), timeout=2)
        tasks = [p.task for p in self._peers.values() if p.task is not None]
        tasks += list(self._readers)  # any that did not end by themselves
        for t in tasks:
            t.cancel()
        for t in tasks:
            try:
                await t
            except asyncio.CancelledError:
                pass
            except Exception:
                log.exception("node=%s transport task failed during stop", self.node_id)
        if self._server is not None:
            await self._server.wait_closed()
            self._server = None

    def send(self, m: Message) -> None:
        p = self._peers.get(m.dst)
        if p is None:
            log.debug("node=%s dropping message to unknown peer %s", self.node_id, m.dst)
            return
        if len(p.queue) >= self.config.send_queue_frames:
            p.dropped += 1
            return
        p.queue.append(m)
        p.wake.set()

    def connected(self, peer_id: str) -> bool:
        p = self._peers.get(peer_id)
        return p is not None and p.connected

    def stats(self) -> dict[str, dict[str, object]]:
        return {p.id: {"sent": p.sent, "dropped": p.dropped, "connected": p.connected, "queued": len(p.queue)}
                for p in self._peers.values()}

    # ------------------------------------------------------------------
    async def _writer(self, p: _Peer) -> None:
        backoff = self.config.reconnect_min_ms
        while True:
            try:
                reader, writer = await asyncio.wait_for(
                    asyncio.open_connection(p.addr[0], p.addr[1]), self.config.connect_timeout_ms / 1000)
            except (OSError, asyncio.TimeoutError) as exc:
                delay = backoff * (0.5 + self._rng.random())
                backoff = min(backoff * 2, self.config.reconnect_max_ms)
                log.debug("node=%s peer=%s connect failed (%s); retry in %.0f ms", self.node_id, p.id, exc, delay)
                # Messages queued while the peer is unreachable are stale by the
                # time it is back; Raft resends what is still needed.
                p.queue.clear()
                await asyncio.sleep(delay / 1000)
                continue
            backoff = self.config.reconnect_min_ms
            sock = writer.get_extra_info("socket")
            if sock is not None:
                sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
            p.connected = True
            log.info("node=%s peer=%s connected", self.node_id, p.id)
            try:
                writer.write(self._hello)
                encode, frame = codec.encode, codec.frame
                while True:
                    if not p.queue:
                        p.wake.clear()
                        await p.wake.wait()
                    chunks = []
                    q = p.queue
                    while q:
                        chunks.append(frame(encode(q.popleft())))
                    p.sent += len(chunks)
                    writer.write(b"".join(chunks))
                    await writer.drain()
            except (OSError, ConnectionError) as exc:
                log.info("node=%s peer=%s connection lost: %s", self.node_id, p.id, exc)
            finally:
                p.connected = False
                writer.close()
                reader.feed_eof()

    async def _accept(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        task = asyncio.current_task()
        assert task is not None
        self._readers[task] = writer
        peer_name = writer.get_extra_info("peername")
        src: str | None = None
        try:
            src = await self._read_hello(reader, peer_name)
            if src is None:
                return
            await self._read_loop(reader, src)
        except asyncio.CancelledError:
            raise
        except (asyncio.IncompleteReadError, ConnectionError, OSError):
            pass
        except CodecError as exc:
            log.warning("node=%s peer=%s addr=%s reason=%r: dropping connection", self.node_id, src, peer_name, str(exc))
        finally:
            self._readers.pop(task, None)
            writer.close()
            if src is not None and self._on_peer_down is not None:
                try:
                    self._on_peer_down(src)
                except Exception:
                    log.exception("node=%s on_peer_down failed", self.node_id)

    async def _read_hello(self, reader: asyncio.StreamReader, peer_name: object) -> str | None:
        try:
            head = await asyncio.wait_for(reader.readexactly(4), self.config.connect_timeout_ms / 1000)
            (n,) = codec.FRAME_HEADER.unpack(head)
            if n > 4096:
                raise CodecError(f"hello frame of {n} bytes")
            src, cluster = codec.decode_hello(await asyncio.wait_for(reader.readexactly(n),
                                                                     self.config.connect_timeout_ms / 1000))
        except asyncio.TimeoutError:
            log.warning("node=%s addr=%s reason='no hello in time': dropping connection", self.node_id, peer_name)
            return None
        except CodecError as exc:
            log.warning("node=%s addr=%s reason=%r: dropping connection", self.node_id, peer_name, str(exc))
            return None
        if cluster != self.cluster or src not in self._peers:
            log.warning("node=%s addr=%s reason='unknown peer %s of cluster %s': dropping connection",
                        self.node_id, peer_name, src, cluster)
            return None
        return src

    async def _read_loop(self, reader: asyncio.StreamReader, src: str) -> None:
        buf = bytearray()
        max_frame = self.config.max_frame_bytes
        decode, on_message = codec.decode, self._on_message
        me = self.node_id
        while True:
            chunk = await reader.read(1 << 20)
            if not chunk:
                return
            buf += chunk
            pos = 0
            end = len(buf)
            while end - pos >= 4:
                (n,) = codec.FRAME_HEADER.unpack_from(buf, pos)
                if n > max_frame:
                    raise CodecError(f"frame of {n} bytes exceeds max_frame_bytes={max_frame}")
                if end - pos - 4 < n:
                    break
                m = decode(bytes(buf[pos + 4 : pos + 4 + n]))
                pos += 4 + n
                if m.src != src or m.dst != me:
                    raise CodecError(f"message from {m.src} to {m.dst} on {src}'s connection")
                try:
                    on_message(m)
                except Exception:
                    log.exception("node=%s peer=%s handling %s failed", me, src, type(m).__name__)
            if pos:
                del buf[:pos]
