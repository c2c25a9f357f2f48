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
from raftmq.dledger.status import LogStatus, PeerStatus
from raftmq.dledger.store.durable import fsync_dir, write_atomically

__all__ = [
    "DLedger",
    "NodeConfig",
    "StateMachine",
    "LogStatus",
    "PeerStatus",
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


def __getattr__(name: str):  # lazy, so that the pure core imports without the runtime's edges
    if name in ("DLedger", "NodeConfig", "StateMachine"):
        from raftmq.dledger import runtime

        return getattr(runtime, name)
    raise AttributeError(name)
