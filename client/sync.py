"""The machinery behind the blocking wrappers (``SyncProducer``,
``SyncPullConsumer``, ``SyncAdmin``): one async client object living on a
private event loop in a daemon thread (``http.LoopThread``).

``SyncClient`` builds the object on that loop and starts it (a failed start
stops the thread again, so nothing leaks), runs each call there while the
caller's thread blocks (``_run``), or hands back a
``concurrent.futures.Future`` (``_submit``), and on ``close`` closes the
object on its loop before stopping the thread. The wrappers only say which
object to build and which of its methods they offer.
"""

from __future__ import annotations

import asyncio
import concurrent.futures
from typing import Any, Callable, Coroutine, Generic, Protocol, Self, TypeVar

from raftmq.client.http import LoopThread

T = TypeVar("T")


class AsyncClient(Protocol):
    """What the wrapped object offers: started once, closed once, both on its own loop."""

    async def start(self) -> None: ...

    async def close(self) -> None: ...


C = TypeVar("C", bound=AsyncClient)


class SyncClient(Generic[C]):
    """A blocking handle on one async client object (see the module docstring).
    Close it, or use it in a ``with`` block."""

    def __init__(self, thread_name: str, make: Callable[[], C]) -> None:
        """``make`` builds the object; it is called on the private loop, since
        aiohttp sessions and asyncio primitives belong to the loop that creates them."""
        self._thread = LoopThread(thread_name)

        async def build() -> C:
            client = make()
            await client.start()
            return client

        try:
            self._client: C = self._thread.run(build())
        except BaseException:
            self._thread.stop()
            raise

    def _run(self, coro: Coroutine[Any, Any, T]) -> T:
        """Run ``coro`` on the private loop and wait for its result (or its exception)."""
        return self._thread.run(coro)

    def _submit(self, coro: Coroutine[Any, Any, T]) -> concurrent.futures.Future[T]:
        """Start ``coro`` on the private loop without waiting for it."""
        return asyncio.run_coroutine_threadsafe(coro, self._thread.loop)

    def close(self) -> None:
        """Close the object on its loop, then stop the loop's thread (even if closing failed)."""
        try:
            self._thread.run(self._client.close())
        finally:
            self._thread.stop()

    def __enter__(self) -> Self:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()
