"""The broker's node TOML, written once for every tool that writes one.

``raftmq cluster up`` (client/local/cluster.py), the chaos nemesis and the
integration tests' broker group each describe a node as values (its id,
group, data directory, flush policy, other settings, and the group's
members) and get the file's text from ``node_toml``. It is written with
``tomli_w`` rather than by hand, so that any path (a quote, a backslash, a
space in ``--base-dir``) comes back the same from ``tomllib``. The keys are
those ``broker/config.py`` reads; the members go into ``[members.<id>]``
tables with ``http_url`` and ``raft_addr``.
"""

from __future__ import annotations

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
