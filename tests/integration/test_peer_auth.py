"""Peer authentication with real broker processes (issue 11): an outsider who
knows every node id, Raft address and the group name (all public on
``GET /v1/cluster``) but not the cluster secret cannot change the term, the
leader or a byte of data; a node with a wrong secret is refused; refusals are
logged at most once a minute per source; TLS on the peer port works and
refuses a certificate from another CA; a group without a secret still works,
and there the same forgeries do change the term.

Before the secret (base commit fc1183f) every forgery below was delivered: the
forged TimeoutNow made a follower campaign (a new term and leader), see
``test_without_a_secret_the_group_works_and_a_forged_timeout_now_changes_the_term``.
"""

from __future__ import annotations

import socket
import ssl
import subprocess
import time
from pathlib import Path

import pytest

from raftmq.dledger.core.messages import NodeId, TimeoutNow
from raftmq.dledger.tools.forge import Forger, attack, view_of
from tests.integration.broker_group import BrokerGroup, running_group
from tests.integration.test_broker_failover import Producer, all_applied_equal, create_topic
from tests.integration.test_recovery_wipe import QUEUES, read_local

pytestmark = pytest.mark.integration

QUIET_S = 3.0  # more than two election timeouts (600 to 1200 ms) after the forgeries


def seed(group: BrokerGroup, topic: str, n: int = 40) -> Producer:
    create_topic(group, topic, QUEUES)
    p = Producer(group, topic)
    for b in range(4):
        assert p.send([f"{topic}-{b}-{k}" for k in range(n // 4)])
    group.wait_for(lambda: all_applied_equal(group), 20, "every node to apply the messages")
    return p


def terms_and_leaders(group: BrokerGroup) -> set[tuple[int, str | None]]:
    hs = [group.health(n.id) for n in group.nodes]
    assert all(hs), hs
    return {(int(h["term"]), h.get("leader_id")) for h in hs if h}


def test_an_outsider_without_the_secret_changes_no_term_no_leader_and_no_byte(tmp_path: Path) -> None:
    with running_group(tmp_path) as group:
        p = seed(group, "outsider")
        leader = group.leader()
        view = view_of(leader.http_url)
        before = terms_and_leaders(group)
        assert before == {(view.term, leader.id)}
        rows = []
        for f in group.followers():
            rows += attack(view, f.id, leader.id)  # AppendEntries at commit+1, InstallSnapshot at term+1, ...
            for _ in range(10):
                with Forger(view.raft_addrs[f.id], view.group, leader.id) as forger:
                    forger.send(TimeoutNow(view.term, NodeId(leader.id), NodeId(f.id)))
                    rows.append({"forgery": "timeout-now", "closed": forger.closed_by_peer(1.0)})
        rows += attack(view, leader.id, group.followers()[0].id)  # a vote request at term 2**64-1 included
        assert rows and all(r["closed"] for r in rows), [r for r in rows if not r["closed"]]
        time.sleep(QUIET_S)
        assert terms_and_leaders(group) == before
        acked = {body for body, _ in p.acked}
        for node in group.nodes:
            assert set(read_local(node.http_url, "outsider").values()) == acked, node.id
        # Dozens of refusals from 127.0.0.1: at most a line a minute per source address.
        for node in group.nodes:
            assert node.log_path.read_text().count("refused peer connection") <= 2, node.id


def test_a_node_with_another_secret_is_refused_and_a_forger_with_the_right_one_is_not(tmp_path: Path) -> None:
    with running_group(tmp_path) as group:
        view = view_of(group.leader().http_url)
        follower = group.followers()[0]
        right = (tmp_path / "cluster.secret").read_bytes().strip()
        with Forger(view.raft_addrs[follower.id], view.group, "n1" if follower.id != "n1" else "n2",
                    secret=b"w" * 32, to_node=follower.id) as wrong:
            assert wrong.refused == "the acceptor's proof does not match our secret"
        with Forger(view.raft_addrs[follower.id], view.group, "n1" if follower.id != "n1" else "n2",
                    secret=right, to_node=follower.id) as ok:
            assert ok.refused is None
            assert not ok.closed_by_peer(0.5)  # through the handshake: the node keeps the connection
        # A real node restarted with another secret joins no one.
        odd = group.followers()[1]
        group.kill(odd.id)
        other = tmp_path / "other.secret"
        other.write_text("z" * 64 + "\n")
        text = odd.config_path.read_text().replace(str(tmp_path / "cluster.secret"), str(other))
        odd.config_path.write_text(text)
        group.start(odd.id)
        time.sleep(QUIET_S)
        h = group.health(odd.id)
        assert h is not None and h["role"] != "leader" and h.get("leader_id") is None, h
        assert "secret differs" in odd.log_path.read_text()
        assert "secret differs" in group.leader().log_path.read_text()


def openssl(*args: str, cwd: Path) -> None:
    subprocess.run(["openssl", *args], cwd=cwd, check=True, capture_output=True, timeout=60)


def make_ca_and_cert(d: Path, name: str) -> tuple[Path, Path, Path]:
    """A throwaway CA and one certificate it signed: (ca.pem, cert.pem, key.pem)."""
    d.mkdir(parents=True)
    ec = ["-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:prime256v1", "-nodes"]
    openssl("req", "-x509", *ec, "-keyout", "ca.key", "-out", "ca.pem", "-days", "2", "-subj", f"/CN={name}-ca",
            cwd=d)
    openssl("req", *ec, "-keyout", "node.key", "-out", "node.csr", "-subj", f"/CN={name}-node", cwd=d)
    openssl("x509", "-req", "-in", "node.csr", "-CA", "ca.pem", "-CAkey", "ca.key", "-CAcreateserial",
            "-out", "node.pem", "-days", "2", cwd=d)
    return d / "ca.pem", d / "node.pem", d / "node.key"


def test_tls_on_the_peer_port_serves_and_refuses_a_certificate_of_another_ca(tmp_path: Path) -> None:
    ca, cert, key = make_ca_and_cert(tmp_path / "pki", "group")
    _, rogue_cert, rogue_key = make_ca_and_cert(tmp_path / "rogue", "rogue")
    tls = {"peer_tls_cert": str(cert), "peer_tls_key": str(key), "peer_tls_ca": str(ca)}
    with running_group(tmp_path / "g", extra=tls) as group:
        p = seed(group, "tls")
        before = terms_and_leaders(group)
        host, port = view_of(group.leader().http_url).raft_addrs[group.followers()[0].id]
        ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_CLIENT)
        ctx.check_hostname, ctx.verify_mode = False, ssl.CERT_NONE
        ctx.load_cert_chain(rogue_cert, rogue_key)
        refused = False
        with socket.create_connection((host, port), timeout=5) as raw:
            try:
                with ctx.wrap_socket(raw) as s:
                    s.sendall(b"\0\0\0\1\0")
                    refused = s.recv(1) == b""
            except (ssl.SSLError, ConnectionError):
                refused = True
        assert refused
        with socket.create_connection((host, port), timeout=5) as plain:  # no TLS at all: closed
            plain.sendall(b"\0\0\0\4abcd")
            try:
                while plain.recv(1024):
                    pass
            except ConnectionError:
                pass
        assert p.send(["after"]) and terms_and_leaders(group) == before
        assert "tls=True" in group.leader().log_path.read_text()


def test_without_a_secret_the_group_works_and_a_forged_timeout_now_changes_the_term(tmp_path: Path) -> None:
    with running_group(tmp_path, secret=False) as group:
        seed(group, "plain")
        leader = group.leader()
        view = view_of(leader.http_url)
        assert "is unauthenticated" in leader.log_path.read_text()
        follower = group.followers()[0]
        with Forger(view.raft_addrs[follower.id], view.group, leader.id) as forger:
            forger.send(TimeoutNow(view.term, NodeId(leader.id), NodeId(follower.id)))
            assert not forger.closed_by_peer(0.5)
        group.wait_for(lambda: (group.health(follower.id) or {}).get("term", 0) > view.term, 10,
                       "the forged TimeoutNow to start an election")


@pytest.mark.parametrize("secret, error", [("short\n", "at least 16 bytes, got 5"), (None, "cannot read")])
def test_a_node_with_a_short_or_unreadable_secret_refuses_to_start_with_one_line(
        tmp_path: Path, secret: str | None, error: str) -> None:
    import sys

    from raftmq.client.local.node_toml import node_toml

    secret_file = tmp_path / "secret"
    if secret is not None:
        secret_file.write_text(secret)
    cfg = tmp_path / "node.toml"
    cfg.write_text(node_toml("n1", "g", str(tmp_path / "data"), "async",
                             {"n1": ("http://127.0.0.1:1", "127.0.0.1:2")}, {"cluster_secret_file": str(secret_file)}))
    r = subprocess.run([sys.executable, "-m", "raftmq.broker", "--config", str(cfg)], capture_output=True, text=True,
                       timeout=60)
    assert r.returncode == 2, r.stderr
    lines = r.stderr.strip().splitlines()
    assert len(lines) == 1 and error in lines[0] and "cluster_secret_file" in lines[0], r.stderr
