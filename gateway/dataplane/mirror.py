"""Shadow traffic: copies of a share of requests go to a mirror version, are compared with the
primary's answer, and are dropped.

The primary never waits for, and cannot be changed or failed by, its copy: the handler hands the
copy over *after* the primary's answer is ready, the copy runs on a pooled connection with a
completion callback (no task per copy), and every error on the mirror side ends in a counter.
Bounds, so that a dead, slow or huge mirror costs the primary nothing but a little CPU:

- which requests: methods that are safe to repeat (GET and HEAD; POST when the service says so,
  since inference is usually a side-effect-free POST) with a known body no larger than the cap;
  of those, exactly ``percent``% chosen by a counter (``Sampler``), evenly spread;
- how many: ``concurrency`` copies in flight and ``queue`` more waiting (``Gate``); beyond that
  a copy is dropped and counted;
- how long: ``timeout`` from send to a complete answer (plus the service's connect timeout to
  open a connection); answers too big to buffer are aborted once they pass the buffer limit.

Comparison decodes both bodies as JSON (the raw bytes if not JSON) and calls the comparator
plugin ``(primary, shadow) -> bool``; a status mismatch is a disagreement and is also counted on
its own. Big bodies are compared in a thread so the loop keeps serving.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections import deque
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import orjson

from gateway.dataplane.balance import Endpoint, ReplicaSet
from gateway.dataplane.proxy import request_head
from gateway.errors import NoReadyReplica, UpstreamConnectError
from gateway.metrics import ShadowMetrics
from gateway.tasks import spawn
from gateway.tracing import RequestSpan

log = logging.getLogger("gateway.mirror")

Compare = Callable[[Any, Any], bool]
SAFE_METHODS = frozenset({"GET", "HEAD"})
SHADOW_LINE = b"X-Shadow: 1\r\n\r\n"     # appended to a reused head
THREAD_COMPARE_BYTES = 64 * 1024    # above this, decoding and comparing leave the event loop


class Sampler:
    """Says yes to exactly ``percent``% of calls, evenly spread (a counter, not a coin)."""

    __slots__ = ("acc", "step")
    SCALE = 1_000_000                # percent resolution: 0.0001%

    def __init__(self, percent: float) -> None:
        self.step = round(percent * self.SCALE / 100)
        self.acc = 0

    def __call__(self) -> bool:
        self.acc += self.step
        if self.acc >= self.SCALE:
            self.acc -= self.SCALE
            return True
        return False


class Gate:
    """Admission for mirror copies: ``concurrency`` running plus ``queue`` waiting at most."""

    __slots__ = ("admitted", "limit")

    def __init__(self, concurrency: int, queue: int) -> None:
        self.limit = concurrency + queue
        self.admitted = 0

    def enter(self) -> bool:
        if self.admitted >= self.limit:
            return False
        self.admitted += 1
        return True

    def leave(self) -> None:
        self.admitted -= 1


def mirror_methods(mirror_post: bool) -> frozenset[str]:
    return SAFE_METHODS | {"POST"} if mirror_post else SAFE_METHODS


def eligible(method: str, body_exists: bool, length: int | None, methods: frozenset[str],
             max_body: int) -> bool:
    """A request may be copied: a safe method and a body we hold whole and under the cap."""
    if method not in methods:
        return False
    return not body_exists or (length is not None and length <= max_body)


def decode(body: bytes | None) -> Any:
    if not body:
        return None
    try:
        return orjson.loads(body)
    except orjson.JSONDecodeError:
        return body


def agrees(primary_status: int, primary_body: bytes | None, shadow_status: int,
           shadow_body: bytes | None, compare: Compare) -> bool:
    """The verdict on one pair: same status and the comparator's approval of the bodies.
    Byte-identical bodies agree without decoding (comparators are expected to be reflexive):
    the common case of a faithful shadow costs one memcmp."""
    if primary_status != shadow_status:
        return False
    if primary_body == shadow_body:
        return True
    try:
        return bool(compare(decode(primary_body), decode(shadow_body)))
    except Exception:  # a broken comparator is a disagreement, not a crash
        _comparator_failures[0] += 1
        if _comparator_failures[0] % 1000 == 1:     # the first, then one in a thousand
            log.exception("comparator failed (%d times); counting disagreements",
                          _comparator_failures[0])
        return False


_comparator_failures = [0]


@dataclass(frozen=True, slots=True)
class Primary:
    """What the copy is judged against."""

    status: int
    body: bytes | None     # None when the primary's answer was streamed (not comparable)
    seconds: float
    span: RequestSpan | None = None   # the request's span (tracing on): the copy's is its child


class _Copy:
    """One copy on its way: what to send, what to judge it against, and where it went."""

    __slots__ = ("body", "ep", "head", "head_only", "mirror", "primary", "sent")

    def __init__(self, mirror: Mirror, head: bytes, body: bytes | None, head_only: bool,
                 primary: Primary) -> None:
        self.mirror = mirror
        self.head = head
        self.body = body
        self.head_only = head_only
        self.primary = primary
        self.ep: Endpoint | None = None
        self.sent = 0.0

    def done(self, status: int, answer: bytes | None, error: Exception | None) -> None:
        self.mirror._done(self, status, answer, error)   # noqa: SLF001 - the mirror's own record


class Mirror:
    """One service's shadow target, compiled with the routing table.

    A copy is not a task: it is written on an idle pooled connection and finished by the
    connection's completion callback (``UpstreamPool.send``), so it costs the exchange's two
    system calls and parsing, not a task, futures and coroutine frames. Only opening a new
    connection (a cold pool, or more copies in flight than idle connections) takes a task.
    """

    __slots__ = (
        "_loop",
        "_task_name",
        "compare",
        "concurrency",
        "gate",
        "max_body",
        "methods",
        "metrics",
        "replicas",
        "running",
        "sample",
        "service",
        "timeout",
        "version",
        "waiting",
    )

    def __init__(self, service: str, version: str, replicas: ReplicaSet, *, percent: float,
                 methods: frozenset[str], max_body: int, concurrency: int, queue: int,
                 timeout: float, compare: Compare, metrics: ShadowMetrics) -> None:
        self.service = service
        self.version = version
        self.replicas = replicas
        self.methods = methods
        self.max_body = max_body
        self.timeout = timeout
        self.compare = compare
        self.metrics = metrics
        self.sample = Sampler(percent)
        self.gate = Gate(concurrency, queue)
        self.concurrency = concurrency
        self.running = 0
        self.waiting: deque[_Copy] = deque()
        self._loop: asyncio.AbstractEventLoop | None = None     # the loop of the first copy
        self._task_name = f"mirror {service}/{version}"

    def wants(self, primary: str, method: str, body_exists: bool, length: int | None) -> bool:
        """Eligible and picked by the counter (only eligible requests advance it). A request
        the mirror version served itself (a rule sent it there) is not copied to it again."""
        return primary != self.version and \
            eligible(method, body_exists, length, self.methods, self.max_body) and self.sample()

    def submit(self, method: str, target: str, headers: tuple[tuple[bytes, bytes], ...],
               peer: bytes, body: bytes | None, primary: Primary,
               sent: bytes | None = None, trusted: bool = False, trace: bytes = b"") -> None:
        """Send one copy (tagged ``X-Shadow: 1``) now, or queue it behind ``concurrency``
        copies in flight, or drop it when the gate is full. ``sent``: the primary's upstream
        head for this body, reused when given; ``trusted``, ``trace``: as for
        ``proxy.request_head``."""
        if not self.gate.enter():
            self.metrics.dropped.inc()
            return
        if sent is None:
            sent = request_head(method.encode(), target.encode(), headers, peer, b"http",
                                len(body) if body else 0, self.service.encode(), trusted, trace)
        # the same head, one more line (a client's own X-Shadow never got into it)
        head = sent[:-2] + SHADOW_LINE
        if self._loop is None:
            self._loop = asyncio.get_running_loop()
        copy = _Copy(self, head, body or None, method == "HEAD", primary)
        if self.running < self.concurrency:
            self._start(copy)
        else:
            self.waiting.append(copy)

    def _start(self, copy: _Copy) -> None:
        self.running += 1
        ep = self.replicas.pick_any()     # copies are bounded by their own concurrency
        if ep is None:
            copy.done(0, None, NoReadyReplica(f"no ready replica of mirror {self.service}/"
                                              f"{self.version}"))
            return
        assert self._loop is not None
        copy.ep = ep
        ep.inflight += 1
        copy.sent = self._loop.time()
        if not ep.pool.send(copy.head, copy.body, self.timeout, copy.head_only, copy.done):
            spawn(self._connect(copy, ep), name=self._task_name)

    async def _connect(self, copy: _Copy, ep: Endpoint) -> None:
        """No idle connection: open one (bounded by the pool's connect timeout), then send."""
        try:
            conn = await ep.pool.connect()
        except UpstreamConnectError as exc:
            copy.done(0, None, exc)
            return
        assert self._loop is not None
        copy.sent = self._loop.time()
        conn.send(copy.head, copy.body, self.timeout, copy.head_only, copy.done)

    def _done(self, copy: _Copy, status: int, answer: bytes | None,
              error: Exception | None) -> None:
        """A copy ended (called from a protocol callback: must not raise). Judge it, then let
        the next waiting copy go, outside the callback."""
        assert self._loop is not None
        seconds = self._loop.time() - copy.sent
        self.running -= 1
        self.gate.leave()
        if copy.ep is not None:
            self.replicas.release(copy.ep)    # the slot may go to a request waiting for one
        if self.waiting:
            self._loop.call_soon(self._next)
        span = copy.primary.span
        try:
            if span is not None:
                span.child("mirror", time.time_ns() - int(seconds * 1e9), version=self.version,
                           status=status, error=type(error).__name__ if error else "")
            self._judge(copy.primary, status, answer, seconds, error)
        except Exception:  # a bug here must not break the connection that called us
            log.exception("mirror %s/%s: could not judge a copy", self.service, self.version)

    def _next(self) -> None:
        while self.waiting and self.running < self.concurrency:
            self._start(self.waiting.popleft())

    def _judge(self, primary: Primary, status: int, answer: bytes | None, seconds: float,
               error: Exception | None) -> None:
        m = self.metrics
        if error is not None:
            m.error.inc()
            log.debug("mirror %s/%s: %s", self.service, self.version, error)
            return
        m.sent.inc()
        m.latency_diff.observe(seconds - primary.seconds)
        if status != primary.status:
            m.mismatch.inc()
        if primary.body is None and status == primary.status:
            return     # streamed primary: only the status could be compared
        if len(answer or b"") + len(primary.body or b"") > THREAD_COMPARE_BYTES:
            spawn(self._judge_in_thread(primary, status, answer), name=self._task_name)
        else:
            m.compared_one(agrees(primary.status, primary.body, status, answer, self.compare))

    async def _judge_in_thread(self, primary: Primary, status: int,
                               answer: bytes | None) -> None:
        verdict = await asyncio.to_thread(agrees, primary.status, primary.body, status, answer,
                                          self.compare)
        self.metrics.compared_one(verdict)
