"""The data listener's HTTP/1.1 server: one asyncio protocol per connection, httptools parsing.

A connection serves one request at a time, in arrival order: pipelined requests are parsed as
they come and wait in a short queue (reading pauses when it is full). A request
(``http1msg.Request``) is first offered to ``fast`` (when set), which may serve it with protocol
callbacks alone and call ``served`` once it is answered; else it is handed to the handler, as one
task, either

- whole, once its body has arrived: no body, or a Content-Length of at most 1 MiB (``body``);
- streamed, as soon as its head is complete: a larger or chunked body, or ``Expect:
  100-continue`` (``read``/``stream``; reading pauses while more than 256 KiB wait unread).

A connection closes after a ``Connection: close`` or HTTP/1.0 exchange, after an answer given
before the request's body was read (the rest is read and dropped for a moment so the client sees
the answer), on a malformed or oversized head (400 / 431, JSON, after the answers owed to the
requests before it) and after ``keepalive_timeout`` idle (one timer per connection, re-armed
only when it fires). ``shutdown`` stops accepting, closes idle connections at once, lets requests
in flight finish until the drain timeout and then closes the rest.

Every wait on the client has a deadline (``Deadlines``): a head still incomplete
``header_read`` after its first byte, or a body with no byte for ``body_idle`` (while we want
more), gets 408 and a close; a client that takes nothing of our answer for ``client_write`` is
dropped. The read timer is armed only when a head or body spans packets, so a request that
arrives in one piece costs no timer work.

Strict where RFC 9112 says MUST: one Host (and one at all on HTTP/1.1), HTTP/1.0 or 1.1 only
(505), no fragment in the request-target, ``chunked`` as the only transfer coding (501 for
others), at most ``MAX_FIELDS`` header lines (431). A body with a Content-Length over the body
limit is handed over at once, so the handler refuses it (413) before a byte is buffered. An
``Upgrade`` request is served as plain HTTP/1.1 (we never switch): its body is read and
forwarded, then the connection closes.

Memory comes back when a connection ends: the parser (which holds bound methods of its
protocol, a reference cycle) is dropped and buffered body bytes are released at once, without
waiting for the cyclic collector.
"""

from __future__ import annotations

import asyncio
import logging
from collections import deque
from collections.abc import Awaitable, Callable

import httptools

from gateway import tasks
from gateway.dataplane.http1msg import Request, answer, error_parts
from gateway.dataplane.http1rules import (
    DEAD_PARSER,
    DEFAULT_DEADLINES,
    MAX_FIELDS,
    MAX_HEAD,
    BodyOnly,
    Deadlines,
    OnTimeout,
    check_head,
    no_count,
    request_head,
)
from gateway.dataplane.streams import accepts_stream
from gateway.errors import (
    BadRequest,
    ClientGone,
    HeadTooLarge,
    InternalError,
    ProxyError,
    RequestTimeout,
)

log = logging.getLogger("gateway.http1")

WHOLE_BODY_LIMIT = 1 << 20      # bodies up to this (with a Content-Length) arrive whole
READ_HIGH_WATER = 1 << 18       # unread request body bytes before reading pauses
MAX_PIPELINED = 8               # parsed requests waiting behind the one being served
KEEPALIVE_TIMEOUT = 75.0
LINGER = 2.0                    # how long the unread rest of a body is dropped before closing

Handler = Callable[[Request], Awaitable[None]]
# serves a request without a task, calling ``_Conn.served`` once it is answered; False when it
# did nothing and the request goes to the handler
Fast = Callable[[Request], bool]


class _Conn(asyncio.Protocol):
    """One client connection."""

    __slots__ = (
        "active",
        "body_seen",
        "closing",
        "cur",
        "drain_waiter",
        "head",
        "head_read",
        "head_start",
        "idle_since",
        "idle_timer",
        "linger_timer",
        "loop",
        "lost",
        "on_header",
        "on_message_begin",
        "on_url",
        "parser",
        "peer",
        "peer_bytes",
        "pending_error",
        "queue",
        "read_paused",
        "read_timer",
        "reading_done",
        "server",
        "task",
        "transport",
        "upgrading",
        "write_paused",
    )

    def __init__(self, server: Server) -> None:
        self.server = server
        self.loop = server.loop
        # llhttp's per-event callbacks until a head is complete are the gatherer's (C where
        # built: no Python call per header); the parser reads them from this object
        self.head = request_head()
        self.on_message_begin = self.head.begin
        self.on_url = self.head.url
        self.on_header = self.head.header
        self.parser = httptools.HttpRequestParser(self)
        self.transport: asyncio.Transport | None = None
        self.peer = ""
        self.peer_bytes = b""
        # parsing
        self.head_read = 0             # bytes fed while inside one head (a hard bound)
        self.head_start = 0.0          # when a head spanning packets began (0: not yet seen)
        self.body_seen = 0.0           # when the last body bytes of ``cur`` arrived
        self.cur: Request | None = None          # head parsed, body still arriving
        self.upgrading: Request | None = None    # an Upgrade request whose body llhttp skips
        # serving
        self.queue: deque[Request] = deque()     # ready, waiting for their turn
        self.active: Request | None = None
        self.task: asyncio.Task[None] | None = None
        self.pending_error: ProxyError | None = None   # answered once the queue is empty
        self.reading_done = False      # later bytes are dropped (error, upgrade, linger)
        self.closing = False           # close after the answer in flight (shutdown)
        self.lost = False
        self.read_paused = False
        self.write_paused = False
        self.drain_waiter: asyncio.Future[None] | None = None
        self.idle_since = 0.0
        self.idle_timer: asyncio.TimerHandle | None = None
        self.linger_timer: asyncio.TimerHandle | None = None
        self.read_timer: asyncio.TimerHandle | None = None   # header_read / body_idle

    # -- asyncio.Protocol ---------------------------------------------------------------------
    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.transport = transport  # type: ignore[assignment]
        peer = transport.get_extra_info("peername")
        self.peer = peer[0] if isinstance(peer, tuple) and peer else ""
        self.peer_bytes = self.peer.encode()
        self.server.conns.add(self)
        if not self.server.accepting:
            transport.close()           # connected while the listener was closing
            return
        self._go_idle()

    def data_received(self, data: bytes) -> None:
        if self.reading_done:
            return
        head = self.head
        in_head = head.in_head
        try:
            self.parser.feed_data(data)
        except httptools.HttpParserUpgrade as exc:
            self._upgrade(data[exc.args[0]:] if exc.args else b"")
            return
        except httptools.HttpParserError as exc:
            cause = exc.__context__
            self._broken(cause if isinstance(cause, ProxyError)
                         else BadRequest(f"malformed request: {exc}"))
            return
        if head.in_head:                 # a head spanning packets: its deadline runs
            if in_head:
                self.head_read += len(data)
                if self.head_read > 2 * MAX_HEAD:
                    self._broken(HeadTooLarge(f"request head over {MAX_HEAD} bytes"))
                    return
            if not self.head_start:
                self.head_start = self.loop.time()
            if self.read_timer is None:
                self._arm_read(self.head_start + self.server.deadlines.header_read)
        elif self.cur is not None and not self.reading_done:   # a body spanning packets
            self.body_seen = now = self.loop.time()
            if self.read_timer is None:
                self._arm_read(now + self.server.deadlines.body_idle)

    def _upgrade(self, rest: bytes) -> None:
        """llhttp stopped at an ``Upgrade`` request. We never switch protocols: the request is
        served as HTTP/1.1; its body (which llhttp skipped) is read by a second parser; then
        nothing more is read and the connection closes after the answer."""
        req, self.upgrading = self.upgrading, None
        if req is None:                  # no body (or CONNECT): the request is whole already
            self.reading_done = True
            self._no_more()
            return
        self.cur = req
        self.parser = httptools.HttpRequestParser(BodyOnly(self))
        self.parser.feed_data(b"PUT / HTTP/1.1\r\nTransfer-Encoding: chunked\r\n\r\n"
                              if req.chunked else
                              b"PUT / HTTP/1.1\r\nContent-Length: %d\r\n\r\n"
                              % (req.content_length or 0))
        if rest:
            self.data_received(rest)

    def eof_received(self) -> bool:
        self.reading_done = True
        cur = self.cur
        if cur is not None:
            self.cur = None
            cur._fail(ClientGone("the client stopped sending the request body"))
            if not cur.streamed:
                cur._chunks = []         # nobody will read a body cut short: free it now
        # half-closed while requests are being served: their answers can still be written
        return self.active is not None or bool(self.queue)

    def connection_lost(self, exc: Exception | None) -> None:
        self.lost = True
        gone = ClientGone("the client closed the connection")
        for req in (self.cur, self.upgrading, self.active, *self.queue):
            if req is not None:
                req._fail(gone)
        cur = self.cur
        if cur is not None and not cur.streamed:
            cur._chunks = []             # a body cut short: free it now, not at the next gc
        self.cur = self.upgrading = None
        self.queue.clear()
        self.reading_done = True
        for timer in (self.idle_timer, self.linger_timer, self.read_timer):
            if timer is not None:
                timer.cancel()
        self.idle_timer = self.linger_timer = self.read_timer = None
        # the parser holds bound methods of this protocol: a cycle that would keep the
        # connection and its buffers until the cyclic collector runs
        self.parser = DEAD_PARSER
        self._wake_writer()
        if self.task is None:
            self.server.forget(self)

    def pause_writing(self) -> None:
        self.write_paused = True

    def resume_writing(self) -> None:
        self.write_paused = False
        self._wake_writer()

    # -- httptools callbacks (on_message_begin, on_url, on_header: ``head``'s) -----------------
    def on_headers_complete(self) -> None:
        url, raw = self.head.done()
        # the next head's count and clock start from zero (reset here, not at its first byte:
        # that would cost a Python callback per request)
        self.head_read = 0
        self.head_start = 0.0
        p = self.parser
        if len(raw) > MAX_FIELDS:      # memory is bounded by MAX_HEAD already: checked once
            raise HeadTooLarge(f"more than {MAX_FIELDS} header lines")
        length: int | None = None
        chunked = expect = upgrade = False
        hosts = 0
        coding = b""
        rid = tp = None            # X-Request-Id, traceparent (the first of each): tracing.py
        stream = False             # Accept names a stream type: streams.py
        for name, value in raw:
            n = len(name)
            if n == 4 and name.lower() == b"host":
                hosts += 1
            elif n == 14 and name.lower() == b"content-length":
                length = int(value)
            elif n == 17 and name.lower() == b"transfer-encoding":
                chunked = True
                coding = coding + b"," + value if coding else value
            elif n == 6 and name.lower() == b"expect":
                expect = value.lower() == b"100-continue"
            elif n == 7 and name.lower() == b"upgrade":
                upgrade = True
            elif n == 12 and rid is None and name.lower() == b"x-request-id":
                rid = value
            elif n == 11 and tp is None and name.lower() == b"traceparent":
                tp = value
            elif n == 6 and not stream and name.lower() == b"accept":
                stream = accepts_stream(value)
        version = p.get_http_version()
        if hosts != 1 or chunked or b"#" in url or version != "1.1":
            check_head(version, hosts, coding, url)
        method = p.get_method().decode("latin-1")
        req = Request(self, method, url.decode("latin-1"), raw, length, chunked, expect,
                      p.should_keep_alive(), version == "1.0")
        if rid is not None or tp is not None:
            req.trace_in = (rid, tp)
        req.wants_stream = stream
        if upgrade and p.should_upgrade() and method != "CONNECT" and (chunked or length):
            self.upgrading = req         # llhttp will skip this body: see _upgrade
        else:
            self.cur = req
        if chunked or (length and (length > WHOLE_BODY_LIMIT or expect
                                   or length > self.server.max_body)):
            # streamed, and over the limit: the handler refuses it before a byte is buffered
            req.streamed = True
            self._ready(req)

    def on_body(self, body: bytes) -> None:
        req = self.cur
        if req is None:
            return
        if req.streamed:
            req._feed(body)
            if req._buffered > READ_HIGH_WATER:
                self._pause()
        else:
            req._chunks.append(body)

    def on_message_complete(self) -> None:
        req = self.cur
        if req is None:
            return
        self.cur = None
        req.complete = True
        if req.streamed:
            req._wake()
        else:
            chunks = req._chunks
            req.body = chunks[0] if len(chunks) == 1 else b"".join(chunks)
            req._chunks = []
            self._ready(req)

    # -- serving ------------------------------------------------------------------------------
    def _ready(self, req: Request) -> None:
        if self.active is None:
            self._start(req)
        else:
            self.queue.append(req)
            if len(self.queue) >= MAX_PIPELINED:
                self._pause()

    def _start(self, req: Request) -> None:
        self.active = req
        fast = self.server.fast
        if fast is not None:
            try:
                if fast(req):
                    return
            except Exception:   # it did nothing that needs undoing: the handler answers
                log.exception("the fast path failed on %s %s", req.method, req.target)
        self.task = tasks.spawn(self._serve(req), name="http request")

    def served(self, req: Request) -> None:
        """``fast`` answered ``req`` (from a callback): on to the next request, once what we
        wrote has drained if the client reads slowly."""
        if not req.started:
            req.respond(500, *error_parts(InternalError("the fast path gave no answer"), None))
        if self.write_paused and not self.lost:
            self.task = tasks.spawn(self._drained(req), name="http drain")
        else:
            self._done(req)

    async def _drained(self, req: Request) -> None:
        try:
            await self.drain()
        finally:
            self.task = None
            self._done(req)

    def hand_over(self, req: Request, work: Awaitable[None]) -> None:
        """``fast`` began ``req`` but the rest must wait (a retry, a streamed answer): ``work``
        finishes it in a task, served as the handler's would be."""
        self.task = tasks.spawn(self._serve(req, work), name="http request")

    async def _serve(self, req: Request, work: Awaitable[None] | None = None) -> None:
        try:
            try:
                await (self.server.handler(req) if work is None else work)
            except Exception as exc:
                log.exception("unhandled error serving %s %s", req.method, req.target)
                if not req.started:
                    req.respond(500, *error_parts(InternalError(repr(exc)), None))
            if not req.started:
                req.respond(500, *error_parts(InternalError("the handler gave no answer"),
                                              None))
            if self.write_paused and not self.lost:
                await self.drain()
        finally:
            self.task = None
            self._done(req)

    def _done(self, req: Request) -> None:
        self.active = None
        if self.lost:
            self.server.forget(self)
        elif not req.finished:
            self.abort()                 # a streamed answer cut short
        elif req.close or self.closing:
            self._close_after(req)
        else:
            self._next()

    def _next(self) -> None:
        if self.queue:
            self._start(self.queue.popleft())
            self.maybe_resume()
        elif self.pending_error is not None:
            exc, self.pending_error = self.pending_error, None
            self.send(answer(exc.status, *error_parts(exc, None), close=True))
            self._close()
        elif self.reading_done:
            self._close()
        else:
            self._go_idle()
            if self.read_paused:         # maybe_resume's first test: this runs per request
                self.maybe_resume()

    def must_close(self, req: Request) -> bool:
        """Whether the answer to ``req`` ends the connection."""
        return not req.keep_alive or self.closing or not req.complete \
            or req._error is not None \
            or (self.reading_done and not self.queue and self.pending_error is None)

    def _no_more(self) -> None:
        """Read nothing more; close once the requests already read are answered."""
        if self.active is None and not self.queue:
            self._next()

    def _broken(self, exc: ProxyError) -> None:
        """A malformed or oversized request: answer 400/431 after the requests before it and
        close. A request already being served loses its body instead (its handler answers)."""
        self.reading_done = True
        self.head.in_head = False
        cur, self.cur = self.cur, None
        if cur is not None and cur.streamed:
            cur._fail(exc)
            return
        self.pending_error = exc
        self._no_more()

    def _arm_read(self, when: float) -> None:
        self.read_timer = self.loop.call_at(when, self._on_read_timer)

    def _on_read_timer(self) -> None:
        """The header_read / body_idle deadline. Re-armed while the wait is ours (reading
        paused, 100 Continue not sent yet) or the deadline moved; else 408 and close."""
        self.read_timer = None
        if self.lost or self.reading_done:
            return
        d = self.server.deadlines
        now = self.loop.time()
        cur = self.cur
        if self.head.in_head:
            if self.read_paused:
                self.head_start = now
            deadline, kind, limit = self.head_start + d.header_read, "header_read", d.header_read
        elif cur is not None:
            if self.read_paused or cur.expect:
                self.body_seen = now
            deadline, kind, limit = self.body_seen + d.body_idle, "body_idle", d.body_idle
        else:
            return
        if deadline > now:
            self._arm_read(deadline)
            return
        self.server.on_timeout(kind)
        what = "request head" if kind == "header_read" else "request body"
        self._broken(RequestTimeout(f"the {what} did not arrive in time "
                                    f"({kind} deadline of {limit:g}s)"))

    def _close_after(self, req: Request) -> None:
        """Close once the answer is out; if the body was not all read, drop what still comes
        for a moment first, so the client reads our answer rather than a reset."""
        if req.complete or self.reading_done or self.transport is None:
            self._close()
            return
        self.reading_done = True
        self.cur = None
        self.maybe_resume(force=True)
        if self.transport.can_write_eof():
            self.transport.write_eof()
        self.linger_timer = self.loop.call_later(LINGER, self.abort)

    # -- flow control and timers --------------------------------------------------------------
    def _pause(self) -> None:
        if not self.read_paused and self.transport is not None and not self.lost:
            self.read_paused = True
            self.transport.pause_reading()

    def maybe_resume(self, force: bool = False) -> None:
        if not self.read_paused or self.lost or self.transport is None:
            return
        cur = self.cur
        if force or (len(self.queue) < MAX_PIPELINED and
                     (cur is None or cur._buffered <= READ_HIGH_WATER)):
            self.read_paused = False
            self.transport.resume_reading()

    def _go_idle(self) -> None:
        self.idle_since = self.loop.time()
        if self.idle_timer is None:
            self.idle_timer = self.loop.call_at(self.idle_since + self.server.keepalive_timeout,
                                                self._on_idle_timer)

    def _on_idle_timer(self) -> None:
        """One timer per connection, re-armed only when it fires: no timer work per request."""
        self.idle_timer = None
        if self.active is not None or self.queue or self.lost:
            return                      # busy: armed again when it goes idle
        deadline = self.idle_since + self.server.keepalive_timeout
        if deadline > self.loop.time():
            self.idle_timer = self.loop.call_at(deadline, self._on_idle_timer)
        else:
            self._close()

    def idle(self) -> bool:
        return self.active is None and not self.queue and self.cur is None

    # -- writing ------------------------------------------------------------------------------
    def write(self, data: bytes) -> None:
        t = self.transport
        if t is not None and not t.is_closing():
            t.write(data)

    def writelines(self, parts: tuple[bytes, ...]) -> None:
        t = self.transport
        if t is not None and not t.is_closing():
            t.writelines(parts)

    def send(self, parts: tuple[bytes, ...]) -> None:
        # ``write`` and ``writelines`` inlined: this runs once per answer
        t = self.transport
        if t is not None and not t.is_closing():
            if len(parts) == 1:
                t.write(parts[0])
            else:
                t.writelines(parts)

    async def drain(self) -> None:
        """Wait while the client is slow to read; drop it past ``client_write``."""
        if not self.write_paused or self.lost:
            return
        timer = self.loop.call_later(self.server.deadlines.client_write, self._write_stalled)
        try:
            while self.write_paused and not self.lost:
                self.drain_waiter = self.loop.create_future()
                try:
                    await self.drain_waiter
                finally:
                    self.drain_waiter = None
        finally:
            timer.cancel()

    def _write_stalled(self) -> None:
        if not self.lost:
            self.server.on_timeout("client_write")
            log.debug("client %s read nothing for %gs: dropped", self.peer,
                      self.server.deadlines.client_write)
            self.abort()

    def _wake_writer(self) -> None:
        w = self.drain_waiter
        if w is not None and not w.done():
            w.set_result(None)

    def _close(self) -> None:
        if self.transport is not None:
            self.transport.close()

    def abort(self) -> None:
        if self.transport is not None:
            self.transport.abort()

    def shutdown(self) -> None:
        """Server shutdown: an idle connection closes now, a busy one after its answer."""
        self.closing = True
        if self.idle():
            self._close()


class Server:
    """The listener and its connections."""

    def __init__(self, handler: Handler, *, keepalive_timeout: float = KEEPALIVE_TIMEOUT,
                 deadlines: Deadlines = DEFAULT_DEADLINES, max_body: int = 10 << 20,
                 on_timeout: OnTimeout = no_count, fast: Fast | None = None) -> None:
        self.handler = handler
        self.fast = fast
        self.keepalive_timeout = keepalive_timeout
        self.deadlines = deadlines    # read by each connection at each use: a reload applies
        self.max_body = max_body      # a Content-Length over this is handed over unbuffered
        self.on_timeout = on_timeout
        self.loop = asyncio.get_running_loop()
        self.conns: set[_Conn] = set()
        self.accepting = True
        self._server: asyncio.Server | None = None
        self._gone: asyncio.Future[None] | None = None   # set when the last connection goes

    async def start(self, host: str, port: int, reuse_port: bool = False) -> int:
        """Listen; ``reuse_port``: with SO_REUSEPORT, so that several data-plane processes
        accept on one port and the kernel spreads the connections over them."""
        self._server = await self.loop.create_server(lambda: _Conn(self), host, port,
                                                     reuse_address=True, reuse_port=reuse_port,
                                                     backlog=4096)
        return int(self._server.sockets[0].getsockname()[1])

    def forget(self, conn: _Conn) -> None:
        self.conns.discard(conn)
        if not self.conns and self._gone is not None and not self._gone.done():
            self._gone.set_result(None)

    async def shutdown(self, drain_timeout: float) -> None:
        """Stop accepting, close idle connections, give requests in flight ``drain_timeout``
        seconds, then close whatever is left (cancelling its handlers)."""
        self.accepting = False
        if self._server is not None:
            self._server.close()
        for conn in list(self.conns):
            conn.shutdown()
        if self.conns:
            self._gone = self.loop.create_future()
            try:
                await asyncio.wait_for(asyncio.shield(self._gone), drain_timeout)
            except TimeoutError:
                pass
        left = list(self.conns)
        for conn in left:
            conn.abort()
        await tasks.cancel_and_wait(*(c.task for c in left))
        if self._server is not None:
            await self._server.wait_closed()
