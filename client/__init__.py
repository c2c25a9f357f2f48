"""The RaftMQ Python client: speaks the broker's HTTP API v1 (msgpack) and
nothing else; it imports neither ``broker`` nor ``dledger``.

- ``Producer`` / ``SyncProducer``: idempotent, batching sends that follow the
  leader through elections (``client.producer``).
- ``PullConsumer`` / ``SyncPullConsumer``: pull queues at offsets you choose;
  ``PushConsumer``: clustering or broadcasting, concurrent or orderly
  (``client.consumer``).
- ``Admin`` / ``SyncAdmin``: topics, offsets, lag, messages, cluster, health.
- ``client.errors``: ``RaftMQError`` and its subclasses.
- ``client.http``: the shared transport (leader following, retries).

Example::

    async with Producer(["http://127.0.0.1:8081"]) as p:
        r = await p.send("orders", b"hello", keys=["o-1"], sharding_key="customer-7")
"""

from raftmq.client.admin import Admin, SyncAdmin
from raftmq.client.consumer import (
    OffsetTracker,
    PullConsumer,
    PullConsumerConfig,
    PullResult,
    PushConsumer,
    PushConsumerConfig,
    ReceivedMessage,
    SyncPullConsumer,
    allocate_averagely,
)
from raftmq.client.errors import (
    BadRequest,
    MessageNotFound,
    MessageTooLarge,
    OffsetOutOfRange,
    QueueNotFound,
    RaftMQError,
    Rejected,
    ServerError,
    Timeout,
    TopicExists,
    TopicNotFound,
)
from raftmq.client.http import Transport, TransportConfig
from raftmq.client.producer import Message, Producer, ProducerConfig, SendResult, SyncProducer

__all__ = [
    "Admin", "SyncAdmin",
    "Producer", "SyncProducer", "ProducerConfig", "Message", "SendResult",
    "PullConsumer", "SyncPullConsumer", "PullConsumerConfig", "PullResult",
    "PushConsumer", "PushConsumerConfig", "ReceivedMessage", "OffsetTracker", "allocate_averagely",
    "Transport", "TransportConfig",
    "RaftMQError", "Rejected", "BadRequest", "OffsetOutOfRange", "TopicNotFound", "QueueNotFound",
    "MessageNotFound", "TopicExists", "MessageTooLarge", "Timeout", "ServerError",
]
