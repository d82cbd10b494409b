"""The plain request path without a task: a real DataPlane in this process, a real raw-socket
worker (tests/workers/rawworker.py) over loopback, a raw keep-alive client.

What a user relies on: a plain GET on a free slot and a pooled connection is answered by
protocol callbacks alone (no task per request: the gateway's per-request CPU), is counted in
/metrics like any other, keeps its request id, and still gets its deadline (504) and its
streamed large answer when the worker is slow or large.
"""

from __future__ import annotations

import asyncio
import os
import subprocess
import sys
import time
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import pytest

from gateway import tasks
from gateway.dataplane.balance import Endpoint, ReplicaSet
from gateway.dataplane.server import DataPlane
from gateway.dataplane.table import TableHolder, build_table
from gateway.metrics import Metrics
from gateway.spec import parse_spec
from tests.helpers import free_port, metric_value

RAW = Path(__file__).resolve().parents[1] / "workers" / "rawworker.py"
SPEC = """
services:
  raw:
    route: /
    timeouts: {request: 0.5s}
    versions:
      v1: {command: "w --port {port}", max_concurrency: 8}
"""


async def _connectable(port: int, deadline: float = 10.0) -> None:
    end = time.monotonic() + deadline
    while True:
        try:
            _, w = await asyncio.open_connection("127.0.0.1", port)
            w.close()
            return
        except OSError:
            if time.monotonic() > end:
                raise
            await asyncio.sleep(0.05)


SPEC_ONE_SLOT = """
gateway:
  queue: {timeout: 5s}
""" + SPEC.replace("max_concurrency: 8", "max_concurrency: 1")


@pytest.fixture
async def gateway(tmp_path: Path) -> AsyncIterator[tuple[DataPlane, Metrics, int]]:
    async for g in _gateway(tmp_path, SPEC, 8):
        yield g


@pytest.fixture
async def one_slot(tmp_path: Path) -> AsyncIterator[tuple[DataPlane, Metrics, int]]:
    async for g in _gateway(tmp_path, SPEC_ONE_SLOT, 1):
        yield g


async def _gateway(tmp_path: Path, spec: str,
                   limit: int) -> AsyncIterator[tuple[DataPlane, Metrics, int]]:
    port = free_port()
    worker = subprocess.Popen([sys.executable, str(RAW), str(port)],
                              env={**os.environ, "RAW_LOG": str(tmp_path / "raw.log")})
    try:
        await _connectable(port)
        metrics = Metrics()
        rs = ReplicaSet("raw", "v1", limit=limit)
        rs.publish([Endpoint("raw-1", "127.0.0.1", port)])
        holder = TableHolder(build_table(parse_spec(spec), {("raw", "v1"): rs}, metrics))
        dp = DataPlane(holder, metrics)
        gw_port = await dp.start("127.0.0.1", 0)
        try:
            yield dp, metrics, gw_port
        finally:
            await dp.stop(2.0)
    finally:
        worker.terminate()
        worker.wait(10)


class Client:
    """One keep-alive connection, one request at a time."""

    def __init__(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        self.reader, self.writer = reader, writer

    async def get(self, path: str) -> tuple[int, dict[str, str], bytes]:
        self.writer.write(b"GET %s HTTP/1.1\r\nHost: t\r\n\r\n" % path.encode())
        head = await asyncio.wait_for(self.reader.readuntil(b"\r\n\r\n"), 10)
        lines = head.decode("latin-1").split("\r\n")
        headers = dict(line.lower().split(": ", 1) for line in lines[1:] if ": " in line)
        if headers.get("transfer-encoding") == "chunked":
            body = b""
            while True:
                size = int((await self.reader.readuntil(b"\r\n"))[:-2], 16)
                body += (await self.reader.readexactly(size + 2))[:-2]
                if size == 0:
                    break
        else:
            body = await self.reader.readexactly(int(headers.get("content-length", "0")))
        return int(lines[0].split(" ")[1]), headers, body


def count_spawns(monkeypatch: pytest.MonkeyPatch) -> list[str]:
    """The names of the tasks spawned from now on (``tasks.spawn`` still spawns them)."""
    spawned: list[str] = []
    real = tasks.spawn

    def counting(coro: Any, *, name: str) -> Any:
        spawned.append(name)
        return real(coro, name=name)

    monkeypatch.setattr(tasks, "spawn", counting)
    return spawned


async def client(port: int) -> Client:
    return Client(*await asyncio.open_connection("127.0.0.1", port))


async def test_a_plain_request_costs_no_task_and_is_counted_with_its_id(
        gateway: tuple[DataPlane, Metrics, int], monkeypatch: pytest.MonkeyPatch) -> None:
    _, metrics, port = gateway
    c = await client(port)
    assert (await c.get("/warm"))[0] == 200        # opens the pooled upstream connection
    spawned = count_spawns(monkeypatch)
    ids = set()
    for i in range(50):
        status, headers, body = await c.get(f"/plain/{i}?q=1")
        assert (status, body) == (200, b'{"n":0}')
        assert headers["x-served-by"] == "raw/v1"
        ids.add(headers["x-request-id"])
    assert spawned == []                           # main: one "http request" task each
    assert len(ids) == 50
    text = metrics.render().decode()
    assert metric_value(text, "serve_gateway_requests_total", service="raw", version="v1",
                        code="200") == 51
    assert metric_value(text, "serve_gateway_upstream_duration_seconds_count", service="raw",
                        version="v1") == 51
    assert metrics.version("raw", "v1").answered == 51


async def test_the_deadline_of_a_fast_request_answers_504_and_the_next_one_is_served(
        gateway: tuple[DataPlane, Metrics, int]) -> None:
    dp, metrics, port = gateway
    c = await client(port)
    assert (await c.get("/warm"))[0] == 200
    t0 = time.monotonic()
    status, _, body = await c.get("/silent")
    took = time.monotonic() - t0
    assert status == 504 and b"did not answer in time" in body
    assert 0.5 <= took < 2.5                       # 0.5 s, fired at most one wheel tick late
    status, _, body = await c.get("/after")
    assert (status, body) == (200, b'{"n":0}')
    rs = dp.holder.current.by_name["raw"].versions["v1"].replicas
    assert rs.inflight == 0                        # the slot came back


async def test_a_large_answer_begun_on_the_fast_path_is_streamed(
        gateway: tuple[DataPlane, Metrics, int]) -> None:
    dp, _, port = gateway
    c = await client(port)
    assert (await c.get("/warm"))[0] == 200
    status, headers, body = await c.get("/big-chunked")
    assert status == 200 and len(body) == 32 * 65536 and set(body) == {ord("b")}
    assert (await c.get("/after"))[0] == 200
    assert dp.holder.current.by_name["raw"].versions["v1"].replicas.inflight == 0


async def test_the_deadline_holds_on_the_awaited_path_too(
        gateway: tuple[DataPlane, Metrics, int]) -> None:
    dp, _, port = gateway
    c = await client(port)
    t0 = time.monotonic()
    status, _, body = await c.get("/silent")        # no pooled connection yet: it connects
    assert status == 504 and b"did not answer in time" in body
    assert 0.5 <= time.monotonic() - t0 < 2.5
    assert (await c.get("/after"))[0] == 200
    assert dp.holder.current.by_name["raw"].versions["v1"].replicas.inflight == 0


async def test_a_request_queued_for_the_slot_is_served_without_a_task(
        one_slot: tuple[DataPlane, Metrics, int], monkeypatch: pytest.MonkeyPatch) -> None:
    dp, metrics, port = one_slot
    a, b = await client(port), await client(port)
    assert (await a.get("/warm"))[0] == 200
    spawned = count_spawns(monkeypatch)
    rs = dp.holder.current.by_name["raw"].versions["v1"].replicas
    held = asyncio.ensure_future(a.get("/slow"))       # holds the one slot for 0.3 s
    await asyncio.sleep(0.1)
    t0 = time.monotonic()
    waiting = asyncio.ensure_future(b.get("/queued"))
    await asyncio.sleep(0.1)
    assert rs.waiting == 1                              # queued behind the slot
    status, _, body = await waiting
    assert (status, body) == (200, b'{"n":0}') and time.monotonic() - t0 >= 0.15
    assert (await held)[0] == 200
    assert spawned == []                                # main: a task per request
    assert rs.inflight == 0 and rs.waiting == 0
    text = metrics.render().decode()
    assert metric_value(text, "serve_gateway_queue_wait_seconds_count", service="raw",
                        version="v1") == 1
