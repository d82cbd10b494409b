"""Autoscaling with ``gateway.workers: 2``: the controller serves no request, so everything it
decides on comes from the data-plane processes' reports (pending per version, demand at zero
replicas) and every replica it drains is stopped only once no process sends to it. Real gateway,
real children, real echo workers, bounded loopback load."""

from __future__ import annotations

from collections import Counter
from pathlib import Path

import aiohttp

from tests.helpers import GatewayProc, dataplanes, metric_value, wait_until
from tests.integration.test_autoscaling import FAST, burst, load, service, until, v1


async def two_serving(gw: GatewayProc) -> None:
    async def current() -> bool:
        doc = await gw.status()
        return len(doc["dataplanes"]) == 2 and all(
            p["snapshot"] == doc["snapshot"] for p in doc["dataplanes"])
    await wait_until(current, 15, what="both data-plane processes on the current snapshot")
    gw.worker_pids |= {p["pid"] for p in dataplanes(await gw.status()).values()}


async def test_out_under_load_in_both_processes_then_in_with_zero_failed_requests(
        tmp_path: Path) -> None:
    svc = service({"min_replicas": 1, "max_replicas": 3, "target_pending": 2, **FAST})
    statuses: Counter[int] = Counter()
    async with GatewayProc(tmp_path, {"echo": svc}, workers=2) as gw:
        await two_serving(gw)
        async with load(gw, clients=8, sleep=0.3, statuses=statuses):
            # the pending the policy sees is the sum of both processes' reports
            await until(gw, lambda v: v["desired"] == 3 and v["ready"] == 3, "scale out to 3")
        # scale-in drains each replica across both processes before it stops: no request fails
        await until(gw, lambda v: v["desired"] == 1 and len(v["replicas"]) == 1, "scale in to 1")
        assert all(p["requests"] > 0 for p in (await gw.status())["dataplanes"])
    assert set(statuses) == {200} and sum(statuses.values()) > 8, statuses


async def test_scale_from_zero_on_demand_seen_by_a_data_plane(tmp_path: Path) -> None:
    svc = service({"min_replicas": 0, "max_replicas": 2, **FAST, "idle_to_zero": "1s"})
    async with GatewayProc(tmp_path, {"echo": svc}, workers=2, queue={"timeout": "30s"}) as gw:
        await two_serving(gw)
        await until(gw, lambda v: v["desired"] == 0 and not v["replicas"], "scale to zero")
        results = await burst(gw, 30, {"n": 1})
        assert [s for s, _, _ in results] == [200] * 30
        assert (await v1(gw))["ready"] >= 1

        async def metrics() -> str:
            async with aiohttp.ClientSession() as s, s.get(gw.admin("/metrics")) as r:
                return await r.text()

        async def all_counted() -> bool:   # the processes report every 100 ms
            return metric_value(await metrics(), "serve_gateway_requests_total", service="echo",
                                version="v1", code="200") == 30
        await wait_until(all_counted, 5, what="the 30 answers in the controller's /metrics")
        # the demand a data plane saw started the replica (the controller had no request)
        assert (metric_value(await metrics(), "serve_gateway_autoscale_decisions_total",
                             service="echo", version="v1", direction="out",
                             source="demand") or 0) >= 1
