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

    [http]                         # all optional: the HTTP server's bounds (HttpSettings)
    header_timeout_ms = 10000
    max_connections = 768

    [acl]                          # all optional: access control (AclSettings); off by default
    enabled = true
    admin_access_key = "admin"
    admin_secret_file = "/etc/raftmq/admin.secret"
    max_skew_ms = 300000

    [tls]                          # optional: HTTPS (TlsSettings); members' http_url then https://
    cert_file = "/etc/raftmq/node.crt"
    key_file = "/etc/raftmq/node.key"

The replicated log's settings (``flush``, ``segment_bytes``, ``tick_ms``,
``heartbeat_ticks``, ``election_timeout_ticks``, ``preferred_leader``,
``rejoin``, ``bootstrap``: dledger's ``LogSettings``) are held as one section,
``BrokerConfig.log``. In the file they may sit at the top level, as above (how
node files have always been written), or in a ``[log]`` table; a key given in
both places is refused. Every value's type is checked against the dataclass
fields before the node starts: ``tick_ms = "50"`` is refused with
``tick_ms: expected an integer, got "50"``.

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

from raftmq.dledger import LogSettings, check_fields


@dataclass(slots=True, frozen=True)
class Member:
    id: str
    http_url: str
    raft_addr: str

    def __post_init__(self) -> None:
        check_fields(self, f"members.{self.id}.")


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
    max_property_key_chars: int = 128  # characters of one property name; longer is 400 property_too_long
    max_property_value_chars: int = 4096  # characters of one property value; longer is 400 property_too_long
    max_producer_id_bytes: int = 256  # UTF-8 bytes of a produce request's producer_id; longer is 400 name_too_long
    max_group_name_chars: int = 255  # characters of a consumer group name or client id; longer is 400 name_too_long
    max_topics: int = 4096  # topics in the group; one more is refused with 409 too_many_topics
    # Consumer groups with committed offsets (replicated), and consumer groups
    # with live members (on the leader), each at most this many; a new one past
    # it is refused with 409 too_many_groups.
    max_groups: int = 10_000

    def __post_init__(self) -> None:
        check_fields(self, "limits.")
        for f in fields(self):
            if getattr(self, f.name) < 1:
                raise ValueError(f"limits.{f.name}: must be at least 1")


@dataclass(slots=True, frozen=True)
class HttpSettings:
    """The HTTP server's own bounds (the ``[http]`` table): what one client may
    hold of a node's sockets, time and stack, whatever it sends. Each one hit
    is answered in the JSON error model or closes the connection with a log line."""

    header_timeout_ms: int = 10_000  # a request's line and headers must arrive within this (slowloris)
    body_timeout_ms: int = 60_000  # a request's body must arrive within this once it is read; else 408
    keepalive_idle_ms: int = 30_000  # a kept-alive connection idle this long between requests is closed
    # Open HTTP connections; also never more than 3/4 of the process's open-file
    # limit (RLIMIT_NOFILE), the rest being for the log, its files and the peers.
    # When full, an idle kept-alive connection is closed to make room; with none
    # idle, the new one gets 503 too_many_connections and is closed.
    max_connections: int = 768
    max_long_polls: int = 256  # pulls waiting at once; a pull over it is answered at once, as if wait_ms=0
    max_json_depth: int = 32  # arrays/objects nested in a request body (JSON or msgpack); deeper is a 400
    max_request_line_bytes: int = 8190  # method, URL and version; longer is 414 uri_too_long
    max_header_bytes: int = 8190  # one header line; longer is 431 header_too_large

    def __post_init__(self) -> None:
        check_fields(self, "http.")
        for f in fields(self):
            if getattr(self, f.name) < 1:
                raise ValueError(f"http.{f.name}: must be at least 1")


@dataclass(slots=True, frozen=True)
class AclSettings:
    """Access control (the ``[acl]`` table; see ``broker.acl`` and ``raftmq.signing``).
    Off by default: every request is then allowed, as on a loopback test group; a
    node listening beyond loopback with it off logs a WARNING at start."""

    enabled: bool = False  # refuse requests that are not signed (401) or not permitted (403)
    # The bootstrap admin, known to this node from its own file rather than from the
    # log, so an operator can log in to a fresh group and add the others. Give every
    # node the same key and file. Required when enabled.
    admin_access_key: str = ""
    admin_secret_file: str = ""  # a file holding the admin's secret key (16-128 printable ASCII; whitespace stripped)
    max_skew_ms: int = 300_000  # a signed request's X-RaftMQ-Date may be this far from the node's clock
    _admin_secret: str = field(init=False, default="", repr=False, compare=False)  # read from admin_secret_file

    def __post_init__(self) -> None:
        check_fields(self, "acl.")
        if self.max_skew_ms < 1:
            raise ValueError("acl.max_skew_ms: must be at least 1")
        if not self.enabled:
            return
        if not re.fullmatch(r"[A-Za-z0-9_-]{1,64}", self.admin_access_key):
            raise ValueError("acl.admin_access_key: required when acl is enabled; 1 to 64 letters, digits, '-' or '_'")
        if not self.admin_secret_file:
            raise ValueError("acl.admin_secret_file: required when acl is enabled")
        try:
            secret = Path(self.admin_secret_file).read_text().strip()
        except (OSError, UnicodeDecodeError) as exc:
            raise ValueError(f"acl.admin_secret_file: cannot read {self.admin_secret_file}: {exc}") from None
        if not re.fullmatch(r"[\x21-\x7e]{16,128}", secret):
            raise ValueError(f"acl.admin_secret_file: {self.admin_secret_file} must hold 16 to 128 printable "
                             f"ASCII characters without spaces")
        object.__setattr__(self, "_admin_secret", secret)

    @property
    def admin_secret(self) -> str:
        """The bootstrap admin's secret key (never logged: not in repr)."""
        return self._admin_secret


@dataclass(slots=True, frozen=True)
class TlsSettings:
    """HTTPS for the HTTP API (the ``[tls]`` table): off unless both files are given."""

    cert_file: str = ""  # PEM certificate chain the node presents
    key_file: str = ""  # PEM private key of that certificate

    def __post_init__(self) -> None:
        check_fields(self, "tls.")
        if bool(self.cert_file) != bool(self.key_file):
            raise ValueError("tls: give both cert_file and key_file, or neither")
        for name in ("cert_file", "key_file"):
            path = getattr(self, name)
            if path and not Path(path).is_file():
                raise ValueError(f"tls.{name}: {path} is not a readable file")

    @property
    def enabled(self) -> bool:
        return bool(self.cert_file)


@dataclass(slots=True, frozen=True)
class BrokerConfig:
    node_id: str
    group: str
    members: Mapping[str, Member]
    data_dir: str
    retention_hours: float = 72.0  # CommitLog segments older than this are deleted
    retention_check_interval_ms: int = 10_000
    checkpoint_interval_ms: int = 1000  # how often applied state is checkpointed
    consumer_session_timeout_ms: int = 6000  # a consumer silent this long leaves its group
    limits: Limits = field(default_factory=Limits)
    # The replicated log's settings (flush, segment size, tick and timeouts,
    # preferred leader, rejoin, bootstrap): flat keys or a [log] table in TOML.
    log: LogSettings = field(default_factory=LogSettings)
    http: HttpSettings = field(default_factory=HttpSettings)  # the [http] table
    # Checkpoint bytes written per second at most, averaged: after a checkpoint
    # of n bytes the next one waits n / this seconds if longer than the interval.
    checkpoint_max_bytes_per_s: int = 1 << 20
    acl: AclSettings = field(default_factory=AclSettings)  # the [acl] table
    tls: TlsSettings = field(default_factory=TlsSettings)  # the [tls] table

    def __post_init__(self) -> None:
        check_fields(self)
        if not self.node_id:
            raise ValueError("node_id: must not be empty")
        if not re.fullmatch(r"[A-Za-z0-9_-]{1,64}", self.group):
            raise ValueError(f"group: {self.group!r} must be letters, digits, '-' or '_'")
        if self.node_id not in self.members:
            raise ValueError(f"node_id: {self.node_id!r} is not one of members {sorted(self.members)}")
        if self.retention_hours <= 0:
            raise ValueError("retention_hours: must be positive")
        if self.checkpoint_max_bytes_per_s < 1:
            raise ValueError("checkpoint_max_bytes_per_s: must be at least 1")
        for m in self.members.values():
            u = urlsplit(m.http_url)
            scheme = "https" if self.tls.enabled else "http"
            if u.scheme != scheme or not u.hostname or not u.port:
                raise ValueError(f"members.{m.id}.http_url: {m.http_url!r} must look like {scheme}://HOST:PORT"
                                 + (" ([tls] is set)" if self.tls.enabled else ""))

    @property
    def me(self) -> Member:
        return self.members[self.node_id]

    @property
    def http_host_port(self) -> tuple[str, int]:
        u = urlsplit(self.me.http_url)
        assert u.hostname and u.port
        return u.hostname, u.port


_LOG_KEYS = frozenset(f.name for f in fields(LogSettings))
_BROKER_KEYS = frozenset(f.name for f in fields(BrokerConfig))


def _members(raw: Any) -> dict[str, Member]:
    if not isinstance(raw, dict) or not raw:
        raise ValueError("members: a table of at least one member is required")
    out = {}
    for mid, m in raw.items():
        if not isinstance(m, dict) or "http_url" not in m or "raft_addr" not in m:
            raise ValueError(f"members.{mid}: needs http_url and raft_addr")
        out[mid] = Member(mid, m["http_url"], m["raft_addr"])
    return out


def _table(raw: Mapping[str, Any], name: str) -> dict[str, Any]:
    value = raw.get(name, {})
    if not isinstance(value, dict):
        raise ValueError(f"{name}: must be a table")
    return value


def _log_settings(raw: Mapping[str, Any]) -> LogSettings:
    """The log section from flat top-level keys and the ``[log]`` table; a key in both is refused."""
    table = _table(raw, "log")
    unknown = set(table) - _LOG_KEYS
    if unknown:
        raise ValueError(f"unknown log setting(s): {', '.join(sorted(unknown))}")
    flat = {k: v for k, v in raw.items() if k in _LOG_KEYS}
    both = set(flat) & set(table)
    if both:
        raise ValueError(f"{', '.join(sorted(both))}: given both at the top level and in [log]; keep one")
    try:
        return LogSettings(**flat, **table)
    except ValueError as exc:
        # The message starts with the field name; name it as the file does.
        key = str(exc).split(":", 1)[0]
        raise ValueError(f"log.{exc}" if key in table else str(exc)) from None


def from_mapping(raw: Mapping[str, Any]) -> BrokerConfig:
    """Build a config from a parsed TOML document; ValueError names the bad key."""
    unknown = set(raw) - _BROKER_KEYS - _LOG_KEYS
    if unknown:
        raise ValueError(f"unknown setting(s): {', '.join(sorted(unknown))}")
    for req in ("node_id", "group", "data_dir"):
        if req not in raw:
            raise ValueError(f"{req}: required")
    kw = {k: v for k, v in raw.items() if k in _BROKER_KEYS}
    kw["members"] = _members(raw.get("members"))
    lim = _table(raw, "limits")
    lknown = {f.name for f in fields(Limits)}
    if set(lim) - lknown:
        raise ValueError(f"unknown limit(s): {', '.join(sorted(set(lim) - lknown))}")
    kw["limits"] = Limits(**lim)
    kw["log"] = _log_settings(raw)
    http = _table(raw, "http")
    hknown = {f.name for f in fields(HttpSettings)}
    if set(http) - hknown:
        raise ValueError(f"unknown http setting(s): {', '.join(sorted(set(http) - hknown))}")
    kw["http"] = HttpSettings(**http)
    kw["acl"] = _section(raw, "acl", AclSettings)
    kw["tls"] = _section(raw, "tls", TlsSettings)
    return BrokerConfig(**kw)


def _section(raw: Mapping[str, Any], name: str, cls: Any) -> Any:
    """The dataclass ``cls`` from the ``[name]`` table; unknown keys refused."""
    table = _table(raw, name)
    known = {f.name for f in fields(cls) if f.init}
    if set(table) - known:
        raise ValueError(f"unknown {name} setting(s): {', '.join(sorted(set(table) - known))}")
    return cls(**table)


def with_overrides(cfg: BrokerConfig, **overrides: Any) -> BrokerConfig:
    """``cfg`` with the given settings replaced (a ``None`` leaves one as it is);
    log settings (``flush``, ``rejoin``, ...) go to the ``log`` section."""
    given = {k: v for k, v in overrides.items() if v is not None}
    unknown = set(given) - _BROKER_KEYS - _LOG_KEYS
    if unknown:
        raise ValueError(f"unknown setting(s): {', '.join(sorted(unknown))}")
    log = {k: v for k, v in given.items() if k in _LOG_KEYS}
    rest = {k: v for k, v in given.items() if k in _BROKER_KEYS}
    if log:
        rest["log"] = replace(cfg.log, **log)
    return replace(cfg, **rest) if rest else cfg


def load(path: str | Path, **overrides: Any) -> BrokerConfig:
    """Read a node TOML file; ValueError names the bad key, OSError an unreadable file."""
    with open(path, "rb") as f:
        try:
            raw = tomllib.load(f)
        except tomllib.TOMLDecodeError as exc:
            raise ValueError(f"not valid TOML: {exc}") from None
    return with_overrides(from_mapping(raw), **overrides)
