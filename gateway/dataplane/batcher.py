"""Dynamic micro-batcher: queues one version's requests, sends them to replicas as batches,
hands every caller its own answer.

A caller's body is one instance (any JSON document) or ``{"instances": [...]}``; its instances
are spliced, as raw JSON, into ``{"instances": [...]}`` for the worker, whose
``{"predictions": [...]}`` is cut back into one ``{"predictions": [...]}`` per caller, in order.
When to send and to which replica is decided by the pure ``batchpolicy``; this module owns the
loop side. Dispatch is event driven (a request arrives, a batch ends, replicas are published,
a hold timer fires), so an idle batcher costs nothing and has no task to stop.

Every caller gets exactly one answer: its predictions; 504 when its deadline passes (queued:
never sent); 502/504 for every member of a failed batch; 503 when shed or at shutdown. A client
that disconnects is dropped before its request is sent. Batches count in ``Endpoint.inflight``,
so a replica's drain waits for them, and a batch takes one of the replica's ``max_concurrency``
slots (at most ``slots_per_replica`` of them go to batches).
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Callable, Iterable
from typing import Any, NamedTuple

from gateway import tasks
from gateway.dataplane.balance import Endpoint, ReplicaSet
from gateway.dataplane.batchpolicy import (
    DONE,
    SENT,
    ArrivalPace,
    BatchConfig,
    BatchQueue,
    CostModel,
    Entry,
    decide,
    ejection_ends,
    free_slots,
    least_loaded,
)
from gateway.dataplane.batchwire import Wire, timeout_from_header, wire_for
from gateway.dataplane.proxy import request_head
from gateway.errors import (
    ClientGone,
    DeadlineExceeded,
    Overloaded,
    ProxyError,
    ShuttingDown,
    UpstreamConnectError,
    UpstreamError,
    UpstreamTimeout,
)
from gateway.metrics import BatchMetrics

log = logging.getLogger("gateway.batcher")

EMPTY = b'{"predictions":[]}'


class Answer(NamedTuple):
    """One caller's JSON answer; the data plane's HTTP/1.1 server writes it as it is (no
    response object per request on the hot path)."""

    status: int
    body: bytes


class Batcher:
    """The queue and the in-flight batches of one version; kept across table rebuilds."""

    def __init__(self, service: str, version: str, replicas: ReplicaSet, metrics: BatchMetrics,
                 config: BatchConfig, *, target: str, host: str, request_timeout: float,
                 retries: int, timeout_header: str = "x-request-timeout-ms") -> None:
        self.service = service
        self.version = version
        self.metrics = metrics
        self.queue = BatchQueue()
        self.pace = ArrivalPace()
        self.model = CostModel()
        self.replicas = replicas
        self.configure(config, target=target, host=host, request_timeout=request_timeout,
                       retries=retries, timeout_header=timeout_header)
        replicas.watch(self._kick, self.pending_count)
        self._sending: set[asyncio.Task[None]] = set()
        self._inflight_items = 0
        self._kicked = False
        self._timer: asyncio.TimerHandle | None = None
        self._timer_at = 0.0
        self._rr = 0
        self._closed = False
        # uvloop's loop.time() counts whole milliseconds: too coarse for arrival gaps and batch
        # times, so the policy runs on this clock and timers are set with call_later
        self.clock: Callable[[], float] = time.monotonic
        self._idle = asyncio.Event()
        self._idle.set()

    def configure(self, config: BatchConfig, *, target: str, host: str, request_timeout: float,
                  retries: int, timeout_header: str = "x-request-timeout-ms") -> None:
        """Apply (re)loaded settings; the queue and in-flight batches are kept."""
        self.config = config
        self.target = target
        self._target = target.encode()
        self.wire: Wire = wire_for(target)     # {"instances"}, or KServe v2 tensors
        self._host = host.encode()
        self.request_timeout = request_timeout
        self.retries = retries
        self.timeout_header = timeout_header

    def detach(self) -> None:
        """Stop following the replica set (the version no longer batches)."""
        self.replicas.unwatch(self._kick)

    def bind(self, replicas: ReplicaSet) -> None:
        """Follow a new replica set for this version (its group was re-created)."""
        if replicas is not self.replicas:
            self.replicas.unwatch(self._kick)
            self.replicas = replicas
            replicas.watch(self._kick, self.pending_count)
            self._kick()

    # -- observation --------------------------------------------------------------------------
    def pending_count(self) -> int:
        """Instances queued or in flight: the autoscaler's load signal (compare it with
        ``max_batch_size`` per replica)."""
        return self.queue.items + self._inflight_items

    pending = property(pending_count)

    @property
    def idle(self) -> bool:
        return not self.queue.requests and not self._sending

    # -- callers ------------------------------------------------------------------------------
    async def submit(self, body: bytes, headers: Any, alive: Callable[[], bool] | None,
                     arrival: float, request_id: bytes = b"") -> Answer:
        """Queue one caller's request; its answer (or a ProxyError) when its batch is back.
        ``arrival`` is the request's arrival in loop time; its deadline counts from there."""
        if self._closed:
            raise ShuttingDown("the gateway is shutting down")
        payload = self.wire.split(body)
        if not payload:
            return Answer(200, EMPTY)
        timeout = timeout_from_header(headers.get(self.timeout_header), self.config.timeout)
        if self.queue.requests >= self.config.max_queue:
            self._answer_gone(self.queue.sweep())
            if self.queue.requests >= self.config.max_queue:
                self.metrics.shed.inc()
                raise Overloaded(f"{self.queue.requests} requests already queued for "
                                 f"{self.service}/{self.version}")
        loop = asyncio.get_running_loop()
        now = self.clock()
        arrival = now - max(0.0, loop.time() - arrival)
        entry = Entry(arrival, arrival + timeout, len(payload), payload, alive)
        entry.rid = request_id
        if entry.deadline <= now:
            raise DeadlineExceeded("the request's deadline passed before it was queued")
        waiter: asyncio.Future[tuple[int, bytes]] = loop.create_future()
        entry.waiter = waiter
        entry.timer = loop.call_later(entry.deadline - now, self._expire, entry)
        self.queue.push(entry)
        self._idle.clear()
        self.pace.record(now)
        self._kick()
        try:
            status, out = await waiter
        finally:
            entry.timer.cancel()
            if entry.state != DONE:             # the handler itself was cancelled
                waiter.cancel()
                self.queue.cancel(entry)
                entry.state = DONE
                self._settle()
        return Answer(status, out)

    def _finish(self, entry: Entry, status: int, body: bytes) -> None:
        entry.state = DONE
        if not entry.waiter.done():
            entry.waiter.set_result((status, body))

    def _fail(self, entries: Iterable[Entry], exc: ProxyError) -> None:
        for entry in entries:
            entry.state = DONE
            if not entry.waiter.done():
                entry.waiter.set_exception(exc)

    def _expire(self, entry: Entry) -> None:
        """Deadline timer: a queued request leaves the queue unsent; a sent one stops waiting
        (its prediction is dropped when the batch comes back)."""
        if entry.state == DONE:
            return
        self._timed_out(entry, self.queue.cancel(entry))
        self._settle()

    def _timed_out(self, entry: Entry, was_queued: bool, now: float | None = None) -> None:
        self.metrics.error("deadline")
        if was_queued and not self.replicas.endpoints:
            exc: ProxyError = self.replicas.unavailable()   # 504 if one is starting, else 503
        elif now is not None and entry.deadline > now:
            exc = DeadlineExceeded("the request's deadline would pass before a batch sent now "
                                   "is answered: not sent")
        else:
            where = "in the queue" if was_queued else "while its batch was at the worker"
            exc = DeadlineExceeded(f"the request's deadline passed {where}")
        self._fail((entry,), exc)

    def _answer_gone(self, entries: Iterable[Entry]) -> None:
        self._fail(entries, ClientGone("the client closed the connection while queued"))

    # -- dispatch -----------------------------------------------------------------------------
    def _kick(self) -> None:
        """Decide on the next loop pass: requests arriving in one pass share a batch for free."""
        if self._kicked:
            return
        try:
            loop = asyncio.get_running_loop()
        except RuntimeError:          # published outside a loop (tests, start-up): nothing queued
            return
        self._kicked = True
        loop.call_soon(self._on_kick)

    def _on_kick(self) -> None:
        self._kicked = False
        self._pump()

    def _on_timer(self) -> None:
        self._timer = None
        self._pump()

    def _pump(self) -> None:
        loop = asyncio.get_running_loop()
        now = self.clock()
        cfg = self.config
        while self.queue.requests:
            eps = self.replicas.endpoints
            if not eps:
                error = self.replicas.verdict()
                if error is not None:         # none is coming (a crash loop): 503 at once
                    self._fail(self.queue.drain(), error)
                    break
                if self.replicas.on_demand is not None:
                    self.replicas.on_demand()     # scale from zero; publish() kicks us again
                return
            # a batch takes one of the replica's max_concurrency slots, like a request does
            slots = min(cfg.slots_per_replica, self.replicas.limit)
            free = free_slots(eps, slots, now)
            decision = decide(now, cfg, self.queue, free, self.pace, self.model)
            if not decision.dispatch:
                wake = decision.wake_at if free else ejection_ends(eps, now)
                if wake is not None:
                    self._arm(loop, now, wake)
                return
            i = least_loaded(eps, slots, now, self._rr)
            if i is None:
                return
            self._rr = i + 1
            # what a batch takes now: a request with less time left would be answered too late.
            # Capped, so that a fresh request is always sent and a stale estimate (one slow
            # batch at a cold start) is corrected by the next answers
            lead = min(self.model.predict(min(self.queue.items, cfg.max_batch_size)) or 0.0,
                       cfg.timeout / 2)
            taken = self.queue.take(cfg.max_batch_size, now, lead)
            for entry in taken.expired:
                self._timed_out(entry, True, now)
            if taken.gone:
                self._answer_gone(taken.gone)
            if taken.batch:
                self._dispatch(eps[i], taken.batch, taken.items, now)
        self._settle()

    def _arm(self, loop: asyncio.AbstractEventLoop, now: float, when: float) -> None:
        if self._timer is not None:
            if self._timer_at <= when:
                return
            self._timer.cancel()
        self._timer_at = when
        self._timer = loop.call_later(max(0.0, when - now), self._on_timer)

    def _dispatch(self, ep: Endpoint, batch: list[Entry], items: int, now: float) -> None:
        try:
            body = self.wire.batch_body(e.payload for e in batch)
        except ValueError:
            # v2 callers whose tensors differ (datatype, row shape) cannot share one tensor:
            # those like the first go again together, the others alone
            self._regroup(batch)
            return
        flight = _Flight(ep, batch, items, body)
        ep.inflight += 1          # a batch holds one of the replica's slots until it is back
        self._inflight_items += items
        self.metrics.size.observe(items)
        for entry in batch:
            self.metrics.wait.observe(now - entry.arrival)
        task = tasks.spawn(self._send(flight), name=f"batch {self.service}/{self.version}")
        self._sending.add(task)
        task.add_done_callback(lambda t: self._sent(t, flight))

    def _release(self, flight: _Flight) -> None:
        """The exchange is over: free the slot and send the next batch at once, before the
        callers of this one are answered (writing their responses would keep the replica idle)."""
        if flight.holding:
            flight.holding = False
            self.replicas.release(flight.ep)
            self._inflight_items -= flight.items
            self._pump()

    def _sent(self, task: asyncio.Task[None], flight: _Flight) -> None:
        """However the send ended (answered, failed, cancelled at shutdown), the slot is free
        and whoever is still waiting gets an answer."""
        self._sending.discard(task)
        self._release(flight)
        # once settled, a SENT entry may already be in a later batch (requeued, then taken)
        left = [] if flight.settled else [e for e in flight.batch if e.state == SENT]
        if left:
            exc: ProxyError = ShuttingDown("the gateway stopped before the batch was answered") \
                if task.cancelled() else UpstreamError(f"batch failed: {task.exception()!r}")
            self._fail(left, exc)
        self._settle()

    def _settle(self) -> None:
        if self.idle:
            self._idle.set()

    async def _send(self, flight: _Flight) -> None:
        ep, batch, items, body = flight.ep, flight.batch, flight.items, flight.body
        headers = ((b"Content-Type", b"application/json"), (b"X-Batch-Size", b"%d" % items))
        # the worker logs its callers' ids: one comma-separated list (ids hold no commas)
        rids = b",".join([e.rid for e in batch if e.rid])
        head = request_head(b"POST", self._target, headers, b"unknown", b"http", len(body),
                            self._host, trace=b"X-Request-Id: %s\r\n" % rids if rids else b"")
        start = self.clock()
        timeout = min(self.request_timeout, max(e.deadline for e in batch) - start)
        for e in batch:
            e.attempts += 1
        try:
            resp = await ep.pool.request(head, body, max(timeout, 0.001))
            raw = resp.body if resp.body is not None else b"".join(
                [chunk async for chunk in resp.stream()])
        except UpstreamConnectError as exc:
            # the worker never saw it: back to the head of the queue, for another replica
            ep.eject(self.clock())        # the clock ReplicaSet.pick compares with
            self.replicas.failure(ep)
            self.metrics.error(exc.kind)
            live = [e for e in batch if e.state == SENT]
            self._fail([e for e in live if e.attempts > self.retries], exc)
            self.queue.push_front([e for e in live if e.attempts <= self.retries])
            flight.settled = True
            self._release(flight)
            return
        except ProxyError as exc:
            self.metrics.error(exc.kind)
            self.replicas.failure(ep)
            if not isinstance(exc, UpstreamTimeout):
                # the connection broke under the batch: the worker is likely dying, so queued
                # batches wait for the supervisor's verdict instead of following this one
                ep.eject(self.clock())
            detail = f"batch of {items} instances: {exc.detail}"
            self._fail(batch, type(exc)(detail) if isinstance(exc, UpstreamTimeout)
                       else UpstreamError(detail))
            return
        seconds = self.clock() - start
        self._release(flight)
        self._answer(ep, batch, items, resp.status, raw, seconds)
        flight.settled = True

    def _answer(self, ep: Endpoint, batch: list[Entry], items: int, status: int, raw: bytes,
                seconds: float) -> None:
        if status >= 500:
            self.replicas.failure(ep)
        elif ep.fails:
            self.replicas.success(ep)
        if status == 200:
            preds = self.wire.predictions(raw, items)
            if isinstance(preds, str):
                log.error("%s/%s: replica %s: %s", self.service, self.version, ep.id, preds)
                self.metrics.error("bad_response")
                self._fail(batch, UpstreamError(f"worker broke the batch contract: {preds}"))
                return
            self.model.observe(items, seconds)
            offset = 0
            for e in batch:
                if e.state == SENT:
                    self._finish(e, 200, self.wire.answer(preds[offset:offset + e.size]))
                offset += e.size
        elif 400 <= status < 500 and len(batch) > 1:
            self._isolate(batch)    # one caller's bad input must not fail the others
        elif 400 <= status < 500:
            self._finish(batch[0], status, raw)          # the worker's own JSON error
        else:
            self.metrics.error("worker_error")
            text = raw[:300].decode(errors="replace")
            self._fail(batch, UpstreamError(f"worker answered {status} to a batch of {items}: {text}"))

    def _isolate(self, batch: list[Entry]) -> None:
        """Every caller of ``batch`` still waiting goes again, alone, at the queue's head."""
        live = [e for e in batch if e.state == SENT]
        for e in live:
            e.solo = True
        self.metrics.error("isolate")
        self.queue.push_front(live)
        self._kick()

    def _regroup(self, batch: list[Entry]) -> None:
        """Back to the queue's head, never sent: the callers whose ``wire.key`` is the first
        one's, then the others marked solo."""
        live = [e for e in batch if e.state == SENT]
        key = self.wire.key(live[0].payload) if live else None
        same = [e for e in live if self.wire.key(e.payload) == key]
        others = [e for e in live if self.wire.key(e.payload) != key]
        for e in others:
            e.solo = True
        self.metrics.error("regroup")
        self.queue.push_front(same + others)
        self._kick()

    # -- shutdown -----------------------------------------------------------------------------
    async def close(self, grace: float) -> None:
        """Refuse new requests, let queued and in-flight batches finish for up to ``grace``
        seconds, then answer whoever is left with 503."""
        self._closed = True
        self._kick()
        try:
            await asyncio.wait_for(self._idle.wait(), grace)
        except TimeoutError:
            pass
        if self._timer is not None:
            self._timer.cancel()
            self._timer = None
        self._fail(self.queue.drain(),
                   ShuttingDown("the gateway stopped before the request was sent"))
        await tasks.cancel_and_wait(*self._sending)


class _Flight:
    """One batch on its way: which replica slot it holds, until ``_release``."""

    __slots__ = ("batch", "body", "ep", "holding", "items", "settled")

    def __init__(self, ep: Endpoint, batch: list[Entry], items: int, body: bytes) -> None:
        self.ep = ep
        self.batch = batch
        self.items = items
        self.body = body            # the worker's request, built before a slot is taken
        self.holding = True
        self.settled = False        # every entry answered or put back in the queue
