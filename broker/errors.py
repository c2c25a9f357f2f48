"""The broker's errors. Each carries its HTTP status and error code, mapped
once at the HTTP edge (``broker.http``): handlers never pick statuses."""

from __future__ import annotations


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
