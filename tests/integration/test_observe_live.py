"""Observations of real data planes serving real requests over loopback: two DataPlanes (what two
data-plane processes run), each with its own metrics, table and replica sets, in front of one
small HTTP/1.1 backend; their reports, taken in by a controller's Gather, add up to exactly what
the two counted (answers by code, gateway errors, latency buckets, the plain totals), whatever
the hot path keeps as plain tallies until ``Metrics.flush``."""

from __future__ import annotations

import asyncio
import json
from collections.abc import AsyncIterator
from typing import Any

import aiohttp
import pytest

from gateway.control.gather import Gather
from gateway.dataplane.balance import Endpoint, ReplicaSet
from gateway.dataplane.observe import Observer
from gateway.dataplane.server import DataPlane
from gateway.dataplane.table import TableHolder, build_table
from gateway.metrics import Metrics
from gateway.spec import parse_spec
from tests.helpers import data_plane_samples, metric_value

TEXT = """\
gateway: {state_dir: /nonexistent}
services:
  echo:
    route: /echo
    versions:
      v1: {command: "w --port {port}", replicas: 1}
"""


@pytest.fixture
async def backend() -> AsyncIterator[int]:
    """Keep-alive HTTP/1.1: /echo/fail answers 503, anything else 200 {"ok":true}."""
    async def serve(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        try:
            while True:
                head = await reader.readuntil(b"\r\n\r\n")
                status = b"503 Service Unavailable" if b" /echo/fail " in head else b"200 OK"
                body = b'{"ok":true}'
                writer.write(b"HTTP/1.1 %s\r\nContent-Type: application/json\r\n"
                             b"Content-Length: %d\r\n\r\n%s" % (status, len(body), body))
                await writer.drain()
        except (asyncio.IncompleteReadError, ConnectionError):
            pass
        writer.close()

    srv = await asyncio.start_server(serve, "127.0.0.1", 0)
    async with srv:
        yield srv.sockets[0].getsockname()[1]


class Plane:
    def __init__(self, backend_port: int) -> None:
        self.metrics = Metrics()
        rs = ReplicaSet("echo", "v1")
        rs.publish([Endpoint("r1", "127.0.0.1", backend_port)])
        self.holder = TableHolder(build_table(parse_spec(TEXT), {("echo", "v1"): rs},
                                              self.metrics))
        self.dataplane = DataPlane(self.holder, self.metrics)
        self.observer = Observer(self.metrics, self.holder)
        self.port = 0

    def report(self) -> Any:
        r = json.loads(json.dumps(self.observer.report()))
        self.observer.acked(r)
        return r


async def traffic(port: int, ok: int, failed: int, missing: int) -> None:
    async with aiohttp.ClientSession() as http:
        for path, n in (("/echo/x", ok), ("/echo/fail", failed), ("/nowhere", missing)):
            for _ in range(n):
                async with http.get(f"http://127.0.0.1:{port}{path}") as resp:
                    await resp.read()


def added(*sample_sets: dict[Any, float]) -> dict[Any, float]:
    out: dict[Any, float] = {}
    for samples in sample_sets:
        for k, v in samples.items():
            out[k] = out.get(k, 0.0) + v
    return out


async def test_reports_of_two_live_data_planes_add_up_to_what_they_served(backend: int) -> None:
    a, b = Plane(backend), Plane(backend)
    for p in (a, b):
        p.port = await p.dataplane.start("127.0.0.1", 0)
    ctrl = Metrics()
    gather = Gather(ctrl)
    try:
        await traffic(a.port, ok=7, failed=2, missing=1)
        await traffic(b.port, ok=5, failed=1, missing=2)
        gather.absorb("dp-0", "a", a.report())
        gather.absorb("dp-1", "b", b.report())
        await traffic(a.port, ok=3, failed=0, missing=0)
        gather.absorb("dp-0", "a", a.report())
        gather.absorb("dp-1", "b", b.report())
    finally:
        for p in (a, b):
            await p.dataplane.stop(1.0)

    vm = ctrl.version("echo", "v1")
    assert (vm.answered, vm.failed) == (18, 3)
    assert vm.buckets()[-1] == 18                 # every answer in the latency histogram
    text = ctrl.render().decode()
    assert metric_value(text, "serve_gateway_requests_total", service="echo", version="v1",
                        code="200") == 15
    assert metric_value(text, "serve_gateway_errors_total", kind="no_route") == 3
    got, want = data_plane_samples(ctrl), added(data_plane_samples(a.metrics),
                                                data_plane_samples(b.metrics))
    assert got.keys() == want.keys()
    for key, value in want.items():
        assert got[key] == pytest.approx(value), key
