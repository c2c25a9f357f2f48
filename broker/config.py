"""Broker node configuration: one frozen dataclass, built once at the edge
from a TOML file (read with the standard library's ``tomllib``) or flags.

A node's TOML file::

    node_id = "n1"
    group = "broker-a"
    data_dir = "data/n1"
    flush = "async"                # or "sync": fdatasync before every ack
    bootstrap = true               # only for the first start of a new group (see below)

    [members.n1]
    http_url = "http://127.0.0.1:8081"
    raft_addr = "127.0.0.1:9081"
    [members.n2]
    ...

    [limits]                       # all optional
    max_message_bytes = 4194304

``bootstrap`` (or the ``--bootstrap`` flag) marks the first start of a new
group, as etcd's ``initial-cluster-state=new``: only then may a node on an
empty data directory vote. Without it, an empty data directory is taken for a
wiped or replaced disk and the node rejoins as a non-voter until it has caught
up with a leader. A node restarted with its data ignores the setting, and one
whose disk was wiped is told so by its peers, who remember its data
directory's id, even if its TOML still says ``bootstrap = true``.
"""

from __future__ import annotations

import re
import tomllib
from dataclasses import dataclass, field, fields, replace
from pathlib import Path
from typing import Any, Mapping
from urllib.parse import urlsplit


@dataclass(slots=True, frozen=True)
class Member:
    id: str
    http_url: str
    raft_addr: str


@dataclass(slots=True, frozen=True)
class Limits:
    """Enforced on every request; a request over a limit gets a 413 or 400 and changes nothing."""

    max_message_bytes: int = 4 << 20  # body of one message (RocketMQ's default)
    max_batch_messages: int = 1024  # messages in one produce request
    max_request_bytes: int = 32 << 20  # whole HTTP request body
    max_pull_messages: int = 1024  # `max` of one pull
    max_wait_ms: int = 30_000  # longest long-poll
    max_topic_queues: int = 1024
    max_properties: int = 64

    def __post_init__(self) -> None:
        for f in fields(self):
            if getattr(self, f.name) < 1:
                raise ValueError(f"limits.{f.name}: must be at least 1")


@dataclass(slots=True, frozen=True)
class BrokerConfig:
    node_id: str
    group: str
    members: Mapping[str, Member]
    data_dir: str
    flush: str = "async"
    segment_bytes: int = 1 << 30
    retention_hours: float = 72.0  # CommitLog segments older than this are deleted
    retention_check_interval_ms: int = 10_000
    checkpoint_interval_ms: int = 1000  # how often applied state is checkpointed
    tick_ms: int = 50
    heartbeat_ticks: int = 2
    election_timeout_ticks: int = 12
    preferred_leader: str | None = None
    rejoin: bool = False  # set by --rejoin: this node's data was lost; no votes until caught up
    bootstrap: bool = False  # first start of a new group: an empty data directory may vote (module docstring)
    consumer_session_timeout_ms: int = 6000  # a consumer silent this long leaves its group
    limits: Limits = field(default_factory=Limits)

    def __post_init__(self) -> None:
        if not self.node_id:
            raise ValueError("node_id: must not be empty")
        if not re.fullmatch(r"[A-Za-z0-9_-]{1,64}", self.group):
            raise ValueError(f"group: {self.group!r} must be letters, digits, '-' or '_'")
        if self.node_id not in self.members:
            raise ValueError(f"node_id: {self.node_id!r} is not one of members {sorted(self.members)}")
        if self.flush not in ("async", "sync"):
            raise ValueError(f"flush: must be 'async' or 'sync', not {self.flush!r}")
        for name in ("rejoin", "bootstrap"):
            if type(getattr(self, name)) is not bool:
                raise ValueError(f"{name}: must be true or false, not {getattr(self, name)!r}")
        if self.retention_hours <= 0:
            raise ValueError("retention_hours: must be positive")
        for m in self.members.values():
            u = urlsplit(m.http_url)
            if u.scheme != "http" or not u.hostname or not u.port:
                raise ValueError(f"members.{m.id}.http_url: {m.http_url!r} must look like http://HOST:PORT")

    @property
    def me(self) -> Member:
        return self.members[self.node_id]

    @property
    def http_host_port(self) -> tuple[str, int]:
        u = urlsplit(self.me.http_url)
        assert u.hostname and u.port
        return u.hostname, u.port


def _members(raw: Any) -> dict[str, Member]:
    if not isinstance(raw, dict) or not raw:
        raise ValueError("members: a table of at least one member is required")
    out = {}
    for mid, m in raw.items():
        if not isinstance(m, dict) or "http_url" not in m or "raft_addr" not in m:
            raise ValueError(f"members.{mid}: needs http_url and raft_addr")
        out[mid] = Member(mid, str(m["http_url"]), str(m["raft_addr"]))
    return out


def from_mapping(raw: Mapping[str, Any]) -> BrokerConfig:
    """Build a config from a parsed TOML document; ValueError names the bad key."""
    known = {f.name for f in fields(BrokerConfig)}
    unknown = set(raw) - known
    if unknown:
        raise ValueError(f"unknown setting(s): {', '.join(sorted(unknown))}")
    kw = dict(raw)
    kw["members"] = _members(raw.get("members"))
    lim = raw.get("limits", {})
    if not isinstance(lim, dict):
        raise ValueError("limits: must be a table")
    lknown = {f.name for f in fields(Limits)}
    if set(lim) - lknown:
        raise ValueError(f"unknown limit(s): {', '.join(sorted(set(lim) - lknown))}")
    kw["limits"] = Limits(**lim)
    for req in ("node_id", "group", "data_dir"):
        if req not in kw:
            raise ValueError(f"{req}: required")
    return BrokerConfig(**kw)


def load(path: str | Path, **overrides: Any) -> BrokerConfig:
    with open(path, "rb") as f:
        raw = tomllib.load(f)
    cfg = from_mapping(raw)
    return replace(cfg, **{k: v for k, v in overrides.items() if v is not None}) if overrides else cfg
