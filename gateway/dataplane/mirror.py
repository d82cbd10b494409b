"""Shadow traffic: copies of a share of requests go to a mirror version, are compared with the
primary's answer, and are dropped.

The primary never waits for, and cannot be changed or failed by, its copy: the handler hands the
copy over *after* the primary's answer is ready, as one bounded background task, and every
error on the mirror side ends in a counter. Bounds, so that a dead, slow or huge mirror costs
the primary nothing but a little CPU:

- which requests: methods that are safe to repeat (GET and HEAD; POST when the service says so,
  since inference is usually a side-effect-free POST) with a known body no larger than the cap;
  of those, exactly ``percent``% chosen by a counter (``Sampler``), evenly spread;
- how many: ``concurrency`` copies in flight and ``queue`` more waiting (``Gate``); beyond that
  a copy is dropped and counted;
- how long: ``timeout`` from send to a complete answer (plus the service's connect timeout to
  open a connection); answers too big to buffer are aborted once their head arrives.

Comparison decodes both bodies as JSON (the raw bytes if not JSON) and calls the comparator
plugin ``(primary, shadow) -> bool``; a status mismatch is a disagreement and is also counted on
its own. Big bodies are compared in a thread so the loop keeps serving.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import orjson

from gateway.dataplane.balance import ReplicaSet
from gateway.dataplane.proxy import request_head
from gateway.errors import NoReadyReplica, ProxyError, UpstreamError
from gateway.metrics import ShadowMetrics
from gateway.tasks import spawn

log = logging.getLogger("gateway.mirror")

Compare = Callable[[Any, Any], bool]
SAFE_METHODS = frozenset({"GET", "HEAD"})
SHADOW_HEADER = (b"X-Shadow", b"1")
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


class Mirror:
    """One service's shadow target, compiled with the routing table."""

    __slots__ = (
        "_slots",
        "_slots_size",
        "_task_name",
        "compare",
        "gate",
        "max_body",
        "methods",
        "metrics",
        "replicas",
        "sample",
        "service",
        "timeout",
        "version",
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
        self._slots: asyncio.Semaphore | None = None     # made on the loop, at first use
        self._slots_size = concurrency
        self._task_name = f"mirror {service}/{version}"

    def wants(self, primary: str, method: str, body_exists: bool, length: int | None) -> bool:
        """Eligible and picked by the counter (only eligible requests advance it). A request
        the mirror version served itself (a rule sent it there) is not copied to it again."""
        return primary != self.version and \
            eligible(method, body_exists, length, self.methods, self.max_body) and self.sample()

    def submit(self, method: str, target: str, headers: tuple[tuple[bytes, bytes], ...],
               peer: bytes, body: bytes | None, primary: Primary,
               sent: bytes | None = None) -> None:
        """Start one copy (tagged ``X-Shadow: 1``) in the background, or drop it when the gate
        is full. ``sent``: the primary's upstream head for this body, reused when given."""
        if not self.gate.enter():
            self.metrics.dropped.inc()
            return
        if sent is not None:    # the same head, one more line: no second header rewrite
            head = sent[:-2] + SHADOW_LINE
        else:
            head = request_head(method.encode(), target.encode(), headers + (SHADOW_HEADER,),
                                peer, b"http", len(body) if body else 0, self.service.encode())
        spawn(self._run(head, body or None, method == "HEAD", primary), name=self._task_name)

    async def _run(self, head: bytes, body: bytes | None, head_only: bool,
                   primary: Primary) -> None:
        m = self.metrics
        try:
            if self._slots is None:
                self._slots = asyncio.Semaphore(self._slots_size)
            async with self._slots:
                status, answer, seconds = await self._send(head, body, head_only)
        except (ProxyError, TimeoutError, OSError) as exc:
            m.error.inc()
            log.debug("mirror %s/%s: %s", self.service, self.version, exc)
            return
        finally:
            self.gate.leave()
        m.sent.inc()
        m.latency_diff.observe(seconds - primary.seconds)
        if status != primary.status:
            m.mismatch.inc()
        if primary.body is None and status == primary.status:
            return     # streamed primary: only the status could be compared
        size = len(answer or b"") + len(primary.body or b"")
        if size > THREAD_COMPARE_BYTES:
            verdict = await asyncio.to_thread(agrees, primary.status, primary.body, status,
                                              answer, self.compare)
        else:
            verdict = agrees(primary.status, primary.body, status, answer, self.compare)
        m.compared_one(verdict)

    async def _send(self, head: bytes, body: bytes | None,
                    head_only: bool) -> tuple[int, bytes | None, float]:
        ep = self.replicas.pick()
        if ep is None:
            raise NoReadyReplica(f"no ready replica of mirror {self.service}/{self.version}")
        loop = asyncio.get_running_loop()
        ep.inflight += 1
        start = loop.time()
        try:
            # the exchange's own deadline; connecting is bounded by the pool's connect timeout
            resp = await ep.pool.request(head, body, self.timeout, head_only)
            if resp.body is None:          # too big to buffer: not worth reading for a shadow
                resp.discard()
                raise UpstreamError("mirror answer too large to compare")
            return resp.status, resp.body, loop.time() - start
        finally:
            ep.inflight -= 1
