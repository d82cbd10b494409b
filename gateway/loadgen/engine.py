"""The load generator: open loop (a fixed rate) or closed loop (N connections back to back).

**Open loop** (``rate`` set): request *i* is *scheduled* at ``start + i / rate`` whatever
happened to the earlier ones. It goes out on an idle keep-alive connection as soon as one is
free; if none is, it waits in a FIFO. Its latency is measured from the scheduled time, not from
the actual write, so a slow server cannot hide its stalls by slowing the generator down (no
coordinated omission). The loop's timers have 1 ms resolution, so the generator wakes at most
once a millisecond and sends everything due. Next to the latency it records the generator's own
lag (when it got round to a request - its scheduled time) and the service time (response -
actual write, what a closed-loop tool reports): latency - lag - service = time spent waiting for
a free connection (the server is behind).

**Closed loop** (no ``rate``): every connection sends its next request as soon as the previous
answer is in, for ``duration``; latency is the service time.

Every request has a deadline (``timeout``, checked every quarter of it): past it the connection
is dropped (a late answer would be read as the next request's) and replaced, and the request
counts as a ``timeout`` error; a connection the server closes is replaced too. Samples taken during ``warmup`` are not
kept. The run is one object owning its counters; ``progress()`` reads them for a live line.
"""

from __future__ import annotations

import asyncio
import collections
import time
from array import array
from collections.abc import Callable
from dataclasses import dataclass, field

from gateway.loadgen.httpclient import ConnectionClosed, HttpConn, build_request, connect
from gateway.tasks import spawn

SERVED_BY = "x-served-by"


class RequestTimeout(Exception):
    """No complete answer within the run's per-request timeout."""


@dataclass(frozen=True)
class Target:
    """What every request of a run is: method, path and body to ``host:port``."""

    host: str
    port: int
    path: str = "/"
    method: str = "GET"
    headers: tuple[str, ...] = ()
    body: bytes = b""

    def raw(self) -> bytes:
        return build_request(self.method, self.host, self.port, self.path, self.headers,
                             self.body)


@dataclass
class Samples:
    """What a run measured (seconds); one entry per answered request after the warm-up."""

    latency: array[float] = field(default_factory=lambda: array("d"))
    service: array[float] = field(default_factory=lambda: array("d"))
    status: array[int] = field(default_factory=lambda: array("H"))
    lag: array[float] = field(default_factory=lambda: array("d"))   # open loop only
    statuses: collections.Counter[int] = field(default_factory=collections.Counter)
    served_by: collections.Counter[str] = field(default_factory=collections.Counter)
    errors: collections.Counter[str] = field(default_factory=collections.Counter)
    elapsed: float = 0.0        # measured seconds (after the warm-up)


@dataclass(frozen=True)
class Progress:
    """A live view of a run, for the progress line."""

    elapsed: float
    duration: float
    sent: int
    answered: int
    errors: int
    recent_rps: float


class LoadRun:
    """One run against ``target``: open loop at ``rate`` req/s, or closed loop when None."""

    def __init__(self, target: Target, connections: int, duration: float, rate: float | None,
                 warmup: float = 0.0, timeout: float = 30.0,
                 clock: Callable[[], float] = time.perf_counter) -> None:
        if connections < 1 or duration <= 0 or (rate is not None and rate <= 0):
            raise ValueError("need connections >= 1, duration > 0 and rate > 0")
        self.target, self.n_conns, self.duration, self.rate = target, connections, duration, rate
        self.warmup, self.timeout, self.clock = warmup, timeout, clock
        self.samples = Samples()
        self._raw = target.raw()
        self._idle: collections.deque[HttpConn] = collections.deque()
        self._backlog: collections.deque[float] = collections.deque()
        self._conns: set[HttpConn] = set()
        self._inflight: dict[HttpConn, float] = {}     # connection -> when its request left
        self._outstanding = 0
        self._drained = asyncio.Event()
        self._start = self._measure_from = self._end = 0.0
        self._sent = self._answered = 0
        self._window: collections.deque[tuple[float, int]] = collections.deque(maxlen=4)
        self._running = False
        self._finished = False

    async def open(self) -> None:
        """Open the connections; raises OSError when the target cannot be reached at all."""
        conns = await asyncio.gather(*(self._connect() for _ in range(self.n_conns)))
        self._idle.extend(conns)

    async def run(self) -> Samples:
        """Send the load (``open()`` first), wait for the answers, return what was measured."""
        self._start = self.clock() + 0.005
        self._measure_from = self._start + self.warmup
        self._end = self._measure_from + self.duration
        self._running = True
        expiry = spawn(self._expire(), name="loadgen-timeouts")
        try:
            if self.rate is None:
                self._closed_loop()
                await asyncio.sleep(max(0.0, self._end - self.clock()))
            else:
                await self._open_loop(self.rate)
            self._running = False
            if self._outstanding:
                self._drained.clear()
                try:
                    await asyncio.wait_for(self._drained.wait(), self.timeout + 1.0)
                except TimeoutError:   # queued for a connection that never came back
                    self.samples.errors["timeout"] += self._outstanding
        finally:
            expiry.cancel()
            self._running, self._finished = False, True
            for conn in list(self._conns):
                conn.close()
        self.samples.elapsed = min(self.duration, max(0.0, self.clock() - self._measure_from))
        return self.samples

    def progress(self) -> Progress:
        now = self.clock()
        self._window.append((now, self._answered))
        t0, n0 = self._window[0]
        rps = (self._answered - n0) / (now - t0) if now > t0 else 0.0
        return Progress(max(0.0, now - self._measure_from), self.duration, self._sent,
                        self._answered, sum(self.samples.errors.values()), rps)

    # -- scheduling ---------------------------------------------------------------------------
    async def _open_loop(self, rate: float) -> None:
        total = int((self.warmup + self.duration) * rate)
        interval = 1.0 / rate
        i = 0
        while i < total:
            now = self.clock()
            while i < total and self._start + i * interval <= now:
                self._dispatch(self._start + i * interval)
                i += 1
            if i < total:
                # Never below 1 ms: shorter uvloop timers round to 0 and would spin a core.
                await asyncio.sleep(max(self._start + i * interval - self.clock(), 0.001))

    def _closed_loop(self) -> None:
        while self._idle:
            self._dispatch(self.clock())

    def _dispatch(self, scheduled: float) -> None:
        self._outstanding += 1
        self._sent += 1
        if self.rate is not None and scheduled >= self._measure_from:
            self.samples.lag.append(self.clock() - scheduled)
        while self._idle:
            conn = self._idle.popleft()
            if not conn.closed:
                self._send(conn, scheduled)
                return
        self._backlog.append(scheduled)

    def _send(self, conn: HttpConn, scheduled: float) -> None:
        sent = self.clock()
        fut = conn.send(self._raw)
        self._inflight[conn] = sent
        fut.add_done_callback(lambda f: self._done(conn, f, scheduled, sent))

    async def _expire(self) -> None:
        """Fail requests past the timeout. One sweep of the in-flight connections every quarter
        timeout (at most 1 s) instead of a timer per request: a timer per request costs more
        than the rest of the generator's bookkeeping; a timeout fires up to a quarter late."""
        error = RequestTimeout(f"no answer within {self.timeout:g}s")
        while True:
            await asyncio.sleep(min(1.0, self.timeout / 4))
            limit = self.clock() - self.timeout
            for conn in [c for c, sent in self._inflight.items() if sent <= limit]:
                conn.fail(error)

    def _done(self, conn: HttpConn, fut: asyncio.Future[int], scheduled: float,
              sent: float) -> None:
        self._inflight.pop(conn, None)
        now = self.clock()
        self._outstanding -= 1
        s = self.samples
        exc = fut.exception()
        measured = scheduled >= self._measure_from
        if exc is None:
            self._answered += 1
            if measured:
                status = fut.result()
                s.latency.append(now - scheduled)
                s.service.append(now - sent)
                s.status.append(status)
                s.statuses[status] += 1
                s.served_by[conn.watched or "-"] += 1
        elif measured:
            s.errors["timeout" if isinstance(exc, RequestTimeout) else "closed"] += 1
        if conn.closed:
            self._conns.discard(conn)
            spawn(self._replace(), name="loadgen-reconnect")
        else:
            self._next(conn)
        if not self._outstanding:
            self._drained.set()

    def _next(self, conn: HttpConn) -> None:
        """A connection is free: the oldest queued request, the closed loop's next, or idle."""
        if self._backlog:
            self._send(conn, self._backlog.popleft())
        elif self._running and self.rate is None and self.clock() < self._end:
            self._outstanding += 1
            self._sent += 1
            self._send(conn, self.clock())
        else:
            self._idle.append(conn)

    async def _connect(self) -> HttpConn:
        conn = await connect(self.target.host, self.target.port, SERVED_BY)
        self._conns.add(conn)
        return conn

    async def _replace(self) -> None:
        """A connection was closed: open another so the pool keeps its size, retrying while the
        run lasts (queued requests are waiting for it)."""
        while True:
            try:
                conn = await self._connect()
            except OSError:
                self.samples.errors["connect"] += 1
                if self._finished or not (self._running or self._backlog):
                    return
                await asyncio.sleep(0.05)
                continue
            if self._finished:
                conn.close()
            else:
                self._next(conn)
            return


async def run_load(run: LoadRun) -> Samples:
    """Open the connections and run; the convenience for callers without a progress line."""
    await run.open()
    return await run.run()


__all__ = ["ConnectionClosed", "LoadRun", "Progress", "RequestTimeout", "Samples", "Target",
           "run_load"]
