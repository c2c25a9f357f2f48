"""Request bodies, paths and query strings made safe before any handler sees them.

Pure functions, no aiohttp: bytes or strings in, plain values out, a
``BadRequest`` (400, with its own error code) for anything the broker could
not store or answer without failing later. Three things are refused here,
for every route alike, so that no input reaches a 500:

- **nesting deeper than** ``max_depth`` (``[http] max_json_depth``, default
  32): checked on the raw JSON bytes *before* ``json.loads`` runs, because
  Python's decoder recurses once per level and a body of 100,000 ``[``
  would exhaust the interpreter's stack (``RecursionError``). msgpack's own
  unpacker stops at 1,024 levels; the same limit is then applied to what it
  decoded. Code ``nesting_too_deep``.
- **lone surrogates** (U+D800..U+DFFF) in any string, key or value: JSON may
  write one as the escape ``"\\udc80"``, and such a string cannot be encoded
  as UTF-8, so it would fail when the message is stored. A surrogate *pair*
  is decoded by ``json`` into the one character it stands for and is fine.
  Code ``invalid_string``.
- **integers outside a signed 64-bit integer** (``-2**63 .. 2**63-1``):
  every integer a request carries ends up in a fixed-width field (msgpack in
  the log, offsets, timestamps). Code ``integer_out_of_range``.
"""

from __future__ import annotations

import json
import re
from array import array
from itertools import accumulate
from typing import Any, Final

import msgpack

from raftmq.broker.errors import IntegerOutOfRange, InvalidArgument, InvalidString, MalformedBody, NestingTooDeep

INT64_MIN: Final = -(2**63)
INT64_MAX: Final = 2**63 - 1
# A JSON string token, escapes included; an unterminated one runs to the end
# (so the pattern always matches in one linear pass, however the body ends).
_JSON_STRING = re.compile(rb'"[^"\\]*(?:\\.[^"\\]*)*"?', re.DOTALL)
_NOT_BRACKET = bytes(b for b in range(256) if b not in b"[]{}")
_SIGNS = bytes.maketrans(b"[{]}", b"\x01\x01\xff\xff")  # as signed bytes: +1 opens, -1 closes
_SURROGATE = re.compile("[\ud800-\udfff]")
_DECIMAL = re.compile(r"-?[0-9]+")


def json_depth_within(raw: bytes, max_depth: int) -> bool:
    """Whether the arrays and objects of JSON text ``raw`` nest at most
    ``max_depth`` deep (brackets inside strings do not count).

    Strings are cut out and everything but brackets dropped (C-level regex and
    ``translate``); then the running count of open brackets (``[``/``{`` +1,
    ``]``/``}`` -1) never exceeding ``max_depth`` is the answer. Bracket kinds
    are not matched: a body whose brackets do not match is not JSON, and
    ``json`` refuses it without going deeper than this count.
    """
    signs = _JSON_STRING.sub(b"", raw).translate(None, _NOT_BRACKET).translate(_SIGNS)
    return max(accumulate(array("b", signs)), default=0) <= max_depth


def decode_json(raw: bytes, max_depth: int) -> Any:
    """A JSON body (UTF-8, as RFC 8259 requires), checked as the module docstring says."""
    try:
        text = raw.decode("utf-8")
    except UnicodeDecodeError as exc:
        raise MalformedBody(f"request body is not valid JSON: not UTF-8 ({exc})") from None
    if not json_depth_within(raw, max_depth):
        raise NestingTooDeep(f"request body nests arrays or objects more than {max_depth} deep (max_json_depth)")
    try:
        obj = json.loads(text)
    except ValueError as exc:
        raise MalformedBody(f"request body is not valid JSON: {exc}") from None
    check_values(obj, max_depth)
    return obj


def decode_msgpack(raw: bytes, max_depth: int) -> Any:
    """A msgpack body, checked as the module docstring says (extension types are refused)."""
    try:
        obj = msgpack.unpackb(raw, raw=False, strict_map_key=True)
    except Exception as exc:  # msgpack raises several unrelated types on garbage
        raise MalformedBody(f"request body is not valid msgpack: {exc}") from None
    check_values(obj, max_depth)
    return obj


def check_values(obj: Any, max_depth: int) -> None:
    """Walk a decoded body (iteratively: no recursion to exhaust) and refuse
    nesting over ``max_depth``, lone surrogates and out-of-range integers.
    ``where`` in the messages is the path to the bad value (``messages[0].tags``)."""
    stack: list[tuple[Any, str, int]] = [(obj, "", 0)]
    while stack:
        value, where, depth = stack.pop()
        t = type(value)
        if t is str:
            check_text(value, where or "the body")
        elif t is int:
            if not INT64_MIN <= value <= INT64_MAX:
                raise IntegerOutOfRange(f"{where or 'the body'}: {value} is out of range; integers must fit "
                                        f"in a signed 64-bit integer ({INT64_MIN} .. {INT64_MAX})")
        elif t is list or t is dict:
            if depth >= max_depth:
                raise NestingTooDeep(f"{where or 'the body'}: arrays or objects nest more than {max_depth} deep "
                                     f"(max_json_depth)")
            if t is list:
                stack.extend((v, f"{where}[{i}]", depth + 1) for i, v in enumerate(value))
            else:
                for k, v in value.items():
                    if type(k) is str:
                        check_text(k, f"a key in {where or 'the body'}")
                    stack.append((v, f"{where}.{k}" if where else str(k), depth + 1))
        elif isinstance(value, msgpack.ExtType) or isinstance(value, msgpack.Timestamp):
            raise MalformedBody(f"{where or 'the body'}: msgpack extension types are not accepted")


def check_text(value: str, where: str) -> None:
    """Refuse a string holding a lone surrogate (it has no UTF-8 encoding)."""
    if not value.isascii() and _SURROGATE.search(value):
        raise InvalidString(f"{where}: holds a lone UTF-16 surrogate (such as \\udc80), which is not "
                            f"a character and cannot be stored as UTF-8")


def parse_int(raw: str, what: str) -> int:
    """A decimal integer from a path or query string (ASCII digits, optional
    ``-``), within a signed 64-bit integer."""
    if not _DECIMAL.fullmatch(raw):
        raise InvalidArgument(f"{what} must be an integer, not {raw[:64]!r}")
    value = int(raw) if len(raw) <= 20 else None  # more digits never fit (and int() of very many is refused)
    if value is None or not INT64_MIN <= value <= INT64_MAX:
        raise IntegerOutOfRange(f"{what}: {raw[:64]} is out of range; integers must fit in a signed 64-bit integer")
    return value
