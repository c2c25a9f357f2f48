"""The broker's errors. Each carries its HTTP status and error code, mapped
once at the HTTP edge (``broker.http``): handlers never pick statuses.
Exceptions from below the broker (a storage failure of the log, an I/O
error, damaged stored data) become broker errors in one place,
:func:`as_broker_error`, so that every error reaches a client in the JSON
error model."""

from __future__ import annotations

import errno


class BrokerError(Exception):
    code = "internal_error"
    http_status = 500

    def __init__(self, message: str, **details: object) -> None:
        super().__init__(message)
        self.message = message
        self.details = details


class BadRequest(BrokerError):
    code = "bad_request"
    http_status = 400


class MalformedBody(BadRequest):
    code = "malformed_body"


class InvalidArgument(BadRequest):
    code = "invalid_argument"


class UnsupportedMediaType(BrokerError):
    code = "unsupported_media_type"
    http_status = 415


class TopicNotFound(BrokerError):
    code = "topic_not_found"
    http_status = 404


class QueueNotFound(BrokerError):
    code = "queue_not_found"
    http_status = 404


class MessageNotFound(BrokerError):
    code = "message_not_found"
    http_status = 404


class TopicConflict(BrokerError):
    """A topic of that name exists with other settings."""

    code = "topic_exists"
    http_status = 409


class MessageTooLarge(BrokerError):
    code = "message_too_large"
    http_status = 413


class BatchTooLarge(BrokerError):
    code = "batch_too_large"
    http_status = 413


class RequestTooLarge(BrokerError):
    code = "request_too_large"
    http_status = 413


class OffsetOutOfRange(BrokerError):
    code = "offset_out_of_range"
    http_status = 400


class NotLeaderError(BrokerError):
    """Writes go to the leader; ``leader_url`` is where (307 at the HTTP edge)."""

    code = "not_leader"
    http_status = 307

    def __init__(self, leader_id: str, leader_url: str) -> None:
        super().__init__(f"this node is not the leader; the leader is {leader_id} at {leader_url}",
                         leader=leader_url, leader_id=leader_id)
        self.leader_url = leader_url


class NoLeader(BrokerError):
    code = "no_leader"
    http_status = 503
    retry_after_s = 1

    def __init__(self, message: str = "no leader is known right now (an election is in progress); retry shortly") -> None:
        super().__init__(message)


class OutcomeUnknown(BrokerError):
    """Leadership changed while the write was in flight: it may or may not have
    been stored. Retry with the same producer id and sequence to be safe."""

    code = "outcome_unknown"
    http_status = 503
    retry_after_s = 1


class Unavailable(BrokerError):
    code = "unavailable"
    http_status = 503
    retry_after_s = 1


class StorageDamaged(BrokerError):
    """Stored data this node was about to serve failed its checks (a
    ConsumeQueue entry out of log order, a record whose CRC, topic or queue
    does not match). Never served; other replicas hold good copies, and this
    node rebuilds its derived files from the log on its next start."""

    code = "storage_damaged"
    http_status = 503
    retry_after_s = 1


class StorageFailed(BrokerError):
    """A write or read of this node's storage failed (disk full, I/O error):
    a write in flight is not stored here; a node whose log cannot be written
    stops."""

    code = "storage_failure"
    http_status = 503
    retry_after_s = 1


def as_broker_error(exc: Exception) -> BrokerError:
    """The broker error a client is told for ``exc``: itself if it is one;
    storage failures, OS errors and damaged data as 503s with what happened;
    anything else as a 500 ``internal_error`` (a bug: the caller logs it)."""
    # Imported here: errors.py is imported by everything and imports nothing of ours at load.
    from raftmq.broker.message import RecordError
    from raftmq.broker.store import CorruptStore
    from raftmq.dledger import StorageFailure

    if isinstance(exc, BrokerError):
        return exc
    if isinstance(exc, StorageFailure):
        return StorageFailed(f"this node's storage failed; the request was not completed here: {exc}")
    if isinstance(exc, TimeoutError):  # an OSError, but no storage's fault
        return Unavailable(f"timed out: {exc}")
    if isinstance(exc, OSError) and not isinstance(exc, ConnectionError):
        what = errno.errorcode.get(exc.errno or 0, "I/O error")
        return StorageFailed(f"this node's storage failed ({what}); the request was not completed here: {exc}")
    if isinstance(exc, (CorruptStore, RecordError)):
        return StorageDamaged(f"this node found damaged data and will not serve it; read from another node: {exc}")
    return BrokerError(f"internal error: {type(exc).__name__}: {exc}")


# -- refused by the HTTP edge before any handler (broker/http/decoding.py, server.py)
class NestingTooDeep(BadRequest):
    """A request body nests arrays or objects deeper than ``[http] max_json_depth``."""

    code = "nesting_too_deep"


class InvalidString(BadRequest):
    """A string in a request (body, path or query) holds a lone UTF-16 surrogate."""

    code = "invalid_string"


class IntegerOutOfRange(BadRequest):
    """An integer in a request does not fit in a signed 64-bit integer."""

    code = "integer_out_of_range"


class TooManyConnections(BrokerError):
    """The node holds ``[http] max_connections`` open connections, none idle."""

    code = "too_many_connections"
    http_status = 503
    retry_after_s = 1


class RequestTimeout(BrokerError):
    """A request body did not arrive within ``[http] body_timeout_ms``."""

    code = "request_timeout"
    http_status = 408


# -- the broker's resource limits (``[limits]``, broker/config.py Limits)
class PropertyTooLong(InvalidArgument):
    """A message property's name or value is longer than ``limits.max_property_key_chars`` / ``_value_chars``."""

    code = "property_too_long"


class NameTooLong(InvalidArgument):
    """A consumer group name or a producer id is longer than its limit."""

    code = "name_too_long"


class TooManyTopics(BrokerError):
    """The group holds ``limits.max_topics`` topics: a new one is refused."""

    code = "too_many_topics"
    http_status = 409


class TooManyGroups(BrokerError):
    """``limits.max_groups`` consumer groups exist: a new one is refused."""

    code = "too_many_groups"
    http_status = 409


class EntryTooLarge(BrokerError):
    """A produce request whose log entry would not fit one peer frame or one
    log segment: the followers could not receive it, so it is never proposed."""

    code = "entry_too_large"
    http_status = 413
# -- access control (broker/http/auth.py, broker/acl)
class Unauthenticated(BrokerError):
    """ACL is on and the request does not prove who sent it: no or a bad
    signature or token, an unknown access key, or a date outside ``[acl] max_skew_ms``."""

    code = "unauthenticated"
    http_status = 401


class Forbidden(BrokerError):
    """The request's user lacks the permission the route needs."""

    code = "forbidden"
    http_status = 403


class ClientIdTaken(Forbidden):
    """A consumer ``client_id`` in use by another user in this group (its locks are not yours)."""

    code = "client_id_taken"


class AclDisabled(BrokerError):
    """ACL changes are refused while ``[acl] enabled`` is false on this node."""

    code = "acl_disabled"
    http_status = 409


class UserExists(BrokerError):
    code = "user_exists"
    http_status = 409


class UserNotFound(BrokerError):
    code = "user_not_found"
    http_status = 404
