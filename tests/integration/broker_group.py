"""A real broker group for tests: N ``python -m broker`` processes on 127.0.0.1
with allocated ports, each its own OS process. ``stop()`` always kills every
process it started; tests wait on observed conditions with deadlines."""

from __future__ import annotations

import contextlib
import json
import os
import signal
import subprocess
import sys
import time
import urllib.error
import urllib.request
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable, Iterator

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
    proc: subprocess.Popen[bytes] | None = None


def http(method: str, url: str, body: Any = None, *, ctype: str = "application/json", raw: bytes | None = None,
         accept: str | None = None, timeout_s: float = 10) -> tuple[int, dict[str, str], Any]:
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

    opener = urllib.request.build_opener(NoRedirect)
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
    nodes: list[BrokerNode] = field(default_factory=list)

    def __post_init__(self) -> None:
        ports = free_ports(2 * self.n)
        for i in range(self.n):
            nid = f"n{i + 1}"
            d = self.base / nid
            d.mkdir(parents=True, exist_ok=True)
            self.nodes.append(BrokerNode(nid, f"http://127.0.0.1:{ports[2 * i]}", f"127.0.0.1:{ports[2 * i + 1]}",
                                         d / "data", d / "node.toml", d / "broker.log"))
        for node in self.nodes:
            lines = [f'node_id = "{node.id}"', f'group = "{self.group}"', f'data_dir = "{node.data_dir}"',
                     f'flush = "{self.flush}"']
            if self.bootstrap:
                lines.append("bootstrap = true")
            lines += [f"{k} = {json.dumps(v)}" for k, v in self.extra.items() if not isinstance(v, dict)]
            for k, v in self.extra.items():
                if isinstance(v, dict):
                    lines += ["", f"[{k}]"] + [f"{kk} = {json.dumps(vv)}" for kk, vv in v.items()]
            for m in self.nodes:
                lines += ["", f"[members.{m.id}]", f'http_url = "{m.http_url}"', f'raft_addr = "{m.raft_addr}"']
            node.config_path.write_text("\n".join(lines) + "\n")

    def node(self, nid: str) -> BrokerNode:
        return next(n for n in self.nodes if n.id == nid)

    def start(self, nid: str | None = None) -> None:
        for node in self.nodes if nid is None else [self.node(nid)]:
            if node.proc is not None and node.proc.poll() is None:
                continue
            logf = open(node.log_path, "ab")
            env = dict(os.environ, PYTHONPATH=str(REPO) + os.pathsep + os.environ.get("PYTHONPATH", ""))
            node.proc = subprocess.Popen([sys.executable, "-m", "raftmq.broker", "--config", str(node.config_path)],
                                         stdout=logf, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL, env=env)
            logf.close()

    def kill(self, nid: str, sig: int = signal.SIGKILL) -> None:
        node = self.node(nid)
        if node.proc is not None and node.proc.poll() is None:
            node.proc.send_signal(sig)
            if sig in (signal.SIGKILL, signal.SIGTERM):
                node.proc.wait(15)

    def stop(self) -> None:
        for node in self.nodes:
            if node.proc is not None and node.proc.poll() is None:
                node.proc.kill()
        for node in self.nodes:
            if node.proc is not None:
                try:
                    node.proc.wait(10)
                except subprocess.TimeoutExpired:
                    pass

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
            status, _, body = http("GET", self.node(nid).http_url + "/v1/health", timeout_s=1)
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
