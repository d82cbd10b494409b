"""OpenTelemetry export ([otel] extra): a tiny OTLP/HTTP collector (a real aiohttp server that
decodes the protobuf export) receives the gateway's spans, and the worker's traceparent names
the gateway's span as its parent, in the client's trace."""

from __future__ import annotations

import asyncio
from pathlib import Path
from typing import Any, Self

import aiohttp
import orjson
import pytest
from aiohttp import web

from tests.helpers import ECHO, REPO_ROOT, GatewayProc, free_port, wait_until

trace_service_pb2 = pytest.importorskip(
    "opentelemetry.proto.collector.trace.v1.trace_service_pb2")
pytest.importorskip("opentelemetry.exporter.otlp.proto.http")

RAW = f"{{python}} {REPO_ROOT}/tests/workers/rawworker.py {{port}}"
CLIENT_TRACE = "4bf92f3577b34da6a3ce929d0e0e4736"
CLIENT_SPAN = "00f067aa0ba902b7"


class Collector:
    """OTLP/HTTP traces endpoint: keeps every span it is sent, with its service.name."""

    def __init__(self) -> None:
        self.spans: list[dict[str, Any]] = []
        self.port = free_port()
        self.content_types: set[str] = set()

    async def traces(self, request: web.Request) -> web.Response:
        self.content_types.add(request.content_type)
        msg = trace_service_pb2.ExportTraceServiceRequest()
        msg.ParseFromString(await request.read())
        for rs in msg.resource_spans:
            resource = {a.key: a.value.string_value for a in rs.resource.attributes}
            for ss in rs.scope_spans:
                for span in ss.spans:
                    attrs = {a.key: a.value for a in span.attributes}
                    self.spans.append({
                        "name": span.name, "trace": span.trace_id.hex(),
                        "id": span.span_id.hex(), "parent": span.parent_span_id.hex(),
                        "start": span.start_time_unix_nano, "end": span.end_time_unix_nano,
                        "attrs": attrs, "service": resource.get("service.name")})
        body = trace_service_pb2.ExportTraceServiceResponse().SerializeToString()
        return web.Response(body=body, content_type="application/x-protobuf")

    async def __aenter__(self) -> Self:
        app = web.Application()
        app.router.add_post("/v1/traces", self.traces)
        self.runner = web.AppRunner(app)
        await self.runner.setup()
        await web.TCPSite(self.runner, "127.0.0.1", self.port).start()
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self.runner.cleanup()

    def named(self, name: str) -> list[dict[str, Any]]:
        return [s for s in self.spans if s["name"] == name]


async def test_spans_reach_an_otlp_collector_and_the_worker_continues_the_trace(
        tmp_path: Path) -> None:
    services = {
        "raw": {"route": "/v1/raw", "versions": {"v1": {"command": RAW, "replicas": 1}}},
        "echo": {"route": "/v1/echo", "rewrite": "/predict", "mirror_post": True,
                 "versions": {"v1": {"command": ECHO, "replicas": 1, "max_concurrency": 1},
                              "v2": {"command": ECHO, "replicas": 1}},
                 "traffic": {"weights": {"v1": 100, "v2": 0},
                             "mirror": {"to": "v2", "percent": 100}}},
        "batched": {"route": "/v1/batched", "rewrite": "/predict",
                    "batching": {"max_batch_size": 4},
                    "versions": {"v1": {"command": ECHO, "replicas": 1}}},
    }
    async with Collector() as col:
        tracing = {"otlp_endpoint": f"http://127.0.0.1:{col.port}", "service_name": "gw-test"}
        async with GatewayProc(tmp_path, services, tracing=tracing) as gw, \
                aiohttp.ClientSession() as s:
            tp = f"00-{CLIENT_TRACE}-{CLIENT_SPAN}-01"
            async with s.get(gw.url("/v1/raw/headers"),
                             headers={"traceparent": tp, "X-Request-Id": "otel-1"}) as r:
                assert r.status == 200
                seen = {k.lower(): v for k, v in orjson.loads(await r.read())["headers"]}
            # several at once against one slot: some wait in the queue
            posts = [s.post(gw.url("/v1/echo"), json={"x": i}) for i in range(6)]
            for resp in await asyncio.gather(*posts):
                assert resp.status == 200
                resp.release()
            async with s.post(gw.url("/v1/batched"), json={"x": 1}) as r:
                assert r.status == 200

            def exported() -> bool:
                names = {sp["name"] for sp in col.spans}
                return {"gateway", "upstream", "queue_wait", "batch", "mirror"} <= names

            await wait_until(exported, 20, what="spans at the collector", interval=0.2)

    assert col.content_types == {"application/x-protobuf"}
    # the client's trace: our span is its child, the worker's parent is our span
    (root,) = [sp for sp in col.named("gateway") if sp["trace"] == CLIENT_TRACE]
    assert root["parent"] == CLIENT_SPAN and root["service"] == "gw-test"
    assert root["attrs"]["http.request_id"].string_value == "otel-1"
    assert root["attrs"]["http.response.status_code"].int_value == 200
    version, trace, parent, flags = seen["traceparent"].split("-")
    assert (version, trace, parent, flags) == ("00", CLIENT_TRACE, root["id"], "01")
    (up,) = [sp for sp in col.named("upstream") if sp["trace"] == CLIENT_TRACE]
    assert up["parent"] == root["id"] and root["start"] <= up["start"] <= up["end"] <= root["end"]
    # a request without a traceparent starts a trace; its children hang under its span
    roots = {sp["id"]: sp for sp in col.named("gateway")}
    for name in ("queue_wait", "batch", "mirror"):
        for child in col.named(name):
            assert child["parent"] in roots and roots[child["parent"]]["trace"] == child["trace"]
            assert child["end"] >= child["start"] > 0
