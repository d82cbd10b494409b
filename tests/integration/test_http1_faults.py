"""The data listener under clients that misbehave: deadlines on every wait (408, dropped slow
readers), strict RFC 9112 framing, the body limit enforced at the head, and memory released as
soon as a connection ends. A real server on loopback, driven with raw bytes."""

from __future__ import annotations

import asyncio
import gc

import orjson

from gateway.dataplane import http1
from gateway.dataplane.http1rules import Deadlines
from tests.integration.test_http1 import FLOOD_GONE, Client, get, post, serving

FAST = Deadlines(header_read=0.3, body_idle=0.3, upstream_idle=0.3, client_write=0.3)


def counter() -> tuple[list[str], object]:
    seen: list[str] = []
    return seen, seen.append


async def test_slow_header_sender_gets_408_at_the_header_deadline() -> None:
    seen, count = counter()
    async with serving(deadlines=FAST, on_timeout=count) as (_, port):
        c = await Client.open(port)
        loop = asyncio.get_running_loop()
        t0 = loop.time()
        c.send(b"GET /slowloris HTTP/1.1\r\nHost: t\r\n")
        head = b""
        for i in range(60):                 # a line every 50 ms never completes the head in time
            try:
                head = await asyncio.wait_for(c.r.readuntil(b"\r\n\r\n"), 0.05)
                break
            except TimeoutError:
                c.send(b"X-%d: y\r\n" % i)
        assert head.startswith(b"HTTP/1.1 408 ") and b"Connection: close" in head
        length = int(head.split(b"Content-Length: ")[1].split(b"\r\n")[0])
        body = await c.r.readexactly(length)
        assert orjson.loads(body)["error"] == "request_timeout"
        assert 0.25 <= loop.time() - t0 < 3.0
        assert await c.closed()
    assert seen == ["header_read"]


async def test_silent_upload_gets_408_at_the_body_idle_deadline() -> None:
    seen, count = counter()
    async with serving(deadlines=FAST, on_timeout=count) as (_, port):
        c = await Client.open(port)
        c.send(b"POST /echo HTTP/1.1\r\nHost: t\r\nContent-Length: 1000\r\n\r\n" + b"x" * 10)
        status, headers, body = await c.answer()
        assert status == 408 and headers["connection"] == "close"
        assert "request body" in orjson.loads(body)["detail"]
        assert await c.closed()
        # a body that keeps coming, slowly but within the idle deadline each time, is served
        c = await Client.open(port)
        c.send(b"POST /echo HTTP/1.1\r\nHost: t\r\nContent-Length: 8\r\n\r\n")
        for _ in range(8):
            await asyncio.sleep(0.1)
            c.send(b"b")
        status, _, body = await c.answer()
        assert status == 200 and body == b"b" * 8
        c.close()
    assert seen == ["body_idle"]


async def test_client_that_stops_reading_is_dropped_at_the_write_deadline() -> None:
    seen, count = counter()
    FLOOD_GONE.clear()
    async with serving(deadlines=FAST, on_timeout=count) as (server, port):
        c = await Client.open(port)
        c.w.transport.set_write_buffer_limits(0)
        c.w.transport.pause_reading()       # reads nothing of a 64 MiB answer
        c.send(get("/flood?1024"))
        loop = asyncio.get_running_loop()
        t0 = loop.time()
        while not FLOOD_GONE and loop.time() - t0 < 5:
            await asyncio.sleep(0.05)
        assert FLOOD_GONE == ["/flood?1024"] and loop.time() - t0 < 4
        while server.conns and loop.time() - t0 < 5:
            await asyncio.sleep(0.05)
        assert not server.conns
        c.close()
    assert seen == ["client_write"]


async def test_strict_http11_musts() -> None:
    async with serving() as (_, port):
        cases = [
            (b"GET / HTTP/1.1\r\nHost: a\r\nHost: b\r\n\r\n", 400, "more than one Host"),
            (b"GET / HTTP/1.1\r\nAccept: */*\r\n\r\n", 400, "needs a Host"),
            (b"GET / HTTP/2.0\r\nHost: a\r\n\r\n", 505, "HTTP/2.0"),
            ((b"POST / HTTP/1.1\r\nHost: a\r\nTransfer-Encoding: identity, chunked\r\n\r\n"
             b"5\r\nhello\r\n0\r\n\r\n"), 501, "chunked"),
            ((b"POST / HTTP/1.1\r\nHost: a\r\nTransfer-Encoding: chunked\r\n"
             b"Transfer-Encoding: gzip\r\n\r\n"), 400, "Transfer-Encoding"),
            (b"GET /v1/a#/../../v1/b HTTP/1.1\r\nHost: a\r\n\r\n", 400, "'#'"),
            (b"GET / HTTP/1.1\r\nHost: a\r\n" + b"".join(b"X-%d: 1\r\n" % i for i in range(100))
             + b"\r\n", 431, "100 header lines"),
        ]
        for raw, want, detail in cases:
            c = await Client.open(port)
            c.send(raw)
            status, headers, body = await c.answer()
            assert (status, headers["connection"]) == (want, "close"), raw
            assert detail in orjson.loads(body)["detail"], (raw, body)
            assert await c.closed()
        # what stays accepted: 100 header lines, HTTP/1.0 without Host, chunked alone
        c = await Client.open(port)
        c.send(b"GET /ok HTTP/1.1\r\nHost: a\r\n" + b"".join(b"X-%d: 1\r\n" % i for i in range(99))
               + b"\r\n")
        assert (await c.answer())[0] == 200
        c.send(b"POST /te HTTP/1.1\r\nHost: a\r\nTransfer-Encoding: Chunked\r\n\r\n"
               b"3\r\nabc\r\n0\r\n\r\n")
        assert (await c.answer())[2] == b"abc"
        c.close()
        c = await Client.open(port)
        c.send(b"GET /old HTTP/1.0\r\n\r\n")
        assert (await c.answer())[0] == 200
        c.close()


async def test_post_with_upgrade_keeps_its_body_and_is_served_as_http11() -> None:
    """What ``curl --http2`` sends on a cleartext URL: we never switch, the body must arrive."""
    h2c = "Connection: Upgrade, HTTP2-Settings\r\nUpgrade: h2c\r\nHTTP2-Settings: AAMAAABkAAQAAP__\r\n"
    async with serving() as (_, port):
        c = await Client.open(port)
        c.send(post("/echo", b'{"x": 1}', h2c))
        status, headers, body = await c.answer()
        assert status == 200 and body == b'{"x": 1}' and headers["connection"] == "close"
        assert await c.closed()
        # the body after the head, in pieces
        c = await Client.open(port)
        c.send(post("/echo", b"", h2c).replace(b"Content-Length: 0", b"Content-Length: 10"))
        for piece in (b"01234", b"56789"):
            await asyncio.sleep(0.05)
            c.send(piece)
        status, _, body = await c.answer()
        assert status == 200 and body == b"0123456789"
        c.close()
        # chunked, and large (streamed to the handler)
        c = await Client.open(port)
        c.send(b"POST /echo HTTP/1.1\r\nHost: t\r\nTransfer-Encoding: chunked\r\n" + h2c.encode()
               + b"\r\n3\r\nabc\r\n2\r\nde\r\n0\r\n\r\n")
        status, _, body = await c.answer()
        assert status == 200 and body == b"abcde"
        c.close()
        c = await Client.open(port)
        c.send(post("/count", b"q" * (3 << 20), h2c))
        status, _, body = await c.answer()
        assert status == 200 and body == str(3 << 20).encode()
        c.close()


async def test_content_length_over_the_limit_is_handed_over_at_the_head() -> None:
    """The handler sees the request (and can answer 413) before any body byte is buffered."""
    async with serving(max_body=1000) as (_server, port):
        c = await Client.open(port)
        c.send(b"POST /reject HTTP/1.1\r\nHost: t\r\nContent-Length: 500000\r\n\r\n")
        status, headers, _ = await c.answer()       # no body sent at all
        assert status == 413 and headers["connection"] == "close"
        c.close()
        # under the limit: still buffered whole as before
        c = await Client.open(port)
        c.send(post("/echo", b"x" * 999))
        assert (await c.answer())[2] == b"x" * 999
        c.close()


async def test_connection_memory_is_released_without_the_cyclic_collector() -> None:
    """1 MiB announced, 900 KB sent, then the client goes: no connection, request or buffer
    may wait for the cyclic collector (the parser's bound methods made a cycle)."""
    gc.collect()
    gc.disable()
    gc.set_debug(gc.DEBUG_SAVEALL)
    try:
        async with serving() as (server, port):
            for _ in range(3):
                c = await Client.open(port)
                c.send(b"POST /echo HTTP/1.1\r\nHost: t\r\nContent-Length: 1048576\r\n\r\n"
                       + b"u" * 900_000)
                await asyncio.sleep(0.05)
                c.w.transport.abort()
            loop = asyncio.get_running_loop()
            t0 = loop.time()
            while server.conns and loop.time() - t0 < 5:
                await asyncio.sleep(0.02)
            assert not server.conns
            gc.collect()
            leaked = [o for o in gc.garbage if isinstance(o, (http1._Conn, http1.Request))]
            big = [o for o in gc.garbage if isinstance(o, bytes) and len(o) > 60_000]
            assert not leaked and not big, (len(leaked), len(big))
    finally:
        gc.set_debug(0)
        gc.garbage.clear()
        gc.enable()
