"""Replica choice: power of two choices on in-flight requests, with passive ejection.

A ``ReplicaSet`` holds the ready endpoints of one version. The control plane is its only writer
(``publish``); the data plane reads it and bumps in-flight counters. Requests that find it
empty wait here, in a bounded queue for a bounded time.
"""

from __future__ import annotations

import asyncio
import random
import time
from collections.abc import Callable, Sequence

from gateway.dataplane.upstream import UpstreamPool
from gateway.errors import ColdStartTimeout, NoReadyReplica, Overloaded

EJECT_SECONDS = 2.0


def _nothing() -> int:
    return 0


class Endpoint:
    """One ready replica as the data plane sees it."""

    __slots__ = ("id", "host", "port", "pool", "inflight", "ejected_until")

    def __init__(self, id: str, host: str, port: int, connect_timeout: float = 2.0) -> None:
        self.id = id
        self.host = host
        self.port = port
        self.pool = UpstreamPool(host, port, connect_timeout=connect_timeout)
        self.inflight = 0
        self.ejected_until = 0.0

    def eject(self, now: float, seconds: float = EJECT_SECONDS) -> None:
        """Passive health: a connect failure sends new requests elsewhere for a while, until the
        supervisor's probes decide what the replica really is."""
        self.ejected_until = now + seconds

    def __repr__(self) -> str:
        return f"Endpoint({self.id} {self.host}:{self.port} inflight={self.inflight})"


def p2c(endpoints: Sequence[Endpoint], randrange: Callable[[int], int], now: float,
        exclude: Endpoint | None = None) -> Endpoint | None:
    """Power of two choices on in-flight count; ejected or excluded endpoints only as a last
    resort (ejected) or never (excluded)."""
    live = [e for e in endpoints if e is not exclude and e.ejected_until <= now]
    if not live:
        live = [e for e in endpoints if e is not exclude]
        if not live:
            return None
    n = len(live)
    if n == 1:
        return live[0]
    i = randrange(n)
    j = randrange(n - 1)
    if j >= i:
        j += 1
    a, b = live[i], live[j]
    return a if a.inflight <= b.inflight else b


class ReplicaSet:
    """Ready endpoints of one version, plus the requests waiting for one."""

    def __init__(self, service: str, version: str, *, max_waiting: int = 1024,
                 rng: random.Random | None = None,
                 clock: Callable[[], float] = time.monotonic) -> None:
        self.service = service
        self.version = version
        self.max_waiting = max_waiting
        self.endpoints: tuple[Endpoint, ...] = ()
        self.waiting = 0
        self.on_demand: Callable[[], None] | None = None  # the autoscaler's "someone is waiting"
        # replicas starting for the waiting requests: set by the autoscaler on versions it
        # scales (a cold start); a fixed-size version's starting replicas do not count
        self.starting: Callable[[], int] = _nothing
        self._ready: asyncio.Future[None] | None = None
        self._randrange = (rng or random.Random()).randrange
        self._clock = clock
        # a batcher queueing for this version: told of every publish, adds its backlog
        self._watchers: list[tuple[Callable[[], None], Callable[[], int] | None]] = []

    # -- control plane ----------------------------------------------------------------------
    def publish(self, endpoints: Sequence[Endpoint]) -> None:
        self.endpoints = tuple(endpoints)
        if self.endpoints and self._ready is not None:
            if not self._ready.done():
                self._ready.set_result(None)
            self._ready = None
        for on_publish, _ in self._watchers:
            on_publish()

    def watch(self, on_publish: Callable[[], None],
              backlog: Callable[[], int] | None = None) -> None:
        """Call ``on_publish`` after every publish (queued work may go to a new replica);
        ``backlog`` (requests queued or in flight there) counts in ``pending``."""
        self._watchers.append((on_publish, backlog))

    def unwatch(self, on_publish: Callable[[], None]) -> None:
        self._watchers = [w for w in self._watchers if w[0] != on_publish]

    @property
    def inflight(self) -> int:
        return sum(e.inflight for e in self.endpoints)

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

    # -- data plane -------------------------------------------------------------------------
    def pick(self, exclude: Endpoint | None = None) -> Endpoint | None:
        eps = self.endpoints
        if len(eps) == 1 and eps[0] is not exclude:
            return eps[0]
        return p2c(eps, self._randrange, self._clock(), exclude)

    async def acquire(self, deadline: float, exclude: Endpoint | None = None) -> Endpoint:
        """An endpoint now, or after waiting (bounded queue) until ``deadline`` (loop time)."""
        ep = self.pick(exclude)
        if ep is not None:
            return ep
        if self.waiting >= self.max_waiting:
            raise Overloaded(f"{self.waiting} requests already wait for a replica of {self.version}")
        loop = asyncio.get_running_loop()
        self.waiting += 1
        try:
            if self.on_demand is not None:
                self.on_demand()
            while True:
                remaining = deadline - loop.time()
                if remaining <= 0:
                    raise self.unavailable()
                if self._ready is None:
                    self._ready = loop.create_future()
                try:
                    await asyncio.wait_for(asyncio.shield(self._ready), remaining)
                except TimeoutError:
                    raise self.unavailable() from None
                ep = self.pick(exclude)
                if ep is not None:
                    return ep
        finally:
            self.waiting -= 1
