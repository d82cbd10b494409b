"""Multiplexed models through the real gateway and real workers (gateway.examples.multiplex):
a model's requests stick to the replica that holds it, a replica keeps only its
max_models_per_replica (LRU, unload on eviction), and a holder at its max_concurrency sends the
model to another replica, which loads it, instead of making the request queue."""

from __future__ import annotations

import asyncio
import time
from pathlib import Path
from typing import Any

import aiohttp

from tests.helpers import GatewayProc, metric_value, wait_until

SCORERS = "serve-gateway worker gateway.examples.multiplex:Scorers --port {port}"


def service(route: str, replicas: int, **multiplex: Any) -> dict[str, Any]:
    return {"route": route, "rewrite": "/predict",
            "versions": {"v1": {"command": SCORERS, "replicas": replicas, "max_concurrency": 2,
                                "env": {"MULTIPLEX_LOAD_SECONDS": "0.2"},
                                "multiplex": {"max_models_per_replica": 2, **multiplex}}}}


async def score(s: aiohttp.ClientSession, gw: GatewayProc, route: str, model: str,
                body: Any = None) -> tuple[dict[str, Any], str]:
    """One prediction and the x-loaded-models its replica answered with."""
    async with s.post(gw.url(route), json={"instances": [body if body is not None else [1, 2, 3]]},
                      headers={"x-model-id": model}) as r:
        assert r.status == 200, await r.text()
        return (await r.json())["predictions"][0], r.headers["x-loaded-models"]


async def placements(gw: GatewayProc, model: str, placement: str) -> float:
    async with aiohttp.ClientSession() as s, s.get(gw.admin("/metrics")) as r:
        text = await r.text()
    return metric_value(text, "serve_gateway_model_requests_total", service="pool",
                        version="v1", model=model, placement=placement) or 0


async def test_affinity_and_load_elsewhere_under_saturation(tmp_path: Path) -> None:
    async with GatewayProc(tmp_path, {"pool": service("/v1/pool", 2)}) as gw, \
            aiohttp.ClientSession() as s:
        first, _ = await score(s, gw, "/v1/pool", "acme")
        holder = first["replica"]
        # affinity: every later request of acme lands on the replica that loaded it, no reload
        for _ in range(12):
            p, loaded = await score(s, gw, "/v1/pool", "acme")
            assert p["replica"] == holder and p["loads"] == first["loads"]
            assert loaded.split(",")[0] == "acme"
        assert await placements(gw, "acme", "load") == 1
        assert await placements(gw, "acme", "held") == 12

        # saturate the holder (max_concurrency 2) with two slow acme requests ...
        slow = [asyncio.create_task(score(s, gw, "/v1/pool", "acme", {"sleep": 2.0, "x": [1]}))
                for _ in range(2)]

        async def holder_full() -> bool:
            doc = await gw.status()
            reps = doc["services"]["pool"]["versions"]["v1"]["replicas"]
            return any(r["id"] == holder and r["inflight"] == 2 for r in reps)
        await wait_until(holder_full, 10, what="the holder at its 2 slots")
        # ... the next acme request is not queued behind them: the other replica loads acme
        started = time.monotonic()
        p, loaded = await score(s, gw, "/v1/pool", "acme")
        took = time.monotonic() - started
        assert p["replica"] != holder, "sent to the saturated holder"
        assert "acme" in loaded.split(",")
        assert not all(t.done() for t in slow) and took < 1.5, f"queued for {took:.2f}s"
        for t in slow:
            done, _ = await t
            assert done["replica"] == holder
        assert await placements(gw, "acme", "load") == 2


async def test_lru_eviction_capacity_two_three_ids(tmp_path: Path) -> None:
    async with GatewayProc(tmp_path, {"pool": service("/v1/pool", 1)}) as gw, \
            aiohttp.ClientSession() as s:
        a, loaded = await score(s, gw, "/v1/pool", "a")
        assert (a["loads"], loaded) == (1, "a")
        b, loaded = await score(s, gw, "/v1/pool", "b")
        assert (b["loads"], loaded) == (2, "b,a")
        again, loaded = await score(s, gw, "/v1/pool", "a")       # held: no load, a is fresh
        assert (again["loads"], loaded) == (2, "a,b")
        c, loaded = await score(s, gw, "/v1/pool", "c")           # evicts b, least recent
        assert (c["loads"], loaded) == (3, "c,a")

        async def b_unloaded() -> bool:
            p, _ = await score(s, gw, "/v1/pool", "c")
            return p["unloaded"] == ["b"]
        await wait_until(b_unloaded, 10, what="unload_model(b) after its eviction")
        b2, loaded = await score(s, gw, "/v1/pool", "b")          # loaded again, evicts a
        assert (b2["loads"], loaded) == (4, "b,c")

        # concurrent first requests of one id load it once (coalesced)
        preds = await asyncio.gather(*(score(s, gw, "/v1/pool", "d") for _ in range(4)))
        assert {p["loads"] for p, _ in preds} == {5}

        # no model id: a 400 naming the header; the gateway stays up
        async with s.post(gw.url("/v1/pool"), json={"instances": [[1]]}) as r:
            assert r.status == 400
            assert "x-model-id" in (await r.json())["detail"]
