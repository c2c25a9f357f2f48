"""Every error reaches clients in the JSON error model (issue 9, case 7): the
HTTP edge's middleware maps whatever a handler raises, including a storage
failure mid-request, to ``{"error": code, "message": text}`` with a status;
never aiohttp's plain-text 500."""

from __future__ import annotations

import asyncio
import errno
from typing import Any, NoReturn

import msgpack
import pytest
from aiohttp import web
from aiohttp.test_utils import TestClient, TestServer

from raftmq.broker.errors import StorageDamaged, StorageFailed, as_broker_error
from raftmq.broker.http.app import errors_middleware
from raftmq.broker.message import RecordError
from raftmq.broker.store import CorruptStore
from raftmq.dledger import StorageFailure

RAISED: dict[str, BaseException] = {
    "enospc": OSError(errno.ENOSPC, "No space left on device"),
    "eio": OSError(errno.EIO, "Input/output error"),
    "storage_failure": StorageFailure("write to segment 00000000000000000000 at 266 failed: [Errno 28]"),
    "corrupt_store": CorruptStore("consume queue t/0: entry 10 out of order"),
    "record_error": RecordError("record CRC mismatch"),
    "timeout": TimeoutError("read timed out"),
    "bug": ZeroDivisionError("division by zero"),
    "http_bad_request": web.HTTPBadRequest(text="bad header"),
}

EXPECTED = {
    "enospc": (503, "storage_failure"),
    "eio": (503, "storage_failure"),
    "storage_failure": (503, "storage_failure"),
    "corrupt_store": (503, "storage_damaged"),
    "record_error": (503, "storage_damaged"),
    "timeout": (503, "unavailable"),
    "bug": (500, "internal_error"),
    "http_bad_request": (400, "bad_request"),
}


async def answers(name: str, accept: str | None = None) -> tuple[int, str, bytes]:
    async def handler(request: web.Request) -> NoReturn:
        raise RAISED[name]

    app = web.Application(middlewares=[errors_middleware])
    app.router.add_get("/x", handler)
    async with TestClient(TestServer(app)) as client:
        resp = await client.get("/x", headers={"Accept": accept} if accept else {})
        return resp.status, resp.headers.get("Content-Type", ""), await resp.read()


@pytest.mark.parametrize("name", RAISED)
def test_whatever_a_handler_raises_is_answered_in_the_json_error_model(name: str) -> None:
    import json

    status, ctype, raw = asyncio.run(answers(name))
    assert ctype.startswith("application/json"), raw
    body: dict[str, Any] = json.loads(raw)
    assert (status, body["error"]) == EXPECTED[name]
    assert isinstance(body["message"], str) and body["message"]


def test_a_storage_failure_says_what_failed_and_asks_for_a_retry_later() -> None:
    import json

    status, _, raw = asyncio.run(answers("enospc"))
    body = json.loads(raw)
    assert status == 503 and "ENOSPC" in body["message"] and "No space left" in body["message"]


def test_msgpack_clients_get_the_error_model_in_msgpack() -> None:
    status, ctype, raw = asyncio.run(answers("storage_failure", accept="application/msgpack"))
    assert ctype.startswith("application/msgpack")
    assert status == 503 and msgpack.unpackb(raw)["error"] == "storage_failure"


def test_as_broker_error_keeps_broker_errors_and_maps_the_rest_once() -> None:
    e = StorageDamaged("x")
    assert as_broker_error(e) is e
    assert isinstance(as_broker_error(OSError(errno.ENOSPC, "full")), StorageFailed)
    assert isinstance(as_broker_error(CorruptStore("x")), StorageDamaged)
    assert type(as_broker_error(ConnectionResetError())).__name__ == "BrokerError"  # not the disk's fault
