"""Streams and typed services through the real gateway: SSE relayed as it is made (time to
first byte), streams counted, never batched nor mirrored; a bad instance in a micro-batch
answers only its own caller; `serve-gateway describe` shows a service's schema."""

from __future__ import annotations

import asyncio
import time
from pathlib import Path
from typing import Any

import aiohttp

from tests.helpers import GatewayProc, metric_value, run_cli, wait_until

TOKENS = "serve-gateway worker gateway.examples.tokens:Tokens --port {port}"
IRIS = "serve-gateway worker gateway.examples.iris:Iris --port {port}"
DELAY = 0.25          # seconds per token
PROMPT = {"prompt": "one two three four five six"}      # 6 tokens + done: about 1.5 s
FLOWER = {"sepal_length": 5.1, "sepal_width": 3.5, "petal_length": 1.4, "petal_width": 0.2}


def services() -> dict[str, Any]:
    return {
        "tokens": {
            "route": "/v1/tokens", "rewrite": "/predict", "mirror_post": True,
            "versions": {
                "v1": {"command": TOKENS, "replicas": 1, "env": {"TOKENS_DELAY_SECONDS": str(DELAY)}},
                "v2": {"command": TOKENS, "replicas": 1, "env": {"TOKENS_DELAY_SECONDS": "0"}},
            },
            "traffic": {"weights": {"v1": 100, "v2": 0}, "mirror": {"to": "v2", "percent": 100}},
        },
        "iris": {
            "route": "/v1/iris", "rewrite": "/predict",
            "batching": {"max_batch_size": 16, "max_wait_ms": 200, "slots_per_replica": 1},
            "versions": {"v1": {"command": IRIS, "replicas": 1}},
        },
    }


async def metrics(gw: GatewayProc) -> str:
    async with aiohttp.ClientSession() as s, s.get(gw.admin("/metrics")) as r:
        return await r.text()


async def test_streams_and_typed_services_through_the_gateway(tmp_path: Path) -> None:
    async with GatewayProc(tmp_path, services()) as gw:
        tokens = {"service": "tokens", "version": "v1"}
        # a plain JSON request is mirrored: the service really has a mirror
        async with aiohttp.ClientSession() as s, s.post(gw.url("/v1/tokens"), json=PROMPT) as r:
            assert r.status == 200
            assert len((await r.json())["predictions"]) == 7

        async def mirrored() -> bool:
            return (metric_value(await metrics(gw), "serve_gateway_shadow_requests_total",
                                 service="tokens", version="v2", result="sent") or 0) >= 1
        await wait_until(mirrored, 10, what="the JSON request's mirror copy")

        # the stream: first event long before the last, every event in order
        start = time.monotonic()
        arrivals: list[tuple[float, bytes]] = []
        async with aiohttp.ClientSession() as s, s.post(
                gw.url("/v1/tokens"), json=PROMPT, headers={"Accept": "text/event-stream"}) as r:
            assert r.status == 200 and r.headers["Content-Type"] == "text/event-stream"
            assert r.headers["x-served-by"] == "tokens/v1"
            async for chunk in r.content.iter_any():
                arrivals.append((time.monotonic() - start, chunk))
        body = b"".join(c for _, c in arrivals).decode()
        events = [e for e in body.split("\n\n") if e]
        assert events[0] == 'data: {"index":0,"token":"ONE","done":false}'
        assert events[-2:] == ['data: {"index":6,"token":"","done":true}', "event: end\ndata: {}"]
        ttfb, total = arrivals[0][0], arrivals[-1][0]
        assert total >= 6 * DELAY * 0.9
        assert ttfb < total / 2, f"first byte after {ttfb:.2f}s of {total:.2f}s: buffered"

        # counted as a stream; not mirrored
        text = await metrics(gw)
        assert metric_value(text, "serve_gateway_streams_total", **tokens) == 1
        assert metric_value(text, "serve_gateway_streams_open", **tokens) == 0
        assert metric_value(text, "serve_gateway_shadow_requests_total", service="tokens",
                            version="v2", result="sent") == 1

        # a client leaving mid-stream: the gateway lets go of the stream (and of the worker)
        async with aiohttp.ClientSession() as s, s.post(
                gw.url("/v1/tokens"), json={"prompt": "word " * 200},
                headers={"Accept": "text/event-stream"}) as r:
            assert (await r.content.readuntil(b"\n\n")).startswith(b"data: ")
            assert metric_value(await metrics(gw), "serve_gateway_streams_open", **tokens) == 1

        async def let_go() -> bool:
            return metric_value(await metrics(gw), "serve_gateway_streams_open", **tokens) == 0
        await wait_until(let_go, 10, what="the abandoned stream to be let go")
        assert metric_value(await metrics(gw), "serve_gateway_streams_total", **tokens) == 2

        # a micro-batch with one bad caller: that caller gets the 400, the others their answers
        bad = {k: v for k, v in FLOWER.items() if k != "petal_width"}

        async def call(doc: Any) -> tuple[int, Any]:
            async with aiohttp.ClientSession() as s, s.post(gw.url("/v1/iris"), json=doc) as r:
                return r.status, await r.json()
        answers = await asyncio.gather(*(call(FLOWER) for _ in range(3)),
                                       call({"instances": [FLOWER, bad]}))
        for status, doc in answers[:3]:
            assert status == 200 and doc["predictions"][0]["species"] == "setosa"
        status, doc = answers[3]
        assert status == 400 and doc["errors"] == [
            {"index": 1, "field": "petal_width", "detail": "Field required"}]
        iris = {"service": "iris", "version": "v1"}
        batches = metric_value(await metrics(gw), "serve_gateway_batch_size_count", **iris)
        assert batches and batches >= 1

        # a stream request to a batching service goes straight to a replica, past the batcher
        async with aiohttp.ClientSession() as s, s.post(
                gw.url("/v1/iris"), json={"instances": [FLOWER, FLOWER]},
                headers={"Accept": "application/x-ndjson"}) as r:
            assert r.status == 200 and r.headers["Content-Type"] == "application/x-ndjson"
            lines = (await r.read()).splitlines()
        assert len(lines) == 2 and b'"species":"setosa"' in lines[0]
        text = await metrics(gw)
        assert metric_value(text, "serve_gateway_batch_size_count", **iris) == batches
        assert metric_value(text, "serve_gateway_streams_total", **iris) == 1

        # the schema, through the admin API and the CLI
        async with aiohttp.ClientSession() as s, \
                s.get(gw.admin("/services/iris/schema"), headers=gw.auth) as r:
            assert r.status == 200
            schema = await r.json()
        assert schema["version"] == "v1" and schema["route"] == "/v1/iris"
        assert set(schema["openapi"]["x-serve-gateway"]["instance"]["required"]) == set(FLOWER)
        rc, out, err = await run_cli("describe", "iris", "--admin", gw.admin(""))
        assert rc == 0, err
        assert "instance:   {sepal_length: number, sepal_width: number" in out
        assert "prediction: {species: string, distance: number}" in out
        rc, out, err = await run_cli("describe", "nope", "--admin", gw.admin(""))
        assert rc == 1 and "no service named nope" in err
