"""An in-memory network for dledger nodes that share one event loop: the
``Transport`` seam (``dledger.transport``) without sockets, for tests of whole
groups of runtimes (yours too) and for embedding.

Every node's ``MemoryTransport`` is made by one ``MemoryNetwork``
(``DLedger(..., transport=network.attach)``). A message sent is delivered to
its destination's runtime through the event loop (``call_soon``), never
inside ``send``: the receiver runs later, as it would after a socket read.
The messages are the core's own ``Message`` objects, the same ones the TCP
transport encodes; they are immutable, so nothing is copied.

The network behaves as the TCP transport does where the runtime can tell:

- Connections: the first message from ``a`` to ``b`` after ``a`` started (or
  after the link between them came back) opens a connection, and ``b`` first
  checks ``a``'s hello: the data-directory ids (``dledger.store.identity``).
  A hello whose check fails (``on_lost_data`` could not persist) drops the
  message and leaves the connection closed, as TCP closes it.
- Order: messages from one node to another that arrive, arrive in the order
  sent. Messages to a node that is not running, or across a cut link, are
  dropped, as are those already in flight when the link is cut.
- Peer down: when a node stops, is killed, or a link is cut, each running
  node that had a connection from it is told ``on_peer_down`` (through the
  loop), as TCP tells it when the last incoming connection closes.

Faults: ``cut(a, b)`` and ``link(a, b)`` for one link (both directions),
``isolate(n)`` for all of a node's links, ``heal()`` to restore every link,
and ``kill(n)``: the node's transport stops taking part at once (messages to
and from it dropped) without the runtime being told, as when its process
dies; stop the runtime too (``await node.stop()``) to end its tasks.
"""

from __future__ import annotations

import asyncio
import logging
from typing import Final

from raftmq.dledger.core.messages import Message
from raftmq.dledger.errors import PeerViolation
from raftmq.dledger.store.identity import apply_hello
from raftmq.dledger.transport import TransportHooks

log = logging.getLogger(__name__)

_NEW: Final = "new"
_RUNNING: Final = "running"
_STOPPED: Final = "stopped"


class MemoryNetwork:
    """The nodes of one group in one event loop, and the links between them
    (module docstring). ``attach`` is a ``TransportFactory``."""

    def __init__(self) -> None:
        self._nodes: dict[str, MemoryTransport] = {}
        self._cut: set[frozenset[str]] = set()
        self._connected: set[tuple[str, str]] = set()  # (sender, receiver) with a connection open
        self.delivered = 0  # messages handed to a runtime
        self.dropped = 0  # messages lost to a stopped node, a cut link or a failed hello

    def attach(self, hooks: TransportHooks) -> MemoryTransport:
        """Make the transport of node ``hooks.node_id``. A node restarted gets a
        new one, which replaces the old (the old must be stopped)."""
        old = self._nodes.get(hooks.node_id)
        if old is not None and old.state == _RUNNING:
            raise RuntimeError(f"node {hooks.node_id} already has a running transport; stop it first")
        t = MemoryTransport(self, hooks)
        self._nodes[hooks.node_id] = t
        return t

    # -- faults -------------------------------------------------------------------

    def cut(self, a: str, b: str) -> None:
        """Drop every message between ``a`` and ``b`` (both ways) until ``link``/``heal``."""
        if a == b:
            raise ValueError(f"cannot cut node {a!r} from itself")
        self._cut.add(frozenset((a, b)))
        self._close(a, b)
        self._close(b, a)

    def link(self, a: str, b: str) -> None:
        """Restore the link between ``a`` and ``b``."""
        self._cut.discard(frozenset((a, b)))

    def isolate(self, node: str) -> None:
        """Cut ``node`` from every other node attached."""
        for other in self._nodes:
            if other != node:
                self.cut(node, other)

    def heal(self) -> None:
        """Restore every link."""
        self._cut.clear()

    def kill(self, node: str) -> None:
        """``node``'s process dies: its transport stops at once, its runtime is not told."""
        t = self._nodes.get(node)
        if t is None:
            raise KeyError(f"no node {node!r} in this network (attached: {sorted(self._nodes)})")
        t.state = _STOPPED
        self._node_gone(node)

    def linked(self, a: str, b: str) -> bool:
        return frozenset((a, b)) not in self._cut

    # -- delivery -----------------------------------------------------------------

    def _running(self, node: str) -> MemoryTransport | None:
        t = self._nodes.get(node)
        return t if t is not None and t.state == _RUNNING else None

    def _post(self, loop: asyncio.AbstractEventLoop, src: MemoryTransport, msgs: list[Message]) -> None:
        for m in msgs:
            loop.call_soon(self._deliver, src, m)

    def _deliver(self, src: MemoryTransport, m: Message) -> None:
        dst = self._running(m.dst)
        if src.state != _RUNNING or dst is None or not self.linked(src.node_id, m.dst):
            self.dropped += 1
            return
        pair = (src.node_id, m.dst)
        if pair not in self._connected:
            ident = src.hooks.identity
            try:
                apply_hello(dst.hooks.identity, src.node_id, ident.id, ident.known(m.dst), dst.hooks.on_lost_data)
            except Exception as exc:  # as TCP: the connection closes, the next message tries again
                log.warning("node=%s peer=%s reason=%r: hello refused, message dropped", m.dst, src.node_id, exc)
                self.dropped += 1
                return
            self._connected.add(pair)
        self.delivered += 1
        try:
            dst.hooks.on_message(m)
        except PeerViolation:  # logged by the receiver; as TCP: its connection closes
            self._close(src.node_id, m.dst)

    def _node_gone(self, node: str) -> None:
        for other in list(self._nodes):
            if other != node:
                self._close(node, other)
                self._close(other, node)

    def _close(self, src: str, dst: str) -> None:
        """The connection ``src`` -> ``dst`` closes: ``dst`` hears its peer is down."""
        if (src, dst) not in self._connected:
            return
        self._connected.discard((src, dst))
        t = self._running(dst)
        if t is not None:
            t.loop.call_soon(t.peer_down, src)


class MemoryTransport:
    """One node's end of a ``MemoryNetwork`` (a ``Transport``)."""

    def __init__(self, network: MemoryNetwork, hooks: TransportHooks) -> None:
        self._network = network
        self.hooks = hooks
        self.node_id = hooks.node_id
        self.state = _NEW
        self._queued: list[Message] = []
        self.loop: asyncio.AbstractEventLoop  # set by start()

    async def start(self) -> None:
        if self.state != _NEW:
            raise RuntimeError(f"transport of node {self.node_id} is {self.state}; create a new one")
        self.loop = asyncio.get_running_loop()
        self.state = _RUNNING

    async def stop(self) -> None:
        """Stop taking part (idempotent); the peers hear that this node is down."""
        if self.state == _STOPPED:
            return
        was_running = self.state == _RUNNING
        self.state = _STOPPED
        self._queued.clear()
        if was_running:
            self._network._node_gone(self.node_id)

    def send(self, msg: Message) -> None:
        """Queue ``msg``; it leaves at the next ``flush`` (or soon by itself)."""
        if self.state != _RUNNING:
            self._network.dropped += 1
            return
        if not self._queued:
            self.loop.call_soon(self.flush)  # for callers that do not flush
        self._queued.append(msg)

    def flush(self) -> None:
        if self._queued and self.state == _RUNNING:
            msgs, self._queued = self._queued, []
            self._network._post(self.loop, self, msgs)

    def peer_down(self, peer: str) -> None:
        """The connection from ``peer`` closed (called by the network through the loop)."""
        if self.state == _RUNNING:
            try:
                self.hooks.on_peer_down(peer)
            except Exception:
                log.exception("node=%s peer=%s reason=on_peer_down-failed", self.node_id, peer)
