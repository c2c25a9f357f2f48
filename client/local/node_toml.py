"""The broker's node TOML, written once for every tool that writes one.

``raftmq cluster up`` (client/local/cluster.py), the chaos nemesis and the
integration tests' broker group each describe a node as values (its id,
group, data directory, flush policy, other settings, and the group's
members) and get the file's text from ``node_toml``. It is written with
``tomli_w`` rather than by hand, so that any path (a quote, a backslash, a
space in ``--base-dir``) comes back the same from ``tomllib``. The keys are
those ``broker/config.py`` reads; the members go into ``[members.<id>]``
tables with ``http_url`` and ``raft_addr``. ``ensure_cluster_secret`` makes the
group's shared secret file that every node's TOML names (``cluster_secret_file``).
"""

from __future__ import annotations

import os
import secrets
from pathlib import Path
from typing import Any, Mapping

import tomli_w


def node_toml(node_id: str, group: str, data_dir: str, flush: str, members: Mapping[str, tuple[str, str]],
              extra: Mapping[str, Any] | None = None) -> str:
    """The TOML text of one node. ``members``: id -> (http_url, raft_addr) of
    every node of the group; ``extra``: more top-level keys (a dict value is a
    table). Raises ``ValueError`` naming the key for a value TOML cannot hold
    (``None``, or a key that clashes with one written here)."""
    doc: dict[str, Any] = {"node_id": node_id, "group": group, "data_dir": str(data_dir), "flush": flush}
    for key, value in (extra or {}).items():
        if key in doc or key == "members":
            raise ValueError(f"node TOML: {key!r} is set by the tool itself; it cannot come from extra settings")
        if value is None:
            raise ValueError(f"node TOML: {key!r} has no value (None); TOML has no null")
        doc[key] = value
    doc["members"] = {mid: {"http_url": http_url, "raft_addr": raft_addr}
                      for mid, (http_url, raft_addr) in members.items()}
    try:
        return tomli_w.dumps(doc)
    except TypeError as exc:
        raise ValueError(f"node TOML: {exc}") from None


SECRET_FILE = "cluster.secret"
"""Name of the group's cluster secret file in a local group's base directory."""


def ensure_cluster_secret(base_dir: Path) -> Path:
    """The absolute path of ``<base_dir>/cluster.secret``, written first if missing: 64 hex
    characters (``secrets.token_hex(32)``), mode 0600. A group restarted in the same base
    directory keeps its secret. Name it as ``cluster_secret_file`` in every node's TOML."""
    base_dir.mkdir(parents=True, exist_ok=True)
    path = (base_dir / SECRET_FILE).resolve()
    try:
        fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    except FileExistsError:
        return path
    with os.fdopen(fd, "w") as f:
        f.write(secrets.token_hex(32) + "\n")
    return path
