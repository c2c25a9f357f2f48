"""The HTTP edge's pure checks (broker/http/decoding.py, server.py,
long_polls.py) and the ``[http]`` settings: nesting, lone surrogates and
integers outside int64 are refused with their own codes before a handler or
``json`` can fail on them."""

from __future__ import annotations

import json

import msgpack
import pytest
from aiohttp import http_exceptions

from raftmq.broker import config as config_mod
from raftmq.broker.config import HttpSettings
from raftmq.broker.errors import (
    IntegerOutOfRange,
    InvalidArgument,
    InvalidString,
    MalformedBody,
    NestingTooDeep,
)
from raftmq.broker.http.decoding import decode_json, decode_msgpack, json_depth_within, parse_int
from raftmq.broker.http.long_polls import LongPolls
from raftmq.broker.http.server import connection_cap, parser_error


def nested(depth: int) -> bytes:
    return b"[" * depth + b"]" * depth


@pytest.mark.parametrize("depth", [1, 2, 31, 32])
def test_json_up_to_the_depth_limit_is_decoded(depth: int) -> None:
    assert json_depth_within(nested(depth), 32)
    assert decode_json(nested(depth), 32) is not None


def test_json_one_level_too_deep_is_refused_before_json_recurses() -> None:
    assert not json_depth_within(nested(33), 32)
    with pytest.raises(NestingTooDeep):
        decode_json(nested(33), 32)
    with pytest.raises(NestingTooDeep):  # would be a RecursionError inside json.loads
        decode_json(b'{"messages": ' + nested(100_000) + b"}", 32)


def test_brackets_inside_strings_do_not_count() -> None:
    raw = json.dumps({"body": "[" * 1000 + '\\"{' * 500, "k": ["]" * 10]}).encode()
    assert json_depth_within(raw, 2)
    assert decode_json(raw, 2)["k"] == ["]" * 10]


def test_mixed_brackets_count_every_level() -> None:
    assert json_depth_within(b"{[{[]}]}", 4)
    assert not json_depth_within(b"{[{[]}]}", 3)


def test_unbalanced_json_is_malformed_not_too_deep() -> None:
    with pytest.raises(MalformedBody):
        decode_json(b'{"messages": [', 32)


def test_msgpack_depth_limit_applies_after_decoding() -> None:
    assert decode_msgpack(msgpack.packb([[[]]]), 3) == [[[]]]
    with pytest.raises(NestingTooDeep):
        decode_msgpack(msgpack.packb([[[[]]]]), 3)
    with pytest.raises(MalformedBody):  # msgpack's own stack limit (1,024 levels)
        decode_msgpack(b"\x91" * 5000 + b"\x90", 32)


@pytest.mark.parametrize("raw", [
    b'{"messages": [{"body": "\\udc80"}]}',
    b'{"a": {"\\ud800": 1}}',
    b'{"a": ["ok", "x\\udfffy"]}',
    b'{"a": "\\ud83d"}',
])
def test_a_lone_surrogate_anywhere_is_invalid_string(raw: bytes) -> None:
    with pytest.raises(InvalidString):
        decode_json(raw, 32)


def test_a_surrogate_pair_is_one_character() -> None:
    assert decode_json(b'{"a": "\\ud83d\\ude00"}', 32) == {"a": "\U0001F600"}


def test_json_that_is_not_utf8_is_malformed() -> None:
    with pytest.raises(MalformedBody):
        decode_json(b'{"a": "\xed\xb2\x80"}', 32)  # a surrogate written as raw (invalid) UTF-8


@pytest.mark.parametrize("value", [2**63, 2**64, -(2**63) - 1, 10**30])
def test_integers_outside_int64_are_out_of_range(value: int) -> None:
    with pytest.raises(IntegerOutOfRange) as err:
        decode_json(json.dumps({"m": [{"born_ts": value}]}).encode(), 32)
    assert "m[0].born_ts" in err.value.message


@pytest.mark.parametrize("value", [0, 2**63 - 1, -(2**63)])
def test_integers_inside_int64_pass(value: int) -> None:
    assert decode_json(json.dumps({"n": value}).encode(), 32) == {"n": value}


def test_msgpack_uint64_over_int64_and_extension_types_are_refused() -> None:
    with pytest.raises(IntegerOutOfRange):
        decode_msgpack(msgpack.packb({"sequence": 2**63}), 32)
    with pytest.raises(MalformedBody):
        decode_msgpack(msgpack.packb({"a": msgpack.ExtType(5, b"x")}), 32)


@pytest.mark.parametrize("raw,expected", [("0", 0), ("-5", -5), ("9223372036854775807", 2**63 - 1)])
def test_parse_int_takes_decimal_int64(raw: str, expected: int) -> None:
    assert parse_int(raw, "offset") == expected


@pytest.mark.parametrize("raw,error", [
    ("9223372036854775808", IntegerOutOfRange), ("9" * 5000, IntegerOutOfRange), ("1e5", InvalidArgument),
    (" 5", InvalidArgument), ("1_000", InvalidArgument), ("\u0663", InvalidArgument), ("", InvalidArgument),
])
def test_parse_int_refuses_the_rest(raw: str, error: type[Exception]) -> None:
    with pytest.raises(error):
        parse_int(raw, "offset")


# -- server bounds ------------------------------------------------------------------
@pytest.mark.parametrize("max_connections,nofile,cap", [(768, 1024, 768), (768, 20000, 768), (768, 256, 192),
                                                        (100, 1024, 100), (768, 1, 1)])
def test_connection_cap_is_at_most_three_quarters_of_the_open_file_limit(max_connections: int, nofile: int,
                                                                         cap: int) -> None:
    assert connection_cap(max_connections, nofile) == cap


def test_parser_errors_get_codes() -> None:
    url = http_exceptions.LineTooLong(b"/v1/topics?x=aaaa...", 8190)
    header = http_exceptions.LineTooLong(b"aaaa...", 8190)
    assert parser_error(400, url, None)[:2] == (414, "uri_too_long")
    assert parser_error(400, header, None)[:2] == (431, "header_too_large")
    assert parser_error(400, http_exceptions.BadStatusLine("x"), None)[:2] == (400, "malformed_request")
    status, code, message = parser_error(500, ZeroDivisionError("secret detail"), None)
    assert (status, code) == (500, "internal_error") and "secret" not in message


def test_long_polls_past_the_cap_get_no_slot() -> None:
    polls = LongPolls(2)
    with polls.slot() as a, polls.slot() as b:
        with polls.slot() as c:
            assert (a, b, c) == (True, True, False)
        assert polls.waiting == 2 and polls.refused == 1
    with polls.slot() as d:
        assert d and polls.waiting == 1
    assert polls.waiting == 0


# -- [http] settings ----------------------------------------------------------------
MINIMAL = {"node_id": "n1", "group": "g", "data_dir": "d",
           "members": {"n1": {"http_url": "http://127.0.0.1:1", "raft_addr": "127.0.0.1:2"}}}


def test_http_table_is_read_and_defaults_are_documented_values() -> None:
    assert config_mod.from_mapping(MINIMAL).http == HttpSettings()
    cfg = config_mod.from_mapping({**MINIMAL, "http": {"max_long_polls": 8, "header_timeout_ms": 500}})
    assert (cfg.http.max_long_polls, cfg.http.header_timeout_ms, cfg.http.max_json_depth) == (8, 500, 32)


@pytest.mark.parametrize("table,message", [
    ({"max_connections": 0}, "http.max_connections: must be at least 1"),
    ({"max_json_depth": "32"}, "http.max_json_depth: expected"),
    ({"nope": 1}, "unknown http setting(s): nope"),
])
def test_bad_http_settings_are_one_line_errors(table: dict[str, object], message: str) -> None:
    with pytest.raises(ValueError, match=message.replace("(", r"\(").replace(")", r"\)")):
        config_mod.from_mapping({**MINIMAL, "http": table})
