"""How the commands print: messages, send results and tables for a human
(one line per message, whatever its body holds), or JSON for scripts (the
HTTP API's form; one object per line for streams)."""

from __future__ import annotations

import base64
import json
from datetime import datetime, timezone
from typing import Any, Sequence

import click

from raftmq.client.consumer import ReceivedMessage
from raftmq.client.producer import SendResult


def emit(lines: Sequence[str]) -> None:
    """Write lines to stdout in one write (one syscall per batch, not per message)."""
    if lines:
        click.echo("\n".join(lines))


def body_text(body: bytes) -> str:
    """A body for a human: the text with control characters escaped (so a
    message stays on one line), or ``base64:...`` when it is not UTF-8."""
    try:
        text = body.decode("utf-8")
    except UnicodeDecodeError:
        return "base64:" + base64.b64encode(body).decode("ascii")
    if text.isprintable():
        return text
    return "".join(c if c.isprintable() else c.encode("unicode_escape").decode("ascii") for c in text)


def message_json(m: ReceivedMessage) -> dict[str, Any]:
    """A message as the HTTP API's JSON has it: ``body`` if UTF-8, else ``body_b64``."""
    d: dict[str, Any] = {"topic": m.topic, "queue_id": m.queue_id, "queue_offset": m.queue_offset,
                         "msg_id": m.msg_id, "tags": m.tags, "keys": list(m.keys),
                         "properties": dict(m.properties), "born_ts": m.born_ts, "store_ts": m.store_ts}
    try:
        d["body"] = m.body.decode("utf-8")
    except UnicodeDecodeError:
        d["body_b64"] = base64.b64encode(m.body).decode("ascii")
    return d


def message_line(m: ReceivedMessage, with_topic: bool = False) -> str:
    """``queue=0 offset=5 tags=T keys=a,b msg_id=...  body`` (empty fields left out)."""
    fields = [f"topic={m.topic}"] if with_topic else []
    fields += [f"queue={m.queue_id}", f"offset={m.queue_offset}"]
    if m.tags:
        fields.append(f"tags={m.tags}")
    if m.keys:
        fields.append("keys=" + ",".join(m.keys))
    if m.properties:
        fields.append("properties=" + ",".join(f"{k}={v}" for k, v in sorted(m.properties.items())))
    fields.append(f"msg_id={m.msg_id}")
    return " ".join(fields) + "  " + body_text(m.body)


def format_message(m: ReceivedMessage, as_json: bool, with_topic: bool = False) -> str:
    """One message on one line: JSON with ``as_json``, else ``message_line``."""
    return json.dumps(message_json(m)) if as_json else message_line(m, with_topic)


def format_ts(ts_ms: int) -> str:
    """A timestamp in ms as local ISO time with the ms after it; ``-`` for 0 (none)."""
    if not ts_ms:
        return "-"
    local = datetime.fromtimestamp(ts_ms / 1000, timezone.utc).astimezone()
    return f"{local.isoformat(timespec='milliseconds')} ({ts_ms})"


def message_block(m: ReceivedMessage) -> list[str]:
    """One message in full, a field per line (``message get``)."""
    rows = [("msg_id", m.msg_id), ("topic", m.topic), ("queue", str(m.queue_id)), ("offset", str(m.queue_offset)),
            ("tags", m.tags or "-"), ("keys", ",".join(m.keys) or "-"),
            ("properties", ",".join(f"{k}={v}" for k, v in sorted(m.properties.items())) or "-"),
            ("born", format_ts(m.born_ts)), ("stored", format_ts(m.store_ts)), ("size", f"{len(m.body)} bytes"),
            ("body", body_text(m.body))]
    return [f"{name:<10}  {value}" for name, value in rows]


def send_result_line(r: SendResult, as_json: bool) -> str:
    """Where a message was stored: ``queue=3 offset=41 msg_id=...`` or the same as JSON."""
    if as_json:
        return json.dumps({"queue_id": r.queue_id, "queue_offset": r.queue_offset, "msg_id": r.msg_id})
    return f"queue={r.queue_id} offset={r.queue_offset} msg_id={r.msg_id}"


def table(cols: Sequence[str], rows: Sequence[dict[str, Any]]) -> list[str]:
    """Left-aligned columns; ``None`` shows as ``-``."""
    cells = [["-" if r.get(c) is None else str(r.get(c)) for c in cols] for r in rows]
    widths = [max([len(c)] + [len(row[i]) for row in cells]) for i, c in enumerate(cols)]
    return ["  ".join(v.ljust(w) for v, w in zip(row, widths)).rstrip() for row in [list(cols), *cells]]
