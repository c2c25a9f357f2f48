"""The workload of a chaos run: clients of the group, each recording every
operation it makes into the run's ``History``. Everything goes through
``client``.

- ``p1`` .. ``pN``: idempotent ``Producer`` s, one send at a time (paced to
  ``rate_per_s``); their duplicates are anomalies.
- ``r1``: a non-idempotent raw sender (``POST .../messages`` through the
  client's transport, no producer id): the transport's retries after a lost
  answer may store a message twice; such duplicates are expected and counted.
- ``steady``: an idempotent producer that sends every ``steady_period_ms``
  without waiting for earlier sends, so that after any fault some send is
  always just starting: its first acknowledgement after a leader kill is the
  failover time.
- a ``PushConsumer`` group (``chaos-push``) of ``push_consumers`` members,
  recording every delivery;
- ``pull``: raw pulls of every queue from a random live node (what each node
  serves is checked against the others), committing its positions for the
  group ``chaos-pull`` (the answers must never go back);
- an observer reading both groups' committed offsets from every live node.

Body of every message: ``<producer>-<n>``, unique in the run; it is also the
message's key, so that lookups by key (the IndexFile) can be checked.
"""

from __future__ import annotations

import asyncio
import logging
import random
from dataclasses import dataclass
from typing import Any, Callable, Final
from urllib.parse import quote

from raftmq.client import Admin, Producer, PushConsumer, ReceivedMessage
from raftmq.client.consumer import commit_offset
from raftmq.client.errors import RaftMQError, Rejected, Timeout
from raftmq.client.http import Transport, TransportConfig

from raftmq.chaos.history import COMMIT, DELIVER, FAIL, INFO, OFFSETS, OK, PULL, SEND, History, Op

log = logging.getLogger(__name__)

TOPIC: Final = "chaos"
QUEUES: Final = 4
PUSH_GROUP: Final = "chaos-push"
PULL_GROUP: Final = "chaos-pull"
STEADY: Final = "steady"
RAW: Final = "r1"
DRAIN_BATCH: Final = 1024  # messages per pull of the final read

Targets = Callable[[], list[tuple[str, str, int]]]  # live, unpaused nodes: (id, http url, incarnation)


@dataclass(slots=True, frozen=True)
class WorkloadConfig:
    producers: int = 3  # idempotent sequential producers p1..pN
    rate_per_s: float = 100.0  # sends per second of each of p1..pN and r1 (0: as fast as they go)
    raw_sender: bool = True  # r1, the non-idempotent sender
    steady_period_ms: float = 10.0  # the steady sender starts one send this often
    steady_max_outstanding: int = 1000
    push_consumers: int = 2  # members of the push group (0: none)
    pull: bool = True  # the raw puller and committer
    send_deadline_ms: int = 10_000  # one send keeps retrying through faults this long
    request_timeout_ms: int = 2_000  # one attempt at one node
    observe_interval_ms: int = 500
    seed: int = 0

    def __post_init__(self) -> None:
        if self.producers < 0 or self.push_consumers < 0:
            raise ValueError("producers and push_consumers: must not be negative")
        if self.rate_per_s < 0:
            raise ValueError("rate_per_s: must not be negative")
        if self.steady_period_ms <= 0:
            raise ValueError("steady_period_ms: must be positive")


def _body(m: dict[str, Any]) -> str:
    b = m.get("body", b"")
    return b.decode("utf-8", "replace") if isinstance(b, (bytes, bytearray)) else str(b)


def _err(exc: BaseException) -> dict[str, Any]:
    return {"error": str(exc)[:200]}


class Workload:
    """Owns every client task; ``start`` them, ``stop_sending``, then ``stop``."""

    def __init__(self, history: History, urls: list[str], node_ids: dict[str, str], targets: Targets,
                 config: WorkloadConfig) -> None:
        self.h = history
        self.urls = urls
        self.node_ids = node_ids  # http url -> node id
        self.targets = targets
        self.cfg = config
        self.sending = asyncio.Event()
        self.reading = asyncio.Event()
        self.rng = random.Random(config.seed ^ 0x5EED)
        self.acked = 0
        self.failed = 0
        self.unknown = 0
        self.delivered = 0
        self._senders: list[asyncio.Task[None]] = []
        self._readers: list[asyncio.Task[None]] = []
        self._consumers: list[PushConsumer] = []
        self._probe = Transport(urls, TransportConfig(deadline_ms=2000, request_timeout_ms=1500,
                                                      connect_timeout_ms=500, discover=False))
        self._leader_tr = Transport(urls, TransportConfig(deadline_ms=config.send_deadline_ms,
                                                          request_timeout_ms=config.request_timeout_ms))

    def _transport_options(self) -> dict[str, Any]:
        return {"deadline_ms": self.cfg.send_deadline_ms, "request_timeout_ms": self.cfg.request_timeout_ms,
                "connect_timeout_ms": 500, "down_ms": 300}

    def producer_ids(self) -> list[str]:
        return [f"p{i + 1}" for i in range(self.cfg.producers)]

    def non_idempotent(self) -> list[str]:
        return [RAW] if self.cfg.raw_sender else []

    # -- lifecycle ---------------------------------------------------------------------------
    async def start(self) -> None:
        self.sending.set()
        self.reading.set()
        for name in self.producer_ids():
            self._senders.append(asyncio.create_task(self._producer(name), name=f"chaos-{name}"))
        if self.cfg.raw_sender:
            self._senders.append(asyncio.create_task(self._raw_sender(RAW), name="chaos-r1"))
        self._senders.append(asyncio.create_task(self._steady(), name="chaos-steady"))
        for i in range(self.cfg.push_consumers):
            await self._start_consumer(f"c{i + 1}")
        if self.cfg.pull:
            self._readers.append(asyncio.create_task(self._puller("pull"), name="chaos-pull"))
        self._readers.append(asyncio.create_task(self._observer(), name="chaos-observer"))

    async def stop_sending(self, timeout_s: float) -> None:
        """No new sends; wait (bounded) for those in flight to be answered."""
        self.sending.clear()
        done, pending = await asyncio.wait(self._senders, timeout=timeout_s) if self._senders else (set(), set())
        for t in pending:
            t.cancel()
        await asyncio.gather(*self._senders, return_exceptions=True)
        self._senders.clear()

    async def stop(self) -> None:
        """Stop every task and close every client (unanswered operations stay unknown)."""
        self.sending.clear()
        self.reading.clear()
        for t in self._senders + self._readers:
            t.cancel()
        await asyncio.gather(*self._senders, *self._readers, return_exceptions=True)
        self._senders.clear()
        self._readers.clear()
        await self.stop_consumers()
        await self._probe.close()
        await self._leader_tr.close()

    async def stop_consumers(self) -> None:
        cs, self._consumers = self._consumers, []
        await asyncio.gather(*(c.stop() for c in cs), return_exceptions=True)

    def _record_send(self, op: Op, exc: BaseException | None, result: tuple[int, int] | None, node: str | None) -> None:
        if exc is None:
            assert result is not None
            self.h.complete(op, OK, queue_id=result[0], offset=result[1], node=node)
            self.acked += 1
        elif isinstance(exc, Rejected) or (isinstance(exc, Timeout) and not exc.outcome_unknown):
            self.h.complete(op, FAIL, detail=_err(exc))  # refused, or never reached a node: not stored
            self.failed += 1
        else:
            self.h.complete(op, INFO, detail=_err(exc))  # may or may not be stored
            self.unknown += 1

    async def _pace(self, next_t: float, period_s: float) -> float:
        loop = asyncio.get_running_loop()
        if period_s <= 0:
            await asyncio.sleep(0)
            return loop.time()
        next_t = max(next_t + period_s, loop.time() - period_s)  # no burst to catch up after a stall
        await asyncio.sleep(max(0.0, next_t - loop.time()))
        return next_t

    # -- producers ------------------------------------------------------------------------------
    async def _producer(self, name: str) -> None:
        period = 1 / self.cfg.rate_per_s if self.cfg.rate_per_s else 0.0
        async with Producer(self.urls, idempotent=True, linger_ms=0, **self._transport_options()) as p:
            n, next_t = 0, asyncio.get_running_loop().time()
            while self.sending.is_set():
                op = self.h.invoke(name, SEND, value=f"{name}-{n:06d}")
                n += 1
                await self._send(p, op)
                next_t = await self._pace(next_t, period)

    async def _send(self, p: Producer, op: Op) -> None:
        """One send through the client's Producer, recorded in the history."""
        try:
            r = await p.send(TOPIC, op.value, keys=op.value)  # type: ignore[arg-type]
        except RaftMQError as exc:
            self._record_send(op, exc, None, None)
        else:
            self._record_send(op, None, (r.queue_id, r.queue_offset),
                              self.node_ids.get(getattr(p.transport, "leader", None) or ""))

    async def _raw_sender(self, name: str) -> None:
        period = 1 / self.cfg.rate_per_s if self.cfg.rate_per_s else 0.0
        path = f"/v1/topics/{quote(TOPIC, safe='')}/messages"
        tr = Transport(self.urls, TransportConfig(**self._transport_options()))
        try:
            n, next_t = 0, asyncio.get_running_loop().time()
            while self.sending.is_set():
                op = self.h.invoke(name, SEND, value=f"{name}-{n:06d}")
                n += 1
                try:
                    msg = {"body": op.value.encode(), "keys": [op.value]}  # type: ignore[union-attr]
                    res = await tr.call("POST", path, {"messages": [msg]}, write=True)
                    r = res["results"][0]
                except RaftMQError as exc:
                    self._record_send(op, exc, None, None)
                else:
                    self._record_send(op, None, (r["queue_id"], r["queue_offset"]), self.node_ids.get(tr.leader or ""))
                next_t = await self._pace(next_t, period)
        finally:
            await tr.close()

    async def _steady(self) -> None:
        period = self.cfg.steady_period_ms / 1000
        room = asyncio.Semaphore(self.cfg.steady_max_outstanding)
        inflight: set[asyncio.Task[None]] = set()
        async with Producer(self.urls, idempotent=True, linger_ms=0, **self._transport_options()) as p:
            async def one(op: Op) -> None:
                try:
                    await self._send(p, op)
                finally:
                    room.release()

            n, next_t = 0, asyncio.get_running_loop().time()
            try:
                while self.sending.is_set():
                    await room.acquire()
                    op = self.h.invoke(STEADY, SEND, value=f"{STEADY}-{n:06d}")
                    n += 1
                    t = asyncio.create_task(one(op))
                    inflight.add(t)
                    t.add_done_callback(inflight.discard)
                    next_t = await self._pace(next_t, period)
                await asyncio.gather(*inflight, return_exceptions=True)
            finally:
                for t in inflight:
                    t.cancel()
                await asyncio.gather(*inflight, return_exceptions=True)

    # -- consumers ------------------------------------------------------------------------------
    async def _start_consumer(self, cid: str) -> None:
        process = f"{PUSH_GROUP}/{cid}"

        def handler(m: ReceivedMessage) -> None:
            self.h.event(process, DELIVER, value=m.body.decode("utf-8", "replace"), queue_id=m.queue_id,
                         offset=m.queue_offset)
            self.delivered += 1

        c = PushConsumer(self.urls, PUSH_GROUP, TOPIC, handler, client_id=cid, from_where="beginning",
                         heartbeat_interval_ms=500, handler_in_thread=False, long_poll_ms=500,
                         request_timeout_ms=self.cfg.request_timeout_ms, connect_timeout_ms=500, down_ms=300)
        await c.start()
        self._consumers.append(c)

    async def _puller(self, name: str) -> None:
        """Pull every queue from random live nodes; commit positions every second or so."""
        positions = dict.fromkeys(range(QUEUES), 0)
        committed = dict.fromkeys(range(QUEUES), 0)
        loop = asyncio.get_running_loop()
        last_commit = loop.time()
        while self.reading.is_set():
            targets = self.targets()
            if not targets:
                await asyncio.sleep(0.2)
                continue
            idle = True
            for q in range(QUEUES):
                nid, url, _ = self.rng.choice(targets)
                op = self.h.invoke(name, PULL, node=nid, queue_id=q, offset=positions[q])
                try:
                    res = await self._probe.call("GET", f"/v1/topics/{TOPIC}/queues/{q}/messages",
                                                 params={"offset": positions[q], "max": 256}, url=url, deadline_s=2.0)
                except asyncio.CancelledError:
                    raise
                except RaftMQError as exc:  # OffsetOutOfRange included: that node is behind the others
                    self.h.complete(op, FAIL, detail=_err(exc))
                    continue
                msgs = [[m["queue_offset"], _body(m)] for m in res.get("messages") or []]
                self.h.complete(op, OK, detail={"messages": msgs})
                if msgs:
                    idle = False
                positions[q] = max(positions[q], int(res.get("next_offset", positions[q])))
            if loop.time() - last_commit >= 1.0:
                last_commit = loop.time()
                for q in range(QUEUES):
                    if positions[q] > committed[q]:
                        committed[q] = positions[q]
                        await self._commit(q, positions[q])
            if idle:
                await asyncio.sleep(0.2)

    async def _commit(self, q: int, offset: int) -> None:
        op = self.h.invoke(PULL_GROUP, COMMIT, queue_id=q, detail={"asked": offset})
        try:
            stored = await commit_offset(self._leader_tr, PULL_GROUP, TOPIC, q, offset, deadline_s=3.0)
        except asyncio.CancelledError:
            raise
        except RaftMQError as exc:
            self.h.complete(op, INFO, detail={"asked": offset, **_err(exc)})
            return
        self.h.complete(op, OK, offset=stored)

    async def _observer(self) -> None:
        while self.reading.is_set():
            await asyncio.sleep(self.cfg.observe_interval_ms / 1000)
            await self.read_offsets(final=False)

    async def read_offsets(self, final: bool) -> None:
        """Both groups' committed offsets as every live node answers them."""
        groups = [PULL_GROUP] + ([PUSH_GROUP] if self.cfg.push_consumers else [])

        async def one(nid: str, url: str, inc: int, group: str) -> None:
            op = self.h.invoke(group, OFFSETS, node=nid)
            try:
                res = await self._probe.call("GET", f"/v1/groups/{quote(group, safe='')}/offsets",
                                             params={"topic": TOPIC}, url=url, deadline_s=1.5)
            except asyncio.CancelledError:
                raise
            except RaftMQError as exc:
                self.h.complete(op, FAIL, detail=_err(exc))
                return
            now = {t[0]: t[2] for t in self.targets()}
            if now.get(nid) != inc:  # the node restarted meanwhile: which lifetime answered is unclear
                self.h.complete(op, FAIL, detail={"error": "node restarted during the read"})
                return
            offs = {str(o["queue_id"]): o.get("offset") for o in res.get("offsets") or []}
            self.h.complete(op, OK, detail={"offsets": offs, "incarnation": inc, **({"final": True} if final else {})})

        await asyncio.gather(*(one(nid, url, inc, g) for nid, url, inc in self.targets() for g in groups))

    async def push_lag(self) -> int | None:
        """The push group's total lag as the leader sees it (None if unknown)."""
        try:
            async with Admin(self.urls, deadline_ms=3000, request_timeout_ms=1500) as a:
                res = await a.lag(PUSH_GROUP, TOPIC)
        except RaftMQError:
            return None
        lag = res.get("lag")
        return int(lag) if isinstance(lag, int) else None

    # -- the final read --------------------------------------------------------------------------
    async def drain(self, url: str) -> tuple[dict[tuple[int, int], str], dict[tuple[int, int], str]]:
        """Every message of every queue on the node at ``url``: ``({(queue, offset):
        body}, {(queue, offset): error})``. A batch the node fails to serve (a
        damaged record answers a 5xx, a 503 ``storage_damaged`` among them) is
        read again one offset at a time, so one bad message costs only its own
        offset, which is reported with the error. Raises ``RaftMQError`` when the
        node cannot be read at all (it no longer answers its health check, or not
        even its queue bounds answer)."""
        held: dict[tuple[int, int], str] = {}
        unreadable: dict[tuple[int, int], str] = {}
        for q in range(QUEUES):
            offset = 0
            end: int | None = None
            single = 0  # offsets still to read one at a time after a failed batch
            while end is None or offset < end:
                n = 1 if single else DRAIN_BATCH
                try:
                    res = await self._probe.call("GET", f"/v1/topics/{TOPIC}/queues/{q}/messages",
                                                 params={"offset": offset, "max": n}, url=url, deadline_s=10.0)
                except RaftMQError as exc:
                    await self._still_answering(url, exc)
                    if end is None:
                        end = await self._queue_end(url, q)
                    if n > 1:
                        single = DRAIN_BATCH
                        continue
                    unreadable[(q, offset)] = str(exc)[:200]
                    offset += 1
                    single -= 1
                    continue
                for m in res.get("messages") or []:
                    held[(q, int(m["queue_offset"]))] = _body(m)
                end = int(res.get("max_offset", 0))
                nxt = int(res.get("next_offset", offset))
                if nxt <= offset:
                    break
                single = max(0, single - (nxt - offset))
                offset = nxt
        return held, unreadable

    async def lookup(self, url: str, keys: list[str]) -> dict[str, list[tuple[int, int]] | str]:
        """Look each key up on the node at ``url`` (``GET /v1/messages?key=``): the
        (queue, offset) of every message found that carries it, or the error the
        node answered. Raises ``RaftMQError`` when the node cannot be reached."""
        out: dict[str, list[tuple[int, int]] | str] = {}
        for key in keys:
            try:
                res = await self._probe.call("GET", "/v1/messages", params={"key": key, "max": 32}, url=url,
                                             deadline_s=10.0)
            except RaftMQError as exc:
                await self._still_answering(url, exc)
                out[key] = str(exc)[:200]
                continue
            out[key] = [(int(m["queue_id"]), int(m["queue_offset"])) for m in res.get("messages") or []
                        if key in (m.get("keys") or ())]
        return out

    async def _still_answering(self, url: str, exc: RaftMQError) -> None:
        """After a failed read: return if the node still answers its health check
        (the error was about what was read), else raise ``exc`` (the node is gone).
        A 503 is both a node that cannot serve and a damaged record: only asking
        again tells them apart."""
        try:
            await self._probe.call("GET", "/v1/health", url=url, deadline_s=5.0)
        except RaftMQError:
            raise exc from None

    async def _queue_end(self, url: str, q: int) -> int:
        """The node's ``max_offset`` of queue ``q`` (from its topic description)."""
        t = await self._probe.call("GET", f"/v1/topics/{quote(TOPIC, safe='')}", url=url, deadline_s=10.0)
        for qo in t.get("queue_offsets") or []:
            if int(qo.get("queue_id", -1)) == q:
                return int(qo["max_offset"])
        raise RaftMQError(f"queue {q} is missing from the node's description of {TOPIC}")


async def create_topic(urls: list[str], deadline_s: float = 30.0) -> None:
    async with Admin(urls, deadline_ms=int(deadline_s * 1000)) as a:
        await a.create_topic(TOPIC, QUEUES)
