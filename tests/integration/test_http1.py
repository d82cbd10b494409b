"""The data listener's HTTP/1.1 protocol against a real listening server on loopback, driven
with raw bytes over real sockets."""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import AsyncIterator
from typing import Any

import orjson

from gateway.dataplane.http1 import MAX_PIPELINED, Server
from gateway.dataplane.http1msg import JSON_FIELD, Request
from gateway.errors import ClientGone

Answer = tuple[int, dict[str, str], bytes]
FLOOD_GONE: list[str] = []      # /flood requests whose client was dropped


async def handler(req: Request) -> None:
    """/slow?S sleeps S seconds; /reject answers 413 unread; /stream answers in chunks;
    /count streams the body and answers its length; /boom fails; anything else echoes."""
    path, _, query = req.target.partition("?")
    if path == "/slow":
        await asyncio.sleep(float(query))
    elif path == "/reject":
        req.respond(413, JSON_FIELD, b'{"error":"body_too_large"}')
        return
    elif path == "/stream":
        req.start(200, b"Content-Type: text/plain\r\n")
        for piece in (b"ab", b"cd", b"ef"):
            await req.write(piece)
        req.end()
        return
    elif path == "/count":
        seen = 0
        async for chunk in req.stream():
            seen += len(chunk)
        req.respond(200, b"", str(seen).encode())
        return
    elif path == "/boom":
        raise RuntimeError("boom")
    elif path == "/flood":        # a large streamed answer, as fast as the client takes it
        req.start(200, b"")
        try:
            for _ in range(int(query)):
                await req.write(b"z" * 65536)
        except ClientGone:
            FLOOD_GONE.append(req.target)
            raise
        req.end()
        return
    body = await req.read()
    req.respond(200, b"X-Target: %s\r\nX-Method: %s\r\n" % (req.target.encode(),
                                                            req.method.encode()), body)


@contextlib.asynccontextmanager
async def serving(keepalive: float = 75.0, **options: Any) -> AsyncIterator[tuple[Server, int]]:
    server = Server(handler, keepalive_timeout=keepalive, **options)
    port = await server.start("127.0.0.1", 0)
    try:
        yield server, port
    finally:
        await server.shutdown(1.0)


class Client:
    def __init__(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        self.r = reader
        self.w = writer

    @classmethod
    async def open(cls, port: int) -> Client:
        return cls(*await asyncio.open_connection("127.0.0.1", port))

    def send(self, data: bytes) -> None:
        self.w.write(data)

    async def answer(self, head_only: bool = False) -> Answer:
        head = await asyncio.wait_for(self.r.readuntil(b"\r\n\r\n"), 5)
        lines = head.decode("latin-1").split("\r\n")
        status = int(lines[0].split()[1])
        headers = {k.lower(): v for k, v in (line.split(": ", 1) for line in lines[1:] if line)}
        if head_only or status == 100:
            return status, headers, b""
        if "content-length" in headers:
            body = await self.r.readexactly(int(headers["content-length"]))
        elif headers.get("transfer-encoding") == "chunked":
            body = b""
            while True:
                size = int((await self.r.readuntil(b"\r\n"))[:-2], 16)
                body += (await self.r.readexactly(size + 2))[:-2]
                if size == 0:
                    break
        else:
            body = await asyncio.wait_for(self.r.read(), 5)
        return status, headers, body

    async def closed(self, timeout: float = 5.0) -> bool:
        """The server closed the connection (EOF, or a reset) within ``timeout``."""
        try:
            return await asyncio.wait_for(self.r.read(), timeout) == b""
        except ConnectionResetError:
            return True

    def close(self) -> None:
        self.w.close()


def get(path: str, extra: str = "") -> bytes:
    return f"GET {path} HTTP/1.1\r\nHost: t\r\n{extra}\r\n".encode()


def post(path: str, body: bytes, extra: str = "") -> bytes:
    return f"POST {path} HTTP/1.1\r\nHost: t\r\nContent-Length: {len(body)}\r\n{extra}\r\n" \
        .encode() + body


async def test_keep_alive_answers_in_one_piece_with_date_and_length() -> None:
    async with serving() as (_, port):
        c = await Client.open(port)
        for i in range(3):
            c.send(post(f"/echo/{i}", b"hello"))
            status, headers, body = await c.answer()
            assert status == 200 and body == b"hello" and headers["x-target"] == f"/echo/{i}"
            assert headers["content-length"] == "5" and headers["date"].endswith("GMT")
            assert "connection" not in headers
        c.close()


async def test_pipelined_requests_are_answered_in_order() -> None:
    async with serving() as (_, port):
        c = await Client.open(port)
        # the first is the slowest: answers still come in request order
        c.send(get("/slow?0.2") + post("/b", b"bb") + get("/c"))
        targets = [(await c.answer())[1]["x-target"] for _ in range(3)]
        assert targets == ["/slow?0.2", "/b", "/c"]
        # more than the pipeline holds in one write: reading pauses, then resumes
        n = MAX_PIPELINED * 3
        c.send(b"".join(post(f"/p{i}", b"x" * i) for i in range(n)))
        for i in range(n):
            status, headers, body = await c.answer()
            assert status == 200 and headers["x-target"] == f"/p{i}" and body == b"x" * i
        c.close()


async def test_chunked_request_body_is_streamed_to_the_handler() -> None:
    async with serving() as (_, port):
        c = await Client.open(port)
        c.send(b"POST /echo HTTP/1.1\r\nHost: t\r\nTransfer-Encoding: chunked\r\n\r\n4\r\nwiki\r\n")
        await asyncio.sleep(0.05)
        c.send(b"5\r\npedia\r\n0\r\n\r\n")
        status, _, body = await c.answer()
        assert status == 200 and body == b"wikipedia"
        # the connection is still good for the next request
        c.send(get("/after"))
        assert (await c.answer())[1]["x-target"] == "/after"
        c.close()


async def test_large_body_streams_with_flow_control() -> None:
    async with serving() as (_, port):
        c = await Client.open(port)
        size = 5 << 20                              # above the whole-body limit
        c.send(b"POST /count HTTP/1.1\r\nHost: t\r\nContent-Length: %d\r\n\r\n" % size)
        for _ in range(size >> 16):
            c.send(b"z" * (1 << 16))
            await c.w.drain()
        status, _, body = await c.answer()
        assert status == 200 and int(body) == size
        c.close()


async def test_streamed_answer_is_chunked_and_for_http10_close_delimited() -> None:
    async with serving() as (_, port):
        c = await Client.open(port)
        c.send(get("/stream"))
        status, headers, body = await c.answer()
        assert status == 200 and headers["transfer-encoding"] == "chunked" and body == b"abcdef"
        c.send(get("/next"))
        assert (await c.answer())[0] == 200
        c.close()
        c = await Client.open(port)
        c.send(b"GET /stream HTTP/1.0\r\n\r\n")
        status, headers, body = await c.answer()
        assert status == 200 and "transfer-encoding" not in headers and body == b"abcdef"
        assert headers["connection"] == "close"


async def test_expect_100_continue() -> None:
    async with serving() as (_, port):
        c = await Client.open(port)
        c.send(b"POST /echo HTTP/1.1\r\nHost: t\r\nContent-Length: 5\r\n"
               b"Expect: 100-continue\r\n\r\n")
        status, _, _ = await c.answer()
        assert status == 100
        c.send(b"hello")
        status, _, body = await c.answer()
        assert status == 200 and body == b"hello"
        # refused before the body is sent: no 100, a final answer, then the connection closes
        c.send(b"POST /reject HTTP/1.1\r\nHost: t\r\nContent-Length: 5\r\n"
               b"Expect: 100-continue\r\n\r\n")
        status, headers, body = await c.answer()
        assert status == 413 and headers["connection"] == "close"
        assert await c.closed()


async def test_answer_before_the_body_is_read_then_close() -> None:
    async with serving() as (_, port):
        c = await Client.open(port)
        body = b"y" * (3 << 20)
        c.send(post("/reject", body))          # the client keeps sending while answered
        status, headers, _ = await c.answer()
        assert status == 413 and headers["connection"] == "close"
        assert await c.closed()


async def test_oversized_head_gets_431_and_long_target_400() -> None:
    async with serving() as (_, port):
        c = await Client.open(port)
        c.send(b"GET / HTTP/1.1\r\nHost: t\r\n" + b"X-Big: " + b"a" * 70_000 + b"\r\n\r\n")
        status, headers, body = await c.answer()
        assert status == 431 and headers["connection"] == "close"
        assert orjson.loads(body)["error"] == "head_too_large"
        assert await c.closed()
        c = await Client.open(port)
        c.send(get("/" + "a" * 9000))
        status, _, body = await c.answer()
        assert status == 400 and orjson.loads(body)["error"] == "bad_request"
        assert await c.closed()
        # a head that never ends is cut off too (the parser is not left to buffer it)
        c = await Client.open(port)
        c.send(b"GET / HTTP/1.1\r\nX-Endless: ")
        for _ in range(40):
            c.send(b"b" * 8192)
        status, _, _ = await c.answer()
        assert status == 431 and await c.closed()


async def test_malformed_request_gets_400_json_and_close() -> None:
    async with serving() as (_, port):
        c = await Client.open(port)
        c.send(b"NONSENSE\r\n\r\n")
        status, headers, body = await c.answer()
        doc = orjson.loads(body)
        assert status == 400 and headers["content-type"] == "application/json"
        assert doc["error"] == "bad_request" and doc["service"] is None and doc["detail"]
        assert await c.closed()
        # a good request followed by garbage: the good one is answered first
        c = await Client.open(port)
        c.send(get("/first") + b"GET / HTTP/1.1\r\nBad Header\r\n\r\n")
        status, headers, _ = await c.answer()
        assert status == 200 and headers["x-target"] == "/first"
        assert (await c.answer())[0] == 400
        assert await c.closed()


async def test_http10_closes_unless_keep_alive() -> None:
    async with serving() as (_, port):
        c = await Client.open(port)
        c.send(b"GET /old HTTP/1.0\r\n\r\n")
        status, headers, _ = await c.answer()
        assert status == 200 and headers["connection"] == "close"
        assert await c.closed()
        c = await Client.open(port)
        c.send(b"GET /a HTTP/1.0\r\nConnection: keep-alive\r\n\r\n")
        status, headers, _ = await c.answer()
        assert status == 200 and headers["connection"] == "keep-alive"
        c.send(b"GET /b HTTP/1.0\r\n\r\n")
        assert (await c.answer())[1]["x-target"] == "/b"
        assert await c.closed()


async def test_connection_close_is_honoured() -> None:
    async with serving() as (_, port):
        c = await Client.open(port)
        c.send(get("/bye", "Connection: close\r\n") + get("/never"))
        status, headers, _ = await c.answer()
        assert status == 200 and headers["connection"] == "close"
        assert await c.closed()


async def test_head_and_failing_handler() -> None:
    async with serving() as (_, port):
        c = await Client.open(port)
        c.send(b"HEAD /h HTTP/1.1\r\nHost: t\r\n\r\n" + get("/boom") + get("/ok"))
        status, headers, _ = await c.answer(head_only=True)
        assert status == 200 and headers["content-length"] == "0"
        status, _, body = await c.answer()
        assert status == 500 and orjson.loads(body)["error"] == "internal_error"
        assert (await c.answer())[0] == 200
        c.close()


async def test_idle_keep_alive_connection_is_closed() -> None:
    async with serving(keepalive=0.3) as (_, port):
        c = await Client.open(port)
        c.send(get("/x"))
        assert (await c.answer())[0] == 200
        loop = asyncio.get_running_loop()
        t0 = loop.time()
        assert await c.closed(3.0)
        assert 0.2 <= loop.time() - t0 < 2.0
        # a connection that never sends a whole head is closed as well
        c = await Client.open(port)
        c.send(b"GET / HT")
        assert await c.closed(3.0)


async def test_shutdown_drains_in_flight_and_closes_idle_at_once() -> None:
    server = Server(handler)
    port = await server.start("127.0.0.1", 0)
    idle, busy = await Client.open(port), await Client.open(port)
    idle.send(get("/warm"))
    assert (await idle.answer())[0] == 200
    busy.send(get("/slow?0.5"))
    await asyncio.sleep(0.1)
    stopping = asyncio.ensure_future(server.shutdown(5.0))
    assert await idle.closed(0.3)                   # closed at once, not after the drain
    status, headers, _ = await busy.answer()
    assert status == 200 and headers["connection"] == "close"
    assert await busy.closed()
    await asyncio.wait_for(stopping, 2)
    try:
        await Client.open(port)
    except OSError:
        pass
    else:
        raise AssertionError("still accepting after shutdown")


async def test_shutdown_gives_up_on_requests_past_the_drain_timeout() -> None:
    server = Server(handler)
    port = await server.start("127.0.0.1", 0)
    c = await Client.open(port)
    c.send(get("/slow?30"))
    await asyncio.sleep(0.1)
    loop = asyncio.get_running_loop()
    t0 = loop.time()
    await server.shutdown(0.3)
    assert loop.time() - t0 < 2.0
    assert await c.closed()


async def test_protocol_upgrade_is_answered_as_plain_http_then_closed() -> None:
    async with serving() as (_, port):
        c = await Client.open(port)
        c.send(get("/ws", "Upgrade: websocket\r\nConnection: Upgrade\r\n") + b"\x81\x05hello")
        status, headers, _ = await c.answer()
        assert status == 200 and headers["x-target"] == "/ws" and headers["connection"] == "close"
        assert await c.closed()


async def test_client_half_close_still_gets_its_answer() -> None:
    async with serving() as (_, port):
        c = await Client.open(port)
        c.send(get("/slow?0.1") + get("/second"))
        c.w.write_eof()
        assert (await c.answer())[1]["x-target"] == "/slow?0.1"
        status, headers, _ = await c.answer()
        assert status == 200 and headers["x-target"] == "/second"
        assert headers["connection"] == "close" and await c.closed()
