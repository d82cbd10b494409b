"""``gateway.workers: 2``: a controller and two data-plane processes on one port (SO_REUSEPORT),
fed by routing snapshots: both serve, a reload reaches both at once, and per-replica limits hold
across processes. Real gateway, real children, real workers, loopback."""

from __future__ import annotations

import asyncio
import time
from pathlib import Path

import aiohttp

from tests.helpers import (
    ECHO,
    REPO_ROOT,
    GatewayProc,
    alive,
    dataplanes,
    fresh_posts,
    metric_value,
    wait_until,
)

SLOW = f"{{python}} {REPO_ROOT}/tests/workers/slow.py {{port}}"


def two_versions(v1: int, v2: int) -> dict:
    return {"echo": {"route": "/v1/echo", "rewrite": "/predict", "traffic": {"weights": {"v1": v1, "v2": v2}},
                     "versions": {"v1": {"command": ECHO, "replicas": 1},
                                  "v2": {"command": ECHO, "replicas": 1}}}}


async def all_applied(gw: GatewayProc) -> bool:
    doc = await gw.status()
    return all(p["snapshot"] == doc["snapshot"] for p in doc["dataplanes"])


async def test_two_processes_serve_one_port_and_a_reload_reaches_both_at_once(
        tmp_path: Path) -> None:
    async with GatewayProc(tmp_path, two_versions(100, 0), workers=2) as gw:
        await wait_until(lambda: all_applied(gw), 10, what="both processes on the last snapshot")
        procs = dataplanes(await gw.status())
        assert sorted(procs) == ["dp-0", "dp-1"]
        pids = {p["pid"] for p in procs.values()}
        assert len(pids) == 2 and all(alive(p) for p in pids) and gw.proc.pid not in pids

        answers = await fresh_posts(gw.url("/v1/echo"), 40)
        assert answers == [(200, "echo/v1")] * 40

        async def both_served() -> bool:
            procs = dataplanes(await gw.status())
            return sum(p["requests"] for p in procs.values()) == 40
        await wait_until(both_served, 5, what="40 requests in the processes' reports")
        procs = dataplanes(await gw.status())
        assert all(p["requests"] > 0 for p in procs.values()), procs   # the kernel spread them
        # one /metrics on the admin port, every process's counts summed
        async with aiohttp.ClientSession() as s, s.get(gw.admin("/metrics")) as r:
            text = await r.text()
        assert metric_value(text, "serve_gateway_requests_total", service="echo",
                            version="v1", code="200") == 40

        gw.rewrite({**gw.config, "services": two_versions(0, 100)})
        async with aiohttp.ClientSession() as s, \
                s.post(gw.admin("/reload"), headers=gw.auth) as r:
            assert r.status == 200, await r.text()
        returned = time.monotonic()
        await wait_until(lambda: all_applied(gw), 5, what="both processes on the reloaded snapshot",
                         interval=0.005)
        lag = time.monotonic() - returned
        print(f"reload -> every process applied (seen in /status): {lag * 1000:.1f} ms")
        # 100 ms after the reload returned, every process routes by it
        await asyncio.sleep(max(0.0, returned + 0.1 - time.monotonic()))
        answers = await fresh_posts(gw.url("/v1/echo"), 40)
        assert answers == [(200, "echo/v2")] * 40
        procs_after = dataplanes(await gw.status())
        assert {p["pid"] for p in procs_after.values()} == pids
        gw.worker_pids |= pids


async def test_a_replica_limit_holds_across_processes(tmp_path: Path) -> None:
    """max_concurrency 2 on one replica, two processes: each gets 1 slot, so the worker never
    has more than 2 requests at once however the kernel spreads the connections."""
    services = {"m": {"route": "/m", "versions": {"v1": {
        "command": f"{SLOW} 0.3", "replicas": 1, "max_concurrency": 2}}}}
    async with GatewayProc(tmp_path, services, workers=2,
                           queue={"max_waiting": 64, "timeout": "30s"}) as gw:
        await wait_until(lambda: all_applied(gw), 10, what="both processes on the last snapshot")
        answers = await fresh_posts(gw.url("/m"), 12, body=b"{}", concurrent=True)
        assert [s for s, _ in answers] == [200] * 12

        async def reported() -> bool:
            return sum(p["requests"] for p in (await gw.status())["dataplanes"]) == 12
        await wait_until(reported, 5, what="12 requests in the processes' reports")
        doc = await gw.status()
        address = doc["services"]["m"]["versions"]["v1"]["replicas"][0]["address"]
        async with aiohttp.ClientSession() as s, s.get(f"http://{address}/stats") as r:
            stats = await r.json()
        assert stats["served"] == 12 and stats["peak"] <= 2, stats
        assert all(p["requests"] > 0 for p in doc["dataplanes"]), doc["dataplanes"]
        gw.worker_pids |= {p["pid"] for p in doc["dataplanes"]}
