"""HTTP/1.1 messages of the data listener: the request handed to the handler and its answer.

A ``Request`` carries the parsed head, the body (``body`` when it came whole; ``read`` and
``stream`` when it is still arriving, with ``100 Continue`` sent on first use) and the means to
answer: ``respond`` writes a whole answer as one piece (head and body, Date computed at most once
a second); ``start`` / ``write`` / ``end`` stream one in chunks, waiting while the client reads
slowly. The connection it came on (``http1._Conn``) is reached only through ``Conn``.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import AsyncIterator, Awaitable, Iterable, Iterator, Mapping
from email.utils import formatdate
from http import HTTPStatus
from typing import Protocol, TypeVar, overload

import orjson

from gateway.errors import ClientGone, ProxyError

JSON_FIELD = b"Content-Type: application/json\r\n"
WHOLE_WRITE = 1 << 16      # answers up to this are joined into one buffer; larger: head, body

T = TypeVar("T")


class Conn(Protocol):
    """What a request uses of its connection."""

    loop: asyncio.AbstractEventLoop
    peer: str
    peer_bytes: bytes
    lost: bool
    read_paused: bool
    write_paused: bool

    def write(self, data: bytes) -> None: ...
    def writelines(self, parts: tuple[bytes, ...]) -> None: ...
    def send(self, parts: tuple[bytes, ...]) -> None: ...
    async def drain(self) -> None: ...
    def maybe_resume(self, force: bool = False) -> None: ...
    def must_close(self, req: Request) -> bool: ...
    def served(self, req: Request) -> None: ...
    def hand_over(self, req: Request, work: Awaitable[None]) -> None: ...
    def abort(self) -> None: ...


def error_parts(exc: ProxyError, service: str | None) -> tuple[bytes, bytes]:
    """The gateway's own error answer: header lines and ``{"error", "service", "detail"}``."""
    body = orjson.dumps({"error": exc.kind, "service": service, "detail": exc.detail})
    if exc.retry_after:
        return JSON_FIELD + b"Retry-After: %d\r\n" % exc.retry_after, body
    return JSON_FIELD, body


def header_lines(headers: Iterable[tuple[str, str]]) -> bytes:
    """``Name: value`` lines for header pairs given as text."""
    return b"".join(b"%s: %s\r\n" % (n.encode("latin-1"), v.encode("utf-8")) for n, v in headers)


_STATUS: dict[int, bytes] = {}


def _status_line(status: int) -> bytes:
    line = _STATUS.get(status)
    if line is None:
        try:
            reason = HTTPStatus(status).phrase
        except ValueError:
            reason = "Unknown"
        line = _STATUS[status] = f"HTTP/1.1 {status} {reason}\r\n".encode()
    return line


_date_second = -1
_date = b""


def date_line() -> bytes:
    """``Date: ...`` computed at most once a second (a plain function: calling an instance's
    ``__call__`` costs more, and this runs per answer)."""
    global _date_second, _date
    now = int(time.time())
    if now != _date_second:
        _date_second = now
        _date = b"Date: %s\r\n" % formatdate(now, usegmt=True).encode()
    return _date


def answer(status: int, fields: bytes, body: bytes, *, close: bool, head: bool = False,
           keep_alive_10: bool = False, length_in_fields: bool = False) -> tuple[bytes, ...]:
    """A whole answer as the pieces to write: one buffer, or head and a large body."""
    if status < 200 or status == 204 or status == 304:
        length, body = b"", b""
    elif length_in_fields:
        length = b""
    else:
        length = b"Content-Length: %d\r\n" % len(body)
    if head:
        body = b""
    connection = b"Connection: close\r\n\r\n" if close else \
        b"Connection: keep-alive\r\n\r\n" if keep_alive_10 else b"\r\n"
    parts = (_STATUS.get(status) or _status_line(status), fields, date_line(), length,
             connection)
    if len(body) <= WHOLE_WRITE:
        return (b"".join((*parts, body)),)
    return b"".join(parts), body


class HeaderView(Mapping[str, str]):
    """Case-insensitive read-only view of a request's headers (the first of a repeated name).
    The first ``SCANS`` lookups scan the raw headers (a sticky key, a Cookie header: about 0.5 us
    each); more build an index once (about 4 us for a dozen headers), as a service with many
    header rules needs. Most requests never look at all."""

    __slots__ = ("_map", "_raw", "_scans")
    SCANS = 2

    def __init__(self, raw: tuple[tuple[bytes, bytes], ...]) -> None:
        self._raw = raw
        self._map: dict[str, str] | None = None
        self._scans = 0

    def _index(self) -> dict[str, str]:
        m = self._map
        if m is None:
            m = self._map = {}
            for name, value in self._raw:
                key = name.decode("latin-1").lower()
                if key not in m:
                    m[key] = value.decode("utf-8", "surrogateescape")
        return m

    def __getitem__(self, key: str) -> str:
        return self._index()[key.lower()]

    @overload
    def get(self, key: str, /) -> str | None: ...

    @overload
    def get(self, key: str, /, default: str | T) -> str | T: ...

    def get(self, key: str, /, default: object = None) -> object:
        if self._map is None and self._scans < self.SCANS:
            self._scans += 1
            wanted = key.lower().encode("latin-1")
            size = len(wanted)
            for name, value in self._raw:
                if len(name) == size and name.lower() == wanted:
                    return value.decode("utf-8", "surrogateescape")
            return default
        return self._index().get(key.lower(), default)

    def __contains__(self, key: object) -> bool:
        return isinstance(key, str) and key.lower() in self._index()

    def __iter__(self) -> Iterator[str]:
        return iter(self._index())

    def __len__(self) -> int:
        return len(self._index())


class Request:
    """One request: its head, its body (whole or streamed) and the means to answer it."""

    __slots__ = (
        "_buffered", "_chunks", "_conn", "_error", "_headers", "_waiter", "body", "chunked",
        "close", "complete", "content_length", "expect", "finished", "keep_alive", "method",
        "raw_headers", "started", "status", "streamed", "target", "trace_in", "version_10",
        "wants_stream",
    )

    def __init__(self, conn: Conn, method: str, target: str,
                 raw_headers: tuple[tuple[bytes, bytes], ...], length: int | None, chunked: bool,
                 expect: bool, keep_alive: bool, version_10: bool) -> None:
        self._conn = conn
        self.method = method
        self.target = target                  # the raw request-target: path and query
        self.raw_headers = raw_headers
        self.content_length = length
        self.chunked = chunked
        self.expect = expect                  # 100 Continue still owed
        self.keep_alive = keep_alive
        self.version_10 = version_10
        self.streamed = False                 # handed over before its body arrived
        self.body: bytes | None = None        # the whole body, once held
        self.complete = False                 # every body byte has arrived
        self._chunks: list[bytes] = []
        self._buffered = 0
        self._waiter: asyncio.Future[None] | None = None
        self._error: ProxyError | None = None
        self._headers: HeaderView | None = None
        self.status = 0                       # of the answer, once started
        self.started = False                  # answer head written
        self.finished = False                 # answer complete
        self.close = False                    # the answer said Connection: close
        # the client's (X-Request-Id, traceparent) values, found in the head's one scan; None
        # when it sent neither (tracing.request_ids)
        self.trace_in: tuple[bytes | None, bytes | None] | None = None
        self.wants_stream = False             # Accept asks for SSE / JSON lines (streams.py)

    # -- the request --------------------------------------------------------------------------
    @property
    def headers(self) -> HeaderView:
        h = self._headers
        if h is None:
            h = self._headers = HeaderView(self.raw_headers)
        return h

    @property
    def has_body(self) -> bool:
        return self.chunked or bool(self.content_length)

    @property
    def peer(self) -> str:
        return self._conn.peer

    @property
    def peer_bytes(self) -> bytes:
        return self._conn.peer_bytes

    def alive(self) -> bool:
        """Whether the client is still connected."""
        return not self._conn.lost

    async def read(self) -> bytes:
        """The whole body (kept in ``body``)."""
        if self.body is None:
            self.body = b"".join([chunk async for chunk in self.stream()])
        return self.body

    async def stream(self) -> AsyncIterator[bytes]:
        """The body's chunks as they arrive; raises the ProxyError that cut it short."""
        if self.body is not None:
            if self.body:
                yield self.body
            return
        self._continue()
        conn = self._conn
        while True:
            while not self._chunks:
                if self._error is not None:
                    raise self._error
                if self.complete:
                    return
                self._waiter = conn.loop.create_future()
                try:
                    await self._waiter
                finally:
                    self._waiter = None
            out = self._chunks
            self._chunks = []
            self._buffered = 0
            if conn.read_paused:
                conn.maybe_resume()
            yield out[0] if len(out) == 1 else b"".join(out)

    def _continue(self) -> None:
        if self.expect:
            self.expect = False
            if not self.complete and not self.started:
                self._conn.write(b"HTTP/1.1 100 Continue\r\n\r\n")

    def _feed(self, chunk: bytes) -> None:
        self._chunks.append(chunk)
        self._buffered += len(chunk)
        self._wake()

    def _fail(self, exc: ProxyError) -> None:
        if not self.complete and self._error is None:
            self._error = exc
            self._wake()

    def _wake(self) -> None:
        w = self._waiter
        if w is not None and not w.done():
            w.set_result(None)

    # -- the answer ---------------------------------------------------------------------------
    def respond(self, status: int, fields: bytes, body: bytes, *,
                length_in_fields: bool = False) -> None:
        """Answer whole: ``fields`` are header lines (``Name: value\\r\\n``...); Date,
        Content-Length and Connection are added. ``length_in_fields``: a HEAD answer whose
        fields carry the length already. An answer after a streamed head breaks the stream."""
        if self.started:
            if not self.finished:
                self._conn.abort()
            return
        self.started = self.finished = True
        self.status = status
        self.close = self._conn.must_close(self)
        self._conn.send(answer(status, fields, body, close=self.close, head=self.method == "HEAD",
                               keep_alive_10=self.keep_alive and self.version_10,
                               length_in_fields=length_in_fields))

    def start(self, status: int, fields: bytes) -> None:
        """Begin a streamed answer: chunked, or for HTTP/1.0 delimited by the close."""
        conn = self._conn
        self.started = True
        self.status = status
        self.close = self.version_10 or conn.must_close(self)
        framing = b"Connection: close\r\n\r\n" if self.version_10 else \
            b"Transfer-Encoding: chunked\r\nConnection: close\r\n\r\n" if self.close else \
            b"Transfer-Encoding: chunked\r\n\r\n"
        conn.write(b"".join((_status_line(status), fields, date_line(), framing)))

    async def write(self, data: bytes) -> None:
        """One piece of a streamed answer; waits while the client is slow to read."""
        conn = self._conn
        if conn.lost:
            raise ClientGone("the client closed the connection")
        if not data:
            return
        if self.version_10:
            conn.write(data)
        else:
            conn.writelines((b"%x\r\n" % len(data), data, b"\r\n"))
        if conn.write_paused:
            await conn.drain()

    def served(self) -> None:
        """Served without a task (``http1.Fast``): answered now, the connection goes on."""
        self._conn.served(self)

    def hand_over(self, work: Awaitable[None]) -> None:
        """Served without a task so far, but the rest must wait: ``work`` finishes it."""
        self._conn.hand_over(self, work)

    def end(self) -> None:
        if not self.version_10:
            self._conn.write(b"0\r\n\r\n")
        self.finished = True
