"""``[tls]`` settings: both files or neither, and members' URLs then https://."""

from __future__ import annotations

from pathlib import Path

import pytest

from raftmq.broker.config import TlsSettings, from_mapping


def node(url: str, tls: dict[str, str] | None = None) -> dict[str, object]:
    raw: dict[str, object] = {"node_id": "n1", "group": "g", "data_dir": "d",
                              "members": {"n1": {"http_url": url, "raft_addr": "127.0.0.1:9001"}}}
    if tls is not None:
        raw["tls"] = tls
    return raw


def files(tmp_path: Path) -> dict[str, str]:
    (tmp_path / "c").write_text("cert")
    (tmp_path / "k").write_text("key")
    return {"cert_file": str(tmp_path / "c"), "key_file": str(tmp_path / "k")}


def test_tls_needs_https_member_urls(tmp_path: Path) -> None:
    assert from_mapping(node("https://127.0.0.1:8001", files(tmp_path))).tls.enabled
    with pytest.raises(ValueError, match=r"https://HOST:PORT \(\[tls\] is set\)"):
        from_mapping(node("http://127.0.0.1:8001", files(tmp_path)))
    with pytest.raises(ValueError, match="http://HOST:PORT"):
        from_mapping(node("https://127.0.0.1:8001"))


@pytest.mark.parametrize("table, error", [
    ({"cert_file": "x"}, "both cert_file and key_file"),
    ({"cert_file": "/nonexistent/c", "key_file": "/nonexistent/k"}, "tls.cert_file"),
    ({"cert": "x"}, "unknown tls setting"),
])
def test_bad_tls_settings_are_one_clear_error(table: dict[str, str], error: str) -> None:
    with pytest.raises(ValueError, match=error):
        from_mapping(node("https://127.0.0.1:8001", table))


def test_tls_is_off_by_default() -> None:
    assert not TlsSettings().enabled
    assert not from_mapping(node("http://127.0.0.1:8001")).tls.enabled
