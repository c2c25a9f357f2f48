"""dledger: a Raft replicated log (pure core, durable segmented store, asyncio runtime).

The broker uses only what is listed in ``__all__``.
"""

from raftmq.dledger.errors import (
    DLedgerError,
    LeadershipLost,
    NodeStopped,
    NotLeader,
    ProposalDropped,
    StateAheadOfLog,
    StorageFailure,
)
from raftmq.dledger.settings import LogSettings, check_fields
from raftmq.dledger.status import LogStatus, PeerStatus
from raftmq.dledger.store.durable import fsync_dir, write_atomically

__all__ = [
    "DLedger",
    "NodeConfig",
    "LogSettings",
    "check_fields",  # the type check of a config dataclass's fields, for the broker's config too
    "StateMachine",
    "LogStatus",
    "PeerStatus",
    # the seams a DLedger is built on (storage and transport), and their in-memory versions
    "NodeStorage",
    "Transport",
    "TransportHooks",
    "TransportFactory",
    "MemoryNetwork",
    "DLedgerError",
    "LeadershipLost",
    "NodeStopped",
    "NotLeader",
    "ProposalDropped",
    "StateAheadOfLog",
    "StorageFailure",
    # durable small files, for a state machine's own checkpoints
    "fsync_dir",
    "write_atomically",
]


# Lazy, so that the pure core imports without the runtime's edges: name -> module.
_LAZY = {
    "DLedger": "runtime",
    "NodeConfig": "runtime",
    "StateMachine": "runtime",
    "NodeStorage": "storage",
    "Transport": "transport",
    "TransportHooks": "transport",
    "TransportFactory": "transport",
    "MemoryNetwork": "memory_transport",
}


def __getattr__(name: str):
    module = _LAZY.get(name)
    if module is None:
        raise AttributeError(name)
    from importlib import import_module

    return getattr(import_module(f"raftmq.dledger.{module}"), name)
