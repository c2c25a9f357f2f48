"""The chaos group's node configuration: what a node is started with after a
wipe (no flag by default) and on the group's first start (the bootstrap mark,
once the broker takes it)."""

from __future__ import annotations

import tomllib
from dataclasses import fields
from pathlib import Path

from raftmq.broker.config import BrokerConfig, load
from raftmq.chaos import nemesis
from raftmq.chaos.nemesis import Group
from raftmq.dledger import LogSettings


def test_a_wiped_node_restarts_with_no_flag_unless_rejoin_wiped(tmp_path: Path) -> None:
    g = Group(tmp_path / "a", 3, "async", distinct_hosts=False)
    n = g.nodes[0]
    assert g.start_flags(n, None, None) == (False, True)  # the first start: bootstrap, no rejoin
    n.incarnation, n.wiped = 2, True
    assert g.start_flags(n, None, None) == (False, False)  # wiped: no --rejoin, and never a bootstrap
    assert g.start_flags(n, None, True) == (False, True)  # asked explicitly (the wipe-majority operator)
    old = Group(tmp_path / "b", 3, "async", distinct_hosts=False, rejoin_wiped=True)
    m = old.nodes[0]
    m.incarnation, m.wiped = 2, True
    assert old.start_flags(m, None, None) == (True, False)
    m.wiped = False
    assert old.start_flags(m, None, None) == (False, False)


def test_the_node_toml_is_one_the_broker_loads(tmp_path: Path) -> None:
    g = Group(tmp_path, 3, "sync", distinct_hosts=False, segment_bytes=65536, checkpoint_interval_ms=700)
    n = g.nodes[1]
    g.write_config(n, bootstrap=True)
    cfg = load(n.config_path)
    assert (cfg.node_id, cfg.log.flush, cfg.log.segment_bytes, cfg.checkpoint_interval_ms) == ("n2", "sync", 65536, 700)
    assert sorted(cfg.members) == ["n1", "n2", "n3"] and cfg.data_dir == str(n.data_dir)


def test_the_bootstrap_mark_is_written_only_for_a_first_start_and_only_when_enabled(tmp_path: Path) -> None:
    g = Group(tmp_path / "on", 3, "async", distinct_hosts=False, bootstrap_key=True)
    n = g.nodes[0]
    g.write_config(n, bootstrap=True)
    assert tomllib.loads(n.config_path.read_text()).get("bootstrap") is True
    g.write_config(n, bootstrap=False)
    assert "bootstrap" not in tomllib.loads(n.config_path.read_text())
    off = Group(tmp_path / "off", 3, "async", distinct_hosts=False, bootstrap_key=False)
    off.write_config(off.nodes[0], bootstrap=True)
    assert "bootstrap" not in tomllib.loads(off.nodes[0].config_path.read_text())


def test_the_bootstrap_switch_follows_what_the_broker_config_accepts() -> None:
    # The broker refuses unknown TOML keys: chaos writes ``bootstrap = true`` exactly when
    # BrokerConfig has the field. When it lands, flip chaos.nemesis.BOOTSTRAP_KEY to True.
    accepts = "bootstrap" in {f.name for f in fields(BrokerConfig)} | {f.name for f in fields(LogSettings)}
    assert nemesis.BOOTSTRAP_KEY is accepts, (
        f"broker/config.py {'now takes' if accepts else 'does not take'} the bootstrap key: "
        f"set chaos.nemesis.BOOTSTRAP_KEY = {accepts}")
