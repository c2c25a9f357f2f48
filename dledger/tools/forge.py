"""A forger: a process that speaks the peer protocol without being a peer.

It dials a node's Raft address, sends a hello naming any node id of the
group (everything it needs is public: ``GET /v1/cluster`` names the peers,
their Raft addresses, the group, the term and the commit index), and then
sends whatever frames it likes: forged AppendEntries, InstallSnapshot,
RequestVote, TimeoutNow, out-of-range terms, undecodable bytes. The tests
and the chaos ``forge`` nemesis use it to show that a node refuses all of it.

It is a test tool: blocking sockets, short timeouts, one connection per
``Forger``. It never listens, so it never receives replies (the peer protocol
answers on the connection the receiver dials back).

Given a ``secret`` it runs the cluster secret's handshake as a dialer
(``dledger.peer_auth``): the version-2 hello, the acceptor's challenge read
and checked, its own proof sent. ``refused`` then says why the handshake
failed (None: it went through as far as the forger can see; the acceptor
closes the connection if it refuses the forger's proof, see
``closed_by_peer``). Without a secret it sends the older hello, as a node
without one does.
"""

from __future__ import annotations

import json
import os
import socket
import urllib.request
from dataclasses import dataclass
from typing import Any

from raftmq.dledger import codec, peer_auth
from raftmq.dledger.core.messages import (AppendEntries, Entry, InstallSnapshot, Message, NodeId, RequestVote,
                                          Snapshot, SnapshotMeta, TimeoutNow)
from raftmq.dledger.errors import CodecError


@dataclass(frozen=True, slots=True)
class GroupView:
    """What ``GET /v1/cluster`` tells anyone who asks."""

    group: str
    term: int
    commit_index: int
    leader_id: str | None
    raft_addrs: dict[str, tuple[str, int]]


def view_of(http_url: str, timeout_s: float = 2.0) -> GroupView:
    """The public view of a group, from any node's HTTP address (``/v1/cluster``, ``/v1/health``)."""
    base = http_url.rstrip("/")
    with urllib.request.urlopen(f"{base}/v1/cluster", timeout=timeout_s) as resp:
        body: dict[str, Any] = json.loads(resp.read())
    with urllib.request.urlopen(f"{base}/v1/health", timeout=timeout_s) as resp:
        health: dict[str, Any] = json.loads(resp.read())
    addrs = {}
    for m in body["members"]:
        host, _, port = m["raft_addr"].rpartition(":")
        addrs[m["id"]] = (host, int(port))
    return GroupView(group=body["group"], term=int(body.get("term") or 0),
                     commit_index=int(health.get("commit_index") or 0),
                     leader_id=body.get("leader_id"), raft_addrs=addrs)


class Forger:
    """One connection to ``addr``, pretending to be node ``as_node`` of ``cluster``."""

    def __init__(self, addr: tuple[str, int], cluster: str, as_node: str, *,
                 data_id: int | None = None, known_as: int | None = None, timeout_s: float = 2.0,
                 secret: bytes | None = None, to_node: str | None = None) -> None:
        """``secret``: run the handshake with it; ``to_node``: the id of the node at ``addr``
        (the proofs name it), required with a secret."""
        if secret is not None and to_node is None:
            raise ValueError("a Forger with a secret needs to_node, the id of the node it dials")
        self.addr = addr
        self.cluster = cluster
        self.as_node = as_node
        self.data_id = data_id
        self.known_as = known_as
        self.timeout_s = timeout_s
        self.secret = secret
        self.to_node = to_node
        self.refused: str | None = None  # why the handshake failed (with a secret), None if it did not
        self._sock: socket.socket | None = None

    def __enter__(self) -> Forger:
        self.connect()
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def connect(self, hello: bool = True) -> None:
        """Dial, and (unless ``hello`` is false) send the hello; with a secret, run the
        handshake (``refused`` says whether it failed)."""
        self._sock = socket.create_connection(self.addr, timeout=self.timeout_s)
        if not hello:
            return
        if self.secret is None:
            self.send_payload(codec.encode_hello(self.as_node, self.cluster, self.data_id, self.known_as))
            return
        self.refused = self._handshake(self.secret)

    def _handshake(self, secret: bytes) -> str | None:
        """The dialer's side of the version-2 handshake; the reason it failed, or None."""
        nd = os.urandom(codec.NONCE_BYTES)
        self.send_payload(codec.encode_hello(self.as_node, self.cluster, self.data_id, self.known_as, nd))
        try:
            payload = self._read_frame()
        except (OSError, EOFError) as exc:
            return f"no challenge: {exc or type(exc).__name__}"
        try:
            na, proof_a = peer_auth.decode_challenge(payload)
        except CodecError as exc:
            return str(exc)
        acceptor = self.to_node
        assert acceptor is not None
        if not peer_auth.proof_ok(peer_auth.acceptor_proof(secret, self.cluster, acceptor, self.as_node, nd, na),
                                  proof_a):
            return "the acceptor's proof does not match our secret"
        self.send_payload(peer_auth.encode_proof(peer_auth.dialer_proof(secret, self.cluster, self.as_node,
                                                                        acceptor, na, nd)))
        return None

    def _read_frame(self) -> bytes:
        assert self._sock is not None
        header = self._recv_exactly(codec.FRAME_HEADER_BYTES)
        (n,) = codec.FRAME_HEADER.unpack(header)
        if n > codec.MAX_HELLO_BYTES:
            raise EOFError(f"challenge frame of {n} bytes")
        return self._recv_exactly(n)

    def _recv_exactly(self, n: int) -> bytes:
        assert self._sock is not None
        buf = b""
        while len(buf) < n:
            chunk = self._sock.recv(n - len(buf))
            if not chunk:
                raise EOFError("closed by the node")
            buf += chunk
        return buf

    def send(self, msg: Message) -> None:
        """One message, encoded as a real peer would (``codec.encode``)."""
        self.send_payload(codec.encode(msg))

    def send_payload(self, payload: bytes) -> None:
        """One frame holding ``payload``, whatever it is."""
        self.send_bytes(codec.frame(payload))

    def send_bytes(self, data: bytes) -> None:
        """Raw bytes on the socket (a frame header promising more than follows, say)."""
        assert self._sock is not None, "connect() first"
        self._sock.sendall(data)

    def closed_by_peer(self, wait_s: float = 1.0) -> bool:
        """Whether the node closed this connection within ``wait_s``."""
        assert self._sock is not None, "connect() first"
        self._sock.settimeout(wait_s)
        try:
            while True:
                data = self._sock.recv(65536)
                if not data:
                    return True
        except (socket.timeout, TimeoutError):
            return False
        except OSError:
            return True
        finally:
            self._sock.settimeout(self.timeout_s)

    def close(self) -> None:
        if self._sock is not None:
            try:
                self._sock.close()
            finally:
                self._sock = None


HUGE_TERM = (1 << 64) - 1
"""The largest term the codec carries: a node that took it could never elect again."""


def forgeries(view: GroupView, target: str, as_node: str) -> list[tuple[str, Message | bytes | None]]:
    """The forged traffic of the hardening tests and the chaos ``forge`` fault, for
    ``target`` pretending to be ``as_node`` (best the leader), from the public ``view``:
    (name, a message, raw bytes sent after the hello, or None for a connection that
    never says hello). Each is meant for a connection of its own."""
    src, dst, term, commit = NodeId(as_node), NodeId(target), view.term, view.commit_index
    return [
        ("append-entries-at-commit+1", AppendEntries(term, src, dst, commit, term,
                                                     (Entry(term, commit + 1, b"forged"),), commit + 1)),
        ("install-snapshot-empty-at-term+1", InstallSnapshot(term + 1, src, dst,
                                                             Snapshot(SnapshotMeta(commit + 1000, term + 1), b""))),
        ("timeout-now", TimeoutNow(term, src, dst)),
        ("request-vote-huge-term", RequestVote(HUGE_TERM, src, dst, 1 << 62, HUGE_TERM)),
        ("garbage-bytes", b"\xff" * 64),
        ("no-hello", None),
    ]


def attack(view: GroupView, target: str, as_node: str, *, secret: bytes | None = None,
           timeout_s: float = 2.0) -> list[dict[str, Any]]:
    """Send every one of ``forgeries`` to ``target``, each on a new connection; per forgery
    its name and whether the node closed the connection (``closed``) or the handshake was
    refused (``refused``, with a secret). A connection the node could not be reached on
    counts as closed."""
    out = []
    for name, item in forgeries(view, target, as_node):
        row: dict[str, Any] = {"forgery": name}
        try:
            f = Forger(view.raft_addrs[target], view.group, as_node, secret=secret, to_node=target,
                       timeout_s=timeout_s)
            f.connect(hello=item is not None)
            try:
                row["refused"] = f.refused
                if isinstance(item, bytes):
                    f.send_bytes(item)
                elif item is not None:
                    f.send(item)
                row["closed"] = f.closed_by_peer(1.5 if item is None else 0.5)
            finally:
                f.close()
        except OSError as exc:
            row["closed"], row["error"] = True, str(exc) or type(exc).__name__
        out.append(row)
    return out
