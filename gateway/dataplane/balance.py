"""Replica choice and admission: power of two choices on in-flight requests, a concurrency limit
per replica, one bounded wait queue per version, outlier ejection.

A ``ReplicaSet`` holds the ready endpoints of one version. The control plane is its only writer
(``publish``, ``configure``); the data plane takes and releases slots. A request that finds no
free slot (every replica at ``limit``, or none ready) waits here, in a bounded FIFO queue for a
bounded time, never on an upstream socket; a freed slot, or a new replica's, goes straight to
the oldest waiter. So the gateway holds at most replicas x limit upstream connections, and a
replica that becomes ready takes its share of a backlog at once.
"""

from __future__ import annotations

import asyncio
import math
import random
import time
from collections import deque
from collections.abc import Callable, Sequence

from gateway.dataplane import affinity
from gateway.dataplane.outlier import OutlierPolicy
from gateway.dataplane.upstream import UpstreamPool
from gateway.errors import ClientGone, ColdStartTimeout, NoReadyReplica, Overloaded, ProxyError

EJECT_SECONDS = 2.0
LOADED_MODELS = b"x-loaded-models"     # worker/multiplex.py's LOADED_HEADER
DEFAULT_LIMIT = 5


def _nothing() -> int:
    return 0


class Endpoint:
    """One ready replica as the data plane sees it."""

    __slots__ = (
        "back_at",
        "ejected_until",
        "ejections",
        "fails",
        "host",
        "id",
        "inflight",
        "models",
        "models_raw",
        "pool",
        "port",
    )

    def __init__(self, id: str, host: str, port: int, connect_timeout: float = 2.0) -> None:
        self.id = id
        self.host = host
        self.port = port
        self.pool = UpstreamPool(host, port, connect_timeout=connect_timeout)
        self.inflight = 0
        self.ejected_until = 0.0
        self.fails = 0           # errors in a row (outlier detection)
        self.ejections = 0       # outlier ejections so far
        self.back_at = 0.0       # when the last outlier ejection ended
        # multiplexed models its worker holds or loads (its last x-loaded-models, plus those
        # sent to it since): the affinity policy's view of it
        self.models: frozenset[bytes] = frozenset()
        self.models_raw = b""

    def assign(self, model: bytes) -> bool:
        """A request of ``model`` goes here: True when the worker holds it already, else it
        loads it now, and the next requests of it may come here too."""
        if model in self.models:
            return True
        self.models = self.models | {model}
        self.models_raw = b""     # the next answer's list replaces this guess, even if unchanged
        return False

    def learn(self, headers: list[tuple[bytes, bytes]]) -> None:
        """What the worker says it holds, from an answer's ``x-loaded-models``."""
        for name, value in headers:
            if len(name) == 15 and name.lower() == LOADED_MODELS:
                if value != self.models_raw:
                    self.models_raw = value
                    self.models = frozenset(m.strip() for m in value.split(b",") if m.strip())
                return

    def eject(self, now: float, seconds: float = EJECT_SECONDS) -> None:
        """Passive health: a connect failure sends new requests elsewhere for a while, until the
        supervisor's probes decide what the replica really is."""
        self.ejected_until = max(self.ejected_until, now + seconds)

    def __repr__(self) -> str:
        return f"Endpoint({self.id} {self.host}:{self.port} inflight={self.inflight})"


def p2c(endpoints: Sequence[Endpoint], randrange: Callable[[int], int], now: float,
        exclude: Endpoint | None = None, limit: int = 1 << 30) -> Endpoint | None:
    """Power of two choices on in-flight count among endpoints with a free slot. Ejected
    endpoints are used only when every endpoint is ejected; excluded ones never."""
    live = [e for e in endpoints if e is not exclude and e.ejected_until <= now]
    if not live:
        live = [e for e in endpoints if e is not exclude]
    free = [e for e in live if e.inflight < limit]
    n = len(free)
    if n <= 1:
        return free[0] if n else None
    i = randrange(n)
    j = randrange(n - 1)
    if j >= i:
        j += 1
    a, b = free[i], free[j]
    return a if a.inflight <= b.inflight else b


# the fast path's waiter: a slot, or why none came (exactly one of the two)
OnSlot = Callable[[Endpoint | None, ProxyError | None], None]


class _Slot:
    """A waiter's answer as a callback instead of a future (``enqueue``), with the future's few
    methods the queue uses; called soon after the hand-over, never inside it (a release inside
    the callback would re-enter ``_hand``)."""

    __slots__ = ("_call_soon", "_done", "_on_slot")

    def __init__(self, on_slot: OnSlot, call_soon: Callable[..., object]) -> None:
        self._on_slot = on_slot
        self._call_soon = call_soon
        self._done = False

    def done(self) -> bool:
        return self._done

    def set_result(self, ep: Endpoint) -> None:
        self._done = True
        self._call_soon(self._on_slot, ep, None)

    def set_exception(self, exc: ProxyError) -> None:
        self._done = True
        self._call_soon(self._on_slot, None, exc)


class _Waiter:
    """One request queued for a slot: its future, what it must not get, its deadline timer."""

    __slots__ = ("alive", "deadline", "exclude", "fut")

    def __init__(self, fut: asyncio.Future[Endpoint] | _Slot, exclude: Endpoint | None,
                 alive: Callable[[], bool] | None, deadline: float) -> None:
        self.fut = fut
        self.exclude = exclude
        self.alive = alive          # False once its client hung up: skipped, not sent
        self.deadline = deadline    # loop time


class ReplicaSet:
    """Ready endpoints of one version, their slots, and the requests waiting for one."""

    def __init__(self, service: str, version: str, *, max_waiting: int = 1024,
                 limit: int = DEFAULT_LIMIT, outlier: OutlierPolicy | None = None,
                 rng: random.Random | None = None,
                 clock: Callable[[], float] = time.monotonic) -> None:
        self.service = service
        self.version = version
        self.max_waiting = max_waiting
        self.limit = limit                   # requests (or batches) in flight per replica
        self.outlier = outlier or OutlierPolicy()
        self.endpoints: tuple[Endpoint, ...] = ()
        self.waiting = 0                     # len(self._queue), kept for the gauges
        self.ejections = 0                   # outlier ejections so far (a counter metric)
        self.on_demand: Callable[[], None] | None = None  # the autoscaler's "someone is waiting"
        # replicas starting for the waiting requests: set by the autoscaler on versions it
        # scales (a cold start); a fixed-size version's starting replicas do not count
        self.starting: Callable[[], int] = _nothing
        # the supervisor's verdict when no replica is ready: why none is coming (crash loop,
        # none starting), or None while one may still come. Waiting would only delay the 503.
        self.hopeless: Callable[[], str | None] = _no_verdict
        self._queue: deque[_Waiter] = deque()
        # how fast the queue moves: the mean time between two slots handed to waiters (EWMA),
        # measured only while someone waits, so a request the queue cannot reach before its
        # deadline is refused at once instead of after waiting for nothing
        self._gap = 0.0
        self._last_hand = 0.0
        # one timer for the earliest deadline in the queue, not one per waiter: a waiter is
        # usually handed a slot long before its deadline
        self._timer: asyncio.TimerHandle | None = None
        self._timer_at = math.inf
        self._randrange = (rng or random.Random()).randrange
        self._clock = clock
        # a batcher queueing for this version: told of every publish, adds its backlog
        self._watchers: list[tuple[Callable[[], None], Callable[[], int] | None]] = []

    # -- control plane ----------------------------------------------------------------------
    def publish(self, endpoints: Sequence[Endpoint]) -> None:
        self.endpoints = tuple(endpoints)
        self._hand_all()
        self.recheck()
        for on_publish, _ in self._watchers:
            on_publish()

    def configure(self, *, limit: int, max_waiting: int, outlier: OutlierPolicy) -> None:
        """Apply (re)loaded settings; waiting requests are kept (a raised limit serves them)."""
        self.limit, self.max_waiting, self.outlier = limit, max_waiting, outlier
        self._hand_all()

    def recheck(self) -> None:
        """With nothing ready, answer every waiting request at once if the supervisor knows
        nothing is coming (called on publish and when a replica crashes)."""
        if self.endpoints:
            return
        reason = self.hopeless()
        if reason is None:
            return
        queue, self._queue = self._queue, deque()
        self.waiting = 0
        for w in queue:
            if not w.fut.done():
                w.fut.set_exception(self._none_coming(reason))
        for on_publish, _ in self._watchers:    # a batcher answers its queue too
            on_publish()

    def verdict(self) -> NoReadyReplica | None:
        """With no replica ready: the 503 to answer at once when none is coming, else None."""
        reason = self.hopeless()
        return None if reason is None else self._none_coming(reason)

    def watch(self, on_publish: Callable[[], None],
              backlog: Callable[[], int] | None = None) -> None:
        """Call ``on_publish`` after every publish and every freed slot (queued work may go
        there); ``backlog`` (requests queued or in flight there) counts in ``pending``."""
        self._watchers.append((on_publish, backlog))

    def unwatch(self, on_publish: Callable[[], None]) -> None:
        self._watchers = [w for w in self._watchers if w[0] != on_publish]

    @property
    def inflight(self) -> int:
        return sum(e.inflight for e in self.endpoints)

    @property
    def ejected(self) -> int:
        now = self._clock()
        return sum(1 for e in self.endpoints if e.ejected_until > now)

    @property
    def pending(self) -> int:
        """Requests of this version not answered yet, for the autoscaler. A batcher's backlog
        replaces ``inflight``, which counts its batches, not its requests."""
        backlogs = [b for _, b in self._watchers if b is not None]
        if backlogs:
            return self.waiting + sum(b() for b in backlogs)
        return self.waiting + self.inflight

    def unavailable(self) -> NoReadyReplica:
        """The error for a request whose wait for a replica ran out: 504 while a cold start
        (see ``starting``) is under way but too slow for the deadline, else 503 + Retry-After."""
        if self.starting() > 0:
            return ColdStartTimeout(f"a replica of {self.service}/{self.version} is starting "
                                    "but was not ready in time")
        return NoReadyReplica(f"no ready replica of {self.service}/{self.version}")

    def _none_coming(self, reason: str) -> NoReadyReplica:
        return NoReadyReplica(f"no replica of {self.service}/{self.version} can serve: {reason}")

    # -- data plane -------------------------------------------------------------------------
    def pick(self, exclude: Endpoint | None = None) -> Endpoint | None:
        """The endpoint with a free slot a request should go to, or None (all full, none)."""
        eps = self.endpoints
        if len(eps) == 1:
            e = eps[0]
            return e if e is not exclude and e.inflight < self.limit else None
        return p2c(eps, self._randrange, self._clock(), exclude, self.limit)

    def take_model(self, model: bytes, slack: int, exclude: Endpoint | None = None
                   ) -> Endpoint | None:
        """``take`` for a multiplexed model: a slot on a replica that holds it, within the
        load bound, else on the one that should load it (``affinity.choose``)."""
        e = affinity.choose(self.endpoints, model, self.limit, slack, self._randrange,
                            self._clock(), exclude)
        if e is not None:
            e.inflight += 1
        return e

    def pick_any(self) -> Endpoint | None:
        """An endpoint for traffic bounded elsewhere, whatever its free slots: mirror copies
        have their own concurrency and queue; a full replica would drop them. They count in
        ``inflight`` all the same, so a replica busy with copies takes fewer requests."""
        eps = self.endpoints
        if len(eps) == 1:
            return eps[0]
        return p2c(eps, self._randrange, self._clock())

    def take(self, exclude: Endpoint | None = None) -> Endpoint | None:
        """A slot now (the caller must ``release`` it), or None. No task, no future: this is
        the whole cost of admission while a slot is free."""
        e = self.pick(exclude)
        if e is not None:
            e.inflight += 1
        return e

    def release(self, ep: Endpoint) -> None:
        """A request (or batch) on ``ep`` is over: its slot goes to the oldest waiter."""
        ep.inflight -= 1
        if self._queue:
            self._hand(ep)
        for on_free, _ in self._watchers:
            on_free()

    def success(self, ep: Endpoint) -> None:
        self.outlier.success(ep)

    def failure(self, ep: Endpoint) -> bool:
        """A 5xx or a gateway error from ``ep``; True when that ejected it."""
        if not self.outlier.failure(ep, self.endpoints, self._clock()):
            return False
        self.ejections += 1
        try:
            loop = asyncio.get_running_loop()
        except RuntimeError:      # unit tests without a loop
            return True
        # its slots are free again when the ejection ends: give them to whoever waits then
        loop.call_later(ep.ejected_until - self._clock(), self._hand_all)
        return True

    async def acquire(self, deadline: float, exclude: Endpoint | None = None) -> Endpoint:
        """A slot now, or after waiting (bounded queue) until ``deadline`` (loop time)."""
        ep = self.take(exclude)
        return ep if ep is not None else await self.wait(deadline, exclude)

    async def wait(self, deadline: float, exclude: Endpoint | None = None,
                   alive: Callable[[], bool] | None = None) -> Endpoint:
        """Queue for the first free slot of any replica (new ones included) until ``deadline``
        (loop time): 503 at once past ``max_waiting`` or when nothing can come."""
        loop = asyncio.get_running_loop()
        fut: asyncio.Future[Endpoint] = loop.create_future()
        w = self._queue_up(loop, deadline, exclude, alive, fut)
        try:
            return await fut
        except asyncio.CancelledError:
            # handed a slot in the same pass as the caller was cancelled: give it back
            if fut.done() and not fut.cancelled() and fut.exception() is None:
                self.release(fut.result())
            raise
        finally:
            if fut.cancelled():   # else it already left the queue (handed, failed, expired)
                self._drop(w)

    def enqueue(self, loop: asyncio.AbstractEventLoop, deadline: float,
                alive: Callable[[], bool] | None, on_slot: OnSlot) -> None:
        """``wait`` for the fast path: ``on_slot`` gets the slot or the error later, from the
        loop; the same admission errors are raised here, at once."""
        self._queue_up(loop, deadline, None, alive, _Slot(on_slot, loop.call_soon))

    def _queue_up(self, loop: asyncio.AbstractEventLoop, deadline: float,
                  exclude: Endpoint | None, alive: Callable[[], bool] | None,
                  fut: asyncio.Future[Endpoint] | _Slot) -> _Waiter:
        usable = any(e is not exclude for e in self.endpoints)
        if not usable:
            error = self.verdict()
            if error is not None:
                raise error
        if self.waiting >= self.max_waiting:
            raise Overloaded(f"{self.waiting} requests already wait for a replica of "
                             f"{self.service}/{self.version}")
        left = deadline - loop.time()
        if left <= 0:
            raise self.unavailable()
        if usable and self.waiting and self._gap * (self.waiting + 1) > left:
            raise Overloaded(f"{self.waiting} requests wait for {self.service}/{self.version}, "
                             f"served one per {self._gap * 1000:.0f} ms: too long for the "
                             f"{left:.1f} s this one has left")
        if not self._queue:
            self._last_hand = self._clock()
        if not usable and self.on_demand is not None:
            self.on_demand()
        w = _Waiter(fut, exclude, alive, deadline)
        if deadline < self._timer_at:
            self._arm(loop, deadline)
        self._queue.append(w)
        self.waiting += 1
        return w

    def _drop(self, w: _Waiter) -> None:
        try:
            self._queue.remove(w)
        except ValueError:        # already handed a slot or failed
            return
        self.waiting -= 1

    def _arm(self, loop: asyncio.AbstractEventLoop, when: float) -> None:
        if self._timer is not None:
            self._timer.cancel()
        self._timer_at = when
        self._timer = loop.call_at(when, self._on_timer, loop)

    def _on_timer(self, loop: asyncio.AbstractEventLoop) -> None:
        """Answer every waiter whose deadline passed; wake up again at the next deadline."""
        self._timer, self._timer_at = None, math.inf
        now = loop.time()
        due = [w for w in self._queue if w.deadline <= now + 0.001]   # ms timer resolution
        for w in due:
            self._expire(w)
        if self._queue:
            self._arm(loop, min(w.deadline for w in self._queue))

    def _expire(self, w: _Waiter) -> None:
        """A waiter's deadline: 503 (every replica busy: overloaded, or none ready), or 504
        when a cold start is under way but too slow."""
        self._drop(w)
        if w.fut.done():
            return
        if any(e is not w.exclude for e in self.endpoints):
            exc: ProxyError = Overloaded(f"no free slot on a replica of {self.service}/"
                                         f"{self.version} in time (max_concurrency "
                                         f"{self.limit} each)")
        else:
            exc = self.unavailable()
        w.fut.set_exception(exc)

    def _hand_all(self) -> None:
        for ep in sorted(self.endpoints, key=lambda e: e.inflight):
            if not self._queue:
                return
            self._hand(ep)

    def _hand(self, ep: Endpoint) -> None:
        """Give ``ep``'s free slots to the oldest waiters it may serve: not to a replica that
        left routing (draining), nor to an ejected one while another is in."""
        if ep not in self.endpoints:
            return
        now = self._clock()
        if ep.ejected_until > now and any(e.ejected_until <= now for e in self.endpoints):
            return
        q = self._queue
        skipped: list[_Waiter] = []
        while q and ep.inflight < self.limit:
            w = q.popleft()
            if w.fut.done():
                self.waiting -= 1
                continue
            if w.exclude is ep:
                skipped.append(w)
                continue
            if w.alive is not None and not w.alive():
                self.waiting -= 1
                w.fut.set_exception(ClientGone("the client closed the connection while queued"))
                continue
            self.waiting -= 1
            ep.inflight += 1
            w.fut.set_result(ep)
            self._moved()
        if skipped:
            q.extendleft(reversed(skipped))


    def _moved(self) -> None:
        """A waiter got a slot: update how fast the queue moves."""
        now = self._clock()
        gap = now - self._last_hand
        self._last_hand = now
        self._gap = gap if self._gap == 0.0 else 0.9 * self._gap + 0.1 * gap


def _no_verdict() -> str | None:
    return None
