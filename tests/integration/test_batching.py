"""Micro-batching end to end: a real gateway, real MLP and echo workers, loopback only."""

from __future__ import annotations

import asyncio
import os
import signal
from pathlib import Path
from typing import Any

import aiohttp
import numpy as np
import orjson

from tests.helpers import ECHO, MLP, GatewayProc, alive, metric_value, wait_until

BATCHING = {"max_batch_size": 32, "max_wait_ms": 5, "slots_per_replica": 1}


def mlp_service(route: str, batching: dict[str, Any] | None) -> dict[str, Any]:
    svc: dict[str, Any] = {"route": route, "rewrite": "/predict", "versions": {"v1": {
        "command": MLP, "replicas": 1, "env": {"OMP_NUM_THREADS": "1"}}}}
    if batching is not None:
        svc["batching"] = batching
    return svc


def echo_batching(replicas: int = 1, **batching: Any) -> dict[str, Any]:
    return {"route": "/v1/echo", "rewrite": "/predict",
            "batching": {"max_batch_size": 8, "max_wait_ms": 0, **batching},
            "versions": {"v1": {"command": ECHO, "replicas": replicas}}}


async def post(s: aiohttp.ClientSession, url: str, doc: Any,
               headers: dict[str, str] | None = None) -> tuple[int, Any, Any]:
    async with s.post(url, data=orjson.dumps(doc), headers=headers) as r:
        return r.status, await r.json(), r.headers


async def metrics(gw: GatewayProc) -> str:
    async with aiohttp.ClientSession() as s, s.get(gw.admin("/metrics")) as r:
        return await r.text()


async def replicas(gw: GatewayProc, service: str) -> list[dict[str, Any]]:
    doc = await gw.status()
    reps: list[dict[str, Any]] = doc["services"][service]["versions"]["v1"]["replicas"]
    return reps


async def test_batched_predictions_equal_unbatched_for_mixed_clients(tmp_path: Path) -> None:
    services = {"fixed": mlp_service("/v1/fixed", BATCHING),
                "adaptive": mlp_service("/v1/adaptive", {**BATCHING, "max_wait_ms": "adaptive"}),
                "plain": mlp_service("/v1/plain", None)}
    rng = np.random.default_rng(7)
    inputs = np.round(rng.standard_normal((48, 512)), 4).tolist()
    # 24 clients: single documents and {"instances": [...]} of 2 or 3, interleaved
    sizes = [1, 2, 1, 3, 1, 1, 2, 1, 3, 1, 1, 2] * 2
    docs, start = [], 0
    for i, n in enumerate(sizes):
        part = inputs[start:start + n]
        start += n
        docs.append(part[0] if n == 1 and i % 4 else {"instances": part})
    async with GatewayProc(tmp_path, services) as gw, aiohttp.ClientSession() as s:
        expected = []
        for x in inputs[:start]:                       # unbatched, one at a time
            status, body, _ = await post(s, gw.url("/v1/plain"), x)
            assert status == 200
            expected += body["predictions"]
        for route in ("/v1/fixed", "/v1/adaptive"):
            results = await asyncio.gather(*(post(s, gw.url(route), d) for d in docs))
            got = []
            for (status, body, _), n in zip(results, sizes):
                assert status == 200, body
                assert len(body["predictions"]) == n
                got += body["predictions"]
            np.testing.assert_allclose(np.array(got), np.array(expected), rtol=1e-5, atol=1e-5)
        text = await metrics(gw)
        batches = metric_value(text, "serve_gateway_batch_size_count", service="fixed", version="v1")
        instances = metric_value(text, "serve_gateway_batch_size_sum", service="fixed", version="v1")
        assert instances == start and batches is not None and batches < len(docs)
        assert metric_value(text, "serve_gateway_batch_pending", service="fixed", version="v1") == 0


async def test_deadline_504_is_never_sent_and_full_queue_sheds_503(tmp_path: Path) -> None:
    svc = echo_batching(max_queue=3)
    async with GatewayProc(tmp_path, {"echo": svc}) as gw, aiohttp.ClientSession() as s:
        url = gw.url("/v1/echo")
        busy = asyncio.ensure_future(post(s, url, {"sleep": 1.0, "id": "busy"}))
        await wait_until(lambda: _inflight(gw), 5, what="the slow batch at the worker")
        loop = asyncio.get_running_loop()
        t0 = loop.time()
        status, body, _ = await post(s, url, {"id": "late"}, {"x-request-timeout-ms": "200"})
        assert status == 504 and body["error"] == "deadline_exceeded"
        assert 0.15 < loop.time() - t0 < 0.9                  # answered at its deadline
        queued = [asyncio.ensure_future(post(s, url, {"id": i})) for i in range(3)]
        await wait_until(lambda: _queued(gw, 3), 5, what="three queued requests")
        status, body, headers = await post(s, url, {"id": "shed"})
        assert status == 503 and body["error"] == "overloaded" and headers["Retry-After"] == "1"
        assert (await busy)[0] == 200
        assert [(r[0], r[1]) for r in await asyncio.gather(*queued)] == \
            [(200, {"predictions": [{"id": i}]}) for i in range(3)]
        text = await metrics(gw)
        labels = {"service": "echo", "version": "v1"}
        assert metric_value(text, "serve_gateway_batch_size_count", **labels) == 2   # busy, then 3
        assert metric_value(text, "serve_gateway_batch_shed_total", **labels) == 1
        assert metric_value(text, "serve_gateway_batch_errors_total", kind="deadline", **labels) == 1


async def _inflight(gw: GatewayProc) -> bool:
    return any(r["inflight"] for r in await replicas(gw, "echo"))


async def _queued(gw: GatewayProc, n: int) -> bool:
    text = await metrics(gw)
    return metric_value(text, "serve_gateway_batch_queue_length", service="echo", version="v1") == n


async def _pending(gw: GatewayProc, n: int) -> bool:
    text = await metrics(gw)
    return metric_value(text, "serve_gateway_batch_pending", service="echo", version="v1") == n


async def test_replica_killed_mid_batch_answers_everyone(tmp_path: Path) -> None:
    async with GatewayProc(tmp_path, {"echo": echo_batching()}) as gw, \
            aiohttp.ClientSession() as s:
        url = gw.url("/v1/echo")
        victim = (await replicas(gw, "echo"))[0]
        at_worker = asyncio.ensure_future(post(s, url, {"sleep": 5, "id": "slow"}))
        await wait_until(lambda: _inflight(gw), 5, what="the batch at the worker")
        queued = [asyncio.ensure_future(post(s, url, {"n": i})) for i in range(3)]
        await wait_until(lambda: _queued(gw, 3), 5, what="three queued requests")
        os.killpg(victim["pid"], signal.SIGKILL)
        # the batch at the dead worker fails at once, it does not hang
        status, body, _ = await asyncio.wait_for(at_worker, 3)
        assert status == 502 and body["error"] == "upstream_error"
        # the queued ones are not lost: they wait for the restarted replica
        results = await asyncio.wait_for(asyncio.gather(*queued), 20)
        assert [r[:2] for r in results] == [(200, {"predictions": [{"n": i}]}) for i in range(3)]
        assert (await replicas(gw, "echo"))[0]["id"] != victim["id"]


async def test_shutdown_mid_batch_answers_every_caller(tmp_path: Path) -> None:
    async with GatewayProc(tmp_path, {"echo": echo_batching()}, drain_timeout="1s") as gw, \
            aiohttp.ClientSession() as s:
        url = gw.url("/v1/echo")
        calls = [asyncio.ensure_future(post(s, url, {"sleep": 2.5, "i": i})) for i in range(3)]
        await wait_until(lambda: _inflight(gw), 5, what="the batch at the worker")
        calls += [asyncio.ensure_future(post(s, url, {"i": i})) for i in range(3, 5)]
        # all five in the batcher (the three sleepers may have left as one batch or two)
        await wait_until(lambda: _pending(gw, 5), 5, what="five requests in the batcher")
        assert gw.proc is not None
        gw.proc.send_signal(signal.SIGTERM)
        done, pending = await asyncio.wait(calls, timeout=4)
        assert not pending, "shutdown left callers without an answer"
        for t in done:
            status, body, _ = t.result()
            assert status == 503 and body["error"] == "shutting_down", body
        assert await gw.stop() == 0
        await wait_until(lambda: not any(alive(p) for p in gw.worker_pids), 10, what="workers gone")


async def test_reload_keeps_queued_requests_and_applies_new_settings(tmp_path: Path) -> None:
    async with GatewayProc(tmp_path, {"echo": echo_batching()}) as gw, \
            aiohttp.ClientSession() as s:
        url = gw.url("/v1/echo")
        busy = asyncio.ensure_future(post(s, url, {"sleep": 1.0, "id": "busy"}))
        await wait_until(lambda: _inflight(gw), 5, what="the slow batch at the worker")
        queued = [asyncio.ensure_future(post(s, url, {"n": i})) for i in range(3)]
        await wait_until(lambda: _queued(gw, 3), 5, what="three queued requests")
        config = gw.config
        config["services"]["echo"]["batching"]["max_queue"] = 3
        gw.rewrite(config)
        async with s.post(gw.admin("/reload"), headers=gw.auth) as r:
            doc = await r.json()
        assert r.status == 200 and doc["ok"], doc
        status, body, _ = await post(s, url, {"n": "over"})      # the new limit applies at once
        assert status == 503 and body["error"] == "overloaded"
        assert (await busy)[0] == 200
        assert [r[:2] for r in await asyncio.gather(*queued)] == \
            [(200, {"predictions": [{"n": i}]}) for i in range(3)]
