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
"""

from __future__ import annotations

import json
import socket
import urllib.request
from dataclasses import dataclass
from typing import Any

from raftmq.dledger import codec
from raftmq.dledger.core.messages import Message


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
                 data_id: int | None = None, known_as: int | None = None, timeout_s: float = 2.0) -> None:
        self.addr = addr
        self.cluster = cluster
        self.as_node = as_node
        self.data_id = data_id
        self.known_as = known_as
        self.timeout_s = timeout_s
        self._sock: socket.socket | None = None

    def __enter__(self) -> Forger:
        self.connect()
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def connect(self, hello: bool = True) -> None:
        """Dial, and (unless ``hello`` is false) send the hello."""
        self._sock = socket.create_connection(self.addr, timeout=self.timeout_s)
        if hello:
            self.send_payload(codec.encode_hello(self.as_node, self.cluster, self.data_id, self.known_as))

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
