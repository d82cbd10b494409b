"""Request ids, W3C trace context and the optional OpenTelemetry export.

Every request gets an id: the client's ``X-Request-Id`` when it is 1 to 128 characters of
``[A-Za-z0-9._~:/+=@-]`` (no spaces or commas: a batch carries its callers' ids as one
comma-separated list), else a new one (32 hex digits). The id goes back to the client and on to
the worker, and into the access log.

``traceparent`` (https://www.w3.org/TR/trace-context/): a valid one is passed on (re-written in
version 00, as the spec asks of a version-00 participant), so the worker continues the client's
trace; an absent or invalid one is replaced by a new trace whose trace id is the request id when
the gateway made that id up. With an exporter (``gateway.tracing.otlp_endpoint``) the gateway
takes part in the trace: its own span (``gateway``) becomes the worker's parent, with children
for the queue wait, the batch, the upstream exchange and the mirror copy.

Per request: the client's two values come from the scan ``http1`` makes of every head anyway;
a new id and its header lines are taken ready-made from a pool drawn 256 at a time. The
exporter is only imported and called when configured (``Tracer`` is None otherwise, one
``is None`` test per step on the hot path).
"""

from __future__ import annotations

import random
import re
import time
from collections.abc import Callable
from typing import Any

_RID_OK = re.compile(rb"[A-Za-z0-9._~:/+=@-]{1,128}").fullmatch
# version 00 is exactly this; later versions may append "-..." fields (which we drop)
_TP_OK = re.compile(rb"([0-9a-f]{2})-([0-9a-f]{32})-([0-9a-f]{16})-([0-9a-f]{2})(-.*)?").fullmatch
_ZERO_TRACE = b"0" * 32
_ZERO_SPAN = b"0" * 16

Bits = Callable[[int], int]


def parse_traceparent(value: bytes) -> tuple[bytes, bytes, bytes] | None:
    """(trace id, parent id, flags) of a valid ``traceparent``, else None: unknown layout,
    version ff, an all-zero id, or extra fields on version 00."""
    m = _TP_OK(value.strip())
    if m is None:
        return None
    version, trace, parent, flags, rest = m.groups()
    if version == b"ff" or (version == b"00" and rest) or trace == _ZERO_TRACE \
            or parent == _ZERO_SPAN:
        return None
    return trace, parent, flags


class Ids:
    """One request's id and trace context, as header lines ready to write."""

    __slots__ = ("flags", "parent", "request_id", "response_line", "trace_id", "upstream_lines")

    def __init__(self, request_id: bytes, trace_id: bytes, parent: bytes, flags: bytes,
                 response_line: bytes, upstream_lines: bytes) -> None:
        self.request_id = request_id
        self.trace_id = trace_id
        self.parent = parent              # the client's span, when it sent one, else b""
        self.flags = flags
        self.response_line = response_line
        self.upstream_lines = upstream_lines


def traceparent_line(trace_id: bytes, span_id: bytes, flags: bytes) -> bytes:
    return b"traceparent: 00-%s-%s-%s\r\n" % (trace_id, span_id, flags)


class HexPool:
    """New ids drawn ``ids`` at a time: one big random number formatted once, cut into
    request ids (32 hex digits, also the new trace's id) and span ids (16), with their header
    lines built in the same pass, so that a new request only takes the next one."""

    __slots__ = ("_at", "_bits", "_ids", "_ready")
    WIDTH = 48                     # 32 for the request (and trace) id, 16 for our span id

    def __init__(self, bits: Bits = random.getrandbits, ids: int = 256) -> None:
        self._bits = bits
        self._ids = ids
        self._ready: list[tuple[bytes, bytes, bytes]] = []
        self._at = 0

    def take(self) -> tuple[bytes, bytes, bytes]:
        """(request id, its response line, its upstream lines), all random and, at 2^-128
        odds, not all zero."""
        at = self._at
        ready = self._ready
        if at >= len(ready):
            w = self.WIDTH
            buf = b"%0*x" % (self._ids * w, self._bits(self._ids * w * 4))
            ready = self._ready = [_lines(buf[i:i + 32], buf[i + 32:i + w])
                                   for i in range(0, len(buf), w)]
            at = 0
        self._at = at + 1
        return ready[at]


def _lines(rid: bytes, span: bytes) -> tuple[bytes, bytes, bytes]:
    line = b"X-Request-Id: %s\r\n" % rid
    return rid, line, b"%straceparent: 00-%s-%s-01\r\n" % (line, rid, span)


_pool = HexPool()


def request_ids(given: tuple[bytes | None, bytes | None] | None,
                bits: Bits = random.getrandbits,
                take: Callable[[], tuple[bytes, bytes, bytes]] = _pool.take) -> Ids:
    """The request's ``Ids`` from the client's ``X-Request-Id`` and ``traceparent`` values
    (``http1`` finds them in the scan it makes of every head; None: it sent neither); ``take``
    draws the new ids of that usual request, ``bits`` the others' random numbers."""
    if given is None:
        # the usual case, in as few steps as it takes (it runs per request): the new request
        # id is also the new trace's id
        rid, line, upstream = take()
        return Ids(rid, rid, b"", b"01", line, upstream)
    sent, tp = given
    kept = sent if sent is not None and _RID_OK(sent) is not None else None
    parsed = parse_traceparent(tp) if tp is not None else None
    if parsed is not None:
        trace, parent, flags = parsed
        rid = kept or b"%032x" % (bits(128) or 1)
        line = b"X-Request-Id: %s\r\n" % rid
        return Ids(rid, trace, parent, flags, line, line + traceparent_line(trace, parent, flags))
    trace = b"%032x" % (bits(128) or 1)
    rid = kept or trace      # one random number for both: a fresh trace is this request's
    line = b"X-Request-Id: %s\r\n" % rid
    return Ids(rid, trace, b"", b"01", line,
               line + traceparent_line(trace, b"%016x" % (bits(64) or 1), b"01"))


class Tracer:
    """Spans for the OTLP exporter. Built only when ``gateway.tracing.otlp_endpoint`` is set
    (``otel_tracer``); the data plane holds None otherwise."""

    def __init__(self, tracer: Any, provider: Any) -> None:
        self._tracer = tracer
        self._provider = provider
        from opentelemetry import trace
        from opentelemetry.trace import NonRecordingSpan, SpanContext, TraceFlags
        self._trace = trace
        self._ctx = SpanContext
        self._flags = TraceFlags
        self._nonrec = NonRecordingSpan

    def request(self, ids: Ids, name: str = "gateway") -> RequestSpan:
        """Start the gateway's span for a request (a child of the client's span when it sent
        one) and point ``ids.upstream_lines`` at it, so the worker's spans nest under ours."""
        if ids.parent:
            parent = self._ctx(int(ids.trace_id, 16), int(ids.parent, 16), is_remote=True,
                               trace_flags=self._flags(int(ids.flags, 16)))
            ctx = self._trace.set_span_in_context(self._nonrec(parent))
            span = self._tracer.start_span(name, context=ctx, kind=self._trace.SpanKind.SERVER)
        else:     # a new trace: the SDK's root span names the trace id
            span = self._tracer.start_span(name, kind=self._trace.SpanKind.SERVER)
            trace_id = b"%032x" % span.get_span_context().trace_id
            if ids.request_id == ids.trace_id:      # made up here: keep them one number
                ids.request_id = trace_id
                ids.response_line = b"X-Request-Id: " + trace_id + b"\r\n"
            ids.trace_id = trace_id
        sc = span.get_span_context()
        ids.upstream_lines = ids.response_line + traceparent_line(
            ids.trace_id, b"%016x" % sc.span_id, b"%02x" % int(sc.trace_flags))
        span.set_attribute("http.request_id", ids.request_id.decode())
        return RequestSpan(self, span)

    def shutdown(self) -> None:
        """Flush what is buffered (bounded by the exporter's timeout) and stop its thread."""
        self._provider.shutdown()


class RequestSpan:
    """The gateway's span of one request and its children (times in ``time.time_ns()``)."""

    __slots__ = ("_ctx", "_tracer", "span")

    def __init__(self, tracer: Tracer, span: Any) -> None:
        self._tracer = tracer
        self.span = span
        self._ctx = tracer._trace.set_span_in_context(span)

    def child(self, name: str, start_ns: int, end_ns: int | None = None,
              **attributes: str | float) -> None:
        s = self._tracer._tracer.start_span(name, context=self._ctx, start_time=start_ns,
                                            attributes=attributes)
        s.end(end_time=end_ns if end_ns is not None else time.time_ns())

    def end(self, status: int, **attributes: str) -> None:
        self.span.set_attribute("http.response.status_code", status)
        for key, value in attributes.items():
            self.span.set_attribute(key, value)
        if status >= 500:
            self.span.set_status(self._tracer._trace.Status(self._tracer._trace.StatusCode.ERROR))
        self.span.end()


class TracingUnavailable(RuntimeError):
    """An exporter is configured but the [otel] extra is not installed."""


def otel_tracer(endpoint: str, service_name: str, timeout: float = 10.0) -> Tracer:
    """An OTLP/HTTP (protobuf) exporter to ``endpoint`` (the collector's base URL or its
    ``/v1/traces`` URL) behind a batching processor: spans leave in a background thread, never
    on the event loop."""
    try:
        from opentelemetry.exporter.otlp.proto.http.trace_exporter import OTLPSpanExporter
        from opentelemetry.sdk.resources import Resource
        from opentelemetry.sdk.trace import TracerProvider
        from opentelemetry.sdk.trace.export import BatchSpanProcessor
    except ImportError as exc:
        raise TracingUnavailable(
            "gateway.tracing.otlp_endpoint needs the OpenTelemetry packages: "
            "pip install 'serve-gateway[otel]'") from exc
    url = endpoint.rstrip("/")
    if not url.endswith("/v1/traces"):
        url += "/v1/traces"
    provider = TracerProvider(resource=Resource.create({"service.name": service_name}))
    provider.add_span_processor(BatchSpanProcessor(
        OTLPSpanExporter(endpoint=url, timeout=timeout), schedule_delay_millis=1000))
    return Tracer(provider.get_tracer("serve-gateway"), provider)
