"""Standard input as lines, for ``raftmq produce`` without BODY: a daemon
thread does the blocking reads (they must never stall the event loop) and
hands the lines to the loop in chunks, at most a few chunks ahead."""

from __future__ import annotations

import asyncio
import threading
from typing import IO, AsyncIterator

PRODUCE_CHUNK_LINES = 1024  # stdin lines handed to the producer at a time (its batch size)
PRODUCE_CHUNKS_IN_FLIGHT = 8  # chunks sent and not yet answered; bounds memory on a large stdin


def split_lines(pending: bytes, data: bytes) -> tuple[list[bytes], bytes]:
    """Complete lines of ``pending + data`` (without ``\\n`` or ``\\r\\n``; empty
    lines dropped) and the incomplete rest."""
    *lines, rest = (pending + data).split(b"\n")
    return [ln[:-1] if ln.endswith(b"\r") else ln for ln in lines if ln and ln != b"\r"], rest


class StdinLines:
    """The lines of a binary stream, read by a daemon thread (a blocking read
    must never stall the event loop) and handed to the loop in chunks as they
    arrive: a pipe gives big chunks, a terminal a line at a time. At most
    ``max_chunks`` chunks wait unconsumed, so a huge input is not read ahead."""

    def __init__(self, stream: IO[bytes], chunk_lines: int = PRODUCE_CHUNK_LINES,
                 max_chunks: int = PRODUCE_CHUNKS_IN_FLIGHT) -> None:
        self._stream = stream
        self._chunk_lines = chunk_lines
        self._room = threading.Semaphore(max_chunks)
        self._queue: asyncio.Queue[list[bytes] | BaseException | None] = asyncio.Queue()
        self._loop = asyncio.get_running_loop()
        threading.Thread(target=self._read, name="raftmq-stdin", daemon=True).start()

    def _put(self, item: list[bytes] | BaseException | None) -> None:
        self._room.acquire()
        self._loop.call_soon_threadsafe(self._queue.put_nowait, item)

    def _read(self) -> None:
        read = getattr(self._stream, "read1", None) or self._stream.read
        rest = b""
        try:
            while True:
                data = read(1 << 16)
                if not data:
                    break
                lines, rest = split_lines(rest, data)
                for i in range(0, len(lines), self._chunk_lines):
                    self._put(lines[i:i + self._chunk_lines])
            if rest.rstrip(b"\r"):
                self._put([rest.rstrip(b"\r")])
            self._put(None)
        except RuntimeError:  # the loop is closed: the command has ended
            return
        except OSError as exc:
            try:
                self._put(exc)
            except RuntimeError:
                return

    async def chunks(self) -> AsyncIterator[list[bytes]]:
        while True:
            item = await self._queue.get()
            self._room.release()
            if item is None:
                return
            if isinstance(item, BaseException):
                raise item
            yield item
