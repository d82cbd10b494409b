"""A minimal HTTP/1.1 keep-alive client connection as a raw asyncio Protocol.

One request in flight per connection (no pipelining). It parses just enough of the response
to find its end: Content-Length, chunked, or read-until-close. Far cheaper per request than a
full client library, which matters when the load generator shares two cores with the system
under test.

Shared by ``serve-gateway bench`` (``gateway/loadgen/``) and the benchmarks in ``bench/``.
"""

from __future__ import annotations

import asyncio
from dataclasses import dataclass, field
from typing import cast


class ConnectionClosed(Exception):
    """The server closed the connection before the response was complete."""


def build_request(method: str, host: str, port: int, path: str,
                  headers: tuple[str, ...] = (), body: bytes = b"") -> bytes:
    """Serialise one keep-alive request once; it is re-sent verbatim."""
    lines = [f"{method} {path} HTTP/1.1", f"Host: {host}:{port}", *headers]
    if body or method in ("POST", "PUT", "PATCH"):
        lines.append(f"Content-Length: {len(body)}")
    return ("\r\n".join(lines) + "\r\n\r\n").encode() + body


@dataclass
class _Resp:
    status: int = 0
    length: int | None = None  # remaining body bytes when Content-Length framed
    chunked: bool = False
    until_close: bool = False
    body_seen: bool = field(default=False)
    watched: str | None = None  # the value of the connection's watched header, if any


class HttpConn(asyncio.Protocol):
    """A client connection; ``await conn.send(raw)`` returns the response status.

    ``watch`` names one response header (lower case, e.g. ``x-served-by``) whose value the last
    complete response had is kept in ``watched``: the load generator counts which version
    answered without parsing every header into a dict.
    """

    def __init__(self, watch: str | None = None) -> None:
        self.transport: asyncio.Transport | None = None
        self.closed = False
        self.watch = watch
        self.watched: str | None = None
        self._buf = bytearray()
        self._resp: _Resp | None = None
        self._waiter: asyncio.Future[int] | None = None
        self._bodyless = False

    # -- asyncio.Protocol ---------------------------------------------------------------------
    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        # uvloop's transports implement asyncio.Transport without subclassing it.
        self.transport = cast(asyncio.Transport, transport)

    def connection_lost(self, exc: Exception | None) -> None:
        self.closed = True
        resp, waiter = self._resp, self._waiter
        if waiter is not None and not waiter.done():
            if resp is not None and resp.until_close:
                self.watched = resp.watched
                waiter.set_result(resp.status)
            else:
                waiter.set_exception(ConnectionClosed(str(exc or "closed by peer")))
        self._waiter = None

    def data_received(self, data: bytes) -> None:
        self._buf += data
        if self._waiter is not None:
            self._parse()

    # -- client API ---------------------------------------------------------------------------
    def send(self, raw: bytes) -> asyncio.Future[int]:
        """Write one request; the future resolves with the status when the response ends."""
        loop = asyncio.get_running_loop()
        waiter: asyncio.Future[int] = loop.create_future()
        if self.closed or self.transport is None:
            waiter.set_exception(ConnectionClosed("connection is closed"))
            return waiter
        if self._waiter is not None:
            raise RuntimeError("one request at a time per connection")
        self._waiter, self._resp = waiter, None
        # the answer to HEAD has a Content-Length but no body (RFC 9110 9.3.2)
        self._bodyless = raw.startswith(b"HEAD ")
        self.transport.write(raw)
        return waiter

    def close(self) -> None:
        if self.transport is not None:
            self.transport.close()

    def fail(self, exc: Exception) -> None:
        """Give up on the request in flight (its deadline passed): its future gets ``exc`` and
        the connection is dropped, since a late answer would be read as the next one's."""
        waiter, self._waiter = self._waiter, None
        self.closed = True
        if waiter is not None and not waiter.done():
            waiter.set_exception(exc)
        if self.transport is not None:
            self.transport.abort()

    # -- response framing ---------------------------------------------------------------------
    def _parse(self) -> None:
        if self._resp is None and not self._parse_head():
            return
        resp = self._resp
        assert resp is not None
        if resp.until_close:
            self._buf.clear()
            return
        done = self._consume_chunked(resp) if resp.chunked else self._consume_length(resp)
        if done:
            self.watched = resp.watched
            waiter, self._waiter, self._resp = self._waiter, None, None
            if waiter is not None and not waiter.done():
                waiter.set_result(resp.status)

    def _parse_head(self) -> bool:
        end = self._buf.find(b"\r\n\r\n")
        if end < 0:
            return False
        head = bytes(self._buf[:end]).decode("latin-1").split("\r\n")
        del self._buf[:end + 4]
        resp = _Resp(status=int(head[0].split(" ", 2)[1]))
        for line in head[1:]:
            name, _, value = line.partition(":")
            name = name.strip().lower()
            if name == "content-length":
                resp.length = int(value)
            elif name == "transfer-encoding" and "chunked" in value.lower():
                resp.chunked = True
            elif name == self.watch:
                resp.watched = value.strip()
        if resp.status in (204, 304) or 100 <= resp.status < 200 or self._bodyless:
            resp.length, resp.chunked = 0, False
        elif not resp.chunked and resp.length is None:
            resp.until_close = True
        self._resp = resp
        return True

    def _consume_length(self, resp: _Resp) -> bool:
        assert resp.length is not None
        take = min(resp.length, len(self._buf))
        del self._buf[:take]
        resp.length -= take
        return resp.length == 0

    def _consume_chunked(self, resp: _Resp) -> bool:
        while True:
            if resp.length:  # inside a chunk: its data plus the CRLF after it
                take = min(resp.length, len(self._buf))
                del self._buf[:take]
                resp.length -= take
                if resp.length:
                    return False
            line_end = self._buf.find(b"\r\n")
            if line_end < 0:
                return False
            line = bytes(self._buf[:line_end])
            if resp.body_seen:  # after the last chunk: trailers until an empty line
                del self._buf[:line_end + 2]
                if not line:
                    return True
                continue
            if not line:  # the CRLF that ends a chunk's data
                del self._buf[:2]
                continue
            size = int(line.split(b";", 1)[0], 16)
            del self._buf[:line_end + 2]
            if size == 0:
                resp.body_seen = True
            else:
                resp.length = size


async def connect(host: str, port: int, watch: str | None = None) -> HttpConn:
    """Open one connection (Nagle off, as asyncio does for TCP by default)."""
    loop = asyncio.get_running_loop()
    _, proto = await loop.create_connection(lambda: HttpConn(watch), host, port)
    return proto

