"""The blocking wrappers' shared machinery (client/sync.py): the async object
lives on a private loop in its own thread; a failed start or a close leaves
no thread behind; calls return results and raise errors in the caller."""

from __future__ import annotations

import asyncio
import threading

import pytest

from raftmq.client import SyncAdmin, SyncProducer, SyncPullConsumer
from raftmq.client.sync import SyncClient


class Fake:
    """An async client that records which thread ran each step."""

    def __init__(self, fail_start: bool = False, fail_close: bool = False) -> None:
        self.fail_start, self.fail_close = fail_start, fail_close
        self.threads: dict[str, str] = {"made": threading.current_thread().name}
        self.closed = False

    async def start(self) -> None:
        self.threads["start"] = threading.current_thread().name
        if self.fail_start:
            raise ConnectionError("no broker")

    async def close(self) -> None:
        self.closed = True
        self.threads["close"] = threading.current_thread().name
        if self.fail_close:
            raise RuntimeError("close failed")

    async def echo(self, value: int) -> int:
        await asyncio.sleep(0)
        if value < 0:
            raise ValueError("negative")
        return value


def alive(name: str) -> bool:
    return any(t.name == name for t in threading.enumerate())


def test_the_object_is_made_started_used_and_closed_on_its_own_thread() -> None:
    with SyncClient("sync-test-a", Fake) as s:
        assert s._run(s._client.echo(7)) == 7
        assert s._submit(s._client.echo(8)).result(5) == 8
        with pytest.raises(ValueError, match="negative"):
            s._run(s._client.echo(-1))
        fake = s._client
    assert fake.closed and set(fake.threads.values()) == {"sync-test-a"}
    assert not alive("sync-test-a")


def test_a_failed_start_raises_and_stops_the_thread() -> None:
    with pytest.raises(ConnectionError, match="no broker"):
        SyncClient("sync-test-b", lambda: Fake(fail_start=True))
    assert not alive("sync-test-b")


def test_a_failed_close_still_stops_the_thread() -> None:
    s = SyncClient("sync-test-c", lambda: Fake(fail_close=True))
    with pytest.raises(RuntimeError, match="close failed"):
        s.close()
    assert not alive("sync-test-c")


@pytest.mark.parametrize("make", [
    lambda: SyncProducer(["http://127.0.0.1:9"]),
    lambda: SyncPullConsumer(["http://127.0.0.1:9"], "g", "t"),
    lambda: SyncAdmin(["http://127.0.0.1:9"]),
])
def test_each_wrapper_is_a_sync_client_that_closes_cleanly(make: object) -> None:
    before = {t.name for t in threading.enumerate()}
    w = make()  # type: ignore[operator]
    assert isinstance(w, SyncClient)
    w.close()
    assert {t.name for t in threading.enumerate()} <= before


def test_sync_admin_offers_the_admins_methods_but_not_private_names() -> None:
    with SyncAdmin(["http://127.0.0.1:9"]) as a:
        assert a.list_topics.__doc__ and "sorted by name" in a.list_topics.__doc__
        with pytest.raises(AttributeError):
            a._missing  # noqa: B018
