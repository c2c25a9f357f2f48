"""A local broker group on 127.0.0.1: ``raftmq cluster up|down|status|restart-node``.

``up`` writes one TOML file per node under a base directory, starts each node
as its own process (``python -m raftmq.broker --config ...``), waits until a leader
is elected and prints the nodes' URLs. The group's layout and process ids are
kept in ``<base>/cluster.json`` so that ``down``, ``status`` and
``restart-node`` can find it. A node that dies is not restarted behind the
user's back: failures stay visible.

Only the first start of a new group passes ``--bootstrap`` (etcd's
``initial-cluster-state=new``), never written into the TOML: a node on an
empty data directory votes only then. ``up`` on a base directory where some
node already holds data, and ``restart-node``, start nodes without it, so a
node whose data directory was wiped rejoins as a non-voter until it has
caught up. A group counts as new until ``up`` saw its first leader
(``bootstrapped`` in ``cluster.json``), or when no node has a data directory
with anything in it.

The processes are started, watched and stopped by ``client/local/supervisor.py``
(a detached group's nodes are released to outlive the command); the TOML is
written by ``client/local/node_toml.py``. This module talks to brokers over
HTTP only and starts them as programs; it imports nothing from ``broker``.
"""

from __future__ import annotations

import json
import os
import signal
import random
import socket
import ssl
import sys
import time
import urllib.error
import urllib.request
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

from raftmq.client.local.node_toml import ensure_cluster_secret, node_toml
from raftmq.client.local.supervisor import Supervisor, SupervisorError

STATE_FILE = "cluster.json"
DEFAULT_BASE_DIR = "raftmq-data"  # where `raftmq cluster up` puts a local group unless told otherwise


class ClusterError(Exception):
    """A one-line, user-facing reason why a cluster command failed."""


@dataclass(slots=True)
class NodeSpec:
    id: str
    http_url: str
    raft_addr: str
    data_dir: str
    config_path: str
    log_path: str
    pid: int | None = None


def _port_free(port: int, host: str = "127.0.0.1") -> bool:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        try:
            s.bind((host, port))
        except OSError:
            return False
    return True


def _ephemeral_range() -> tuple[int, int]:
    """The kernel's range for outgoing connections' source ports (Linux), or (32768, 60999)."""
    try:
        lo, hi = open("/proc/sys/net/ipv4/ip_local_port_range").read().split()
        return int(lo), int(hi)
    except (OSError, ValueError):
        return 32768, 60999


def free_ports(n: int, host: str = "127.0.0.1") -> list[int]:
    """``n`` distinct ports free on ``host`` right now, below the ephemeral range
    when there is room: a port the kernel hands out as the source port of an
    outgoing connection could be in use when a node (re)starts and binds it;
    one chosen from outside that range is free unless another listener took it.
    Random picks, held together while chosen, so none repeats."""
    eph_lo, _ = _ephemeral_range()
    lo = 10000
    socks: list[socket.socket] = []
    try:
        if eph_lo - lo >= 4 * n:
            for port in random.sample(range(lo, eph_lo), min(eph_lo - lo, 64 * n)):
                s = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
                try:
                    s.bind((host, port))
                except OSError:
                    s.close()
                    continue
                socks.append(s)
                if len(socks) == n:
                    return [int(s.getsockname()[1]) for s in socks]
        while len(socks) < n:  # no room below the ephemeral range: let the kernel pick
            s = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
            socks.append(s)
            s.bind((host, 0))
        return [int(s.getsockname()[1]) for s in socks]
    finally:
        for s in socks:
            s.close()


def free_port(host: str = "127.0.0.1") -> int:
    """A TCP port free on ``host`` right now."""
    return free_ports(1, host)[0]


def _toml(node: NodeSpec, group: str, flush: str, nodes: list[NodeSpec], extra: dict[str, Any]) -> str:
    try:
        return node_toml(node.id, group, node.data_dir, flush, {n.id: (n.http_url, n.raft_addr) for n in nodes},
                         extra)
    except ValueError as exc:
        raise ClusterError(str(exc)) from None


def plan(base_dir: Path, nodes: int, http_port_base: int | None, raft_port_base: int | None,
         scheme: str = "http") -> list[NodeSpec]:
    """Where each node lives and listens; ``scheme`` "https" for nodes with a ``[tls]`` table."""
    specs = []
    for i in range(nodes):
        nid = f"n{i + 1}"
        hp = http_port_base + i if http_port_base else free_port()
        rp = raft_port_base + i if raft_port_base else free_port()
        for port in (hp, rp):
            if not _port_free(port):
                raise ClusterError(f"port {port} on 127.0.0.1 is in use; pick another --http-port-base")
        d = base_dir / nid
        specs.append(NodeSpec(nid, f"{scheme}://127.0.0.1:{hp}", f"127.0.0.1:{rp}", str(d / "data"),
                              str(d / "node.toml"), str(d / "broker.log")))
    return specs


def _http_json(url: str, timeout_s: float = 1.0, context: ssl.SSLContext | None = None) -> dict[str, Any] | None:
    try:
        with urllib.request.urlopen(url, timeout=timeout_s, context=context) as r:
            return json.loads(r.read())
    except (urllib.error.URLError, OSError, ValueError):
        return None


def _argv(node: NodeSpec, rejoin: bool = False, bootstrap: bool = False) -> list[str]:
    flags = (["--rejoin"] if rejoin else []) + (["--bootstrap"] if bootstrap else [])
    return [sys.executable, "-m", "raftmq.broker", "--config", node.config_path, *flags]


def _start(sup: Supervisor, node: NodeSpec, detach: bool, rejoin: bool = False, bootstrap: bool = False) -> None:
    """Start the node's broker process under ``sup`` and note its pid in ``node``."""
    try:
        node.pid = sup.start(node.id, _argv(node, rejoin, bootstrap), Path(node.log_path), detach=detach).pid
    except SupervisorError as exc:
        raise ClusterError(str(exc)) from None


def save_state(base_dir: Path, group: str, flush: str, nodes: list[NodeSpec], bootstrapped: bool | None = None) -> None:
    """Write ``cluster.json``; ``bootstrapped`` None keeps what the file said."""
    if bootstrapped is None:
        bootstrapped = _bootstrapped(base_dir)
    doc: dict[str, Any] = {"group": group, "flush": flush, "nodes": [asdict(n) for n in nodes]}
    if bootstrapped is not None:
        doc["bootstrapped"] = bootstrapped
    tmp = base_dir / (STATE_FILE + ".tmp")
    tmp.write_text(json.dumps(doc, indent=2))
    os.replace(tmp, base_dir / STATE_FILE)


def load_state(base_dir: Path) -> tuple[str, str, list[NodeSpec]]:
    path = base_dir / STATE_FILE
    try:
        doc = json.loads(path.read_text())
    except FileNotFoundError:
        raise ClusterError(f"no cluster found in {base_dir} (missing {STATE_FILE}); start one with 'raftmq cluster up'")
    except ValueError as exc:
        raise ClusterError(f"{path} is not valid JSON: {exc}")
    return doc["group"], doc["flush"], [NodeSpec(**n) for n in doc["nodes"]]


def _bootstrapped(base_dir: Path) -> bool | None:
    """Whether ``up`` has seen this group's first leader (None: not recorded)."""
    try:
        v = json.loads((base_dir / STATE_FILE).read_text()).get("bootstrapped")
    except (OSError, ValueError, AttributeError):
        return None
    return v if isinstance(v, bool) else None


def _holds_data(data_dir: str) -> bool:
    try:
        return any(Path(data_dir).iterdir())
    except FileNotFoundError:
        return False


def is_new_group(base_dir: Path, nodes: list[NodeSpec]) -> bool:
    """Whether starting ``nodes`` is the first start of a new group (module docstring)."""
    return _bootstrapped(base_dir) is False or not any(_holds_data(n.data_dir) for n in nodes)


def wait_for_leader(nodes: list[NodeSpec], timeout_s: float, procs: Supervisor | None = None,
                    context: ssl.SSLContext | None = None) -> tuple[str, str]:
    """(id, HTTP URL) of the first node that says it leads; with ``procs``
    (the supervisor that started them), fail at once if one exits; ``context``
    verifies https:// nodes."""
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        for n in nodes:
            if procs is not None:
                try:
                    procs.check_alive([n.id])
                except SupervisorError as exc:
                    raise ClusterError(str(exc)) from None
            h = _http_json(n.http_url + "/v1/health", 0.5, context)
            if h and h.get("role") == "leader":
                return n.id, n.http_url
        time.sleep(0.1)
    raise ClusterError(f"no leader elected within {timeout_s:.0f}s; see the logs under {Path(nodes[0].log_path).parent.parent}")


def up(base_dir: Path, nodes: int, http_port_base: int | None, raft_port_base: int | None, flush: str,
       group: str, detach: bool, extra: dict[str, Any] | None = None, echo=print, scheme: str = "http",
       ssl_context: ssl.SSLContext | None = None) -> int:
    if nodes < 1:
        raise ClusterError("--nodes must be at least 1")
    base_dir.mkdir(parents=True, exist_ok=True)
    if (base_dir / STATE_FILE).exists():
        _, _, old = load_state(base_dir)
        if any(_alive(n.pid) for n in old):
            raise ClusterError(f"a cluster is already running in {base_dir}; stop it with 'raftmq cluster down --base-dir {base_dir}'")
        specs = old if len(old) == nodes else plan(base_dir, nodes, http_port_base, raft_port_base, scheme)
    else:
        specs = plan(base_dir, nodes, http_port_base, raft_port_base, scheme)
    new_group = is_new_group(base_dir, specs)
    settings = {"cluster_secret_file": str(ensure_cluster_secret(base_dir)), **(extra or {})}
    settings = {k: v for k, v in settings.items() if v is not None}  # None: leave the setting out
    for n in specs:
        Path(n.data_dir).mkdir(parents=True, exist_ok=True)
        Path(n.config_path).write_text(_toml(n, group, flush, specs, settings))
    sup = Supervisor()
    try:
        for n in specs:
            _start(sup, n, detach, bootstrap=new_group)
        save_state(base_dir, group, flush, specs, bootstrapped=False if new_group else None)
        leader_id, leader_url = wait_for_leader(specs, 30, sup, ssl_context)
    except BaseException:
        sup.close()
        raise
    if new_group:
        save_state(base_dir, group, flush, specs, bootstrapped=True)
    echo(f"RaftMQ group {group!r}: {nodes} nodes, flush={flush}, data under {base_dir}")
    for n in specs:
        mark = "  <- leader" if n.id == leader_id else ""
        echo(f"  {n.id}  {n.http_url}  raft {n.raft_addr}{mark}")
    if detach:
        echo(f"detached; stop with: raftmq cluster down --base-dir {base_dir}")
        sup.release()  # the nodes outlive this command
        return 0
    echo("Ctrl-C stops the group.")
    interrupted = False
    try:
        reported: set[str] = set()
        while True:
            time.sleep(0.5)
            for n in specs:
                code = sup.process(n.id).returncode()
                if code is not None and n.id not in reported:
                    reported.add(n.id)
                    echo(f"node {n.id} exited with code {code} (not restarted; "
                         f"'raftmq cluster restart-node {n.id} --base-dir {base_dir}' brings it back)")
    except KeyboardInterrupt:
        interrupted = True
    finally:
        # A second Ctrl-C must not leave nodes running: ignore it while stopping.
        previous = signal.signal(signal.SIGINT, signal.SIG_IGN)
        try:
            echo("stopping the group..." if interrupted else "stopping the group")
            sup.close()
        finally:
            signal.signal(signal.SIGINT, previous)
        for n in specs:
            n.pid = None
        save_state(base_dir, group, flush, specs)
    return 0


def _alive(pid: int | None) -> bool:
    if not pid:
        return False
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    try:  # a recycled pid that is not ours does not count
        cmd = Path(f"/proc/{pid}/cmdline").read_bytes()
        return b"broker" in cmd
    except OSError:
        return True


def _stop_pids(pids: list[int], timeout_s: float = 10) -> None:
    for pid in pids:
        try:
            os.kill(pid, signal.SIGTERM)
        except ProcessLookupError:
            pass
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline and any(_alive(p) for p in pids):
        time.sleep(0.1)
    for pid in pids:
        if _alive(pid):
            os.kill(pid, signal.SIGKILL)


def down(base_dir: Path, echo=print) -> int:
    group, flush, specs = load_state(base_dir)
    pids = [n.pid for n in specs if _alive(n.pid)]
    _stop_pids([p for p in pids if p])
    for n in specs:
        n.pid = None
    save_state(base_dir, group, flush, specs)
    echo(f"stopped {len(pids)} node(s) of group {group!r}")
    return 0


def status(base_dir: Path) -> dict[str, Any]:
    group, flush, specs = load_state(base_dir)
    rows = []
    cluster_view = None
    for n in specs:
        h = _http_json(n.http_url + "/v1/health")
        if h and h.get("role") == "leader":
            cluster_view = _http_json(n.http_url + "/v1/cluster")
        rows.append({"id": n.id, "http_url": n.http_url, "pid": n.pid if _alive(n.pid) else None,
                     "role": h.get("role") if h else "down", "term": h.get("term") if h else None,
                     "commit_index": h.get("commit_index") if h else None,
                     "applied_index": h.get("applied_index") if h else None, "lag": None})
    if cluster_view:
        lag = {m["id"]: m.get("lag") for m in cluster_view.get("members", [])}
        for r in rows:
            r["lag"] = lag.get(r["id"])
    return {"group": group, "flush": flush, "nodes": rows}


def restart_node(base_dir: Path, node_id: str, echo=print, rejoin: bool = False) -> int:
    group, flush, specs = load_state(base_dir)
    node = next((n for n in specs if n.id == node_id), None)
    if node is None:
        raise ClusterError(f"no node {node_id!r} in {base_dir}; nodes are {', '.join(n.id for n in specs)}")
    if _alive(node.pid):
        raise ClusterError(f"node {node_id} is running (pid {node.pid})")
    sup = Supervisor()
    try:
        _start(sup, node, detach=True, rejoin=rejoin)
        save_state(base_dir, group, flush, specs)
        sup.wait_ready([node.id], lambda _: _http_json(node.http_url + "/v1/health", 0.5), 20)
    except SupervisorError as exc:
        sup.close()
        raise ClusterError(str(exc)) from None
    except BaseException:
        sup.close()
        raise
    sup.release()  # the node outlives this command
    echo(f"node {node_id} is back at {node.http_url} (pid {node.pid})")
    return 0
