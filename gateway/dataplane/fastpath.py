"""The plain request without a task: protocol callbacks end to end.

``start`` runs inside the client connection's ``data_received`` (``http1.Fast``): it routes the
request, takes a free slot on a replica and an idle pooled connection to it, and writes the
request there; the upstream connection's protocol then calls the request's ``Exchange`` (an
``upstream.Sink``), which counts, releases the slot, writes the answer to the client and tells
the connection the request is served. No Task, Future or coroutine frame, and the deadline is a
number in the data plane's timer wheel.

``start`` does nothing and says False unless the request may be plain: no tracer, a body held
whole (or none) and within the limit, no streamed answer asked for. Once it has chosen the
version (which moves the weighted split's counter: never twice), a service with a mirror, a
version with batching or multiplexing, no free slot or no idle connection hand the routed request
to ``DataPlane.handle`` in a task (routed once, not again there). Everything that must wait (a slot, a connect, streaming,
batching, mirroring, multiplexing) is ``handle``'s, and so is what comes after a fast start that
must wait: the retries after a failed exchange, or relaying an answer too large or of unknown
length (``DataPlane.resume``). Both paths share routing, accounting and error answers, so the
behaviour is the same; only the cost differs.
"""

from __future__ import annotations

import logging
from typing import TYPE_CHECKING, NamedTuple

from gateway.dataplane.http1msg import Request
from gateway.dataplane.paths import normalise
from gateway.dataplane.proxy import request_head, response_fields
from gateway.dataplane.upstream import UpstreamResponse
from gateway.errors import (
    InternalError,
    ProxyError,
    UpstreamConnectError,
    UpstreamError,
    UpstreamReset,
)
from gateway.tracing import Ids, request_ids

if TYPE_CHECKING:
    from gateway.dataplane.balance import Endpoint
    from gateway.dataplane.server import DataPlane
    from gateway.dataplane.table import ServiceRoute, VersionRoute

log = logging.getLogger("gateway.dataplane")

IDEMPOTENT = frozenset({"GET", "HEAD", "OPTIONS", "PUT", "DELETE", "TRACE"})


class Routed(NamedTuple):
    """A request the fast path routed but hands to ``DataPlane.handle``."""

    svc: ServiceRoute
    version: VersionRoute | None
    cookie: str | None
    path: str
    query: str
    start: float
    ids: Ids
    ep: Endpoint | None = None      # a slot taken already (the queue gave it)


def start(dp: DataPlane, request: Request) -> bool:
    """Begin serving ``request`` with callbacks; False when it is not plain (nothing done)."""
    if request.streamed or request.wants_stream or dp.tracer is not None:
        return False
    path, _, query = request.target.partition("?")
    path = normalise(path)
    svc = dp.holder.current.match(path)
    if svc is None:
        return False
    length = request.content_length
    if length is not None and length > svc.max_body:
        return False
    now = dp.wheel_clock()
    ids = request_ids(request.trace_in)
    # a service with one live version and no rules has its answer ready (``fixed``)
    version, cookie = svc.fixed or svc.choose(request)
    if version is None or version.batcher is not None or version.multiplex is not None \
            or svc.mirror is not None:     # routed once: ``handle`` goes on from here
        request.hand_over(dp.handle(request, Routed(svc, version, cookie, path, query, now, ids)))
        return True
    extra = (version.served_lines if cookie is None else dp.extra_fields(version, cookie)) \
        + ids.response_line
    target = path if svc.rewrite is None else svc.upstream_path(path)
    if query:
        target = f"{target}?{query}"
    method = request.method
    # a chunked body is streamed, which is not plain: a body here is one of ``length`` bytes
    body = request.body if length else None
    head = request_head(method.encode(), target.encode(), request.raw_headers,
                        request.peer_bytes, b"http", len(body) if body else 0,
                        svc.host, dp.trusted, ids.upstream_lines)
    x = Exchange(dp, request, svc, version, now, extra, ids, target, head, body,
                 (cookie, path, query))
    replicas = version.replicas
    try:                             # committed: from here on, the request is this path's
        ep = replicas.take()
        if ep is not None:
            x.go(ep, now)
            return True
        try:                         # queued: ``slot`` goes on when a slot comes
            replicas.enqueue(dp.loop, now + svc.queue_timeout, request.alive, x.slot)
        except ProxyError as exc:
            x.refused(exc)
    except Exception as bug:
        x.broken(bug)
    return True


class Exchange:
    """One plain request in flight: what its answer needs (an ``upstream.Sink``). Its callbacks
    run inside the upstream protocol's: none may raise, and each ends the request, either
    answered or handed to a task (``Request.hand_over``)."""

    __slots__ = ("body", "dp", "ep", "extra", "head", "ids", "request", "route", "sent",
                 "start", "svc", "target", "version")
    ep: Endpoint                    # set by ``go``
    sent: float

    def __init__(self, dp: DataPlane, request: Request, svc: ServiceRoute,
                 version: VersionRoute, start: float, extra: bytes, ids: Ids, target: str,
                 head: bytes, body: bytes | None, route: tuple[str | None, str, str]) -> None:
        self.dp = dp
        self.request = request
        self.svc = svc
        self.version = version
        self.start = start          # loop time the request was started
        self.extra = extra          # x-served-by, Set-Cookie, X-Request-Id lines
        self.ids = ids
        self.target = target        # the upstream request-target (for a retry)
        self.head = head
        self.body = body
        self.route = route          # (cookie, path, query): for handing it to ``handle``

    def go(self, ep: Endpoint, now: float) -> None:
        """Send on a slot of ``ep`` at loop time ``now`` (the caller's clock reading: one
        less): on an idle pooled connection, else ``handle`` connects."""
        conn = ep.pool.idle_conn()
        if conn is None:
            cookie, path, query = self.route
            self.request.hand_over(self.dp.handle(self.request, Routed(
                self.svc, self.version, cookie, path, query, self.start, self.ids, ep)))
            return
        self.ep = ep
        self.sent = now
        conn.relay(self.head, self.body, now + self.svc.request_timeout,
                   self.request.method == "HEAD", self.dp.deadlines.upstream_idle,
                   self.dp.wheel, self)

    def slot(self, ep: Endpoint | None, exc: ProxyError | None) -> None:
        """The queue's answer (``ReplicaSet.enqueue``): a slot, or the error to answer."""
        try:
            if ep is None:
                assert exc is not None
                self.refused(exc)
                return
            now = self.dp.wheel_clock()
            self.dp.metrics.queue_wait.labels(self.svc.name, self.version.name).observe(
                now - self.start)
            self.go(ep, now)
        except Exception as bug:
            self.broken(bug)

    def refused(self, exc: ProxyError) -> None:
        """No slot: the queue's error is the answer."""
        request = self.request
        self.dp.refuse(request, exc, self.svc, self.extra)
        self.dp.answered(request, self.svc, self.version, None, self.ids, self.start, None)
        request.served()

    def _upstream(self, status: int) -> None:
        """The worker answered: its latency, and a 5xx or a success for outlier detection."""
        version, ep = self.version, self.ep
        version.metrics.upstream(self.dp.wheel_clock() - self.sent)
        if status >= 500:
            version.metrics.upstream_error("5xx")
            version.replicas.failure(ep)
        elif ep.fails:
            version.replicas.success(ep)

    def answered(self, status: int, headers: list[tuple[bytes, bytes]], body: bytes,
                 fields: bytes | None) -> None:
        request = self.request
        try:
            self._upstream(status)
            self.version.replicas.release(self.ep)
            if request.method == "HEAD":
                relay_whole(request, status, headers, body, self.extra)
            else:                  # relay_whole's usual case, its header lines made already
                request.respond(status, (fields if fields is not None
                                         else response_fields(headers)) + self.extra, body)
            self.dp.answered(request, self.svc, self.version, self.ep.id, self.ids, self.start,
                             None)
        except Exception as exc:   # never into the upstream protocol: this client is owed one
            self.broken(exc)
            return
        request.served()

    def streaming(self, resp: UpstreamResponse) -> None:
        try:
            self._upstream(resp.status)
            self.request.hand_over(self.dp.resume(self, None, resp))
        except Exception as exc:
            resp.discard()
            self.version.replicas.release(self.ep)
            self.broken(exc)

    def failed(self, exc: Exception) -> None:
        """The handler's retry rules (``DataPlane._forward``): a connect failure or a reset
        (idempotent requests) tries another replica, in a task; else the error is the answer."""
        request, svc, version, ep = self.request, self.svc, self.version, self.ep
        try:
            err = exc if isinstance(exc, ProxyError) else UpstreamError(repr(exc))
            self.dp.failed(version, ep, err)
            connect = isinstance(err, UpstreamConnectError)
            if connect:
                ep.eject(self.dp.wheel_clock())
            version.replicas.release(ep)
            if svc.retries and isinstance(err, UpstreamReset | UpstreamConnectError) and (
                    connect or request.method in IDEMPOTENT):
                assert isinstance(err, UpstreamError)
                self.dp.metrics.retries.labels(svc.name, version.name).inc()
                request.hand_over(self.dp.resume(self, err, None))
                return
            self.dp.refuse(request, err, svc, self.extra)
            self.dp.answered(request, svc, version, None, self.ids, self.start, None)
        except Exception as bug:
            self.broken(bug)
            return
        request.served()

    def broken(self, exc: Exception) -> None:
        """A bug in the callbacks above: a 500 rather than a client left hanging."""
        log.error("fast path failed on %s %s", self.request.method, self.request.target,
                  exc_info=exc)
        request = self.request
        if not request.started:
            self.dp.refuse(request, InternalError(repr(exc)), self.svc, self.extra)
        request.served()


def relay_whole(request: Request, status: int, headers: list[tuple[bytes, bytes]], body: bytes,
                extra: bytes) -> None:
    """Answer with a worker's whole answer (its relayed headers, then ours in ``extra``)."""
    fields = response_fields(headers) + extra
    if request.method == "HEAD":
        length = content_length(headers)
        if length is not None:
            fields += b"Content-Length: %s\r\n" % length
        request.respond(status, fields, body, length_in_fields=True)
    else:
        request.respond(status, fields, body)


def content_length(headers: list[tuple[bytes, bytes]]) -> bytes | None:
    for name, value in headers:
        if len(name) == 14 and name.lower() == b"content-length":
            return value
    return None
