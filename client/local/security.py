"""Access control and TLS for a local group started by a tool (``raftmq bench
produce --security``): the node settings that turn them on, and the client
options that go with them.

- ``acl``: ``[acl] enabled`` with a bootstrap admin whose random secret is
  written to ``<base>/admin.secret``; clients sign as that admin.
- ``tls``: a throwaway CA and a certificate for 127.0.0.1, made with the
  ``openssl`` binary under ``<base>/tls``, valid one day; nodes serve
  https:// with it and clients verify against the CA.
"""

from __future__ import annotations

import secrets
import shutil
import ssl
import subprocess
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

MODES = ("off", "acl", "tls", "acl+tls", "peer-open", "peer-tls")
"""``off``: the default local group (peer port authenticated by the cluster secret, plain HTTP);
``peer-open``: no cluster secret (the peer port unauthenticated: the baseline for what the
secret costs); ``peer-tls``: TLS on the peer port as well (mutual, with a throwaway CA)."""


class SecurityError(Exception):
    """Why a secured local group could not be set up (one line)."""


@dataclass(slots=True, frozen=True)
class Security:
    """What a secured local group's clients need, and its nodes' extra settings."""

    mode: str = "off"
    node_settings: dict[str, Any] = field(default_factory=dict)  # [acl] and [tls] tables of every node
    access_key: str | None = None
    secret_key: str | None = field(default=None, repr=False)
    ca_file: str | None = None

    @property
    def scheme(self) -> str:
        return "https" if self.ca_file else "http"

    def client_options(self) -> dict[str, Any]:
        """Keyword options of ``Producer``/``Admin`` (``TransportConfig`` fields)."""
        out: dict[str, Any] = {}
        if self.access_key is not None:
            out.update(access_key=self.access_key, secret_key=self.secret_key)
        if self.ca_file is not None:
            out["ca_file"] = self.ca_file
        return out

    def ssl_context(self) -> ssl.SSLContext | None:
        return ssl.create_default_context(cafile=self.ca_file) if self.ca_file else None


def make_ca_and_cert(d: Path) -> tuple[Path, Path, Path]:
    """(ca.crt, node.crt, node.key) under ``d``: a CA and a P-256 certificate it
    signed for 127.0.0.1, valid one day. ``SecurityError`` without openssl."""
    if shutil.which("openssl") is None:
        raise SecurityError("TLS needs the openssl binary to make a throwaway CA; it is not on PATH")
    d.mkdir(parents=True, exist_ok=True)
    ec = ("-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:prime256v1", "-nodes")
    (d / "san.ext").write_text("subjectAltName=IP:127.0.0.1\n")
    steps = [("req", "-x509", *ec, "-keyout", "ca.key", "-out", "ca.crt", "-days", "1", "-subj", "/CN=raftmq local CA"),
             ("req", *ec, "-keyout", "node.key", "-out", "node.csr", "-subj", "/CN=127.0.0.1"),
             ("x509", "-req", "-in", "node.csr", "-CA", "ca.crt", "-CAkey", "ca.key", "-CAcreateserial",
              "-out", "node.crt", "-days", "1", "-extfile", "san.ext")]
    for args in steps:
        r = subprocess.run(["openssl", *args], cwd=d, capture_output=True, text=True, timeout=60)
        if r.returncode != 0:
            raise SecurityError(f"openssl {args[0]} failed: {r.stderr.strip().splitlines()[-1:] or r.returncode}")
    return d / "ca.crt", d / "node.crt", d / "node.key"


def prepare(mode: str, base: Path) -> Security:
    """The settings and client options of a local group secured as ``mode`` (one of ``MODES``)."""
    if mode not in MODES:
        raise SecurityError(f"security mode {mode!r}: use one of {', '.join(MODES)}")
    settings: dict[str, Any] = {}
    key = secret = ca = None
    if "acl" in mode.split("+"):
        key, secret = "admin", secrets.token_urlsafe(32)
        path = base / "admin.secret"
        path.write_text(secret + "\n")
        path.chmod(0o600)
        settings["acl"] = {"enabled": True, "admin_access_key": key, "admin_secret_file": str(path)}
    parts = set(mode.split("+"))
    if "tls" in parts:
        ca_path, cert, node_key = make_ca_and_cert(base / "tls")
        settings["tls"] = {"cert_file": str(cert), "key_file": str(node_key)}
        ca = str(ca_path)
    if "peer-tls" in parts:
        ca_path, cert, node_key = make_ca_and_cert(base / "peer-tls")
        settings.update(peer_tls_cert=str(cert), peer_tls_key=str(node_key), peer_tls_ca=str(ca_path))
    if "peer-open" in parts:
        settings["cluster_secret_file"] = None  # left out of the node TOML: no peer secret
    return Security(mode, settings, key, secret, ca)
