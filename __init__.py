"""RaftMQ: a RocketMQ-style message broker on a Raft replicated log.

Installed as one import name, ``raftmq``, with four subpackages (the
repository's top-level folders): ``raftmq.client`` (the Python client and the
``raftmq`` command line), ``raftmq.broker`` (the broker node), ``raftmq.dledger``
(the Raft log) and ``raftmq.chaos`` (fault injection and the checker).

What applications use is here too::

    from raftmq import Producer, PushConsumer, PullConsumer, Admin

Every name in ``raftmq.client.__all__`` is; it is imported on first use, so
``import raftmq.dledger`` (a broker node) does not load the client.
"""

from __future__ import annotations

import importlib
from typing import Any

__version__ = "0.1.0"


def __getattr__(name: str) -> Any:
    client = importlib.import_module("raftmq.client")  # loaded on first use of one of its names
    if name in client.__all__:
        return getattr(client, name)
    raise AttributeError(f"module 'raftmq' has no attribute {name!r}")


def __dir__() -> list[str]:
    client = importlib.import_module("raftmq.client")
    return sorted({*globals(), *client.__all__})
