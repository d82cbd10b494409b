"""The data-plane request handler, served by our own HTTP/1.1 protocol (``http1``) on uvloop.

Per request: read the current table once, normalise the path, match a service, choose a
version, pick a replica, forward over a pooled connection, relay the answer. Every error the
gateway produces itself is JSON: ``{"error": kind, "service": name, "detail": text}``.

A plain request (a free slot, an idle pooled connection, no batching, mirror, stream or
multiplexing) is served by ``fastpath`` with protocol callbacks alone; everything that must
wait is ``handle``, a coroutine in a task. Both share the pieces below: one behaviour, two speeds.
"""

from __future__ import annotations

import asyncio
import functools
import logging
import random
import time
from collections.abc import AsyncIterator

from gateway import tasks
from gateway.dataplane import fastpath
from gateway.dataplane.balance import Endpoint, ReplicaSet
from gateway.dataplane.batchers import Batchers
from gateway.dataplane.http1 import WHOLE_BODY_LIMIT, Server
from gateway.dataplane.http1msg import JSON_FIELD, Request, error_parts, header_lines
from gateway.dataplane.http1rules import Deadlines
from gateway.dataplane.mirror import Primary
from gateway.dataplane.paths import normalise
from gateway.dataplane.proxy import request_head, response_fields
from gateway.dataplane.table import ServiceRoute, TableHolder, VersionRoute
from gateway.dataplane.upstream import UpstreamResponse
from gateway.dataplane.wheel import Wheel
from gateway.errors import (
    BodyTooLarge,
    NoReadyReplica,
    NotFound,
    ProxyError,
    UpstreamConnectError,
    UpstreamError,
    UpstreamReset,
    UpstreamTimeout,
)
from gateway.metrics import Metrics
from gateway.tracing import Ids, RequestSpan, Tracer, request_ids

log = logging.getLogger("gateway.dataplane")
access_log = logging.getLogger("gateway.access")

IDEMPOTENT = fastpath.IDEMPOTENT


class DataPlane:
    """Owns the data listener; reads routing only through ``holder.current``."""

    def __init__(self, holder: TableHolder, metrics: Metrics) -> None:
        self.holder = holder
        self.metrics = metrics
        # keep-alive: 75 s
        # the plain request's entry, called from the client protocol's data_received: a
        # partial rather than a method, one Python frame less per request
        self._http = Server(self.handle, on_timeout=metrics.timeout,
                            fast=functools.partial(fastpath.start, self))
        self.deadlines = Deadlines()
        self.trusted = False         # gateway.trusted_hops > 0: keep their forwarding headers
        # kept: asyncio.get_running_loop() costs a getpid() syscall per call on Python 3.11
        self.loop = loop = asyncio.get_running_loop()
        self.wheel = Wheel(loop.call_at, loop.time)   # every request's upstream deadline
        self.wheel_clock = loop.time
        self.access_sample = 0.0     # fraction of requests in the access log (0: off)
        self._random = random.random
        self.batchers = Batchers(metrics)   # one per batching version, kept across tables
        self.tracer: Tracer | None = None   # an OTLP exporter (gateway.tracing), else no spans

    def configure(self, deadlines: Deadlines, max_body: int, trusted_hops: int) -> None:
        """The gateway-wide data-plane settings (at start and on each reload)."""
        self.deadlines = self._http.deadlines = deadlines
        self._http.max_body = max_body
        self.trusted = trusted_hops > 0

    async def start(self, host: str, port: int, reuse_port: bool = False) -> int:
        return await self._http.start(host, port, reuse_port)

    @property
    def connections(self) -> int:
        """Client connections open now (for /status)."""
        return len(self._http.conns)

    async def stop(self, drain_timeout: float) -> None:
        """Stop accepting, let in-flight requests finish (bounded), close connections."""
        # batchers finish or answer 503 a little before the handlers' drain runs out
        closing = tasks.spawn(self.batchers.shutdown(drain_timeout * 0.8), name="batchers stop")
        await self._http.shutdown(drain_timeout)
        await closing

    def extra_fields(self, version: VersionRoute, cookie: str | None) -> bytes:
        """x-served-by (encoded once per version) and a sticky Set-Cookie."""
        if cookie is None:
            return version.served_lines
        return version.served_lines + header_lines((("Set-Cookie", cookie),))

    # -- the hot path -------------------------------------------------------------------------
    async def handle(self, request: Request, routed: fastpath.Routed | None = None) -> None:
        """Serve ``request``; ``routed``: the fast path routed it already but cannot go on
        (choosing a version again would move the weighted split's counter twice)."""
        loop = self.loop
        svc: ServiceRoute | None = None
        version: VersionRoute | None = None
        if routed is None:
            start = loop.time()
            ids = request_ids(request.trace_in)
        else:
            start, ids = routed.start, routed.ids
        span = self.tracer.request(ids) if self.tracer is not None else None
        extra = ids.response_line
        replica = None
        length = request.content_length
        taken: Endpoint | None = None
        try:
            if routed is None:
                path, _, query = request.target.partition("?")
                path = normalise(path)
                svc = self.holder.current.match(path)
                if svc is None:
                    raise NotFound(f"no service is routed at {path}")
                if length is not None and length > svc.max_body:
                    raise BodyTooLarge(f"body of {length} bytes is over the limit of "
                                       f"{svc.max_body}")
                version, cookie = svc.choose(request)
            else:
                svc, version, cookie, path, query = (routed.svc, routed.version, routed.cookie,
                                                     routed.path, routed.query)
                taken = routed.ep
            if version is None:
                raise NoReadyReplica("every version of this service has weight 0")
            extra = self.extra_fields(version, cookie) + ids.response_line
            target = svc.upstream_path(path)
            if query:
                target = f"{target}?{query}"
            stream = request.wants_stream
            body, head, replica = await self._forward(request, svc, version, target, length,
                                                      start, extra, ids, span, stream,
                                                      taken=taken)
            mirror = svc.mirror
            # a streamed request body was not kept: only a body held whole can be copied;
            # a streaming answer is never mirrored (streams.py says why)
            if mirror is not None and not stream and mirror.wants(version.name, request.method,
                                                   request.has_body,
                                                   length if request.body is not None else None):
                self._shadow(request, svc, target, body, head, loop.time() - start, ids, span)
        except ProxyError as exc:
            self.refuse(request, exc, svc, extra)
        self.answered(request, svc, version, replica, ids, start, span)

    def refuse(self, request: Request, exc: ProxyError, svc: ServiceRoute | None,
               extra: bytes) -> None:
        """Answer with the gateway's own error."""
        fields, err = error_parts(exc, svc.name if svc else None)
        request.respond(exc.status, fields + extra, err)
        self.metrics.errors.labels(exc.kind).inc()
        if exc.deadline is not None:
            self.metrics.timeout(exc.deadline)

    def answered(self, request: Request, svc: ServiceRoute | None, version: VersionRoute | None,
                 replica: str | None, ids: Ids, start: float, span: RequestSpan | None) -> None:
        """A request's answer is written: count it, end its span, sample it into the log."""
        seconds = self.loop.time() - start
        if version is not None:
            version.metrics.observe(request.status, seconds)
        if span is not None:
            span.end(request.status, service=svc.name if svc else "",
                     version=version.name if version else "", replica=replica or "")
        if self.access_sample and self._random() < self.access_sample:
            self._access(request, svc, version, replica, ids, seconds)

    async def resume(self, x: fastpath.Exchange, failed: UpstreamError | None,
                     resp: UpstreamResponse | None) -> None:
        """The rest of a fast-path request that must wait: the retries after ``failed`` (its
        replica released already), or relaying the streamed answer ``resp``."""
        request, svc, version = x.request, x.svc, x.version
        replica = None
        try:
            if resp is not None:
                replica = x.ep.id
                await _relay(request, resp, version.replicas, x.ep, x.extra)
            else:
                _, _, replica = await self._forward(
                    request, svc, version, x.target, request.content_length, x.start, x.extra,
                    x.ids, None, first=1, exclude=x.ep, last=failed)
        except ProxyError as exc:
            self.refuse(request, exc, svc, x.extra)
        self.answered(request, svc, version, replica, x.ids, x.start, None)

    @staticmethod
    def _access(request: Request, svc: ServiceRoute | None, version: VersionRoute | None,
                replica: str | None, ids: Ids, seconds: float) -> None:
        """One access-log line; with ``--log-format json`` its fields are the JSON keys."""
        latency_ms = round(seconds * 1000, 1)
        fields = {"event": "access", "method": request.method,
                  "path": request.target.partition("?")[0], "status": request.status,
                  "latency_ms": latency_ms, "service": svc.name if svc else None,
                  "version": version.name if version else None, "replica": replica,
                  "request_id": ids.request_id.decode(), "peer": request.peer}
        access_log.info("%s %s %d %.1fms service=%s version=%s replica=%s request_id=%s peer=%s",
                        fields["method"], fields["path"], request.status, latency_ms,
                        fields["service"] or "-", fields["version"] or "-", replica or "-",
                        fields["request_id"], request.peer, extra=fields)

    def _shadow(self, request: Request, svc: ServiceRoute, target: str, body: bytes | None,
                head: bytes | None, seconds: float, ids: Ids, span: RequestSpan | None) -> None:
        """Hand a copy to the mirror once the primary's answer exists; nothing here may fail or
        hold up the primary."""
        try:
            primary = Primary(request.status, body, seconds, span)
            assert svc.mirror is not None
            svc.mirror.submit(request.method, target, request.raw_headers, request.peer_bytes,
                              request.body if request.has_body else None, primary, head,
                              self.trusted, ids.upstream_lines)
        except Exception:  # the primary is answered whatever the mirror does
            log.exception("could not start a mirror copy for %s", svc.name)

    async def _forward(self, request: Request, svc: ServiceRoute, version: VersionRoute,
                       target: str, length: int | None, start: float, extra: bytes, ids: Ids,
                       span: RequestSpan | None, stream: bool = False, *, first: int = 0,
                       exclude: Endpoint | None = None, last: UpstreamError | None = None,
                       taken: Endpoint | None = None,
                       ) -> tuple[bytes | None, bytes | None, str | None]:
        """Forward and answer; the answer's body when it was whole and the upstream request
        head (both for the mirror), and the replica that answered (for the access log).
        ``stream``: the client asked for a streamed answer, which bypasses the batcher and is
        counted as a stream. ``first``, ``exclude``, ``last``: the attempt to begin with, after
        the fast path's first one failed on ``exclude`` with ``last``. ``taken``: a slot the
        fast path holds already (the first attempt uses it)."""
        method = request.method
        batcher = version.batcher
        if batcher is not None and method == "POST" and target == batcher.target and not stream:
            body_all = await _whole_body(request, length, svc.max_body)
            queued = time.time_ns() if span is not None else 0
            status, out = await batcher.submit(body_all, request.headers, request.alive, start,
                                               ids.request_id)
            if span is not None:
                span.child("batch", queued, status=status)
            request.respond(status, JSON_FIELD + extra, out)
            return out, None, None
        body: bytes | AsyncIterator[bytes] | None
        body_len: int | None
        if not request.has_body:
            body, body_len = None, 0
        elif length is not None and length <= WHOLE_BODY_LIMIT:
            body = request.body if request.body is not None else await request.read()
            body_len = len(body)
        elif length is None:
            # a chunked body is read whole (up to the limit) before anything is forwarded, so
            # a body over the limit never reaches the worker as a head and a cut-off body
            body = await _whole_body(request, length, svc.max_body)
            body_len = len(body)
        else:
            body, body_len = _limited(request.stream(), svc.max_body), length
        head = request_head(method.encode(), target.encode(), request.raw_headers,
                            request.peer_bytes, b"http", body_len, svc.host,
                            self.trusted, ids.upstream_lines)
        replayable = not isinstance(body, AsyncIterator)
        idempotent = method in IDEMPOTENT
        loop = self.loop
        replicas = version.replicas
        mux = version.multiplex
        model = _header(request.raw_headers, mux.header) if mux is not None else None
        for attempt in range(first, svc.retries + 1):
            ep: Endpoint | None
            if taken is not None:
                ep, taken = taken, None
            elif model is None:
                ep = replicas.take(exclude)
            else:                # a multiplexed model: affinity with bounded load
                assert mux is not None
                ep = replicas.take_model(model, mux.slack, exclude)
            if ep is None:
                if last is not None and all(e is exclude for e in replicas.endpoints):
                    raise last        # the only replica just failed: no point in waiting
                queued = time.time_ns() if span is not None else 0
                ep = await replicas.wait(start + svc.queue_timeout, exclude, request.alive)
                self.metrics.queue_wait.labels(svc.name, version.name).observe(
                    loop.time() - start)
                if span is not None:
                    span.child("queue_wait", queued, replica=ep.id)
            if model is not None:
                assert mux is not None
                mux.metrics.count(model, ep.assign(model))
            sent = loop.time()
            sent_ns = time.time_ns() if span is not None else 0
            try:
                resp = await ep.pool.request(head, body, svc.request_timeout, method == "HEAD",
                                             self.deadlines.upstream_idle, self.wheel)
            except (UpstreamConnectError, UpstreamReset) as exc:
                # set aside (if it is) before its slot is handed to a waiting request
                self.failed(version, ep, exc)
                if isinstance(exc, UpstreamConnectError):
                    ep.eject(loop.time())
                replicas.release(ep)
                can_retry = isinstance(exc, UpstreamConnectError) or (idempotent and replayable)
                if not can_retry or attempt == svc.retries:
                    raise
                self.metrics.retries.labels(svc.name, version.name).inc()
                exclude, last = ep, exc
                continue
            except (UpstreamError, UpstreamTimeout) as exc:
                self.failed(version, ep, exc)
                replicas.release(ep)
                raise
            except BaseException:
                replicas.release(ep)
                raise
            version.metrics.upstream(loop.time() - sent)
            if mux is not None:
                ep.learn(resp.headers)
            if resp.status >= 500:
                version.metrics.upstream_error("5xx")
                replicas.failure(ep)
            elif ep.fails:
                replicas.success(ep)
            if stream and resp.status == 200:
                answered = await _relay_stream(request, resp, replicas, ep, extra, version)
            else:
                answered = await _relay(request, resp, replicas, ep, extra)
            if span is not None:
                span.child("upstream", sent_ns, replica=ep.id, status=resp.status)
            return answered, head, ep.id
        raise AssertionError("unreachable")

    @staticmethod
    def failed(version: VersionRoute, ep: Endpoint, exc: ProxyError) -> None:
        version.metrics.upstream_error(exc.metric)
        version.replicas.failure(ep)


async def _relay(request: Request, resp: UpstreamResponse, replicas: ReplicaSet, ep: Endpoint,
                 extra: bytes) -> bytes | None:
    if resp.body is not None:
        replicas.release(ep)
        fastpath.relay_whole(request, resp.status, resp.headers, resp.body, extra)
        return resp.body
    try:
        request.start(resp.status, response_fields(resp.headers) + extra)
        async for chunk in resp.stream():
            await request.write(chunk)
        request.end()
        return None
    finally:
        resp.discard()
        replicas.release(ep)


async def _relay_stream(request: Request, resp: UpstreamResponse, replicas: ReplicaSet,
                        ep: Endpoint, extra: bytes, version: VersionRoute) -> bytes | None:
    """A streamed answer, counted (started, and open now) while it is relayed."""
    metrics = version.metrics
    metrics.streams.inc()
    metrics.streams_open.inc()
    try:
        return await _relay(request, resp, replicas, ep, extra)
    finally:
        metrics.streams_open.dec()


def _header(headers: tuple[tuple[bytes, bytes], ...], name: bytes) -> bytes | None:
    """A request header's value (``name`` lowercase), or None when absent or empty."""
    n = len(name)
    for key, value in headers:
        if len(key) == n and key.lower() == name:
            return value.strip() or None
    return None


async def _whole_body(request: Request, length: int | None, limit: int) -> bytes:
    if length is not None and length <= WHOLE_BODY_LIMIT:
        return request.body if request.body is not None else await request.read()
    return b"".join([chunk async for chunk in _limited(request.stream(), limit)])


async def _limited(content: AsyncIterator[bytes], limit: int) -> AsyncIterator[bytes]:
    """Stream a request body, refusing it once it passes ``limit`` bytes."""
    seen = 0
    async for chunk in content:
        seen += len(chunk)
        if seen > limit:
            raise BodyTooLarge(f"body is over the limit of {limit} bytes")
        yield chunk
