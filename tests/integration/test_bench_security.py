"""``raftmq bench produce --security``: the load generator against a local
group with ACL and TLS on signs every request and speaks TLS, and what it
reports is stored; a local group secured so refuses the unsigned."""

from __future__ import annotations

import asyncio
import shutil
import subprocess
import sys

import pytest

from raftmq.client.admin import Admin
from raftmq.client.errors import Unauthenticated
from raftmq.client.local import bench
from raftmq.client.local.security import Security

pytestmark = [pytest.mark.integration, pytest.mark.timeout(180),
              pytest.mark.skipif(shutil.which("openssl") is None, reason="needs the openssl binary")]


def test_bench_produce_with_acl_and_tls_stores_what_it_reports() -> None:
    def measure(urls: list[str], security: Security) -> tuple[bench.Result, int]:
        assert all(u.startswith("https://") for u in urls)

        async def go() -> tuple[bench.Result, int]:
            res = await bench.produce(urls, "sec", 2, 8, 2, 1.5, 100, "async", security=security)
            async with Admin(urls, **security.client_options()) as admin:
                topic = await admin.describe_topic("sec")
            async with Admin(urls, ca_file=security.ca_file, deadline_ms=3000) as anonymous:
                with pytest.raises(Unauthenticated):
                    await anonymous.list_topics()
            return res, sum(q["max_offset"] - q["min_offset"] for q in topic["queue_offsets"])

        return asyncio.run(go())

    res, stored = bench.with_secured_group("async", "acl+tls", measure)
    assert res.security == "acl+tls" and res.messages > 0 and res.p50_ms is not None
    assert stored >= res.messages


def test_bench_cli_refuses_security_with_a_server() -> None:
    r = subprocess.run([sys.executable, "-m", "raftmq.client.cli", "bench", "produce", "--server",
                        "http://127.0.0.1:1", "--security", "acl"], capture_output=True, text=True, timeout=60)
    assert r.returncode == 2 and "local groups only" in r.stderr


def test_peer_modes_drop_the_secret_or_add_peer_tls(tmp_path) -> None:
    from pathlib import Path

    from raftmq.client.local.security import prepare

    assert prepare("peer-open", tmp_path / "open").node_settings == {"cluster_secret_file": None}
    tls = prepare("peer-tls", tmp_path / "tls")
    assert tls.scheme == "http" and tls.access_key is None
    assert sorted(tls.node_settings) == ["peer_tls_ca", "peer_tls_cert", "peer_tls_key"]
    assert all(Path(p).is_file() for p in tls.node_settings.values())


@pytest.mark.parametrize("mode", ["peer-open", "peer-tls"])
def test_bench_produce_on_a_group_without_peer_secret_or_with_peer_tls(mode: str) -> None:
    def measure(urls: list[str], security: Security) -> bench.Result:
        return asyncio.run(bench.produce(urls, "peer", 2, 8, 2, 1.0, 100, "async", security=security))

    res = bench.with_secured_group("async", mode, measure)
    assert res.security == mode and res.messages > 0
