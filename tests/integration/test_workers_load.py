"""Correctness under load with ``gateway.workers: 2`` (issue #16): a reload and a kill -9 of a
replica, each during steady traffic through both data-plane processes, cost no failed request
beyond those in flight on the killed replica. Real processes, bounded loopback load."""

from __future__ import annotations

import os
import signal
from pathlib import Path

import aiohttp

from tests.helpers import ECHO, GatewayProc, Load, alive, dataplanes, wait_until


def two_versions(v1: int, v2: int) -> dict:
    return {"echo": {"route": "/v1/echo", "rewrite": "/predict",
                     "traffic": {"weights": {"v1": v1, "v2": v2}},
                     "versions": {"v1": {"command": ECHO, "replicas": 2},
                                  "v2": {"command": ECHO, "replicas": 2}}}}


async def test_a_reload_and_a_killed_replica_under_load(tmp_path: Path) -> None:
    async with GatewayProc(tmp_path, two_versions(100, 0), workers=2) as gw:
        async def current() -> bool:
            doc = await gw.status()
            return all(p["snapshot"] == doc["snapshot"] for p in doc["dataplanes"])
        await wait_until(current, 15, what="both data-plane processes on the current snapshot")
        gw.worker_pids |= {p["pid"] for p in dataplanes(await gw.status()).values()}
        url = gw.url("/v1/echo")
        async with Load([url], clients=6, limit_s=90) as load:
            await wait_until(lambda: load.count() >= 100, 20, what="traffic")
            gw.rewrite({**gw.config, "services": two_versions(50, 50)})
            async with aiohttp.ClientSession() as s, \
                    s.post(gw.admin("/reload"), headers=gw.auth) as r:
                assert r.status == 200, await r.text()
            await wait_until(lambda: load.count(served_by="echo/v2") >= 100, 20,
                             what="v2 serving half the traffic")
            assert load.failures == [], load.failures       # the reload cost nothing

            doc = await gw.status()
            victim = doc["services"]["echo"]["versions"]["v1"]["replicas"][0]["pid"]
            os.kill(victim, signal.SIGKILL)
            await wait_until(lambda: not alive(victim), 5, what="the replica gone")
            seen = load.count()
            await wait_until(lambda: load.count() >= seen + 200, 30, what="traffic after the kill")
        # only requests in flight on the killed replica may fail: at most one per client, each
        # a 502 (the worker died with it; a POST is not retried once sent), never a hang
        assert len(load.failures) <= load.clients, load.failures
        assert all(status == 502 for _, status, _, _ in load.failures), load.failures
        assert {p["restarts"] for p in (await gw.status())["dataplanes"]} == {0}
