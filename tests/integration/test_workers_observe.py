"""Observations of several data-plane processes (``gateway.workers: 2``) at the controller, end
to end: /metrics counts every answer once, across a kill -9 of a data-plane process and its
restart, and passes promtool; /status shows in-flight requests of every process; a replica
scaled in while both processes have requests on it is stopped only after they are answered.
Real gateway, real children, real workers, loopback."""

from __future__ import annotations

import asyncio
import os
import signal
from pathlib import Path

import aiohttp
import pytest

from tests.helpers import (
    REPO_ROOT,
    GatewayProc,
    alive,
    echo_service,
    metric_value,
    wait_until,
)

pytest.importorskip("gateway.dataplane.follower", reason="needs the data-plane processes (h16a)")

from tests.helpers import dataplanes, fresh_posts  # noqa: E402

SLOW = f"{{python}} {REPO_ROOT}/tests/workers/slow.py {{port}}"
PROMTOOL = "/usr/bin/promtool"


async def scrape(gw: GatewayProc) -> str:
    async with aiohttp.ClientSession() as s, s.get(gw.admin("/metrics")) as r:
        return await r.text()


async def applied(gw: GatewayProc) -> bool:
    doc = await gw.status()
    procs = doc["dataplanes"]
    return len(procs) == 2 and all(p["snapshot"] == doc["snapshot"] for p in procs)


async def test_every_answer_counts_once_across_a_killed_and_restarted_data_plane(
        tmp_path: Path) -> None:
    async with GatewayProc(tmp_path, {"echo": echo_service(replicas=2)}, workers=2) as gw:
        await wait_until(lambda: applied(gw), 15, what="both processes on the snapshot")
        before = dataplanes(await gw.status())
        gw.worker_pids |= {p["pid"] for p in before.values()}
        url = gw.url("/v1/echo")
        echo = {"service": "echo", "version": "v1"}

        async def answered(n: int) -> bool:
            text = await scrape(gw)
            return metric_value(text, "serve_gateway_requests_total", code="200", **echo) == n

        assert await fresh_posts(url, 40) == [(200, "echo/v1")] * 40
        await wait_until(lambda: answered(40), 5, what="40 answers in /metrics")
        os.kill(before["dp-0"]["pid"], signal.SIGKILL)
        await wait_until(lambda: not alive(before["dp-0"]["pid"]), 5, what="dp-0 gone")

        async def restarted() -> bool:
            p = dataplanes(await gw.status())["dp-0"]
            return p["pid"] != before["dp-0"]["pid"] and await applied(gw)
        await wait_until(restarted, 15, what="dp-0 restarted")
        gw.worker_pids |= {p["pid"] for p in dataplanes(await gw.status()).values()}
        assert await fresh_posts(url, 40) == [(200, "echo/v1")] * 40
        await wait_until(lambda: answered(80), 5, what="80 answers in /metrics")
        await asyncio.sleep(0.5)                   # several reports later: still 80
        text = await scrape(gw)
        assert metric_value(text, "serve_gateway_requests_total", code="200", **echo) == 80
        assert metric_value(text, "serve_gateway_request_duration_seconds_count", **echo) == 80
        proc = await asyncio.create_subprocess_exec(
            PROMTOOL, "check", "metrics", stdin=asyncio.subprocess.PIPE,
            stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.STDOUT)
        out, _ = await proc.communicate(text.encode())
        errors = [line for line in out.decode().splitlines()
                  if "error" in line.lower() or "duplicate" in line.lower()]
        assert errors == [], out.decode()


async def test_a_scaled_in_replica_finishes_every_processs_requests_first(
        tmp_path: Path) -> None:
    services = {"m": {"route": "/m", "versions": {"v1": {
        # slots for all 12 in either process, however the kernel spreads the connections
        "command": f"{SLOW} 3.0", "replicas": 2, "max_concurrency": 32}}}}
    async with GatewayProc(tmp_path, services, workers=2) as gw:
        await wait_until(lambda: applied(gw), 15, what="both processes on the snapshot")
        gw.worker_pids |= {p["pid"] for p in dataplanes(await gw.status()).values()}
        requests = asyncio.ensure_future(fresh_posts(gw.url("/m"), 12, body=b"{}",
                                                     concurrent=True))

        async def busy() -> bool:          # /metrics: in flight, summed over both processes
            text = await scrape(gw)
            return metric_value(text, "serve_gateway_inflight_requests", service="m",
                                version="v1") == 12
        await wait_until(busy, 2.5, what="12 requests in flight in /metrics")
        # /status: in flight per replica, over both processes (Supervisor.inflight)
        reps = (await gw.status())["services"]["m"]["versions"]["v1"]["replicas"]
        assert sum(r["inflight"] for r in reps) == 12, reps
        cfg = gw.config
        cfg["services"]["m"]["versions"]["v1"]["replicas"] = 1
        gw.rewrite(cfg)
        async with aiohttp.ClientSession() as s, \
                s.post(gw.admin("/reload"), headers=gw.auth) as r:
            assert r.status == 200, await r.text()
        answers = await requests
        assert [status for status, _ in answers] == [200] * 12

        async def one_left() -> bool:
            doc = await gw.status()
            return len(doc["services"]["m"]["versions"]["v1"]["replicas"]) == 1
        await wait_until(one_left, 10, what="the scaled-in replica stopped after its requests")
