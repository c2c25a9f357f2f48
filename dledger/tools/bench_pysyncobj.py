"""The benchmark's baseline node: one pysyncobj (0.3.17) process replicating the
same payloads as ``dledger.tools.kvnode``, behind the same client protocol, so that
``dledger.tools.bench`` drives both engines with the same client.

    python -m raftmq.dledger.tools.bench_pysyncobj --self 127.0.0.1:7001 \\
        --partners 127.0.0.1:7002,127.0.0.1:7003 --client-addr 127.0.0.1:8001 --data-dir DIR

The replicated object has one ``@replicated`` method, ``append(data)``, that
counts the payload and chains its CRC32 (like ``KvStateMachine`` for raw
payloads). The Raft log is kept in a pysyncobj journal file (``journalFile``:
an mmap'ed file, written to the OS but never fsync'ed: the equivalent of
dledger's ``async`` flush; pysyncobj has no fsync option).

The client listener speaks ``dledger.tools.kvnode``'s frames (4-byte big-endian
length + msgpack) and answers ``propose``, ``status`` and ``state``. It runs in
threads next to pysyncobj's own: one reader thread per connection calls
``append(payload, callback=...)``; pysyncobj calls the callback from its tick
thread once the entry is committed and applied, and a writer thread per
connection sends the gathered replies in one write.

This module is only ever run as a separate process by the benchmark; it is
the one place under ``dledger/`` that imports pysyncobj (the ``bench`` extra),
and it does so inside ``main``.
"""

from __future__ import annotations

import logging
import os
import signal
import socket
import sys
import threading
import zlib
from typing import Any

import click
import msgpack

from raftmq.client.local.tool_command import LOG_LEVELS, ToolCommand
from raftmq.dledger.tools.kvnode import FrameReader, addr_option, encode_frame

log = logging.getLogger(__name__)


class _Connection:
    """One client connection: a reader thread and a writer thread."""

    def __init__(self, sock: socket.socket, obj: Any, fail_reason: Any) -> None:
        self._sock = sock
        self._obj = obj
        self._fail = fail_reason
        self._out: list[bytes] = []
        self._cond = threading.Condition()
        self._closed = False
        threading.Thread(target=self._read_loop, daemon=True).start()
        threading.Thread(target=self._write_loop, daemon=True).start()

    def _reply(self, frame: bytes) -> None:
        with self._cond:
            self._out.append(frame)
            self._cond.notify()

    def _write_loop(self) -> None:
        while True:
            with self._cond:
                while not self._out and not self._closed:
                    self._cond.wait()
                if self._closed:
                    return
                out, self._out = self._out, []
            try:
                self._sock.sendall(b"".join(out))
            except OSError:
                self._close()
                return

    def _close(self) -> None:
        with self._cond:
            self._closed = True
            self._cond.notify()
        try:
            self._sock.close()
        except OSError:
            pass

    def _read_loop(self) -> None:
        reader = FrameReader()
        try:
            while True:
                data = self._sock.recv(1 << 16)
                if not data:
                    break
                for body in reader.feed(data):
                    self._handle(msgpack.unpackb(body, raw=False))
        except (OSError, ValueError) as exc:
            log.info("client connection closed: %r", exc)
        finally:
            self._close()

    def _handle(self, req: list[Any]) -> None:
        rid, op = req[0], req[1]
        obj = self._obj
        if op == "propose":
            fail = self._fail

            def done(result: Any, err: Any, rid: Any = rid) -> None:
                if err == fail.SUCCESS:
                    self._reply(encode_frame([rid, "ok", result]))
                elif err in (fail.NOT_LEADER, fail.MISSING_LEADER):
                    self._reply(encode_frame([rid, "not_leader", None]))
                elif err in (fail.LEADER_CHANGED, fail.UNKNOWN_OUTCOME):
                    self._reply(encode_frame([rid, "lost", f"pysyncobj fail reason {err}"]))
                else:
                    self._reply(encode_frame([rid, "dropped", f"pysyncobj fail reason {err}"]))

            obj.append(req[2], callback=done)
        elif op == "status":
            st = obj.getStatus()
            leader = st.get("leader")
            self_node = st.get("self")
            role = {0: "follower", 1: "candidate", 2: "leader"}.get(st.get("state"), str(st.get("state")))
            self._reply(encode_frame([rid, "ok", {
                "node_id": str(self_node),
                "role": role,
                "leader_id": str(leader) if leader is not None else None,
                "term": st.get("raft_term"),
                "commit_index": st.get("commit_idx"),
                "applied_index": st.get("last_applied"),
                "has_quorum": bool(st.get("has_quorum")),
            }]))
        elif op == "state":
            self._reply(encode_frame([rid, "ok", {"applied": obj.count, "last_index": obj.raftLastApplied,
                                                   "digest": obj.crc}]))
        else:
            self._reply(encode_frame([rid, "bad_request", f"unknown operation {op!r}"]))


def _partners(ctx: click.Context, param: click.Parameter, value: str) -> list[str]:
    addrs = [a.strip() for a in value.split(",") if a.strip()]
    for a in addrs:
        addr_option(ctx, param, a)
    return addrs


@click.command("python -m raftmq.dledger.tools.bench_pysyncobj", cls=ToolCommand,
               help="A pysyncobj node for the log benchmark's baseline, with the demo KV node's client protocol.",
               context_settings={"help_option_names": ["-h", "--help"]})
@click.option("--self", "self_addr", required=True, callback=addr_option, help="This node's Raft address host:port.")
@click.option("--partners", required=True, callback=_partners,
              help="The other nodes' Raft addresses, comma-separated host:port.")
@click.option("--client-addr", required=True, callback=addr_option, help="host:port of the client listener.")
@click.option("--data-dir", required=True, type=click.Path(file_okay=False),
              help="Where pysyncobj keeps its journal and dump files.")
@click.option("--no-batch", is_flag=True,
              help="appendEntriesUseBatch=False: send each command at once instead of every appendEntriesPeriod.")
@click.option("--log-level", type=LOG_LEVELS, default="WARNING", show_default=True, help="Logging level (stderr).")
def main(self_addr: str, partners: list[str], client_addr: str, data_dir: str, no_batch: bool,
         log_level: str) -> None:
    try:
        from pysyncobj import FAIL_REASON, SyncObj, SyncObjConf, replicated
    except ImportError:
        raise click.ClickException("pysyncobj is not installed (pip install 'raftmq[bench]')") from None
    logging.basicConfig(level=getattr(logging, log_level.upper()), stream=sys.stderr,
                        format="%(asctime)s %(levelname)s %(name)s %(message)s")

    class LogObj(SyncObj):  # type: ignore[misc]
        def __init__(self, self_addr: str, partners: list[str], conf: Any) -> None:
            self.count = 0
            self.crc = 0
            super().__init__(self_addr, partners, conf)

        @replicated  # type: ignore[untyped-decorator]
        def append(self, data: bytes) -> int:
            self.count += 1
            self.crc = zlib.crc32(data, self.crc)
            return self.count

    os.makedirs(data_dir, exist_ok=True)
    conf = SyncObjConf(
        journalFile=os.path.join(data_dir, "journal"),
        fullDumpFile=os.path.join(data_dir, "dump"),
        appendEntriesUseBatch=not no_batch,
    )
    obj = LogObj(self_addr, partners, conf)

    host, _, port = client_addr.rpartition(":")
    listener = socket.create_server((host, int(port)), reuse_port=False)
    stop = threading.Event()

    def on_signal(signum: int, frame: Any) -> None:
        stop.set()
        try:
            listener.close()
        except OSError:
            pass

    signal.signal(signal.SIGTERM, on_signal)
    signal.signal(signal.SIGINT, on_signal)

    def accept_loop() -> None:
        while not stop.is_set():
            try:
                sock, _ = listener.accept()
            except OSError:
                return
            sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
            _Connection(sock, obj, FAIL_REASON)

    threading.Thread(target=accept_loop, daemon=True).start()
    log.info("pysyncobj node %s client listener on %s", self_addr, client_addr)
    while not stop.wait(0.5):
        pass
    obj.destroy()


if __name__ == "__main__":
    main()
