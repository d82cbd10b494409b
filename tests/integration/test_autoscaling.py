"""Autoscaling end to end: a real gateway, real echo workers, bounded loopback load.

Echo instances with ``{"sleep": s}`` hold a worker for ``s`` seconds, which is how these tests
make requests pile up. Intervals are 1 s; every wait polls with a generous deadline.
"""

from __future__ import annotations

import asyncio
import contextlib
from collections import Counter
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import aiohttp

from tests.helpers import ECHO, GatewayProc, metric_value, run_cli, wait_until


def service(autoscale: dict[str, Any], replicas: int = 1, **version: Any) -> dict[str, Any]:
    return {"route": "/v1/echo", "rewrite": "/predict", "autoscale": autoscale,
            "versions": {"v1": {"command": ECHO, "replicas": replicas, **version}}}


FAST = {"scale_out_interval": "1s", "scale_in_interval": "1s", "idle_to_zero": "1h"}


async def v1(gw: GatewayProc) -> dict[str, Any]:
    doc: dict[str, Any] = (await gw.status())["services"]["echo"]["versions"]["v1"]
    return doc


async def until(gw: GatewayProc, test: Any, what: str, deadline: float = 30) -> None:
    async def check() -> bool:
        return bool(test(await v1(gw)))
    await wait_until(check, deadline, what=what, interval=0.1)


@contextlib.asynccontextmanager
async def load(gw: GatewayProc, clients: int, sleep: float,
               statuses: Counter[int]) -> AsyncIterator[None]:
    """``clients`` loops posting ``{"sleep": sleep}`` until the block ends (then they finish
    the request they are in); every answer's status is counted."""
    stop = asyncio.Event()
    async with aiohttp.ClientSession(timeout=aiohttp.ClientTimeout(total=60)) as s:
        async def client() -> None:
            while not stop.is_set():
                async with s.post(gw.url("/v1/echo"), json={"sleep": sleep}) as r:
                    await r.read()
                    statuses[r.status] += 1

        tasks = [asyncio.create_task(client()) for _ in range(clients)]
        try:
            yield
        finally:
            stop.set()
            await asyncio.gather(*tasks)


async def burst(gw: GatewayProc, n: int, body: Any = None) -> list[tuple[int, dict[str, Any], float]]:
    """``n`` requests at once: (status, JSON body, seconds) each."""
    loop = asyncio.get_running_loop()
    async with aiohttp.ClientSession(timeout=aiohttp.ClientTimeout(total=60)) as s:
        async def one() -> tuple[int, dict[str, Any], float]:
            t0 = loop.time()
            async with s.post(gw.url("/v1/echo"), json=body or {"x": 1}) as r:
                doc = await r.json()
                if r.status == 503:
                    assert r.headers["Retry-After"] == "1"
                return r.status, doc, loop.time() - t0
        return list(await asyncio.gather(*(one() for _ in range(n))))


async def test_out_under_load_then_in_with_zero_failed_requests(tmp_path: Path) -> None:
    svc = service({"min_replicas": 1, "max_replicas": 3, "target_pending": 2, **FAST})
    statuses: Counter[int] = Counter()
    async with GatewayProc(tmp_path, {"echo": svc}) as gw:
        async with load(gw, clients=8, sleep=0.3, statuses=statuses):
            # 8 pending over 1 replica, target 2: out at once to the max (proportional)
            await until(gw, lambda v: v["desired"] == 3 and v["ready"] == 3, "scale out to 3")
            last = (await v1(gw))["autoscale"]["last_decision"]
            assert last["direction"] == "out" and last["source"] == "policy"
        # load gone: in by one per interval, each replica drained before it stops
        await until(gw, lambda v: v["desired"] == 1 and len(v["replicas"]) == 1, "scale in to 1")
        async with aiohttp.ClientSession() as s, s.get(gw.admin("/metrics")) as r:
            text = await r.text()
        for direction in ("out", "in"):
            assert (metric_value(text, "serve_gateway_autoscale_decisions_total", service="echo",
                                 version="v1", direction=direction, source="policy") or 0) >= 1
        assert metric_value(text, "serve_gateway_autoscale_desired_replicas",
                            service="echo", version="v1") == 1
    assert set(statuses) == {200} and sum(statuses.values()) > 8, statuses


async def test_scale_to_zero_when_idle_and_back_for_a_burst(tmp_path: Path) -> None:
    svc = service({"min_replicas": 0, "max_replicas": 2, **FAST, "idle_to_zero": "1s"})
    async with GatewayProc(tmp_path, {"echo": svc}, queue={"timeout": "30s"}) as gw:
        await until(gw, lambda v: v["desired"] == 0 and not v["replicas"], "scale to zero")
        assert (await v1(gw))["autoscale"]["last_decision"]["reason"].startswith("idle")
        # at zero the service still buffers requests: a load balancer must keep the gateway
        async with aiohttp.ClientSession() as s, s.get(gw.admin("/readyz")) as r:
            assert (r.status, await r.json()) == (200, {"ready": True, "not_ready": []})
        results = await burst(gw, 50, {"n": 1})
        assert [s for s, _, _ in results] == [200] * 50
        assert all(doc == {"predictions": [{"n": 1}]} for _, doc, _ in results)
        doc = await v1(gw)
        assert doc["ready"] >= 1 and any(r["cold_start_s"] for r in doc["replicas"])
        async with aiohttp.ClientSession() as s, s.get(gw.admin("/metrics")) as r:
            text = await r.text()
        assert (metric_value(text, "serve_gateway_replica_cold_start_seconds_count",
                             service="echo", version="v1") or 0) >= 1
        assert (metric_value(text, "serve_gateway_autoscale_decisions_total", service="echo",
                             version="v1", direction="out", source="demand") or 0) >= 1


async def test_queue_cap_503_at_once_and_cold_start_timeout_504(tmp_path: Path) -> None:
    slow = {"ECHO_LOAD_SECONDS": "3"}
    svc = service({"min_replicas": 0, "max_replicas": 1, **FAST}, replicas=0, env=slow)
    async with GatewayProc(tmp_path, {"echo": svc},
                           queue={"timeout": "30s", "max_waiting": 5}) as gw:
        results = await burst(gw, 20)
        codes = Counter(s for s, _, _ in results)
        assert codes == {200: 5, 503: 15}, codes
        overloaded = [(doc, t) for s, doc, t in results if s == 503]
        assert all(doc["error"] == "overloaded" for doc, _ in overloaded)
        # refused at once, not after the cold start (3 s of model loading)
        assert max(t for _, t in overloaded) < min(t for s, _, t in results if s == 200)
    svc["versions"]["v1"]["env"] = {"ECHO_LOAD_SECONDS": "5"}
    async with GatewayProc(tmp_path, {"echo": svc}, queue={"timeout": "500ms"}) as gw:
        [(status, doc, _)] = await burst(gw, 1)
        assert status == 504 and doc["error"] == "cold_start_timeout", doc


async def test_custom_policy_plugin_by_name(tmp_path: Path) -> None:
    svc = service({"min_replicas": 1, "max_replicas": 2, **FAST, "policy": "queue_latency",
                   "options": {"target_seconds": 0.2}})
    statuses: Counter[int] = Counter()
    async with GatewayProc(tmp_path, {"echo": svc}) as gw:
        assert (await v1(gw))["autoscale"]["policy"] == "queue_latency"
        async with load(gw, clients=6, sleep=0.2, statuses=statuses):
            await until(gw, lambda v: v["ready"] == 2, "the plugin scales out")
            assert "plugin queue_latency" in (await v1(gw))["autoscale"]["last_decision"]["reason"]
    assert set(statuses) == {200}, statuses


async def test_manual_pin_auto_and_reload_keep_the_count(tmp_path: Path) -> None:
    svc = service({"min_replicas": 1, "max_replicas": 3, "scale_in_interval": "1h",
                   "scale_out_interval": "1s"})
    async with GatewayProc(tmp_path, {"echo": svc}) as gw:
        admin = ["--admin", f"127.0.0.1:{gw.admin_port}"]
        code, out, err = await run_cli("scale", "echo/v1", "3", *admin)
        assert code == 0 and "desired 3" in out and "pinned" in out, (out, err)
        await until(gw, lambda v: v["ready"] == 3 and v["autoscale"]["pinned"] == 3, "pinned at 3")
        code, out, err = await run_cli("scale", "echo", "--auto", *admin)
        assert code == 0 and "autoscaling" in out, (out, err)
        assert (await v1(gw))["desired"] == 3          # handed back, not reset
        code, _, err = await run_cli("scale", "echo/nope", "2", *admin)
        assert code == 1 and "no version named nope" in err
        # a reload must not undo the autoscaler: 3 clamped into the new [1, 2], not the file's 1
        gw.config["services"]["echo"]["autoscale"]["max_replicas"] = 2
        gw.rewrite(gw.config)
        async with aiohttp.ClientSession() as s, s.post(gw.admin("/reload"), headers=gw.auth) as r:
            assert r.status == 200, await r.text()
        await until(gw, lambda v: v["desired"] == 2 and len(v["replicas"]) == 2, "clamped to 2")
        assert (await v1(gw))["autoscale"]["last_decision"]["source"] == "reload"
