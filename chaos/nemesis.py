"""The faults of a chaos run, against a real local broker group.

``Group`` starts one ``python -m broker`` process per node, each on its own
127.0.0.x address, and can kill (SIGKILL), pause (SIGSTOP/SIGCONT), restart,
tear the tail of a node's last CommitLog segment, wipe a node's data and,
inside a private network namespace, partition nodes with iptables. It speaks
to the nodes over HTTP only.

Partitions need root, ``iptables`` and ``unshare``: the run then re-executes
itself inside ``unshare --net``, so the rules live in a namespace of its own
and the host's firewall is never touched. Otherwise they are skipped and the
report says why.
"""

from __future__ import annotations

import json
import os
import random
import shutil
import signal
import socket
import subprocess
import sys
import time
import urllib.error
import urllib.request
from dataclasses import dataclass
from pathlib import Path
from typing import Any

NETNS_ENV = "RAFTMQ_CHAOS_NETNS"


def partitions_possible() -> tuple[bool, str]:
    """Whether this run can partition nodes, and why not."""
    if os.geteuid() != 0:
        return False, "partitions need root (iptables inside a private network namespace)"
    for tool in ("iptables", "unshare", "ip"):
        if shutil.which(tool) is None:
            return False, f"partitions need {tool}, which is not installed"
    return True, ""


def in_private_netns() -> bool:
    return os.environ.get(NETNS_ENV) == "1"


def enter_private_netns(argv: list[str]) -> int:
    """Re-run this command inside a new network namespace with loopback up."""
    env = dict(os.environ, **{NETNS_ENV: "1"})
    script = 'ip link set lo up && exec "$@"'
    return subprocess.call(["unshare", "--net", "--fork", "sh", "-c", script, "sh", *argv], env=env)


def _free_port(host: str) -> int:
    with socket.socket() as s:
        s.bind((host, 0))
        return int(s.getsockname()[1])


@dataclass
class Node:
    id: str
    host: str
    http_url: str
    raft_addr: str
    data_dir: Path
    config_path: Path
    log_path: Path
    proc: subprocess.Popen[bytes] | None = None
    paused: bool = False

    def alive(self) -> bool:
        return self.proc is not None and self.proc.poll() is None


def http_json(method: str, url: str, body: Any = None, timeout_s: float = 2.0) -> tuple[int, Any]:
    data = json.dumps(body).encode() if body is not None else None
    req = urllib.request.Request(url, data=data, method=method, headers={"Content-Type": "application/json"})
    try:
        with urllib.request.urlopen(req, timeout=timeout_s) as r:
            return r.status, json.loads(r.read() or b"null")
    except urllib.error.HTTPError as e:
        try:
            return e.code, json.loads(e.read() or b"null")
        except ValueError:
            return e.code, None
    except (OSError, ValueError):
        return 0, None


class Group:
    def __init__(self, base: Path, nodes: int, flush: str, distinct_hosts: bool) -> None:
        self.base = base
        self.nodes: list[Node] = []
        for i in range(nodes):
            host = f"127.0.0.{i + 2}" if distinct_hosts else "127.0.0.1"
            d = base / f"n{i + 1}"
            d.mkdir(parents=True, exist_ok=True)
            self.nodes.append(Node(f"n{i + 1}", host, f"http://{host}:{_free_port(host)}",
                                   f"{host}:{_free_port(host)}", d / "data", d / "node.toml", d / "broker.log"))
        for n in self.nodes:
            lines = [f'node_id = "{n.id}"', 'group = "chaos"', f'data_dir = "{n.data_dir}"', f'flush = "{flush}"',
                     "checkpoint_interval_ms = 500", "segment_bytes = 1048576"]
            for m in self.nodes:
                lines += ["", f"[members.{m.id}]", f'http_url = "{m.http_url}"', f'raft_addr = "{m.raft_addr}"']
            n.config_path.write_text("\n".join(lines) + "\n")
        self.partitioned = False

    # -- processes -------------------------------------------------------
    def start(self, node: Node, rejoin: bool = False) -> None:
        """Start ``node``; ``rejoin`` after its data was wiped (no votes until caught up)."""
        if node.alive():
            return
        extra = ["--rejoin"] if rejoin else []
        with open(node.log_path, "ab") as logf:
            node.proc = subprocess.Popen([sys.executable, "-m", "broker", "--config", str(node.config_path), *extra],
                                         stdout=logf, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL)
        node.paused = False

    def start_all(self) -> None:
        for n in self.nodes:
            self.start(n)

    def kill(self, node: Node) -> None:
        if node.proc is not None and node.proc.poll() is None:
            if node.paused:
                node.proc.send_signal(signal.SIGCONT)
            node.proc.kill()
            node.proc.wait(10)
        node.paused = False

    def pause(self, node: Node) -> None:
        if node.alive() and not node.paused:
            node.proc.send_signal(signal.SIGSTOP)  # type: ignore[union-attr]
            node.paused = True

    def resume(self, node: Node) -> None:
        if node.alive() and node.paused:
            node.proc.send_signal(signal.SIGCONT)  # type: ignore[union-attr]
        node.paused = False

    def stop_all(self) -> None:
        for n in self.nodes:
            self.resume(n)
            if n.alive():
                n.proc.terminate()  # type: ignore[union-attr]
        for n in self.nodes:
            if n.proc is not None:
                try:
                    n.proc.wait(10)
                except subprocess.TimeoutExpired:
                    n.proc.kill()
                    n.proc.wait(5)

    # -- data faults (on a killed node) -------------------------------------------
    def tear_tail(self, node: Node, rng: random.Random) -> str:
        """Cut, or cut and scribble on, the last bytes of the node's last segment."""
        segs = sorted((node.data_dir / "dledger" / "commitlog").glob("[0-9]" * 20))
        segs = [s for s in segs if s.stat().st_size > 0]
        if not segs:
            return "no segment"
        last = segs[-1]
        data = last.read_bytes().rstrip(b"\0")
        cut = rng.randrange(1, min(len(data), 4096) + 1)
        with open(last, "r+b") as f:
            f.truncate(len(data) - cut)
            if rng.random() < 0.5 and len(data) - cut > 16:
                f.seek(len(data) - cut - 8)
                f.write(rng.randbytes(8))
                return f"cut {cut} bytes and corrupted 8 of {last.name}"
        return f"cut {cut} bytes of {last.name}"

    def wipe(self, node: Node) -> None:
        shutil.rmtree(node.data_dir, ignore_errors=True)

    # -- partitions (inside the private namespace) --------------------------------------
    def partition(self, groups: list[list[Node]]) -> None:
        """Nodes talk only within their group (a node may be in several: a ring)."""
        allowed = {(a.host, b.host) for g in groups for a in g for b in g}
        for a in self.nodes:
            for b in self.nodes:
                if a is not b and (a.host, b.host) not in allowed:
                    subprocess.run(["iptables", "-A", "INPUT", "-s", a.host, "-d", b.host, "-j", "DROP"], check=True)
        self.partitioned = True

    def heal(self) -> None:
        if self.partitioned:
            subprocess.run(["iptables", "-F", "INPUT"], check=True)
            self.partitioned = False
        for n in self.nodes:
            self.resume(n)

    # -- observation --------------------------------------------------------------
    def health(self, node: Node) -> dict[str, Any] | None:
        if not node.alive() or node.paused:
            return None
        status, body = http_json("GET", node.http_url + "/v1/health", timeout_s=1.0)
        return body if status == 200 else None

    def leader(self) -> Node | None:
        for n in self.nodes:
            h = self.health(n)
            if h and h.get("role") == "leader":
                return n
        return None

    def wait_leader(self, timeout_s: float = 30) -> Node:
        end = time.monotonic() + timeout_s
        while time.monotonic() < end:
            n = self.leader()
            if n is not None:
                return n
            time.sleep(0.1)
        raise RuntimeError(f"no leader within {timeout_s}s; logs under {self.base}")

    def converged(self) -> bool:
        hs = [self.health(n) for n in self.nodes if n.alive()]
        return bool(hs) and all(hs) and len({h["applied_index"] for h in hs}) == 1 and any(  # type: ignore[index]
            h["role"] == "leader" for h in hs)  # type: ignore[index]

    def drain(self, node: Node, topic: str, queues: int) -> dict[tuple[int, int], str]:
        """Every message of ``topic`` on ``node``: {(queue, offset): body}."""
        held: dict[tuple[int, int], str] = {}
        for q in range(queues):
            offset = 0
            while True:
                status, page = http_json("GET", f"{node.http_url}/v1/topics/{topic}/queues/{q}/messages"
                                                f"?offset={offset}&max=1024", timeout_s=10)
                if status != 200:
                    raise RuntimeError(f"draining {node.id} queue {q}: {status} {page}")
                for m in page["messages"]:
                    held[(q, m["queue_offset"])] = m.get("body", m.get("body_b64"))
                if page["next_offset"] >= page["max_offset"] or page["next_offset"] == offset:
                    break
                offset = page["next_offset"]
        return held
