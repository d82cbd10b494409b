"""Mirror copies over real loopback sockets: the callback exchange (``UpstreamPool.send``) and the
mirror's own queue, against a small HTTP/1.1 server that answers by path."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator

import pytest

from gateway import plugins
from gateway.dataplane.balance import Endpoint, ReplicaSet
from gateway.dataplane.mirror import Mirror, Primary, mirror_methods
from gateway.dataplane.proxy import request_head
from gateway.dataplane.upstream import BUFFER_LIMIT, UpstreamPool
from gateway.errors import UpstreamError, UpstreamReset, UpstreamTimeout
from gateway.metrics import Metrics

OK = b'{"ok":true}'


def answer(path: bytes) -> bytes | None:
    if path == b"/chunked":
        return (b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n"
                b"6\r\n{\"ok\":\r\n5\r\ntrue}\r\n0\r\n\r\n")
    if path == b"/huge":
        size = BUFFER_LIMIT + 1
        return b"HTTP/1.1 200 OK\r\nContent-Length: %d\r\n\r\n" % size + b"x" * size
    if path in (b"/silent", b"/close"):
        return None
    return b"HTTP/1.1 200 OK\r\nContent-Length: %d\r\n\r\n" % len(OK) + OK


@pytest.fixture
async def server() -> AsyncIterator[tuple[int, list[bytes]]]:
    """Answers each request head by its path (bodies are not expected); records the paths."""
    seen: list[bytes] = []

    async def serve(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        try:
            while True:
                head = await reader.readuntil(b"\r\n\r\n")
                path = head.split(b" ", 2)[1]
                seen.append(path)
                if path == b"/close":
                    break
                out = answer(path)
                if out is not None:
                    writer.write(out)
            writer.close()
        except (asyncio.IncompleteReadError, ConnectionError):
            writer.close()

    srv = await asyncio.start_server(serve, "127.0.0.1", 0)
    async with srv:
        yield srv.sockets[0].getsockname()[1], seen


def head(path: str) -> bytes:
    return request_head(b"GET", path.encode(), ((b"Host", b"t"),), b"127.0.0.1", b"http", 0,
                        b"svc")


async def send(pool: UpstreamPool, path: str, timeout: float = 5.0
               ) -> tuple[int, bytes | None, Exception | None]:
    done: asyncio.Future[tuple[int, bytes | None, Exception | None]] = \
        asyncio.get_running_loop().create_future()
    assert pool.send(head(path), None, timeout, False, lambda *r: done.set_result(r))
    return await done


async def test_callback_exchange_needs_an_idle_connection_and_gives_it_back(
        server: tuple[int, list[bytes]]) -> None:
    pool = UpstreamPool("127.0.0.1", server[0])
    assert not pool.send(head("/x"), None, 5.0, False, lambda *r: None)   # cold: nothing sent
    await (await pool.connect()).exchange(head("/warm"), None, 5.0)       # joins the idle list
    assert await send(pool, "/x") == (200, OK, None)
    assert await send(pool, "/chunked") == (200, OK, None)     # chunked answers arrive whole
    assert pool.open == 1 and len(pool.idle) == 1 and server[1] == [b"/warm", b"/x", b"/chunked"]
    pool.close()


async def test_callback_exchange_errors_close_the_connection(
        server: tuple[int, list[bytes]]) -> None:
    pool = UpstreamPool("127.0.0.1", server[0])
    for path, error, timeout in (("/huge", UpstreamError, 5.0),
                                 ("/silent", UpstreamTimeout, 0.2),
                                 ("/close", UpstreamReset, 5.0)):
        await (await pool.connect()).exchange(head("/warm"), None, 5.0)
        status, body, exc = await send(pool, path, timeout)
        assert (status, body, type(exc)) == (0, None, error)
        await asyncio.sleep(0.05)
        assert pool.open == 0 and not pool.idle     # not reused: its stream is out of step
    pool.close()


async def test_mirror_queues_behind_its_concurrency_then_drops(
        server: tuple[int, list[bytes]]) -> None:
    port, seen = server
    rs = ReplicaSet("svc", "shadow")
    rs.publish([Endpoint("shadow", "127.0.0.1", port)])
    metrics = Metrics().shadow("svc", "shadow")
    mirror = Mirror("svc", "shadow", rs, percent=100, methods=mirror_methods(False),
                    max_body=1024, concurrency=2, queue=3, timeout=5.0,
                    compare=plugins.create("comparator", "exact", {}), metrics=metrics)
    primary = Primary(200, OK, 0.001)
    for i in range(6):
        mirror.submit("GET", f"/c{i}", ((b"Host", b"t"),), b"127.0.0.1", None, primary)
    assert (mirror.running, len(mirror.waiting)) == (2, 3)   # cold pool: two connect tasks
    for _ in range(100):
        if metrics.totals()[0] == 5:
            break
        await asyncio.sleep(0.02)
    assert metrics.totals() == (5, 0, 5, 5)      # answered, failed, agreed, compared
    assert int(metrics.dropped._value.get()) == 1 and mirror.gate.admitted == 0
    assert sorted(seen) == [b"/c0", b"/c1", b"/c2", b"/c3", b"/c4"]
    assert len(rs.endpoints[0].pool.idle) == 2    # two connections, each used in turn
    rs.endpoints[0].pool.close()
