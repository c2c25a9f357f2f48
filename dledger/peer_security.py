"""A node's peer-port security, read once at start: the cluster secret and TLS.

- The cluster secret authenticates every peer connection (the handshake in
  ``dledger.codec`` / ``dledger.peer_auth``). It comes from the file named by
  the log setting ``cluster_secret_file`` or, when no file is named, from the
  environment variable ``RAFTMQ_CLUSTER_SECRET`` (the secret itself). A
  trailing newline is not part of it; it must be at least 16 bytes. Without
  either the node runs unauthenticated, as before version 2, and says so once
  at start.
- TLS (``peer_tls_cert`` + ``peer_tls_key``, optionally ``peer_tls_ca``)
  encrypts the peer port; with a CA both sides verify the other's certificate
  against it (mutual TLS). Host names are not checked: nodes are named by
  their node ids, which the handshake inside TLS authenticates.

Paths are used as given: a relative one is relative to the node's working
directory, like ``data_dir``.
"""

from __future__ import annotations

import os
import ssl
from dataclasses import dataclass
from typing import Mapping

from raftmq.dledger.peer_auth import MIN_SECRET_BYTES

SECRET_ENV = "RAFTMQ_CLUSTER_SECRET"


@dataclass(frozen=True, slots=True)
class PeerSecurity:
    """What ``PeerTransport`` needs: the secret (None: unauthenticated) and the TLS
    contexts of its listener and its dials (None: plain TCP)."""

    secret: bytes | None = None
    server_ssl: ssl.SSLContext | None = None
    client_ssl: ssl.SSLContext | None = None


def load_cluster_secret(path: str | None, environ: Mapping[str, str] = os.environ) -> bytes | None:
    """The cluster secret from ``path`` or, without one, from ``RAFTMQ_CLUSTER_SECRET``; None
    when neither is set. ValueError (one line) for an unreadable file or a short secret."""
    if path is not None:
        try:
            with open(path, "rb") as f:
                raw = f.read(1 << 16)
        except OSError as exc:
            raise ValueError(f"cluster_secret_file: cannot read {path!r}: {exc.strerror or exc}") from None
        where = f"cluster_secret_file {path!r}"
    else:
        value = environ.get(SECRET_ENV)
        if value is None:
            return None
        raw, where = value.encode(), SECRET_ENV
    secret = raw[:-1] if raw.endswith(b"\n") else raw
    secret = secret[:-1] if secret.endswith(b"\r") else secret
    if len(secret) < MIN_SECRET_BYTES:
        raise ValueError(f"{where}: the cluster secret must be at least {MIN_SECRET_BYTES} bytes, "
                         f"got {len(secret)}")
    return secret


def tls_contexts(cert: str | None, key: str | None, ca: str | None) -> tuple[ssl.SSLContext, ssl.SSLContext] | None:
    """(listener, dialer) TLS contexts, or None without a certificate. ValueError (one
    line) for a missing half of the pair or an unreadable or invalid file."""
    if (cert is None) != (key is None):
        raise ValueError("peer_tls_cert and peer_tls_key: give both or neither")
    if cert is None or key is None:
        if ca is not None:
            raise ValueError("peer_tls_ca: needs peer_tls_cert and peer_tls_key")
        return None
    try:
        server = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
        client = ssl.SSLContext(ssl.PROTOCOL_TLS_CLIENT)
        client.check_hostname = False
        for ctx in (server, client):
            ctx.minimum_version = ssl.TLSVersion.TLSv1_2
            ctx.load_cert_chain(cert, key)
            if ca is not None:
                ctx.load_verify_locations(ca)
                ctx.verify_mode = ssl.CERT_REQUIRED
            else:
                ctx.verify_mode = ssl.CERT_NONE
    except (OSError, ssl.SSLError) as exc:
        raise ValueError(f"peer TLS (cert {cert!r}, key {key!r}, ca {ca!r}): {exc}") from None
    return server, client


def peer_security(secret_file: str | None, tls_cert: str | None, tls_key: str | None,
                  tls_ca: str | None) -> PeerSecurity:
    """A node's ``PeerSecurity`` from its log settings (module docstring); ValueError names the setting."""
    secret = load_cluster_secret(secret_file)
    ctxs = tls_contexts(tls_cert, tls_key, tls_ca)
    if ctxs is None:
        return PeerSecurity(secret)
    return PeerSecurity(secret, ctxs[0], ctxs[1])
