"""The nemesis: process and data faults on a real local broker group.

``Group`` lays out and runs one ``python -m raftmq.broker --config node.toml``
process per node (the layout of ``client/local/cluster.py``, the TOML of
``client/local/node_toml.py``, the processes run by the local-group
supervisor ``client/local/supervisor.py``), each on its own
127.0.0.x address when the run has a private network namespace (else all on
127.0.0.1), and does to them what a bad day does to machines:

- ``kill``: SIGKILL (the process dies mid-write; the OS keeps what it was given);
- ``pause`` / ``resume``: SIGSTOP / SIGCONT (a GC pause, a stalled VM);
- ``tear_tail``: on a killed node, cut or scribble on the last bytes of its
  last non-empty Raft log segment (``<data>/dledger/commitlog/<20 digits>``),
  what losing the page cache does to a node under async flush;
- ``wipe``: on a killed node, delete its whole data directory (a lost disk);
  it is restarted with no flag, as an operator who does not know would (the
  broker must notice the lost data by itself; ``rejoin_wiped`` restores the
  old ``--rejoin`` workaround);
- ``corrupt_entry`` / ``corrupt_derived``: on a killed node, flip one bit in a
  committed Raft log entry, or damage a ConsumeQueue, IndexFile or the broker
  checkpoint (``chaos.damage``);
- ``kill_all``: SIGKILL every node at once;
- ``partition`` / ``heal``: iptables rules between node addresses
  (``chaos.netns``).

It observes the group over HTTP only, through the client's transport
(``GET /v1/health`` on one node at a time), and notices nodes that exit
without being killed (``crashed``). Broker processes get SIGKILL if the run
dies (``setpriv --pdeathsig``, where available), and ``stop_all`` stops every
process it started, paused or not.
"""

from __future__ import annotations

import asyncio
import logging
import random
import shutil
import subprocess
import sys
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Final

from raftmq.client.local.cluster import free_port
from raftmq.client.local.node_toml import ensure_cluster_secret, node_toml
from raftmq.client.local.supervisor import Supervisor
from raftmq.client.errors import RaftMQError
from raftmq.client.http import Transport, TransportConfig

from raftmq.chaos import damage
from raftmq.chaos.netns import Firewall, cut_pairs

log = logging.getLogger(__name__)

SEGMENT_BYTES: Final = 1 << 20  # small segments: rollovers and boundary snapshots happen often
CHECKPOINT_INTERVAL_MS: Final = 500
# Whether the broker's node TOML takes ``bootstrap = true`` (the first start of a
# new group, the only start on an empty data directory that may vote: issue 9,
# case 8). The broker refuses unknown keys: this must be True exactly when
# broker/config.py has the key (tests/unit/test_chaos_nemesis.py checks it).
# Only the group's first start is marked; later starts, wiped or not, never are.
BOOTSTRAP_KEY: Final = True


@dataclass
class Node:
    id: str
    host: str
    http_url: str
    raft_addr: str
    data_dir: Path
    config_path: Path
    log_path: Path
    supervisor: Supervisor = field(repr=False, default_factory=Supervisor)  # the group's, which runs it
    incarnation: int = 0  # bumped at every start: answers of one process lifetime share it
    expect_exit: bool = False  # we killed or stopped it
    wiped: bool = False  # its data was deleted since it last ran

    @property
    def proc(self) -> subprocess.Popen[bytes] | None:
        """The node's current (or last) process, None before its first start."""
        return self.supervisor.process(self.id).popen if self.id in self.supervisor.names() else None

    @property
    def paused(self) -> bool:
        return self.id in self.supervisor.names() and self.supervisor.process(self.id).paused

    def alive(self) -> bool:
        return self.supervisor.alive(self.id)


class Group:
    """A local broker group of ``n`` nodes under ``base`` (see the module docstring)."""

    def __init__(self, base: Path, n: int, flush: str, *, distinct_hosts: bool, group: str = "chaos",
                 segment_bytes: int = SEGMENT_BYTES, checkpoint_interval_ms: int = CHECKPOINT_INTERVAL_MS,
                 rejoin_wiped: bool = False, bootstrap_key: bool = BOOTSTRAP_KEY, secret: bool = True) -> None:
        """``rejoin_wiped``: restart a wiped node with ``--rejoin`` (by default it
        gets no flag); ``bootstrap_key``: write ``bootstrap = true`` into each
        node's TOML for the group's first start (see ``BOOTSTRAP_KEY``);
        ``secret``: authenticate the peer port with a cluster secret file in ``base``."""
        self.base = base
        self.secret_file = str(ensure_cluster_secret(base)) if secret else None
        self.group = group
        self.flush = flush
        self.segment_bytes = segment_bytes
        self.checkpoint_interval_ms = checkpoint_interval_ms
        self.rejoin_wiped = rejoin_wiped
        self.bootstrap_key = bootstrap_key
        # Broker processes get SIGKILL if the run dies (setpriv --pdeathsig, where available).
        self._sup = Supervisor(die_with_parent=True)
        self.nodes: list[Node] = []
        for i in range(n):
            host = f"127.0.0.{i + 2}" if distinct_hosts else "127.0.0.1"
            d = base / f"n{i + 1}"
            d.mkdir(parents=True, exist_ok=True)
            self.nodes.append(Node(f"n{i + 1}", host, f"http://{host}:{free_port(host)}",
                                   f"{host}:{free_port(host)}", d / "data", d / "node.toml", d / "broker.log",
                                   self._sup))
        for node in self.nodes:
            self.write_config(node, bootstrap=False)
        self.by_id = {n.id: n for n in self.nodes}
        self._firewall: Firewall | None = Firewall() if distinct_hosts else None
        self._probe = Transport([n.http_url for n in self.nodes],
                                TransportConfig(deadline_ms=1500, request_timeout_ms=1000, connect_timeout_ms=500,
                                                discover=False))

    @property
    def urls(self) -> list[str]:
        return [n.http_url for n in self.nodes]

    def write_config(self, node: Node, *, bootstrap: bool) -> None:
        """The node's TOML; ``bootstrap = true`` only when asked and the broker takes the key."""
        extra: dict[str, Any] = {"segment_bytes": self.segment_bytes,
                                 "checkpoint_interval_ms": self.checkpoint_interval_ms}
        if bootstrap and self.bootstrap_key:
            extra["bootstrap"] = True
        if self.secret_file is not None:
            extra["cluster_secret_file"] = self.secret_file
        node.config_path.write_text(node_toml(node.id, self.group, str(node.data_dir), self.flush,
                                              {m.id: (m.http_url, m.raft_addr) for m in self.nodes}, extra))

    def start_flags(self, node: Node, rejoin: bool | None, bootstrap: bool | None) -> tuple[bool, bool]:
        """``(rejoin, bootstrap)`` for the node's next start (see ``start``)."""
        return (node.wiped and self.rejoin_wiped if rejoin is None else rejoin,
                node.incarnation == 0 if bootstrap is None else bootstrap)

    # -- processes -----------------------------------------------------------------
    def start(self, node: Node, rejoin: bool | None = None, bootstrap: bool | None = None) -> None:
        """Start the node's process (not waiting for it to serve).

        ``rejoin`` (default: its data was wiped since it last ran and the group
        was made with ``rejoin_wiped``): pass the broker's ``--rejoin`` (it lost
        its data; no votes until caught up). ``bootstrap`` (default: this is the
        node's first start): mark the start as the first of a new group in its
        TOML (only with ``bootstrap_key``). Call from the main thread: the
        parent-death signal is tied to the thread that forks."""
        if node.alive():
            return
        rejoin, bootstrap = self.start_flags(node, rejoin, bootstrap)
        self.write_config(node, bootstrap=bootstrap)
        extra = ["--rejoin"] if rejoin else []
        flags = (" --rejoin" if rejoin else "") + (" bootstrap" if bootstrap and self.bootstrap_key else "")
        flags += " (data wiped)" if node.wiped else ""
        self._sup.start(node.id, [sys.executable, "-m", "raftmq.broker", "--config", str(node.config_path), *extra],
                        node.log_path,
                        banner=f"---- chaos: start {node.id} (incarnation {node.incarnation + 1}){flags}")
        node.incarnation += 1
        node.expect_exit = False
        node.wiped = False

    def start_all(self) -> None:
        for n in self.nodes:
            self.start(n)

    async def kill(self, node: Node) -> None:
        """SIGKILL and reap."""
        node.expect_exit = True
        if node.alive():
            self._sup.kill(node.id, wait=False)  # works on a stopped process too
        while node.alive():
            await asyncio.sleep(0.005)

    async def kill_all(self) -> list[str]:
        """SIGKILL every running node at once (paused ones too), then reap them all;
        returns the ids of the nodes killed."""
        killed = []
        for n in self.nodes:
            n.expect_exit = True
            if n.alive():
                self._sup.kill(n.id, wait=False)
                killed.append(n)
        while any(n.alive() for n in killed):
            await asyncio.sleep(0.005)
        return [n.id for n in killed]

    def pause(self, node: Node) -> bool:
        """SIGSTOP a running node; whether it was running and not yet paused."""
        return node.alive() and self._sup.pause(node.id)

    def resume(self, node: Node) -> None:
        if node.id in self._sup.names():
            self._sup.resume(node.id)

    async def stop_all(self, grace_s: float = 5.0) -> None:
        """Stop every process this group started (SIGCONT, SIGTERM, then SIGKILL
        after ``grace_s``), in a thread: the wait does not block the event loop."""
        for n in self.nodes:
            n.expect_exit = True
        await asyncio.to_thread(self._sup.stop, None, grace_s)

    def stop_all_now(self) -> None:
        """Last resort (no event loop): SIGKILL everything still running."""
        for n in self.nodes:
            n.expect_exit = True
        self._sup.kill_all(timeout_s=5)

    def crashed(self) -> list[tuple[Node, int]]:
        """Nodes that exited by themselves since the last call (each reported once)."""
        out = []
        for n in self.nodes:
            if n.proc is not None and not n.expect_exit:
                rc = n.proc.poll()
                if rc is not None:
                    n.expect_exit = True
                    out.append((n, rc))
        return out

    def log_tail(self, node: Node, nbytes: int = 3000) -> str:
        try:
            with open(node.log_path, "rb") as f:
                f.seek(0, 2)
                size = f.tell()
                f.seek(max(0, size - nbytes))
                return f.read().decode("utf-8", "replace")
        except OSError:
            return ""

    # -- data faults (on a killed node) -------------------------------------------------
    def tear_tail(self, node: Node, nbytes: int, corrupt: bool, seed: int) -> dict[str, Any]:
        """Cut (or overwrite with garbage) the last ``nbytes`` of the node's last
        non-empty log segment. The node must be down. Small file work: call it
        from a thread."""
        if node.alive():
            raise RuntimeError(f"tear_tail: {node.id} is running")
        segdir = node.data_dir / "dledger" / "commitlog"
        segs = sorted((p for p in segdir.glob("[0-9]" * 20) if p.stat().st_size > 0), key=lambda p: p.name)
        if not segs:
            return {"torn": "nothing: no non-empty segment"}
        last = segs[-1]
        size = last.stat().st_size
        n = min(nbytes, size)
        with open(last, "r+b") as f:
            if corrupt:
                f.seek(size - n)
                f.write(random.Random(seed).randbytes(n))
            else:
                f.truncate(size - n)
        return {"segment": last.name, "size": size, "bytes": n, "how": "corrupted" if corrupt else "cut"}

    def corrupt_entry(self, node: Node, commit_index: int, region: str | None, seed: int) -> dict[str, Any]:
        """Flip one bit in a committed entry (at or below ``commit_index``) of the
        node's Raft log (``chaos.damage.corrupt_log_entry``). The node must be
        down. File work: call it from a thread."""
        if node.alive():
            raise RuntimeError(f"corrupt: {node.id} is running")
        return damage.corrupt_log_entry(node.data_dir, random.Random(seed), max_index=commit_index, region=region)

    def corrupt_derived(self, node: Node, target: str, how: str, seed: int) -> dict[str, Any]:
        """Damage a ConsumeQueue, IndexFile or the checkpoint of the node
        (``chaos.damage.damage_derived``). The node must be down. File work: call
        it from a thread."""
        if node.alive():
            raise RuntimeError(f"corrupt-derived: {node.id} is running")
        return damage.damage_derived(node.data_dir, random.Random(seed), target, how)

    def wipe(self, node: Node) -> None:
        """Delete the node's whole data directory. The node must be down."""
        if node.alive():
            raise RuntimeError(f"wipe: {node.id} is running")
        shutil.rmtree(node.data_dir, ignore_errors=True)
        node.wiped = True

    # -- partitions -------------------------------------------------------------------------
    async def partition(self, groups: list[list[Node]]) -> list[tuple[str, str]]:
        """Nodes talk only to nodes they share a group with; returns the cut node-id pairs."""
        if self._firewall is None:
            raise RuntimeError("partitions need the run's own network namespace")
        hosts = [n.host for n in self.nodes]
        pairs = cut_pairs(hosts, [[n.host for n in g] for g in groups])
        await self._firewall.block(pairs)
        by_host = {n.host: n.id for n in self.nodes}
        return [(by_host[a], by_host[b]) for a, b in pairs]

    async def heal_network(self) -> None:
        if self._firewall is not None:
            await self._firewall.heal()

    # -- observation ------------------------------------------------------------------------
    async def health(self, node: Node) -> dict[str, Any] | None:
        if not node.alive() or node.paused:
            return None
        try:
            h = await self._probe.call("GET", "/v1/health", url=node.http_url, deadline_s=1.5)
        except (RaftMQError, OSError):
            return None
        return h if isinstance(h, dict) else None

    async def healths(self) -> dict[str, dict[str, Any] | None]:
        answers = await asyncio.gather(*(self.health(n) for n in self.nodes))
        return {n.id: h for n, h in zip(self.nodes, answers)}

    async def leader(self) -> Node | None:
        """The node that says it leads, with the highest term (a deposed leader may not know yet)."""
        best: tuple[int, Node] | None = None
        for nid, h in (await self.healths()).items():
            if h and h.get("role") == "leader":
                term = int(h.get("term") or 0)
                if best is None or term > best[0]:
                    best = (term, self.by_id[nid])
        return best[1] if best else None

    async def wait_leader(self, timeout_s: float) -> Node | None:
        loop = asyncio.get_running_loop()
        end = loop.time() + timeout_s
        while loop.time() < end:
            n = await self.leader()
            if n is not None:
                return n
            await asyncio.sleep(0.05)
        return None

    async def caught_up(self, max_lag: int) -> bool:
        """Every node runs, answers, and has applied to within ``max_lag`` entries
        of the commit index of the leader (of the highest term)."""
        hs = await self.healths()
        if any(h is None for h in hs.values()):
            return False
        leaders = [h for h in hs.values() if h and h.get("role") == "leader"]
        if not leaders:
            return False
        commit = int(max(leaders, key=lambda h: int(h.get("term") or 0)).get("commit_index") or 0)
        return all(int(h.get("applied_index") or 0) >= commit - max_lag for h in hs.values() if h)

    async def wait_caught_up(self, max_lag: int, timeout_s: float) -> bool:
        loop = asyncio.get_running_loop()
        end = loop.time() + timeout_s
        while loop.time() < end:
            if await self.caught_up(max_lag):
                return True
            await asyncio.sleep(0.1)
        return False

    async def close(self) -> None:
        await self._probe.close()
