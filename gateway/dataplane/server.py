"""The data-plane HTTP server: aiohttp's low-level server on uvloop and the request handler.

Per request: read the current table once, normalise the path, match a service, choose a
version, pick a replica, forward over a pooled connection, relay the answer. Every error the
gateway produces itself is JSON: ``{"error": kind, "service": name, "detail": text}``.
"""

from __future__ import annotations

import asyncio
import logging
import random
from collections.abc import AsyncIterator, Callable

import orjson
from aiohttp import web
from aiohttp.streams import StreamReader

from gateway import tasks
from gateway.dataplane.balance import Endpoint
from gateway.dataplane.batchers import Batchers
from gateway.dataplane.mirror import Primary
from gateway.dataplane.paths import normalise
from gateway.dataplane.proxy import chunked, request_head, response_headers
from gateway.dataplane.table import Headers, ServiceRoute, TableHolder, VersionRoute
from gateway.dataplane.upstream import UpstreamResponse
from gateway.errors import (BodyTooLarge, NotFound, NoReadyReplica, ProxyError,
                            UpstreamConnectError, UpstreamError, UpstreamReset, UpstreamTimeout)
from gateway.metrics import Metrics

log = logging.getLogger("gateway.dataplane")
access_log = logging.getLogger("gateway.access")

STREAM_THRESHOLD = 1 << 20          # request bodies above this are streamed, not buffered
IDEMPOTENT = frozenset({"GET", "HEAD", "OPTIONS", "PUT", "DELETE", "TRACE"})
JSON = "application/json"


def error_response(exc: ProxyError, service: str | None) -> web.Response:
    body = orjson.dumps({"error": exc.kind, "service": service, "detail": exc.detail})
    headers = {"Retry-After": str(exc.retry_after)} if exc.retry_after else None
    return web.Response(status=exc.status, body=body, content_type=JSON, headers=headers)


class DataPlane:
    """Owns the data listener; reads routing only through ``holder.current``."""

    def __init__(self, holder: TableHolder, metrics: Metrics) -> None:
        self.holder = holder
        self.metrics = metrics
        self._web = web.Server(self.handle, access_log=None, keepalive_timeout=75.0,
                               auto_decompress=False, handler_cancellation=False)
        self._server: asyncio.Server | None = None
        # kept: asyncio.get_running_loop() costs a getpid() syscall per call on Python 3.11
        self._loop = asyncio.get_running_loop()
        self.access_sample = 0.0     # fraction of requests in the access log (0: off)
        self._random = random.random
        self.batchers = Batchers(metrics)   # one per batching version, kept across tables

    async def start(self, host: str, port: int) -> int:
        loop = self._loop
        self._server = await loop.create_server(self._web, host, port, reuse_address=True,
                                                backlog=4096)
        return int(self._server.sockets[0].getsockname()[1])

    async def stop(self, drain_timeout: float) -> None:
        """Stop accepting, let in-flight requests finish (bounded), close connections."""
        # batchers finish or answer 503 a little before the handlers' drain runs out
        closing = tasks.spawn(self.batchers.shutdown(drain_timeout * 0.8), name="batchers stop")
        if self._server is not None:
            self._server.close()
            await self._web.shutdown(drain_timeout)
            await self._server.wait_closed()
        await closing

    # -- the hot path -------------------------------------------------------------------------
    async def handle(self, request: web.BaseRequest) -> web.StreamResponse:
        loop = self._loop
        start = loop.time()
        svc: ServiceRoute | None = None
        version: VersionRoute | None = None
        extra: Headers = ()
        try:
            raw = request.raw_path
            path, _, query = raw.partition("?")
            path = normalise(path)
            svc = self.holder.current.match(path)
            if svc is None:
                raise NotFound(f"no service is routed at {path}")
            length = request.content_length
            if length is not None and length > svc.max_body:
                raise BodyTooLarge(f"body of {length} bytes is over the limit of {svc.max_body}")
            version, cookie = svc.choose(request)
            if version is None:
                raise NoReadyReplica("every version of this service has weight 0")
            extra = version.served_by if cookie is None else \
                (*version.served_by, ("Set-Cookie", cookie))
            target = svc.upstream_path(path)
            if query:
                target = f"{target}?{query}"
            response = await self._forward(request, svc, version, target, length, start, extra)
            mirror = svc.mirror
            if mirror is not None and mirror.wants(version.name, request.method,
                                                   request.body_exists, length):
                await self._shadow(request, svc, target, response, loop.time() - start)
        except ProxyError as exc:
            response = error_response(exc, svc.name if svc else None)
            if extra:
                response.headers.extend(extra)
            self.metrics.errors.labels(exc.kind).inc()
        if version is not None:
            version.metrics.observe(response.status, loop.time() - start)
        if self.access_sample and self._random() < self.access_sample:
            access_log.info("%s %s %d %.1fms service=%s version=%s peer=%s", request.method,
                            request.raw_path.partition("?")[0], response.status,
                            (loop.time() - start) * 1000, svc.name if svc else "-",
                            version.name if version else "-", request.remote)
        return response

    async def _shadow(self, request: web.BaseRequest, svc: ServiceRoute, target: str,
                      response: web.StreamResponse, seconds: float) -> None:
        """Hand a copy to the mirror once the primary's answer exists; nothing here may fail or
        hold up the primary (the body was read already, so ``read`` returns at once)."""
        try:
            body = await request.read() if request.body_exists else None
            primary = Primary(response.status, response.body if isinstance(response, web.Response)
                              and isinstance(response.body, bytes) else None, seconds)
            assert svc.mirror is not None
            svc.mirror.submit(request.method, target, request.raw_headers,
                              (request.remote or "").encode(), body, primary)
        except Exception:  # the primary is answered whatever the mirror does
            log.exception("could not start a mirror copy for %s", svc.name)

    async def _forward(self, request: web.BaseRequest, svc: ServiceRoute, version: VersionRoute,
                       target: str, length: int | None, start: float,
                       extra: Headers = ()) -> web.StreamResponse:
        method = request.method
        batcher = version.batcher
        if batcher is not None and method == "POST" and target == batcher.target:
            body_all = await _whole_body(request, length, svc.max_body)
            response = await batcher.submit(body_all, request.headers, _connected(request), start)
            response.headers.extend(extra)
            return response
        body: bytes | AsyncIterator[bytes] | None
        body_len: int | None
        if not request.body_exists:
            body, body_len = None, 0
        elif length is not None and length <= STREAM_THRESHOLD:
            body = await request.read()
            body_len = len(body)
        else:
            body, body_len = _limited(request.content, svc.max_body), length
            if length is None:
                body = chunked(body)
        peer = (request.remote or "").encode()
        head = request_head(method.encode(), target.encode(), request.raw_headers, peer,
                            b"http", body_len, svc.name.encode())
        replayable = not isinstance(body, AsyncIterator)
        idempotent = method in IDEMPOTENT
        loop = self._loop
        deadline = start + svc.queue_timeout
        exclude: Endpoint | None = None
        for attempt in range(svc.retries + 1):
            ep = await version.replicas.acquire(deadline, exclude)
            waited = loop.time() - start
            if waited > 0.001:
                self.metrics.queue_wait.labels(svc.name, version.name).observe(waited)
            ep.inflight += 1
            sent = loop.time()
            try:
                resp = await ep.pool.request(head, body, svc.request_timeout, method == "HEAD")
            except (UpstreamConnectError, UpstreamReset) as exc:
                ep.inflight -= 1
                version.metrics.upstream_error(exc.metric)
                can_retry = isinstance(exc, UpstreamConnectError) or (idempotent and replayable)
                if isinstance(exc, UpstreamConnectError):
                    ep.eject(loop.time())
                if not can_retry or attempt == svc.retries:
                    raise
                self.metrics.retries.labels(svc.name, version.name).inc()
                exclude = ep
                continue
            except (UpstreamError, UpstreamTimeout) as exc:
                ep.inflight -= 1
                version.metrics.upstream_error(exc.metric)
                raise
            except BaseException:
                ep.inflight -= 1
                raise
            version.metrics.upstream_latency.observe(loop.time() - sent)
            if resp.status >= 500:
                version.metrics.upstream_error("5xx")
            return await self._relay(request, resp, ep, extra)
        raise AssertionError("unreachable")

    async def _relay(self, request: web.BaseRequest, resp: UpstreamResponse,
                     ep: Endpoint, extra: Headers = ()) -> web.StreamResponse:
        headers = response_headers(resp.headers)
        if extra:
            headers += extra     # x-served-by, Set-Cookie: before prepare() sends the head
        if resp.body is not None:
            ep.inflight -= 1
            return web.Response(status=resp.status, body=resp.body, headers=headers)
        try:
            out = web.StreamResponse(status=resp.status, headers=headers)
            await out.prepare(request)
            async for chunk in resp.stream():
                await out.write(chunk)
            await out.write_eof()
            return out
        finally:
            resp.discard()
            ep.inflight -= 1


async def _whole_body(request: web.BaseRequest, length: int | None, limit: int) -> bytes:
    if length is not None and length <= STREAM_THRESHOLD:
        return await request.read()
    return b"".join([chunk async for chunk in _limited(request.content, limit)])


def _connected(request: web.BaseRequest) -> Callable[[], bool]:
    """Whether the client is still there (handlers are not cancelled when it leaves)."""
    def alive() -> bool:
        transport = request.transport
        return transport is not None and not transport.is_closing()
    return alive


async def _limited(content: StreamReader, limit: int) -> AsyncIterator[bytes]:
    """Stream a request body, refusing it once it passes ``limit`` bytes."""
    seen = 0
    async for chunk in content.iter_chunked(1 << 16):
        seen += len(chunk)
        if seen > limit:
            raise BodyTooLarge(f"body is over the limit of {limit} bytes")
        yield chunk
