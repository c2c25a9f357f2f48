"""A real broker group for tests: N ``python -m raftmq.broker`` processes on
127.0.0.1 with allocated ports, each its own OS process, run by the
local-group supervisor (client/local/supervisor.py) with TOML from
client/local/node_toml.py. ``stop()`` always kills every process it started;
tests wait on observed conditions with deadlines."""

from __future__ import annotations

import contextlib
import json
import os
import signal
import ssl
import subprocess
import sys
import time
import urllib.error
import urllib.request
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable, Iterator

from raftmq.client.local.node_toml import ensure_cluster_secret, node_toml
from raftmq.client.local.supervisor import Supervisor
from tests.ports import free_ports

REPO = Path(__file__).resolve().parents[2]



@dataclass
class BrokerNode:
    id: str
    http_url: str
    raft_addr: str
    data_dir: Path
    config_path: Path
    log_path: Path
    supervisor: Supervisor = field(repr=False, default_factory=Supervisor)  # the group's

    @property
    def proc(self) -> subprocess.Popen[bytes] | None:
        """The node's current (or last) process, None before its first start."""
        return self.supervisor.process(self.id).popen if self.id in self.supervisor.names() else None


def http(method: str, url: str, body: Any = None, *, ctype: str = "application/json", raw: bytes | None = None,
         accept: str | None = None, timeout_s: float = 10,
         context: ssl.SSLContext | None = None) -> tuple[int, dict[str, str], Any]:
    """One HTTP call without following redirects: (status, headers, decoded body)."""
    data = raw if raw is not None else (json.dumps(body).encode() if body is not None else None)
    req = urllib.request.Request(url, data=data, method=method)
    if data is not None:
        req.add_header("Content-Type", ctype)
    if accept:
        req.add_header("Accept", accept)

    class NoRedirect(urllib.request.HTTPRedirectHandler):
        def redirect_request(self, *a: Any, **k: Any) -> None:
            return None

    opener = urllib.request.build_opener(NoRedirect, urllib.request.HTTPSHandler(context=context))
    try:
        with opener.open(req, timeout=timeout_s) as r:
            status, headers, payload = r.status, dict(r.headers), r.read()
    except urllib.error.HTTPError as e:
        status, headers, payload = e.code, dict(e.headers), e.read()
    if headers.get("Content-Type", "").startswith("application/msgpack"):
        import msgpack

        return status, headers, msgpack.unpackb(payload, raw=False)
    try:
        return status, headers, json.loads(payload) if payload else None
    except ValueError:
        return status, headers, payload


@dataclass
class BrokerGroup:
    base: Path
    n: int = 3
    group: str = "test-group"
    flush: str = "async"
    # ``bootstrap = true`` in every node's TOML, kept for restarts as an operator
    # might: a wiped node restarted with it must still be told by its peers.
    bootstrap: bool = True
    extra: dict[str, Any] = field(default_factory=dict)
    # A cluster secret file in ``base`` named in every node's TOML (peer authentication);
    # False runs the group unauthenticated, as nodes without a secret do.
    secret: bool = True
    scheme: str = "http"  # "https" with a [tls] table in extra
    ssl_context: ssl.SSLContext | None = None  # verifies the nodes' certificates (https)
    nodes: list[BrokerNode] = field(default_factory=list)
    supervisor: Supervisor = field(default_factory=Supervisor)

    def __post_init__(self) -> None:
        ports = free_ports(2 * self.n)
        for i in range(self.n):
            nid = f"n{i + 1}"
            d = self.base / nid
            d.mkdir(parents=True, exist_ok=True)
            self.nodes.append(BrokerNode(nid, f"{self.scheme}://127.0.0.1:{ports[2 * i]}", f"127.0.0.1:{ports[2 * i + 1]}",
                                         d / "data", d / "node.toml", d / "broker.log", self.supervisor))
        members = {m.id: (m.http_url, m.raft_addr) for m in self.nodes}
        if self.secret:
            self.extra = {"cluster_secret_file": str(ensure_cluster_secret(self.base)), **self.extra}
        for node in self.nodes:
            extra = {"bootstrap": True} if self.bootstrap else {}
            node.config_path.write_text(node_toml(node.id, self.group, str(node.data_dir), self.flush, members,
                                                  {**extra, **self.extra}))

    def node(self, nid: str) -> BrokerNode:
        return next(n for n in self.nodes if n.id == nid)

    def start(self, nid: str | None = None) -> None:
        for node in self.nodes if nid is None else [self.node(nid)]:
            if self.supervisor.alive(node.id):
                continue
            env = dict(os.environ, PYTHONPATH=str(REPO) + os.pathsep + os.environ.get("PYTHONPATH", ""))
            self.supervisor.start(node.id, [sys.executable, "-m", "raftmq.broker", "--config", str(node.config_path)],
                                  node.log_path, env=env)

    def kill(self, nid: str, sig: int = signal.SIGKILL) -> None:
        """Send ``sig``; for SIGKILL and SIGTERM, wait until the process has exited."""
        self.node(nid)
        if sig == signal.SIGKILL:
            self.supervisor.kill(nid)
        elif self.supervisor.send_signal(nid, sig) and sig == signal.SIGTERM:
            self.supervisor.process(nid).popen.wait(15)  # type: ignore[union-attr]

    def stop(self) -> None:
        """SIGKILL every process the group started (tests do not need a graceful stop)."""
        self.supervisor.kill_all()

    def logs(self) -> str:
        out = []
        for node in self.nodes:
            try:
                out.append(f"==== {node.id}\n" + node.log_path.read_text()[-4000:])
            except OSError:
                pass
        return "\n".join(out)

    # -- observations ------------------------------------------------------
    def health(self, nid: str) -> dict[str, Any] | None:
        try:
            status, _, body = http("GET", self.node(nid).http_url + "/v1/health", timeout_s=1,
                                   context=self.ssl_context)
            return body if status == 200 else None
        except OSError:
            return None

    def wait_for(self, cond: Callable[[], Any], timeout_s: float = 20, what: str = "condition") -> Any:
        deadline = time.monotonic() + timeout_s
        while time.monotonic() < deadline:
            v = cond()
            if v:
                return v
            time.sleep(0.05)
        raise AssertionError(f"timed out after {timeout_s}s waiting for {what}\n{self.logs()}")

    def leader(self, timeout_s: float = 20, exclude: tuple[str, ...] = ()) -> BrokerNode:
        def find() -> BrokerNode | None:
            for node in self.nodes:
                if node.id in exclude or node.proc is None or node.proc.poll() is not None:
                    continue
                h = self.health(node.id)
                if h and h["role"] == "leader":
                    return node
            return None

        return self.wait_for(find, timeout_s, "a leader")

    def followers(self) -> list[BrokerNode]:
        lead = self.leader()
        return [n for n in self.nodes if n.id != lead.id]


@contextlib.contextmanager
def running_group(base_dir: Path, **kw: Any) -> Iterator[BrokerGroup]:
    """A started group with a leader elected; every process it started is
    stopped on the way out, whether the test passed or failed."""
    g = BrokerGroup(base_dir, **kw)
    try:
        g.start()
        g.leader()
        yield g
    finally:
        g.stop()
