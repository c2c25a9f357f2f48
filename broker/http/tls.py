"""HTTPS for the HTTP API: the server's TLS context from ``[tls]`` (``TlsSettings``).

TLS 1.2 or newer (Python's default server context); no client certificates
(clients prove who they are with signed requests, ``raftmq.signing``).
"""

from __future__ import annotations

import ssl

from raftmq.broker.config import TlsSettings


def server_context(settings: TlsSettings) -> ssl.SSLContext | None:
    """The context to serve with, None when TLS is off. ``ssl.SSLError`` (an
    ``OSError``) for a certificate and key that do not load or do not match."""
    if not settings.enabled:
        return None
    ctx = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
    ctx.minimum_version = ssl.TLSVersion.TLSv1_2
    ctx.load_cert_chain(settings.cert_file, settings.key_file)
    return ctx
