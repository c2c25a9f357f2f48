"""The replicated log's tunable settings, and the type check every
configuration dataclass runs on itself.

:class:`LogSettings` is what an operator may tune about one log node (how it
flushes, how big its segments are, its clock and timeouts, how it joins its
group). :class:`~raftmq.dledger.runtime.NodeConfig` is built from it (it adds
the node's identity and peers), and the broker's configuration holds one as its
``log`` section instead of declaring the same fields again.

Configuration arrives from TOML files and flags, where a quoted number or a
``"yes"`` is an easy slip. :func:`check_fields` compares every field's value
with its annotation and raises ``ValueError`` naming the field, so a node
refuses to start with ``tick_ms: expected an integer, got "50"`` rather than
failing later with a ``TypeError`` deep inside, or running on the wrong value.
"""

from __future__ import annotations

import dataclasses
import json
import types
import typing
from dataclasses import dataclass
from typing import Any, Mapping


@dataclass(slots=True, frozen=True, kw_only=True)
class LogSettings:
    """The log's settings (all keyword-only, all with defaults).

    - ``flush``: ``async`` (written to the OS before acking: survives a process
      crash) or ``sync`` (fdatasync before acking: survives power loss).
    - ``segment_bytes``: size of one log segment file.
    - ``tick_ms``: the core's clock period. The heartbeat is
      ``heartbeat_ticks`` ticks and the election timeout is a random time in
      [``election_timeout_ticks``, 2x) ticks: with the defaults a heartbeat every
      100 ms and elections after 600 to 1200 ms of silence.
    - ``preferred_leader``: the node that takes leadership back when it can.
    - ``rejoin`` and ``bootstrap``: how a node on an empty data directory joins,
      below.
    - ``cluster_secret_file``: a file holding the group's secret (at least 16
      bytes; a trailing newline is ignored); every peer connection proves it
      (``dledger.peer_auth``). Without it the secret comes from the environment
      variable ``RAFTMQ_CLUSTER_SECRET``; without either the peer port is
      unauthenticated. See ``dledger.peer_security``.
    - ``peer_tls_cert`` / ``peer_tls_key`` (both or neither): TLS on the peer
      port; ``peer_tls_ca``: verify every peer's certificate against this CA.
    - ``peer_max_buffered_bytes``: bytes all incoming peer connections together
      may hold in unfinished frames before reading pauses.
    - ``peer_max_handshakes``: incoming connections that may be in their
      handshake at once; more are closed at once.
    """

    flush: str = "async"
    segment_bytes: int = 1 << 30
    tick_ms: int = 50
    heartbeat_ticks: int = 2
    election_timeout_ticks: int = 12
    preferred_leader: str | None = None
    # This node's data was lost and it rejoins an existing group: it does not
    # vote or campaign until it has caught up (see RaftCore's ``recovering``).
    # Kept for compatibility: an empty data directory rejoins so by default.
    rejoin: bool = False
    # The first start of a new group (etcd's initial-cluster-state=new): an
    # empty data directory may vote. Without it an empty data directory may be
    # a wiped disk and rejoins as a non-voter until caught up. A restart with
    # data ignores it; a wiped disk restarted with it is still told by its
    # peers that it lost its data (dledger.store.identity).
    bootstrap: bool = False
    cluster_secret_file: str | None = None
    peer_tls_cert: str | None = None
    peer_tls_key: str | None = None
    peer_tls_ca: str | None = None
    peer_max_buffered_bytes: int = 256 << 20
    peer_max_handshakes: int = 64

    def __post_init__(self) -> None:
        check_fields(self)
        if self.flush not in ("async", "sync"):
            raise ValueError(f"flush: must be 'async' or 'sync', not {self.flush!r}")
        if self.tick_ms < 1:
            raise ValueError("tick_ms: must be at least 1")
        self._check_peer_settings()

    def _check_peer_settings(self) -> None:
        """Refuse a bad peer-port setting now, with one line, rather than at the first connection."""
        from raftmq.dledger.peer_security import peer_security  # peer_security imports ssl: only when checked

        if self.peer_max_buffered_bytes < 1 << 20:
            raise ValueError(f"peer_max_buffered_bytes: must be at least 1048576, got {self.peer_max_buffered_bytes}")
        if self.peer_max_handshakes < 1:
            raise ValueError(f"peer_max_handshakes: must be at least 1, got {self.peer_max_handshakes}")
        peer_security(self.cluster_secret_file, self.peer_tls_cert, self.peer_tls_key, self.peer_tls_ca)


def check_fields(obj: Any, prefix: str = "") -> None:
    """Raise ``ValueError("<prefix><field>: expected ..., got ...")`` for the
    first field of dataclass ``obj`` whose value does not match its annotation."""
    hints = _hints(type(obj))
    for f in dataclasses.fields(obj):
        check_value(prefix + f.name, getattr(obj, f.name), hints[f.name])


def check_value(name: str, value: Any, annotation: Any) -> None:
    """Raise ``ValueError`` naming ``name`` unless ``value`` fits ``annotation``.

    Understands what configuration uses: ``str``, ``int``, ``float``, ``bool``,
    ``X | None``, ``Mapping[K, V]`` and dataclasses. ``bool`` is not an
    ``int`` here (``tick_ms = true`` is a slip, not 1); an ``int`` is a fine
    ``float`` (``retention_hours = 72``).
    """
    problem = _mismatch(name, value, annotation)
    if problem is not None:
        where, expected, got = problem
        raise ValueError(f"{where}: expected {expected}, got {_show(got)}")


def _mismatch(name: str, value: Any, ann: Any) -> tuple[str, str, Any] | None:
    """(where, what was expected, the value found) of the first mismatch, or None."""
    origin = typing.get_origin(ann)
    if origin in (typing.Union, types.UnionType):
        options = typing.get_args(ann)
        if value is None and type(None) in options:
            return None
        real = [a for a in options if a is not type(None)]
        for a in real:
            if _mismatch(name, value, a) is None:
                return None
        return name, " or ".join(_expected(a) for a in real), value
    if origin is not None and isinstance(origin, type) and issubclass(origin, Mapping):
        if not isinstance(value, Mapping):
            return name, "a table", value
        key_ann, val_ann = typing.get_args(ann) or (Any, Any)
        for k, v in value.items():
            problem = _mismatch(f"{name}.{k}", k, key_ann) or _mismatch(f"{name}.{k}", v, val_ann)
            if problem is not None:
                return problem
        return None
    if ann is Any:
        return None
    if ann is float:
        ok = type(value) in (int, float)
    elif ann is bool:
        ok = type(value) is bool
    elif ann in (int, str):
        ok = isinstance(value, ann) and not isinstance(value, bool)
    else:
        ok = isinstance(value, ann)
    return None if ok else (name, _expected(ann), value)


_EXPECTED = {int: "an integer", float: "a number", str: "a string", bool: "true or false"}


def _expected(ann: Any) -> str:
    if ann in _EXPECTED:
        return _EXPECTED[ann]
    if dataclasses.is_dataclass(ann) or typing.get_origin(ann) is not None:
        return "a table"
    return getattr(ann, "__name__", str(ann))


def _show(value: Any) -> str:
    """A value as TOML would spell it (``"50"``, ``true``, ``1.5``), or what it is."""
    if isinstance(value, (str, bool, int, float)):
        return json.dumps(value)
    if isinstance(value, Mapping):
        return "a table"
    if isinstance(value, (list, tuple)):
        return "an array"
    return type(value).__name__


def _hints(cls: type) -> dict[str, Any]:
    """The class's annotations, resolved (``from __future__ import annotations`` keeps them strings)."""
    cached = _HINTS.get(cls)
    if cached is None:
        cached = _HINTS[cls] = typing.get_type_hints(cls)
    return cached


_HINTS: dict[type, dict[str, Any]] = {}
