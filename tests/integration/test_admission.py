"""Admission control, outlier ejection and failing fast, against a real gateway and real,
deliberately slow or failing worker processes (tests/workers/slow.py), on loopback."""

from __future__ import annotations

import asyncio
import os
from pathlib import Path
from typing import Any

import aiohttp

from tests.helpers import REPO_ROOT, GatewayProc, metric_value, wait_until

SLOW = f"{{python}} {REPO_ROOT}/tests/workers/slow.py {{port}}"


def slow_service(replicas: int, delay: float, flags: Path | None = None,
                 **version: Any) -> dict[str, Any]:
    env = {"SLOW_FLAGS": str(flags)} if flags else {}
    return {"route": "/m", "versions": {"v1": {"command": f"{SLOW} {delay}", "replicas": replicas,
                                               "env": env, **version}}}


async def replica_ports(gw: GatewayProc) -> list[int]:
    v = (await gw.status())["services"]["m"]["versions"]["v1"]
    return [int(r["address"].rsplit(":", 1)[1]) for r in v["replicas"] if r["state"] == "ready"]


async def stats(s: aiohttp.ClientSession, port: int) -> dict[str, int]:
    async with s.get(f"http://127.0.0.1:{port}/stats") as r:
        doc: dict[str, int] = await r.json()
        return doc


async def timed_post(s: aiohttp.ClientSession, url: str) -> tuple[int, float, dict[str, Any],
                                                                  str | None]:
    loop = asyncio.get_running_loop()
    t0 = loop.time()
    async with s.post(url, data=b"{}") as r:
        body = await r.json()
        return r.status, loop.time() - t0, body, r.headers.get("Retry-After")


async def test_overload_is_refused_early_and_replicas_stay_within_their_limit(
        tmp_path: Path) -> None:
    """40 slow requests at once to 3 replicas of limit 2 with room for 10 in the queue: 6 are
    served at a time, 10 wait in the gateway (not on a worker socket), the other 24 get 503
    with Retry-After at once; no replica ever has more than 2 in progress."""
    services = {"m": slow_service(3, 0.5, max_concurrency=2)}
    async with GatewayProc(tmp_path, services, queue={"max_waiting": 10, "timeout": "30s"}) as gw, \
            aiohttp.ClientSession(connector=aiohttp.TCPConnector(limit=0)) as s:
        results = await asyncio.gather(*(timed_post(s, gw.url("/m")) for _ in range(40)))
        ok = [r for r in results if r[0] == 200]
        refused = [r for r in results if r[0] == 503]
        assert len(ok) == 16 and len(refused) == 24, sorted(r[0] for r in results)
        for _, seconds, body, retry_after in refused:
            assert body["error"] == "overloaded" and body["service"] == "m"
            assert retry_after == "1"
            assert seconds < 0.4, seconds       # refused up front, not after a wait
        peaks = [(await stats(s, p))["peak"] for p in await replica_ports(gw)]
        assert len(peaks) == 3 and max(peaks) <= 2, peaks
        # the queue drained in order: 16 requests of 0.5 s over 6 slots take about 1.5 s
        assert max(r[1] for r in ok) < 5.0


async def test_queued_requests_go_to_replicas_that_become_ready(tmp_path: Path) -> None:
    """A burst queued behind one busy replica is taken up by replicas that start meanwhile."""
    services = {"m": slow_service(1, 1.0, max_concurrency=2)}
    async with GatewayProc(tmp_path, services, queue={"max_waiting": 100, "timeout": "30s"}) as gw, \
            aiohttp.ClientSession(connector=aiohttp.TCPConnector(limit=0)) as s:
        burst = asyncio.gather(*(timed_post(s, gw.url("/m")) for _ in range(24)))
        await wait_until(lambda: metric_waiting(gw), 5, what="requests queued in the gateway")
        async with s.post(gw.admin("/services/m/scale"), json={"replicas": 3},
                          headers=gw.auth) as r:
            assert r.status == 200, await r.text()
        results = await burst
        assert {r[0] for r in results} == {200}
        served = [(await stats(s, p))["served"] for p in await replica_ports(gw)]
        peaks = [(await stats(s, p))["peak"] for p in await replica_ports(gw)]
        assert len(served) == 3 and sum(served) == 24, served
        assert min(served) >= 2, served       # the new replicas took a share of the backlog
        assert max(peaks) <= 2, peaks


async def metric_waiting(gw: GatewayProc) -> bool:
    return (await gw.status())["services"]["m"]["versions"]["v1"]["waiting"] > 5


async def test_a_replica_answering_500_is_ejected(tmp_path: Path) -> None:
    flags = tmp_path / "flags"
    flags.mkdir()
    services = {"m": slow_service(3, 0.0, flags, outlier={"consecutive_errors": 3,
                                                          "base_ejection": "30s"})}
    async with GatewayProc(tmp_path, services) as gw, aiohttp.ClientSession() as s:
        bad = (await replica_ports(gw))[0]
        (flags / f"fail-{bad}").touch()
        codes = []
        for _ in range(90):
            async with s.post(gw.url("/m"), data=b"{}") as r:
                codes.append(r.status)
                if r.status == 500:
                    assert (await r.json())["port"] == bad
        # three 500s in a row from the bad replica eject it; nothing else fails
        assert codes.count(500) == 3 and codes.count(200) == 87, codes
        v = (await gw.status())["services"]["m"]["versions"]["v1"]
        assert v["ejected"] == 1 and v["ejections"] == 1
        [r] = [r for r in v["replicas"] if r["address"].endswith(f":{bad}")]
        assert r["ejected"] and 20 < r["ejected_for_s"] <= 30 and r["ejections"] == 1
        async with s.get(gw.admin("/metrics")) as m:
            text = await m.text()
        assert metric_value(text, "serve_gateway_outlier_ejections_total",
                            service="m", version="v1") == 1
        assert metric_value(text, "serve_gateway_ejected_replicas", service="m",
                            version="v1") == 1


async def test_never_more_than_the_allowed_share_is_ejected(tmp_path: Path) -> None:
    """Every replica failing: one of two may be out (50%), the other keeps serving its 500s
    rather than leave the version with nothing."""
    flags = tmp_path / "flags"
    flags.mkdir()
    services = {"m": slow_service(2, 0.0, flags, outlier={"consecutive_errors": 2})}
    async with GatewayProc(tmp_path, services) as gw, aiohttp.ClientSession() as s:
        for port in await replica_ports(gw):
            (flags / f"fail-{port}").touch()
        for _ in range(30):
            async with s.post(gw.url("/m"), data=b"{}") as r:
                assert r.status == 500
        v = (await gw.status())["services"]["m"]["versions"]["v1"]
        assert v["ejected"] == 1 and v["ejections"] == 1


async def test_no_replica_coming_answers_503_at_once(tmp_path: Path) -> None:
    """A crash-looping version and a version with no replica and no autoscaler answer 503 at
    once, not after the 10 s queue timeout; so does a request already waiting when the crash
    loop is found."""
    crasher = {"route": "/crash", "versions": {"v1": {
        "command": ["sh", "-c", "sleep 0.2; exit 3", "{port}"], "replicas": 1}}}
    none = {"route": "/none", "versions": {"v1": {"command": SLOW, "replicas": 0}}}
    batching = {**crasher, "route": "/batch", "batching": {"max_batch_size": 4}}
    async with GatewayProc(tmp_path, {"crash": crasher, "none": none, "batch": batching},
                           ready=False) as gw, \
            aiohttp.ClientSession() as s:
        status, seconds, body, retry_after = await timed_post(s, gw.url("/none"))
        assert (status, body["error"], retry_after) == (503, "no_ready_replica", "1")
        assert seconds < 1.0 and "no replica is starting" in body["detail"]
        # a request waiting for the crashing version is answered when the loop is found
        status, seconds, body, _ = await timed_post(s, gw.url("/crash"))
        assert status == 503 and "crash loop" in body["detail"], body
        assert (await gw.status())["services"]["crash"]["versions"]["v1"]["crash_loop"]
        status, seconds, body, _ = await timed_post(s, gw.url("/crash"))
        assert status == 503 and seconds < 1.0 and "crash loop" in body["detail"], body

        async def batch_loop() -> bool:
            return bool((await gw.status())["services"]["batch"]["versions"]["v1"]["crash_loop"])
        await wait_until(batch_loop, 30, what="the batching version's crash loop")
        status, seconds, body, _ = await timed_post(s, gw.url("/batch"))   # the batcher's queue
        assert status == 503 and seconds < 1.0 and "crash loop" in body["detail"], body


async def test_the_only_replica_refusing_connections_fails_fast(tmp_path: Path) -> None:
    flags = tmp_path / "flags"
    flags.mkdir()
    services = {"m": slow_service(1, 0.0, flags)}
    async with GatewayProc(tmp_path, services) as gw, aiohttp.ClientSession() as s:
        [port] = await replica_ports(gw)
        (flags / f"refuse-{port}").touch()

        async def refused() -> bool:
            try:
                _, r = await asyncio.open_connection("127.0.0.1", port)
            except OSError:
                return True
            r.close()
            return False
        await wait_until(refused, 5, what="the worker to close its listener")
        status, seconds, body, _ = await timed_post(s, gw.url("/m"))
        assert (status, body["error"]) == (502, "upstream_connect"), body
        assert seconds < 2.0, seconds
        os.remove(flags / f"refuse-{port}")
