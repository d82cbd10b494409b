"""A lean HTTP/1.1 upstream client: asyncio protocols, httptools parsing, keep-alive pools.

One ``UpstreamPool`` per replica keeps idle connections for reuse. A request is written in one
``writelines`` call; the response is parsed by httptools straight from ``data_received``. Small
responses come back whole (no per-chunk tasks); large or unknown-length ones are streamed with
flow control. There is no cookie jar and no per-request session: that overhead is what makes a
naive aiohttp ``ClientSession`` proxy slow.

Besides the awaited ``request``, ``UpstreamPool.send`` runs a buffered exchange on an idle
connection with a completion callback instead of a coroutine: no task, future or frame per
exchange, for fire-and-forget traffic such as mirror copies. ``_Conn.relay`` (on
``UpstreamPool.idle_conn``) does the same for the data plane's plain requests (``Sink``): the
answer's head and body come back whole to a callback, a large or unknown-length answer is handed
over as a stream (the caller relays it in a task). Both kinds of the data plane's exchanges file
their deadline in its timer ``Wheel`` instead of a loop timer each.

Errors say whether the worker can have seen the request:
- ``UpstreamConnectError``: connect failed, or the pooled connection was found closed before we
  wrote: never seen, safe to retry elsewhere;
- ``UpstreamReset``: closed after we wrote, before any response byte: retry only if idempotent;
- ``UpstreamError``: broken after response bytes arrived: never retried;
- ``UpstreamTimeout``: the deadline passed (``UpstreamStalled``: a streamed answer sent nothing
  for ``stream_idle`` seconds).

The answer's head is checked by llhttp without a Python call per header: the connection defines
no ``on_header``, and once llhttp has accepted the head, ``_head.response`` (C, one call) reads
its header list, the client's header lines and the Content-Length from the raw bytes. Where the
package was installed without a C compiler (``_head`` optional), ``_FieldsConn`` takes them from
httptools' per-header callback instead, as before.

When a connection ends, its parser (a reference cycle: it holds bound methods of the protocol)
and any body bytes nobody will read are dropped at once, so the memory comes back without
waiting for the cyclic collector.
"""

from __future__ import annotations

import asyncio
from collections import deque
from collections.abc import AsyncIterable, AsyncIterator, Callable
from typing import Protocol, TypeAlias

import httptools

from gateway.dataplane.proxy import PLAIN_CONNECTION, RESPONSE_DROP
from gateway.dataplane.wheel import Wheel
from gateway.errors import (
    UpstreamConnectError,
    UpstreamError,
    UpstreamReset,
    UpstreamStalled,
    UpstreamTimeout,
)

BUFFER_LIMIT = 1 << 20         # responses up to this size are returned whole
STREAM_HIGH_WATER = 1 << 18    # pause reading a streamed response above this many buffered bytes
MAX_IDLE = 256
STREAM_IDLE = 60.0             # default deadline between two pieces of a streamed answer

# (status, body, None) once a buffered exchange is complete, or (0, None, error)
Done = Callable[[int, bytes | None, Exception | None], None]

# (raw, start, drop) -> (end, headers, fields, length): see _head.c
ReadHead: TypeAlias = Callable[[bytes, int, frozenset[bytes]],
                               tuple[int, list[tuple[bytes, bytes]], bytes | None, int | None]]
read_head: ReadHead | None
try:
    from gateway.dataplane._head import response as read_head
except ImportError:          # built without a C compiler: ``_FieldsConn``
    read_head = None


class Sink(Protocol):
    """Where a ``relay`` exchange ends, exactly once, from a protocol callback (none may
    raise): ``answered`` (a whole answer, the connection back in the pool already),
    ``streaming`` (a large or unknown-length answer: its ``stream`` is read in a task) or
    ``failed`` (an error as ``request`` raises it; the connection is closed). ``fields``: the
    answer's header lines for the client as ``proxy.response_fields`` would write them, or None
    when a Connection header names others (``response_fields`` then)."""

    def answered(self, status: int, headers: list[tuple[bytes, bytes]], body: bytes,
                 fields: bytes | None) -> None: ...
    def streaming(self, resp: UpstreamResponse) -> None: ...
    def failed(self, exc: Exception) -> None: ...


class UpstreamResponse:
    """Status, raw headers and either a complete ``body`` or a ``stream`` of chunks."""

    __slots__ = ("_conn", "body", "headers", "status")

    def __init__(self, status: int, headers: list[tuple[bytes, bytes]], body: bytes | None,
                 conn: _Conn | None) -> None:
        self.status = status
        self.headers = headers
        self.body = body
        self._conn = conn   # set while the body is still streaming

    async def stream(self) -> AsyncIterator[bytes]:
        conn = self._conn
        if conn is None:
            if self.body:
                yield self.body
            return
        try:
            while True:
                chunk = await conn.next_chunk()
                if chunk is None:
                    break
                yield chunk
        finally:
            self._conn = None
            conn.finish()

    def discard(self) -> None:
        """Drop a streamed body we will not read (closes the connection)."""
        if self._conn is not None:
            self._conn.abort()
            self._conn = None


class _Conn(asyncio.Protocol):
    """One keep-alive connection; serves one request at a time."""

    read_head: ReadHead | None = staticmethod(read_head) if read_head is not None else None
    # slots: a 30-attribute instance dict outgrows CPython's shared keys (and each attribute
    # access per event costs more); this protocol's fields are touched many times per exchange
    __slots__ = ("buffered", "chunks", "closed", "complete", "deadline", "done", "error", "fields",
                 "got_bytes", "head", "head_at", "head_only", "headers", "headers_done",
                 "keep_alive", "length", "loop", "parser", "pool", "read_paused", "sink",
                 "status", "stream_idle", "timer", "transport", "waiter", "write_paused",
                 "write_waiter", "written")

    def __init__(self, pool: UpstreamPool, loop: asyncio.AbstractEventLoop) -> None:
        self.pool = pool
        self.loop = loop   # kept: get_running_loop() costs a getpid() syscall per call on 3.11
        self.transport: asyncio.Transport | None = None
        self.parser = httptools.HttpResponseParser(self)
        self.closed = False
        self.stream_idle = STREAM_IDLE
        self.deadline = 0.0               # a relay exchange's, in the wheel (0: none)
        self._reset()

    def _reset(self) -> None:
        self.headers: list[tuple[bytes, bytes]] = []
        self.fields: bytes | None = b""   # see ``on_headers_complete``
        self.head = b""                   # the bytes received until the final answer's head
        self.head_at = 0                  # where the next head begins in ``head`` (after a 1xx)
        self.chunks: list[bytes] = []
        self.buffered = 0
        self.status = 0
        self.length: int | None = None
        self.head_only = False
        self.got_bytes = False
        self.headers_done = False
        self.complete = False
        self.keep_alive = True
        self.waiter: asyncio.Future[None] | None = None
        self.error: Exception | None = None
        self.written = False
        self.write_waiter: asyncio.Future[None] | None = None
        self.write_paused = False
        self.read_paused = False
        self.done: Done | None = None     # set for a callback exchange (``send``)
        self.timer: asyncio.TimerHandle | None = None
        self.sink: Sink | None = None     # set for a relay exchange (``relay``)

    # -- asyncio.Protocol ---------------------------------------------------------------------
    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.transport = transport  # type: ignore[assignment]

    def data_received(self, data: bytes) -> None:
        self.got_bytes = True
        if self.status < 200:            # the final answer's head is not complete yet
            self.head = self.head + data if self.head else data
        try:
            self.parser.feed_data(data)
        except httptools.HttpParserError as exc:
            self._fail(UpstreamError(f"malformed response from worker: {exc}"))
            self.abort()

    def eof_received(self) -> bool:
        return False

    def connection_lost(self, exc: Exception | None) -> None:
        self.closed = True
        self.pool.forget(self)
        if not self.complete:
            if not self.written:
                self._fail(UpstreamConnectError("connection to worker closed before the request was sent"))
            elif not self.got_bytes:
                self._fail(UpstreamReset("worker closed the connection without answering"))
            else:
                self._fail(UpstreamError("worker closed the connection mid-response"))
            self.chunks = []           # an answer cut short is never read: free it now
            self.buffered = 0
        # the parser holds bound methods of this protocol: drop the cycle with its buffers
        self.parser = _DEAD_PARSER
        self._wake_writer()

    def pause_writing(self) -> None:
        self.write_paused = True

    def resume_writing(self) -> None:
        self.write_paused = False
        self._wake_writer()

    # -- httptools callbacks ------------------------------------------------------------------
    def on_headers_complete(self) -> None:
        parser = self.parser
        self.status = status = parser.get_status_code()
        self.keep_alive = parser.should_keep_alive()
        self.headers_done = True
        read = self.read_head
        if read is not None:
            # llhttp accepted this head: read it in one call (the client's header lines by
            # ``proxy.response_fields``' rules, and the Content-Length), not one per header
            end, self.headers, self.fields, length = read(self.head, self.head_at,
                                                          RESPONSE_DROP)
            if self.length is None:
                self.length = length
            self.head_at = end           # after an interim answer, the final one's head
        if status >= 200:
            self.head = b""              # the final head is read: its bytes are not kept
        if self.head_only:
            # httptools cannot be told the request was HEAD: it would wait for Content-Length
            # bytes that never come. The exchange ends here and the connection is not reused.
            self.complete = True
            self.keep_alive = False
        elif self.done is not None and self.length is not None and self.length > BUFFER_LIMIT:
            self._too_large()
            return
        elif self.sink is not None and (self.length is None or self.length > BUFFER_LIMIT):
            # not bounded: hand it over as a stream, read (with flow control) by a task
            sink, self.sink, self.deadline = self.sink, None, 0.0
            sink.streaming(UpstreamResponse(self.status, self.headers, None, self))
            return
        elif self.sink is not None:
            return                     # a relay exchange ends with its message (or an error)
        self._wake()

    def on_body(self, body: bytes) -> None:
        if self.closed:
            return                     # aborted (too large, timed out): the rest is dropped
        self.chunks.append(body)
        self.buffered += len(body)
        if self.sink is not None:      # bounded by its Content-Length: nothing to wake yet
            return
        if self.done is not None:    # a callback exchange buffers, up to the limit
            if self.buffered > BUFFER_LIMIT:
                self._too_large()
            return
        if self.buffered > STREAM_HIGH_WATER and not self.read_paused and not self.closed \
                and self.transport and (self.length is None or self.length > BUFFER_LIMIT):
            # a streamed body waits for the client to take it; a buffered one is bounded anyway
            self.read_paused = True
            self.transport.pause_reading()
        self._wake()

    def on_message_complete(self) -> None:
        self.complete = True
        if self.sink is not None and self.done is None:
            self._settle_sink()        # _wake's relay branch, one call less per plain request
        else:
            self._wake()

    # -- helpers ------------------------------------------------------------------------------
    def _wake(self) -> None:
        if self.done is not None:
            self._settle()
            return
        if self.sink is not None:
            self._settle_sink()
            return
        w = self.waiter
        if w is not None and not w.done():
            w.set_result(None)

    def _too_large(self) -> None:
        self._fail(UpstreamError(f"answer over {BUFFER_LIMIT} bytes"))   # settles: aborts

    def _fail(self, exc: Exception) -> None:
        if self.error is None:
            self.error = exc
        self._wake()

    def _wake_writer(self) -> None:
        w = self.write_waiter
        if w is not None and not w.done():
            w.set_result(None)

    async def _wait(self) -> None:
        if self.error is not None:
            raise self.error
        self.waiter = self.loop.create_future()
        try:
            await self.waiter
        finally:
            self.waiter = None
        if self.error is not None:
            raise self.error

    async def _drain(self) -> None:
        while self.write_paused and not self.closed:
            self.write_waiter = self.loop.create_future()
            try:
                await self.write_waiter
            finally:
                self.write_waiter = None
        if self.closed and not self.complete:
            raise self.error or UpstreamReset("worker closed the connection while we sent the body")

    def abort(self) -> None:
        self.closed = True
        if self.transport is not None:
            self.transport.abort()

    def expire(self) -> None:
        """The wheel: the exchange's deadline passed (it is 0 once the exchange ended)."""
        self._on_timeout()

    def _on_timeout(self) -> None:
        self._fail(UpstreamTimeout("worker did not answer in time"))
        self.abort()

    def _on_stalled(self) -> None:
        self._fail(UpstreamStalled(f"the worker sent nothing for {self.stream_idle:g}s "
                                   "in the middle of its answer"))
        self.abort()

    # -- one exchange -------------------------------------------------------------------------
    async def exchange(self, head: bytes, body: bytes | AsyncIterable[bytes] | None,
                       timeout: float, head_only: bool = False,
                       stream_idle: float = STREAM_IDLE,
                       wheel: Wheel | None = None) -> UpstreamResponse:
        """``wheel``: file the deadline there (at most a tick late) instead of a loop timer."""
        assert self.transport is not None
        self.head_only = head_only
        self.stream_idle = stream_idle
        timer = None
        if wheel is None:
            timer = self.loop.call_later(timeout, self._on_timeout)
        else:
            self.deadline = self.loop.time() + timeout
            wheel.add(self)
        try:
            if self.closed or self.transport.is_closing():
                raise UpstreamConnectError("pooled connection was closed")
            self.written = True
            if body is None or isinstance(body, (bytes, bytearray, memoryview)):
                self.transport.writelines((head, body) if body else (head,))
            else:
                await self._write_stream(head, body)
            while not self.headers_done:
                await self._wait()
            length = self.length
            if self.complete or (length is not None and length <= BUFFER_LIMIT):
                while not self.complete:
                    await self._wait()
                body_out = self.chunks[0] if len(self.chunks) == 1 else b"".join(self.chunks)
                resp = UpstreamResponse(self.status, self.headers, body_out, None)
                self.finish()
                return resp
            return UpstreamResponse(self.status, self.headers, None, self)
        except BaseException:
            self.abort()
            raise
        finally:
            if timer is not None:
                timer.cancel()
            self.deadline = 0.0

    def send(self, head: bytes, body: bytes | None, timeout: float, head_only: bool,
             done: Done) -> None:
        """``exchange`` without a coroutine: write now, call ``done`` exactly once, from a
        protocol callback, with the whole answer or the error (a timeout, a lost connection,
        an answer over ``BUFFER_LIMIT``). The connection then goes back to the pool. ``done``
        must not raise: it runs inside ``data_received``."""
        assert self.transport is not None
        self.head_only = head_only
        self.done = done
        self.timer = self.loop.call_later(timeout, self._on_timeout)
        self.written = True
        self.transport.writelines((head, body) if body else (head,))

    def _settle(self) -> None:
        """Callback mode: end the exchange once it failed or is complete."""
        if self.error is None and not self.complete:
            return
        done, timer = self.done, self.timer
        assert done is not None and timer is not None
        timer.cancel()
        self.done = self.timer = None
        if self.error is not None:
            self.abort()
            self.chunks = []           # e.g. an answer cut at the limit: free it now
            done(0, None, self.error)
            return
        status, chunks = self.status, self.chunks
        self.finish()
        done(status, chunks[0] if len(chunks) == 1 else b"".join(chunks), None)

    def relay(self, head: bytes, body: bytes | None, deadline: float, head_only: bool,
              stream_idle: float, wheel: Wheel, sink: Sink) -> None:
        """``exchange`` without a coroutine, ending in ``sink``; ``deadline`` (loop time) bounds
        the wait for the answer's head (and a whole body), filed in ``wheel``."""
        assert self.transport is not None
        self.head_only = head_only
        self.stream_idle = stream_idle
        self.sink = sink
        self.deadline = deadline
        wheel.add(self)
        self.written = True
        self.transport.writelines((head, body) if body else (head,))

    def _settle_sink(self) -> None:
        """Relay mode: end the exchange once it failed or its answer is whole."""
        if self.error is None and not self.complete:
            return
        sink = self.sink
        assert sink is not None
        self.sink = None
        self.deadline = 0.0
        if self.error is not None:
            self.abort()
            self.chunks = []
            sink.failed(self.error)
            return
        status, headers, chunks, fields = self.status, self.headers, self.chunks, self.fields
        self.finish()
        sink.answered(status, headers, chunks[0] if len(chunks) == 1 else b"".join(chunks),
                      fields)

    async def _write_stream(self, head: bytes, body: AsyncIterable[bytes]) -> None:
        assert self.transport is not None
        self.transport.write(head)
        async for chunk in body:
            self.transport.write(chunk)
            await self._drain()

    async def next_chunk(self) -> bytes | None:
        """The next piece of a streamed answer; ``UpstreamStalled`` past ``stream_idle``."""
        while not self.chunks:
            if self.complete:
                return None
            timer = self.loop.call_later(self.stream_idle, self._on_stalled)
            try:
                await self._wait()
            finally:
                timer.cancel()
        out = self.chunks
        self.chunks = []
        self.buffered = 0
        if self.read_paused and self.transport is not None and not self.closed:
            self.read_paused = False
            self.transport.resume_reading()
        return out[0] if len(out) == 1 else b"".join(out)

    def finish(self) -> None:
        """The exchange is over: back to the pool if reusable, else closed."""
        if self.complete and self.keep_alive and not self.closed and self.error is None:
            self._reset()
            self.pool.release(self)
        else:
            self.abort()


class _FieldsConn(_Conn):
    """The connection where ``_head`` was not built: httptools calls ``on_header`` per header,
    which gathers what ``_head.response`` reads in one call (the path before it existed)."""

    __slots__ = ("lines",)
    read_head = None

    def _reset(self) -> None:
        super()._reset()
        self.lines: list[bytes] | None = []   # the pieces of ``fields``

    def on_headers_complete(self) -> None:
        lines = self.lines
        self.fields = None if lines is None else b"".join(lines)
        super().on_headers_complete()

    def on_header(self, name: bytes, value: bytes) -> None:
        self.headers.append((name, value))
        lname = name.lower()
        if lname in RESPONSE_DROP:
            if lname == b"content-length":
                if self.length is None:
                    self.length = int(value)
            elif lname == b"connection" and value.lower() not in PLAIN_CONNECTION:
                self.lines = None          # it names others to drop: response_fields will
        elif self.lines is not None:
            self.lines += (name, b": ", value, b"\r\n")


_CONN: type[_Conn] = _Conn if read_head is not None else _FieldsConn


class UpstreamPool:
    """Keep-alive connections to one replica."""

    def __init__(self, host: str, port: int, *, connect_timeout: float = 2.0,
                 max_idle: int = MAX_IDLE) -> None:
        self.host = host
        self.port = port
        self.connect_timeout = connect_timeout
        self.max_idle = max_idle
        self.idle: deque[_Conn] = deque()
        self.open = 0
        self.closed = False

    async def request(self, head: bytes, body: bytes | AsyncIterable[bytes] | None,
                      timeout: float, head_only: bool = False,
                      stream_idle: float = STREAM_IDLE,
                      wheel: Wheel | None = None) -> UpstreamResponse:
        """Send one request. ``head`` is the complete request head (request line, headers,
        blank line); ``body`` bytes (Content-Length already in head) or an async iterable
        of bytes written as they come (framed already: see proxy.chunked). ``head_only`` for HEAD.
        ``timeout`` bounds the wait for the answer's head (and a whole body); ``stream_idle``
        each wait between pieces of a streamed answer."""
        conn = self.idle_conn() or await self.connect()
        return await conn.exchange(head, body, timeout, head_only, stream_idle, wheel)

    def send(self, head: bytes, body: bytes | None, timeout: float, head_only: bool,
             done: Done) -> bool:
        """Start a callback exchange (``_Conn.send``) on an idle connection; False, with
        nothing sent, when there is none (the caller opens one with ``connect``)."""
        conn = self.idle_conn()
        if conn is None:
            return False
        conn.send(head, body, timeout, head_only, done)
        return True

    def idle_conn(self) -> _Conn | None:
        """A pooled connection to use now (``send``, ``relay``), or None."""
        idle = self.idle
        while idle:
            conn = idle.pop()   # LIFO: the warmest connection, and idle ones age out upstream
            if not conn.closed and conn.transport is not None and not conn.transport.is_closing():
                return conn
        return None

    async def connect(self) -> _Conn:
        """A new connection, not yet in the idle list (it joins it when its exchange ends)."""
        if self.closed:
            raise UpstreamConnectError("replica is gone")
        loop = asyncio.get_running_loop()
        try:
            _, proto = await asyncio.wait_for(
                loop.create_connection(lambda: _CONN(self, loop), self.host, self.port),
                self.connect_timeout)
        except (OSError, TimeoutError) as exc:
            raise UpstreamConnectError(f"cannot connect to {self.host}:{self.port}: {exc}") from None
        self.open += 1
        return proto

    def release(self, conn: _Conn) -> None:
        if self.closed or len(self.idle) >= self.max_idle:
            conn.abort()
        else:
            self.idle.append(conn)

    def forget(self, conn: _Conn) -> None:
        self.open -= 1
        try:
            self.idle.remove(conn)
        except ValueError:
            pass

    def close(self) -> None:
        """Close idle connections now; busy ones close when their exchange ends."""
        self.closed = True
        while self.idle:
            self.idle.pop().abort()


class _Nothing:
    """Callbacks of the parser a closed connection keeps (it is never fed)."""


_DEAD_PARSER = httptools.HttpResponseParser(_Nothing())
