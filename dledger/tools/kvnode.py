"""A demo dledger node: one ``DLedger`` with a small deterministic key-value
state machine and a client listener, run as its own process. Used by the
integration tests (real processes, SIGKILL, restart) and the log benchmark.

    python -m raftmq.dledger.tools.kvnode --id n1 --group g \\
        --peers n1=127.0.0.1:7001,n2=127.0.0.1:7002,n3=127.0.0.1:7003 \\
        --client-addr 127.0.0.1:8001 --data-dir DIR [--flush async|sync] [--bootstrap]

``--bootstrap`` marks the first start of a new group: only then may a node on
an empty data directory vote (``NodeConfig.bootstrap``).

Client protocol (``--client-addr``): a stream of frames both ways, each a
4-byte big-endian length followed by that many bytes of msgpack. Requests are
pipelined: a client may send many before reading any reply, and replies come
back in completion order, matched by the request id the client chose.

| request                           | replies                                        |
|-----------------------------------|------------------------------------------------|
| ``[id, "propose", payload]``      | ``[id, "ok", index]``                          |
|                                   | ``[id, "not_leader", leader_id or None]``      |
|                                   | ``[id, "lost", message]`` (outcome unknown)    |
|                                   | ``[id, "dropped", message]`` (never commits)   |
|                                   | ``[id, "error", message]`` (node stopping)     |
| ``[id, "status"]``                | ``[id, "ok", status().to_dict() + extras]``    |
| ``[id, "state"]``                 | ``[id, "ok", {"applied", "last_index", "digest"}]`` |
| ``[id, "state", {"keys": true}]`` | the same plus ``"keys"``: every key applied    |

A malformed frame gets ``[id or None, "bad_request", message]``; a frame
longer than ``MAX_FRAME_BYTES`` closes the connection.

``KvClient`` at the end of the module speaks this protocol (asyncio).
"""

from __future__ import annotations

import asyncio
import functools
import logging
import signal
import struct
import sys
import zlib
from typing import Any, Callable, Final, cast

import click
import msgpack

from raftmq.dledger.errors import DLedgerError, LeadershipLost, NotLeader, ProposalDropped
from raftmq.client.local.tool_command import LOG_LEVELS, ToolCommand
from raftmq.dledger.runtime import DLedger, NodeConfig, parse_addr

log = logging.getLogger(__name__)

MAX_FRAME_BYTES: Final = 64 << 20
_LEN: Final = 4


# ---------------------------------------------------------------------------
# The state machine
# ---------------------------------------------------------------------------
class KvStateMachine:
    """A deterministic key-value map with a digest of everything applied.

    A payload that is msgpack ``[key, value]`` (key a str, bytes or int) sets
    the key; any other payload is only counted. Every payload, whatever it is,
    advances ``applied``, ``last_index`` and ``digest`` (a CRC32 chained over
    the payloads in apply order), so two replicas that applied the same log
    agree on all three.
    """

    __slots__ = ("applied", "last_index", "digest", "kv")

    def __init__(self) -> None:
        self.applied = 0
        self.last_index = 0
        self.digest = 0
        self.kv: dict[Any, Any] = {}

    def apply(self, index: int, payload: bytes, position: int) -> None:
        self.applied += 1
        self.last_index = index
        self.digest = zlib.crc32(payload, self.digest)
        # 0x92 is a msgpack array of two: only then is it worth decoding.
        if payload[:1] == b"\x92":
            try:
                key, value = msgpack.unpackb(payload, raw=False)
            except (ValueError, TypeError, msgpack.UnpackException):
                return
            if isinstance(key, (str, bytes, int)):
                self.kv[key] = value

    def snapshot(self) -> bytes:
        data: bytes = msgpack.packb([self.applied, self.last_index, self.digest, list(self.kv.items())])
        return data

    def restore(self, data: bytes) -> None:
        applied, last_index, digest, items = msgpack.unpackb(data, raw=False, strict_map_key=False)
        self.applied, self.last_index, self.digest = applied, last_index, digest
        self.kv = {k: v for k, v in items}

    def describe(self, with_keys: bool = False) -> dict[str, Any]:
        out: dict[str, Any] = {"applied": self.applied, "last_index": self.last_index, "digest": self.digest}
        if with_keys:
            out["keys"] = list(self.kv)
        return out


# ---------------------------------------------------------------------------
# Framing
# ---------------------------------------------------------------------------
_HEADER = struct.Struct(">I")


def encode_frame(obj: Any, pack: Callable[[Any], bytes] = msgpack.packb) -> bytes:
    """One frame. Hot paths pass their own ``msgpack.Packer().pack`` (a
    ``packb`` call builds a new Packer each time: twice the cost)."""
    body = pack(obj)
    return _HEADER.pack(len(body)) + body


class FrameReader:
    """Splits a byte stream into frame bodies. Pure: bytes in, bodies out."""

    __slots__ = ("_buf",)

    def __init__(self) -> None:
        self._buf = bytearray()

    def feed(self, data: bytes) -> list[bytearray]:
        """Returns the complete frame bodies; raises ValueError on an oversized frame."""
        buf = self._buf
        buf += data
        out = []
        pos = 0
        end = len(buf)
        unpack_from = _HEADER.unpack_from
        while end - pos >= _LEN:
            (size,) = unpack_from(buf, pos)
            if size > MAX_FRAME_BYTES:
                raise ValueError(f"frame of {size} bytes exceeds the limit of {MAX_FRAME_BYTES}")
            stop = pos + _LEN + size
            if stop > end:
                break
            out.append(buf[pos + _LEN : stop])
            pos = stop
        if pos:
            del buf[:pos]
        return out


class _BatchedWriter:
    """Gathers the frames written during one loop iteration into one write."""

    __slots__ = ("_transport", "_out", "_scheduled", "_loop")

    def __init__(self, transport: asyncio.Transport, loop: asyncio.AbstractEventLoop) -> None:
        self._transport = transport
        self._out: list[bytes] = []
        self._scheduled = False
        self._loop = loop

    def write(self, frame: bytes, now: bool = False) -> None:
        """Queue ``frame``; with ``now``, write it (and whatever is queued) at
        once instead of at the end of the loop iteration."""
        self._out.append(frame)
        if now:
            self._flush()
        elif not self._scheduled:
            self._scheduled = True
            self._loop.call_soon(self._flush)

    def _flush(self) -> None:
        self._scheduled = False  # a scheduled call that finds nothing left does nothing
        out, self._out = self._out, []
        if out and not self._transport.is_closing():
            self._transport.write(b"".join(out))


# ---------------------------------------------------------------------------
# The server side
# ---------------------------------------------------------------------------
class _ClientConnection(asyncio.Protocol):
    def __init__(self, server: KvServer) -> None:
        self._server = server
        self._reader = FrameReader()
        self._unanswered = 0  # requests read and not yet answered (each gets exactly one reply)
        self._writer: _BatchedWriter | None = None
        self._transport: asyncio.Transport | None = None

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self._transport = cast(asyncio.Transport, transport)  # uvloop's is not a subclass
        self._writer = _BatchedWriter(transport, asyncio.get_running_loop())
        self._server.connections.add(self)

    def connection_lost(self, exc: Exception | None) -> None:
        self._server.connections.discard(self)

    # A client that sends but does not read would make us buffer its answers
    # without bound: stop reading its requests while its answers back up.
    def pause_writing(self) -> None:
        if self._transport is not None:
            self._transport.pause_reading()

    def resume_writing(self) -> None:
        if self._transport is not None and not self._transport.is_closing():
            self._transport.resume_reading()

    def close(self) -> None:
        if self._transport is not None:
            self._transport.close()

    def data_received(self, data: bytes) -> None:
        try:
            bodies = self._reader.feed(data)
        except ValueError as exc:
            log.warning("client frame rejected, closing the connection: %s", exc)
            assert self._transport is not None
            self._transport.close()
            return
        self._unanswered += len(bodies)
        handle = self._server.handle
        reply = self._reply
        for body in bodies:
            handle(body, reply)

    def _reply(self, frame: bytes) -> None:
        self._unanswered -= 1
        if self._writer is not None:
            # The last answer the client waits for goes out at once (one loop
            # iteration sooner: latency); answers with more to come are
            # gathered into one write per iteration (throughput).
            self._writer.write(frame, now=self._unanswered == 0)


class KvServer:
    """The client listener of one node: decodes requests and calls the node."""

    def __init__(self, node: DLedger, sm: KvStateMachine, client_addr: str) -> None:
        self._node = node
        self._sm = sm
        self.client_addr = client_addr
        self.connections: set[_ClientConnection] = set()
        self._frame = functools.partial(encode_frame, pack=msgpack.Packer().pack)
        self._server: asyncio.base_events.Server | None = None

    async def start(self) -> None:
        host, port = parse_addr(self.client_addr)
        loop = asyncio.get_running_loop()
        self._server = await loop.create_server(lambda: _ClientConnection(self), host, port, reuse_address=True)

    async def stop(self) -> None:
        if self._server is not None:
            self._server.close()
        for c in list(self.connections):
            c.close()
        if self._server is not None:
            await self._server.wait_closed()

    def handle(self, body: bytes | bytearray, reply: Callable[[bytes], None]) -> None:
        frame = self._frame
        try:
            req = msgpack.unpackb(body, raw=False)
            rid, op = req[0], req[1]
        except Exception as exc:  # any undecodable frame is the client's fault
            reply(frame([None, "bad_request", f"undecodable request: {exc!r}"]))
            return
        if op == "propose":
            payload = req[2] if len(req) > 2 else None
            if not isinstance(payload, bytes):
                reply(frame([rid, "bad_request", "propose needs a bytes payload"]))
                return
            self._propose(rid, payload, reply)
        elif op == "status":
            reply(frame([rid, "ok", self.status()]))
        elif op == "state":
            opts = req[2] if len(req) > 2 and isinstance(req[2], dict) else {}
            reply(frame([rid, "ok", self._sm.describe(bool(opts.get("keys")))]))
        else:
            reply(frame([rid, "bad_request", f"unknown operation {op!r}"]))

    def status(self) -> dict[str, Any]:
        st = self._node.status().to_dict()
        st["client_addr"] = self.client_addr
        st["sm_applied"] = self._sm.applied
        failed = self._node.failed
        st["failed"] = repr(failed) if failed is not None else None
        return st

    def _propose(self, rid: Any, payload: bytes, reply: Callable[[bytes], None]) -> None:
        frame = self._frame

        def done(result: tuple[int, Any] | None, exc: BaseException | None) -> None:
            if result is not None:
                reply(frame([rid, "ok", result[0]]))
            elif isinstance(exc, LeadershipLost):
                reply(frame([rid, "lost", str(exc)]))
            elif isinstance(exc, ProposalDropped):
                reply(frame([rid, "dropped", str(exc)]))
            else:
                reply(frame([rid, "error", repr(exc)]))

        try:
            # No future or task per proposal: see DLedger.propose_with_callback.
            self._node.propose_with_callback(payload, done)
        except NotLeader as exc:
            reply(frame([rid, "not_leader", exc.leader_id]))
        except DLedgerError as exc:
            reply(frame([rid, "error", repr(exc)]))


# ---------------------------------------------------------------------------
# The process
# ---------------------------------------------------------------------------
def parse_peers(text: str) -> dict[str, str]:
    """``"n1=host:port,n2=host:port"`` to a dict; ValueError names the bad item."""
    peers: dict[str, str] = {}
    for item in text.split(","):
        nid, sep, addr = item.strip().partition("=")
        if not sep or not nid or not addr:
            raise ValueError(f"--peers: bad item {item!r}, expected id=host:port")
        peers[nid] = addr
    return peers


def _peers(ctx: click.Context, param: click.Parameter, value: str) -> dict[str, str]:
    try:
        return parse_peers(value)
    except ValueError as exc:
        raise click.BadParameter(str(exc).removeprefix("--peers: ")) from None


def addr_option(ctx: click.Context, param: click.Parameter, value: str) -> str:
    """click callback: ``value`` must be host:port (the tools' address options)."""
    try:
        parse_addr(value)
    except ValueError as exc:
        raise click.BadParameter(str(exc)) from None
    return value


async def run_node(config: NodeConfig, client_addr: str) -> int:
    sm = KvStateMachine()
    node = DLedger(config, sm)
    server = KvServer(node, sm, client_addr)
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(sig, stop.set)
    await node.start()
    try:
        await server.start()
        log.info("node=%s client listener on %s flush=%s", config.node_id, client_addr, config.flush)
        while not stop.is_set() and node.failed is None:
            try:
                await asyncio.wait_for(stop.wait(), 0.5)
            except asyncio.TimeoutError:
                pass
    finally:
        await server.stop()
        await node.stop()
    if node.failed is not None:
        log.critical("node=%s stopped after a fatal error: %r", config.node_id, node.failed)
        return 1
    log.info("node=%s stopped", config.node_id)
    return 0


@click.command("python -m raftmq.dledger.tools.kvnode", cls=ToolCommand, help=__doc__.split("\n\n")[0],
               context_settings={"help_option_names": ["-h", "--help"]})
@click.option("--id", "node_id", required=True, help="This node's id (one of --peers).")
@click.option("--group", required=True, help="Raft group name.")
@click.option("--peers", required=True, callback=_peers,
              help="Every member with its Raft address: id=host:port,id=host:port,...")
@click.option("--client-addr", required=True, callback=addr_option, help="host:port of the client listener (protocol above).")
@click.option("--data-dir", required=True, type=click.Path(file_okay=False), help="Where the node keeps its log.")
@click.option("--flush", type=click.Choice(["async", "sync"]), default="async", show_default=True,
              help="async: an entry counts once written, fsync in the background; sync: once fsync'ed.")
@click.option("--segment-bytes", type=click.IntRange(min=1), default=1 << 30, show_default=True,
              help="Size of one log segment file in bytes.")
@click.option("--bootstrap", is_flag=True,
              help="The first start of a new group: an empty data directory may vote (see NodeConfig.bootstrap).")
@click.option("--log-level", type=LOG_LEVELS, default="INFO", show_default=True, help="Logging level (stderr).")
@click.option("--profile", metavar="FILE", default=None, help="Run under cProfile and write pstats to FILE on exit.")
def main(node_id: str, group: str, peers: dict[str, str], client_addr: str, data_dir: str, flush: str,
         segment_bytes: int, bootstrap: bool, log_level: str, profile: str | None) -> None:
    try:
        config = NodeConfig(node_id=node_id, group=group, peers=peers, data_dir=data_dir, flush=flush,
                            segment_bytes=segment_bytes, bootstrap=bootstrap)
    except ValueError as exc:
        raise click.UsageError(str(exc)) from None
    logging.basicConfig(
        level=getattr(logging, log_level.upper()),
        stream=sys.stderr,
        format="%(asctime)s %(levelname)s %(name)s %(message)s",
    )
    if profile:
        import cProfile

        prof = cProfile.Profile()
        try:
            sys.exit(prof.runcall(asyncio.run, run_node(config, client_addr)))
        finally:
            prof.dump_stats(profile)
    sys.exit(asyncio.run(run_node(config, client_addr)))


# ---------------------------------------------------------------------------
# The client
# ---------------------------------------------------------------------------
class _ClientProtocol(asyncio.Protocol):
    def __init__(self, client: KvClient) -> None:
        self._client = client
        self._reader = FrameReader()

    def data_received(self, data: bytes) -> None:
        try:
            bodies = self._reader.feed(data)
        except ValueError as exc:
            self._client._lost(ConnectionError(str(exc)))
            return
        on_reply = self._client._on_reply
        for body in bodies:
            on_reply(msgpack.unpackb(body, raw=False))

    def connection_lost(self, exc: Exception | None) -> None:
        self._client._lost(ConnectionError(f"connection to {self._client.addr} lost: {exc!r}"))


class KvClient:
    """An asyncio client of one node's client listener, pipelined.

    ``propose`` answers ``(kind, value)``: ``("ok", index)``,
    ``("not_leader", leader_id or None)``, ``("lost", msg)``, ``("dropped",
    msg)`` or ``("error", msg)``. A broken connection raises ``ConnectionError``
    (outcome unknown for the proposals in flight). ``send`` is the callback
    form used by the benchmark: no future, no task per request.
    """

    def __init__(self, addr: str) -> None:
        self.addr = addr
        self._transport: asyncio.Transport | None = None
        self._writer: _BatchedWriter | None = None
        self._callbacks: dict[int, Callable[[str, Any], None]] = {}
        self._next_id = 0
        self._closed_exc: Exception | None = None
        self._frame = functools.partial(encode_frame, pack=msgpack.Packer().pack)

    async def connect(self, timeout_s: float = 5.0) -> KvClient:
        host, port = parse_addr(self.addr)
        loop = asyncio.get_running_loop()
        transport, _ = await asyncio.wait_for(
            loop.create_connection(lambda: _ClientProtocol(self), host, port), timeout_s
        )
        self._transport = cast(asyncio.Transport, transport)  # uvloop's is not a subclass
        self._writer = _BatchedWriter(transport, loop)
        self._closed_exc = None
        return self

    async def __aenter__(self) -> KvClient:
        return await self.connect()

    async def __aexit__(self, *exc: object) -> None:
        await self.close()

    async def close(self) -> None:
        if self._transport is not None:
            self._transport.close()
        self._lost(ConnectionError("client closed"))

    @property
    def connected(self) -> bool:
        return self._transport is not None and not self._transport.is_closing()

    @property
    def in_flight(self) -> int:
        return len(self._callbacks)

    def send(self, request: list[Any], callback: Callable[[str, Any], None]) -> None:
        """Send ``[op, *args]``; ``callback(kind, value)`` gets the reply, or
        ``("connection_lost", exc)`` if the connection breaks first."""
        if self._writer is None or self._closed_exc is not None:
            raise self._closed_exc or ConnectionError("not connected")
        self._next_id += 1
        rid = self._next_id
        alone = not self._callbacks  # nothing else in flight: send now rather than at the end of the iteration
        self._callbacks[rid] = callback
        self._writer.write(self._frame([rid, *request]), now=alone)

    async def request(self, request: list[Any]) -> tuple[str, Any]:
        fut: asyncio.Future[tuple[str, Any]] = asyncio.get_running_loop().create_future()

        def done(kind: str, value: Any) -> None:
            if fut.done():
                return
            if kind == "connection_lost":
                fut.set_exception(value)
            else:
                fut.set_result((kind, value))

        self.send(request, done)
        return await fut

    async def propose(self, payload: bytes) -> tuple[str, Any]:
        return await self.request(["propose", payload])

    async def status(self) -> dict[str, Any]:
        kind, value = await self.request(["status"])
        if kind != "ok":
            raise RuntimeError(f"status failed: {kind} {value}")
        return value  # type: ignore[no-any-return]

    async def state(self, keys: bool = False) -> dict[str, Any]:
        kind, value = await self.request(["state", {"keys": keys}])
        if kind != "ok":
            raise RuntimeError(f"state failed: {kind} {value}")
        return value  # type: ignore[no-any-return]

    # -- protocol callbacks -------------------------------------------------
    def _on_reply(self, reply: list[Any]) -> None:
        cb = self._callbacks.pop(reply[0], None)
        if cb is not None:
            cb(reply[1], reply[2] if len(reply) > 2 else None)

    def _lost(self, exc: Exception) -> None:
        if self._closed_exc is None:
            self._closed_exc = exc
        callbacks, self._callbacks = self._callbacks, {}
        for cb in callbacks.values():
            cb("connection_lost", exc)
        if self._transport is not None and not self._transport.is_closing():
            self._transport.close()


if __name__ == "__main__":
    main()
