"""HTTPS on the HTTP API (``[tls]``), with ACL on as well: a throwaway CA made
with the ``openssl`` binary signs the node's certificate; the client and the
CLI verify against the CA file and refuse a node whose certificate they cannot
verify."""

from __future__ import annotations

import os
import shutil
import ssl
import subprocess
import sys
import time
from pathlib import Path
from typing import Iterator

import pytest

from raftmq.client import Producer
from raftmq.client.errors import CertificateError
from tests.integration.broker_group import BrokerGroup, http, running_group

SECRET = "root-secret-0123456789"
pytestmark = pytest.mark.skipif(shutil.which("openssl") is None, reason="needs the openssl binary")


def make_ca_and_cert(d: Path) -> tuple[Path, Path, Path]:
    """(ca.crt, node.crt, node.key): a CA and a certificate it signed for 127.0.0.1, valid one day."""
    def run(*args: str) -> None:
        subprocess.run(["openssl", *args], cwd=d, check=True, capture_output=True, timeout=60)

    ec = ("-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:prime256v1", "-nodes")
    run("req", "-x509", *ec, "-keyout", "ca.key", "-out", "ca.crt", "-days", "1", "-subj", "/CN=raftmq test CA")
    run("req", *ec, "-keyout", "node.key", "-out", "node.csr", "-subj", "/CN=127.0.0.1")
    (d / "san.ext").write_text("subjectAltName=IP:127.0.0.1\n")
    run("x509", "-req", "-in", "node.csr", "-CA", "ca.crt", "-CAkey", "ca.key", "-CAcreateserial",
        "-out", "node.crt", "-days", "1", "-extfile", "san.ext")
    return d / "ca.crt", d / "node.crt", d / "node.key"


@pytest.fixture(scope="module")
def tls_group(tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[BrokerGroup, Path]]:
    base = tmp_path_factory.mktemp("tls")
    ca, cert, key = make_ca_and_cert(base)
    (base / "admin.secret").write_text(SECRET)
    extra = {"tls": {"cert_file": str(cert), "key_file": str(key)},
             "acl": {"enabled": True, "admin_access_key": "root", "admin_secret_file": str(base / "admin.secret")}}
    with running_group(base, n=1, scheme="https", extra=extra,
                       ssl_context=ssl.create_default_context(cafile=str(ca))) as g:
        yield g, ca


async def test_the_client_verifies_against_the_ca_file(tls_group: tuple[BrokerGroup, Path]) -> None:
    g, ca = tls_group
    url = g.nodes[0].http_url
    assert url.startswith("https://")
    async with Producer([url], access_key="root", secret_key=SECRET, ca_file=str(ca), deadline_ms=5000) as p:
        from raftmq.client.admin import Admin
        async with Admin([url], access_key="root", secret_key=SECRET, ca_file=str(ca), deadline_ms=5000) as a:
            await a.create_topic("t", 1)
        res = await p.send("t", b"over tls")
        assert res.queue_offset == 0


async def test_without_the_ca_the_client_refuses_at_once(tls_group: tuple[BrokerGroup, Path]) -> None:
    g, _ = tls_group
    started = time.monotonic()
    async with Producer([g.nodes[0].http_url], access_key="root", secret_key=SECRET, deadline_ms=20_000) as p:
        with pytest.raises(CertificateError, match="certificate"):
            await p.send("t", b"unverified")
    assert time.monotonic() - started < 10  # refused, not retried until the deadline


def test_plain_http_to_the_tls_port_gets_no_answer(tls_group: tuple[BrokerGroup, Path]) -> None:
    g, _ = tls_group
    with pytest.raises(OSError):
        http("GET", g.nodes[0].http_url.replace("https://", "http://") + "/v1/health", timeout_s=3)


def test_the_cli_verifies_with_ca_file_and_refuses_without(tls_group: tuple[BrokerGroup, Path]) -> None:
    g, ca = tls_group
    env = dict(os.environ, RAFTMQ_ACCESS_KEY="root", RAFTMQ_SECRET_KEY=SECRET)
    env.pop("RAFTMQ_CA_FILE", None)
    base = [sys.executable, "-m", "raftmq.client.cli", "topic", "list", "--server", g.nodes[0].http_url]
    ok = subprocess.run([*base, "--ca-file", str(ca)], env=env, capture_output=True, text=True, timeout=60)
    assert ok.returncode == 0 and "t" in ok.stdout, ok.stderr
    via_env = subprocess.run(base, env={**env, "RAFTMQ_CA_FILE": str(ca)}, capture_output=True, text=True, timeout=60)
    assert via_env.returncode == 0, via_env.stderr
    refused = subprocess.run(base, env=env, capture_output=True, text=True, timeout=60)
    assert refused.returncode == 1 and "certificate" in refused.stderr and refused.stderr.count("\n") == 1, \
        refused.stderr
