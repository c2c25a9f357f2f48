"""The client's errors: one small hierarchy under ``RaftMQError``.

The broker answers every failure with ``{"error": code, "message": text}``
and an HTTP status (``broker/errors.py`` on the server side). ``from_response``
turns such an answer into one of the classes below, once, in the transport.

What the caller sees:

- ``Rejected`` and its subclasses ``TopicNotFound``, ``QueueNotFound``,
  ``MessageNotFound``, ``TopicExists``, ``MessageTooLarge``, ``BadRequest``
  (and its ``OffsetOutOfRange``): the broker refused the request and changed
  nothing; ``code`` and ``message`` are the server's.
- ``Timeout``: the deadline passed. With ``outcome_unknown`` true a write may
  or may not have been stored (the request reached a node, the answer did not
  come back); retrying a produce with the same producer id and sequence is
  safe, and the producer does exactly that until its deadline.

``NotLeader``, ``NoLeader``, ``OutcomeUnknown`` and ``Unavailable`` are what a
node says during an election or a failover; the transport retries them and
they only surface (as the ``last_error`` of a ``Timeout``) when it gives up.
``CannotConnect`` is the ``Unavailable`` of a node that refused the connection
(or did not accept it in time): the request never left, so nothing was applied.

An error built from an answer that is not a broker's ``{"error": code, ...}``
body (a web server or a proxy at that URL) has ``foreign_answer`` set, so a
caller can say "that is not a RaftMQ broker" without reading the message.
"""

from __future__ import annotations

from typing import Any


class RaftMQError(Exception):
    """Root of every error the client raises. ``code`` is the broker's error
    code (or a client-side one), ``status`` the HTTP status (0 when no answer)."""

    code: str = "error"
    status: int = 0
    foreign_answer: bool = False  # set by from_response: the body was not a broker's error object

    def __init__(self, message: str, *, code: str | None = None, status: int | None = None,
                 details: dict[str, Any] | None = None) -> None:
        super().__init__(message)
        self.message = message
        if code is not None:
            self.code = code
        if status is not None:
            self.status = status
        self.details: dict[str, Any] = details or {}

    def __str__(self) -> str:
        return f"{self.code}: {self.message}" if self.code else self.message


# -- retried inside the transport ------------------------------------------------
class Retryable(RaftMQError):
    """A node could not serve the request right now; another attempt may succeed."""

    retry_after_s: float | None = None


class NotLeader(Retryable):
    """307: this node is a follower; ``leader_url`` is where writes go."""

    code = "not_leader"
    status = 307

    def __init__(self, message: str, leader_url: str | None, **kw: Any) -> None:
        super().__init__(message, **kw)
        self.leader_url = leader_url


class NoLeader(Retryable):
    """503: no leader is known right now (an election is in progress)."""

    code = "no_leader"
    status = 503


class OutcomeUnknown(Retryable):
    """503: leadership changed while the write was in flight; it may or may not be stored."""

    code = "outcome_unknown"
    status = 503


class Unavailable(Retryable):
    """503 or a connection failure: the node cannot serve the request now."""

    code = "unavailable"
    status = 503


class CannotConnect(Unavailable):
    """No connection to the node (refused, unreachable, or the connect timed
    out): the request was never sent, so nothing was applied."""


# -- surfaced to the caller ------------------------------------------------------
class Timeout(RaftMQError):
    """The deadline passed before a node answered the request.

    ``outcome_unknown`` is true when a write was sent at least once and its
    answer never came back: it may or may not have been stored. ``last_error``
    is the last retryable failure seen (why no attempt succeeded)."""

    code = "timeout"

    def __init__(self, message: str, *, outcome_unknown: bool, last_error: BaseException | None = None) -> None:
        super().__init__(message)
        self.outcome_unknown = outcome_unknown
        self.last_error = last_error


class Rejected(RaftMQError):
    """4xx: the broker refused the request and changed nothing; ``code`` says why.
    The specific refusals below are its subclasses; an unknown 4xx code is a
    plain ``Rejected`` (for example ``not_found`` for a route an older broker lacks)."""

    code = "rejected"
    status = 400


class BadRequest(Rejected):
    """400: malformed or invalid input (``invalid_argument``, ``malformed_body``, ...)."""

    code = "bad_request"
    status = 400


class OffsetOutOfRange(BadRequest):
    code = "offset_out_of_range"

    @property
    def max_offset(self) -> int | None:
        v = self.details.get("max_offset")
        return v if isinstance(v, int) else None


class TopicNotFound(Rejected):
    code = "topic_not_found"
    status = 404


class QueueNotFound(Rejected):
    code = "queue_not_found"
    status = 404


class MessageNotFound(Rejected):
    code = "message_not_found"
    status = 404


class TopicExists(Rejected):
    """409: a topic of that name exists with other settings."""

    code = "topic_exists"
    status = 409


class MessageTooLarge(Rejected):
    """413: a message body, a batch or a whole request is over the broker's limit."""

    code = "message_too_large"
    status = 413


class Unauthenticated(Rejected):
    """401: the broker requires signed requests and this one did not prove who
    sent it (no or wrong keys, unknown access key, clock skew)."""

    code = "unauthenticated"
    status = 401


class Forbidden(Rejected):
    """403: the user lacks the permission (``forbidden``), or the consumer's
    ``client_id`` belongs to another user (``client_id_taken``)."""

    code = "forbidden"
    status = 403


class UserNotFound(Rejected):
    code = "user_not_found"
    status = 404


class UserExists(Rejected):
    code = "user_exists"
    status = 409


class CertificateError(RaftMQError):
    """The node's TLS certificate could not be verified against the CA file
    (or the system's CAs without one): nothing was sent to it."""

    code = "certificate_error"


class ServerError(RaftMQError):
    """5xx that is not one of the retryable answers: a bug or a failed node."""

    code = "internal_error"
    status = 500


_BY_CODE: dict[str, type[RaftMQError]] = {
    "no_leader": NoLeader,
    "outcome_unknown": OutcomeUnknown,
    "unavailable": Unavailable,
    "topic_not_found": TopicNotFound,
    "queue_not_found": QueueNotFound,
    "message_not_found": MessageNotFound,
    "topic_exists": TopicExists,
    "message_too_large": MessageTooLarge,
    "batch_too_large": MessageTooLarge,
    "request_too_large": MessageTooLarge,
    "offset_out_of_range": OffsetOutOfRange,
    "unauthenticated": Unauthenticated,
    "forbidden": Forbidden,
    "client_id_taken": Forbidden,
    "user_not_found": UserNotFound,
    "user_exists": UserExists,
}


def from_response(status: int, body: Any, retry_after: str | None = None,
                  location: str | None = None) -> RaftMQError:
    """The exception for a non-2xx answer ``status`` with decoded ``body``."""
    if isinstance(body, dict):
        code = str(body.get("error") or "")
        message = str(body.get("message") or code or f"HTTP {status}")
        details = {k: v for k, v in body.items() if k not in ("error", "message")}
    else:
        code, details = "", {}
        text = body.decode("utf-8", "replace") if isinstance(body, (bytes, bytearray)) else str(body or "")
        message = (text.strip()[:300] or f"HTTP {status}")
    if status in (301, 302, 303, 307, 308) or code == "not_leader":
        leader = details.get("leader")
        if not isinstance(leader, str) or not leader:
            leader = _origin(location) if location else None
        return NotLeader(message, leader, code="not_leader", status=status, details=details)
    cls = _BY_CODE.get(code)
    if cls is None:
        if status == 503:
            cls = Unavailable
        elif status == 413:
            cls = MessageTooLarge
        elif status == 400:
            cls = BadRequest
        elif 400 <= status < 500:
            cls = Rejected  # e.g. 404 not_found: a route this broker does not have
        else:
            cls = ServerError
    err = cls(message, code=code or None, status=status, details=details)
    err.foreign_answer = not code  # a broker always names its error; anything else is another server
    if isinstance(err, Retryable) and retry_after:
        try:
            err.retry_after_s = float(retry_after)
        except ValueError:
            pass
    return err


def _origin(url: str) -> str | None:
    """``http://host:port`` of an absolute URL (a Location header), else None."""
    from urllib.parse import urlsplit

    u = urlsplit(url)
    if u.scheme and u.netloc:
        return f"{u.scheme}://{u.netloc}"
    return None
