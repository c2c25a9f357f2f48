"""How a request to a broker proves who sent it: the wire contract shared by
the client (which signs) and the broker (which checks). Pure: values in,
values out; no clock, no I/O.

**Signed requests** carry three headers::

    X-RaftMQ-Access-Key: <access key>
    X-RaftMQ-Date:       <milliseconds since the epoch, decimal>
    X-RaftMQ-Signature:  <hex HMAC-SHA256(secret key, string to sign)>

The string to sign is five lines joined by ``\\n``::

    RAFTMQ-HMAC-SHA256
    <date, as in the header>
    <METHOD, upper case>
    <canonical path>?<canonical query>
    <hex SHA-256 of the body bytes (of b"" when there is none)>

The canonical path is the request path percent-decoded and re-encoded with
``quote(path, safe="/")``; the canonical query is every ``name=value`` pair,
percent-decoded, sorted, each side re-encoded with ``quote(s, safe="")``,
joined by ``&`` (empty when there is no query). So the same request signs the
same whatever escaping a client library picked.

**Bearer tokens** (``Authorization: Bearer <token>``) are for tools that
cannot sign (curl, a dashboard): ``rmq1.<access key>.<hex HMAC-SHA256(secret
key, "raftmq bearer token v1")>``. Whoever knows the secret can make the
token (``raftmq acl token``); it does not expire, and stops working when the
user is removed (re-add the user with a new secret to revoke it). Prefer
signing: a token, unlike a signature, can be replayed by anyone who sees it,
so send it over TLS only.
"""

from __future__ import annotations

import hashlib
import hmac
from typing import Iterable
from urllib.parse import quote, unquote

ACCESS_KEY_HEADER = "X-RaftMQ-Access-Key"
DATE_HEADER = "X-RaftMQ-Date"
SIGNATURE_HEADER = "X-RaftMQ-Signature"
ALGORITHM = "RAFTMQ-HMAC-SHA256"
TOKEN_PREFIX = "rmq1"
_TOKEN_MESSAGE = b"raftmq bearer token v1"


def body_digest(body: bytes | bytearray | memoryview) -> str:
    """Hex SHA-256 of a request body."""
    return hashlib.sha256(body).hexdigest()


def canonical_target(path: str, query: Iterable[tuple[str, str]]) -> str:
    """``path?query`` in canonical form (module docstring); ``path`` and the
    query pairs are given percent-decoded."""
    q = "&".join(f"{quote(k, safe='')}={quote(v, safe='')}" for k, v in sorted(query))
    return f"{quote(unquote(path), safe='/')}?{q}"


def string_to_sign(method: str, target: str, digest: str, date_ms: int) -> str:
    return "\n".join((ALGORITHM, str(date_ms), method.upper(), target, digest))


def signature(secret: str, method: str, target: str, digest: str, date_ms: int) -> str:
    """The hex HMAC-SHA256 that ``X-RaftMQ-Signature`` carries."""
    msg = string_to_sign(method, target, digest, date_ms).encode()
    return hmac.new(secret.encode(), msg, hashlib.sha256).hexdigest()


def sign_headers(access_key: str, secret: str, method: str, target: str, body: bytes | bytearray | memoryview,
                 date_ms: int) -> dict[str, str]:
    """The three headers of a signed request."""
    return {ACCESS_KEY_HEADER: access_key, DATE_HEADER: str(date_ms),
            SIGNATURE_HEADER: signature(secret, method, target, body_digest(body), date_ms)}


def bearer_token(access_key: str, secret: str) -> str:
    """The user's bearer token (module docstring)."""
    mac = hmac.new(secret.encode(), _TOKEN_MESSAGE, hashlib.sha256).hexdigest()
    return f"{TOKEN_PREFIX}.{access_key}.{mac}"


def token_access_key(token: str) -> str | None:
    """The access key a token names, or None if it is not one of ours."""
    prefix, _, rest = token.partition(".")
    key, _, mac = rest.rpartition(".")
    return key if prefix == TOKEN_PREFIX and key and mac else None


def equal(a: str, b: str) -> bool:
    """Constant-time comparison (no timing hint of how much of a signature matched)."""
    return hmac.compare_digest(a.encode(), b.encode())
