"""The broker node's configuration: node TOML files as written today load
unchanged, the log's settings live in one section (flat keys or a ``[log]``
table, never both), and a value of the wrong type is refused with its key
named, in the TOML loader, in dledger's ``NodeConfig`` and at the node's
command line."""

from __future__ import annotations

import tomllib
from dataclasses import fields
from pathlib import Path
from typing import Any

import pytest

from raftmq.broker import node
from raftmq.broker.config import BrokerConfig, from_mapping, load, with_overrides
from raftmq.dledger import LogSettings, NodeConfig

MEMBERS = """
[members.n1]
http_url = "http://127.0.0.1:8081"
raft_addr = "127.0.0.1:9081"
[members.n2]
http_url = "http://127.0.0.1:8082"
raft_addr = "127.0.0.1:9082"
"""


def toml(top: str = "", tail: str = "") -> dict[str, Any]:
    """A node document with ``top`` lines at the top level and ``tail`` tables after the members."""
    return tomllib.loads(f'node_id = "n1"\ngroup = "g"\ndata_dir = "d"\n{top}\n{MEMBERS}\n{tail}')


def refused(doc: dict[str, Any]) -> str:
    with pytest.raises(ValueError) as exc:
        from_mapping(doc)
    return str(exc.value)


def test_flat_log_keys_as_node_files_are_written_today_load_into_the_log_section() -> None:
    cfg = from_mapping(toml('flush = "sync"\nsegment_bytes = 65536\ntick_ms = 20\nheartbeat_ticks = 3\n'
                            'election_timeout_ticks = 15\npreferred_leader = "n2"\nrejoin = true\nbootstrap = true\n'
                            'retention_hours = 1.5\ncheckpoint_interval_ms = 700'))
    assert cfg.log == LogSettings(flush="sync", segment_bytes=65536, tick_ms=20, heartbeat_ticks=3,
                                  election_timeout_ticks=15, preferred_leader="n2", rejoin=True, bootstrap=True)
    assert (cfg.retention_hours, cfg.checkpoint_interval_ms) == (1.5, 700)


def test_a_log_table_is_the_same_as_flat_keys_and_the_two_forms_mix() -> None:
    flat = from_mapping(toml('flush = "sync"\ntick_ms = 20'))
    assert from_mapping(toml(tail='[log]\nflush = "sync"\ntick_ms = 20')) == flat
    assert from_mapping(toml('flush = "sync"', '[log]\ntick_ms = 20')) == flat


def test_a_log_key_given_both_flat_and_in_the_log_table_is_refused() -> None:
    assert refused(toml("tick_ms = 20", "[log]\ntick_ms = 30")) == (
        "tick_ms: given both at the top level and in [log]; keep one")


def test_unknown_keys_are_refused_at_the_top_and_in_the_log_table() -> None:
    assert refused(toml("tick_ms_x = 1")) == "unknown setting(s): tick_ms_x"
    assert refused(toml(tail="[log]\nretention_hours = 1")) == "unknown log setting(s): retention_hours"
    assert refused(toml('log = "fast"')) == "log: must be a table"


def test_no_field_is_declared_both_in_the_broker_config_and_in_the_log_settings() -> None:
    assert not {f.name for f in fields(BrokerConfig)} & {f.name for f in fields(LogSettings)}


@pytest.mark.parametrize("top, tail, message", [
    ('tick_ms = "50"', "", 'tick_ms: expected an integer, got "50"'),
    ("tick_ms = true", "", "tick_ms: expected an integer, got true"),  # a bool is not an int
    ("flush = 1", "", "flush: expected a string, got 1"),
    ('rejoin = "yes"', "", 'rejoin: expected true or false, got "yes"'),
    ("bootstrap = 1", "", "bootstrap: expected true or false, got 1"),
    ("segment_bytes = 1.5", "", "segment_bytes: expected an integer, got 1.5"),
    ("preferred_leader = 2", "", "preferred_leader: expected a string, got 2"),
    ("retention_hours = true", "", "retention_hours: expected a number, got true"),
    ('retention_hours = "72"', "", 'retention_hours: expected a number, got "72"'),
    ('checkpoint_interval_ms = "1s"', "", 'checkpoint_interval_ms: expected an integer, got "1s"'),
    ("", '[limits]\nmax_message_bytes = "4MB"', 'limits.max_message_bytes: expected an integer, got "4MB"'),
    ("", "[log]\ntick_ms = [50]", "log.tick_ms: expected an integer, got an array"),
    ("", "[log]\nflush = true", "log.flush: expected a string, got true"),
])
def test_a_value_of_the_wrong_type_is_refused_with_its_key_named(top: str, tail: str, message: str) -> None:
    assert refused(toml(top, tail)) == message


@pytest.mark.parametrize("key, value, message", [
    ("node_id", 1, "node_id: expected a string, got 1"),
    ("group", 7, "group: expected a string, got 7"),
    ("data_dir", False, "data_dir: expected a string, got false"),
])
def test_an_identity_of_the_wrong_type_is_refused_with_its_key_named(key: str, value: Any, message: str) -> None:
    assert refused(toml() | {key: value}) == message


def test_a_member_url_or_address_of_the_wrong_type_is_refused_with_its_key_named() -> None:
    doc = toml()
    doc["members"]["n2"]["http_url"] = 8082
    assert refused(doc) == "members.n2.http_url: expected a string, got 8082"
    doc = toml()
    doc["members"]["n1"]["raft_addr"] = {"port": 9081}
    assert refused(doc) == "members.n1.raft_addr: expected a string, got a table"


def test_an_integer_is_a_fine_number_of_hours() -> None:
    assert from_mapping(toml("retention_hours = 2")).retention_hours == 2


def test_range_checks_still_apply_after_the_type_check() -> None:
    assert refused(toml('flush = "fast"')) == "flush: must be 'async' or 'sync', not 'fast'"
    assert refused(toml("", "[log]\ntick_ms = 0")) == "log.tick_ms: must be at least 1"
    assert refused(toml("", "[limits]\nmax_wait_ms = 0")) == "limits.max_wait_ms: must be at least 1"


def test_overrides_from_flags_reach_the_log_section() -> None:
    cfg = with_overrides(from_mapping(toml()), flush="sync", rejoin=True, retention_hours=None, data_dir="e")
    assert (cfg.log.flush, cfg.log.rejoin, cfg.retention_hours, cfg.data_dir) == ("sync", True, 72.0, "e")
    with pytest.raises(ValueError, match="unknown setting"):
        with_overrides(cfg, tick_ms_x=1)


def test_the_node_config_is_built_from_the_log_section(tmp_path: Path) -> None:
    cfg = from_mapping(toml("tick_ms = 20\nbootstrap = true"))
    nc = NodeConfig.build(cfg.log, node_id="n1", group="g", peers={"n1": "127.0.0.1:9081"}, data_dir="d")
    assert {f.name: getattr(nc, f.name) for f in fields(LogSettings)} == {
        f.name: getattr(cfg.log, f.name) for f in fields(LogSettings)}


@pytest.mark.parametrize("kw, message", [
    ({"tick_ms": "50"}, 'tick_ms: expected an integer, got "50"'),
    ({"flush": 1}, "flush: expected a string, got 1"),
    ({"rejoin": "yes"}, 'rejoin: expected true or false, got "yes"'),
    ({"max_inflight_msgs": 2.0}, "max_inflight_msgs: expected an integer, got 2.0"),
    ({"seed": True}, "seed: expected an integer, got true"),
    ({"peers": {"n1": 9081}}, "peers.n1: expected a string, got 9081"),
    ({"data_dir": Path("d")}, "data_dir: expected a string, got PosixPath"),
])
def test_dledger_node_config_refuses_wrong_types(kw: dict[str, Any], message: str) -> None:
    args: dict[str, Any] = {"node_id": "n1", "group": "g", "peers": {"n1": "127.0.0.1:9081"}, "data_dir": "d"}
    with pytest.raises(ValueError) as exc:
        NodeConfig(**(args | kw))
    assert str(exc.value) == message


def test_node_config_still_takes_its_identity_positionally() -> None:
    nc = NodeConfig("n1", "g", {"n1": "127.0.0.1:9081"}, "d", flush="sync", seed=3)
    assert (nc.node_id, nc.data_dir, nc.flush, nc.seed) == ("n1", "d", "sync", 3)


def test_the_command_line_refuses_a_bad_file_in_one_line_naming_file_and_key(
        tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    path = tmp_path / "node.toml"
    path.write_text(f'node_id = "n1"\ngroup = "g"\ndata_dir = "{tmp_path}"\ntick_ms = "50"\n{MEMBERS}')
    assert node.main(["--config", str(path)]) == 2
    assert capsys.readouterr().err == f'raftmq broker: {path}: tick_ms: expected an integer, got "50"\n'
    path.write_text("node_id = \n")
    assert node.main(["--config", str(path)]) == 2
    assert capsys.readouterr().err.startswith(f"raftmq broker: {path}: not valid TOML: ")


def test_flags_alone_build_the_same_config_as_a_file(tmp_path: Path) -> None:
    path = tmp_path / "node.toml"
    path.write_text(f'node_id = "n1"\ngroup = "g"\ndata_dir = "d"\nflush = "sync"\nsegment_bytes = 4096\n'
                    f"retention_hours = 2.5\nrejoin = true\n{MEMBERS}")
    flags = node.parse_args(["--node-id", "n1", "--group", "g", "--data-dir", "d", "--flush", "sync",
                             "--segment-bytes", "4096", "--retention-hours", "2.5", "--rejoin",
                             "--member", "n1=http://127.0.0.1:8081,127.0.0.1:9081",
                             "--member", "n2=http://127.0.0.1:8082,127.0.0.1:9082"])
    assert flags == load(path)
    over = node.parse_args(["--config", str(path), "--flush", "async", "--bootstrap"])
    assert (over.log.flush, over.log.bootstrap, over.log.rejoin) == ("async", True, True)


@pytest.mark.parametrize("argv, message", [
    (["--flush", "fast"], "raftmq broker: Invalid value for '--flush': 'fast' is not one of 'async', 'sync'.\n"),
    (["--segment-bytes", "1GiB"], "raftmq broker: Invalid value for '--segment-bytes': '1GiB' is not a valid integer.\n"),
    (["--member", "n1"], "raftmq broker: Invalid value for '--member': 'n1': expected ID=HTTP_URL,RAFT_ADDR\n"),
    (["--node-id", "n1"], "raftmq broker: give --config FILE, or --node-id, --group, --data-dir and --member "
                          "for every member\n"),
])
def test_a_bad_flag_is_one_line_and_exit_status_2(argv: list[str], message: str,
                                                   capsys: pytest.CaptureFixture[str]) -> None:
    assert node.main(argv) == 2
    assert capsys.readouterr().err == message


def test_every_option_of_the_node_command_has_help_text() -> None:
    assert [p.name for p in node.command.params if not getattr(p, "help", None)] == []
