"""Supervision of the data-plane processes (``gateway.workers: 2``): a killed one is restarted
and costs only its own connections, SIGTERM drains every process, SIGHUP reaches the controller
only, and a SIGKILLed controller leaves no process behind. Real processes, loopback."""

from __future__ import annotations

import asyncio
import os
import signal
from pathlib import Path

import aiohttp

from tests.helpers import (
    ECHO,
    REPO_ROOT,
    GatewayProc,
    Load,
    alive,
    dataplanes,
    echo_service,
    fresh_posts,
    wait_until,
)

SLOW = f"{{python}} {REPO_ROOT}/tests/workers/slow.py {{port}}"


async def serving(gw: GatewayProc) -> dict[str, dict]:
    """The processes, once both report the controller's current snapshot."""
    async def current() -> bool:
        doc = await gw.status()
        return len(doc["dataplanes"]) == 2 and all(
            p["snapshot"] == doc["snapshot"] for p in doc["dataplanes"])
    await wait_until(current, 15, what="both data-plane processes on the current snapshot")
    procs = dataplanes(await gw.status())
    gw.worker_pids |= {p["pid"] for p in procs.values()}
    return procs


async def test_a_killed_data_plane_is_restarted_and_costs_only_its_own_connections(
        tmp_path: Path) -> None:
    async with GatewayProc(tmp_path, {"echo": echo_service(replicas=2)}, workers=2) as gw:
        before = await serving(gw)
        url = gw.url("/v1/echo")
        async with Load([url], clients=4, limit_s=60) as load:
            await wait_until(lambda: load.count() >= 100, 20, what="traffic before the kill")
            os.kill(before["dp-0"]["pid"], signal.SIGKILL)
            await wait_until(lambda: not alive(before["dp-0"]["pid"]), 5, what="dp-0 gone")

            async def restarted() -> bool:
                p = dataplanes(await gw.status())["dp-0"]
                return p["restarts"] == 1 and p["pid"] != before["dp-0"]["pid"] and \
                    p["snapshot"] == (await gw.status())["snapshot"]
            await wait_until(restarted, 15, what="dp-0 restarted on the current snapshot")
            served = load.count()
            await wait_until(lambda: load.count() >= served + 100, 20, what="traffic after")
        # each client had at most one request on the killed process's connections: those may
        # fail (a connection error, never a 5xx from the gateway); nothing else does
        assert len(load.failures) <= load.clients, load.failures
        assert all(status == 0 for _, status, _, _ in load.failures), load.failures
        after = dataplanes(await gw.status())
        assert after["dp-1"]["pid"] == before["dp-1"]["pid"] and after["dp-1"]["restarts"] == 0
        gw.worker_pids.add(after["dp-0"]["pid"])
        assert await fresh_posts(url, 20) == [(200, "echo/v1")] * 20

        async def new_one_serves() -> bool:
            return dataplanes(await gw.status())["dp-0"]["requests"] > 0
        await wait_until(new_one_serves, 5, what="the restarted dp-0 serving")


async def test_sigterm_drains_every_process(tmp_path: Path) -> None:
    """Slow requests in flight in both processes when the controller gets SIGTERM: every one is
    answered 200, then everything exits 0."""
    services = {"m": {"route": "/m", "versions": {"v1": {
        "command": f"{SLOW} 1.5", "replicas": 2, "max_concurrency": 8}}}}
    async with GatewayProc(tmp_path, services, workers=2) as gw:
        await serving(gw)
        requests = asyncio.ensure_future(fresh_posts(gw.url("/m"), 8, body=b"{}", concurrent=True))

        async def in_flight_in_both() -> bool:
            procs = (await gw.status())["dataplanes"]
            return sum(p["connections"] for p in procs) == 8 and all(
                p["connections"] > 0 for p in procs)
        await wait_until(in_flight_in_both, 5, what="8 requests in flight, in both processes")
        assert gw.proc is not None
        gw.proc.send_signal(signal.SIGTERM)
        answers = await asyncio.wait_for(requests, 20)
        assert [s for s, _ in answers] == [200] * 8
        assert await gw.stop() == 0


async def test_sighup_reaches_the_controller_only(tmp_path: Path) -> None:
    """SIGHUP to the whole process group (a terminal's or a service manager's): the controller
    reloads, the data-plane processes keep running (same pids) and follow the new config."""
    services = {"echo": {"route": "/v1/echo", "rewrite": "/predict",
                         "traffic": {"weights": {"v1": 100, "v2": 0}},
                         "versions": {"v1": {"command": ECHO, "replicas": 1},
                                      "v2": {"command": ECHO, "replicas": 1}}}}
    async with GatewayProc(tmp_path, services, workers=2) as gw:
        before = await serving(gw)
        services["echo"]["traffic"]["weights"] = {"v1": 0, "v2": 100}
        gw.rewrite({**gw.config, "services": services})
        assert gw.proc is not None
        os.killpg(gw.proc.pid, signal.SIGHUP)

        async def reloaded() -> bool:
            last = (await gw.status())["config"]["last_reload"]
            return last is not None and last["ok"]
        await wait_until(reloaded, 10, what="the reload")
        after = await serving(gw)
        assert {n: p["pid"] for n, p in after.items()} == {n: p["pid"] for n, p in before.items()}
        assert all(p["restarts"] == 0 and alive(p["pid"]) for p in after.values())
        assert await fresh_posts(gw.url("/v1/echo"), 20) == [(200, "echo/v2")] * 20


async def test_no_process_survives_a_sigkilled_controller(tmp_path: Path) -> None:
    async with GatewayProc(tmp_path, {"echo": echo_service(replicas=2)}, workers=2) as gw:
        procs = await serving(gw)
        await gw.status()        # the replicas' pids
        pids = {p["pid"] for p in procs.values()} | gw.worker_pids
        assert len(pids) == 4
        gw.expect_exit_code = None
        assert gw.proc is not None
        gw.proc.kill()
        await wait_until(lambda: not any(alive(p) for p in pids), 10,
                         what="no data plane and no replica left after the controller's SIGKILL")
        async with aiohttp.ClientSession() as s:
            try:
                async with s.post(gw.url("/v1/echo"), data=b"{}") as r:
                    raise AssertionError(f"something still serves the port: {r.status}")
            except aiohttp.ClientConnectionError:
                pass
