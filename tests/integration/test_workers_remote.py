"""The child command as a gateway on another node (issue #19's building block): ``serve-gateway
dataplane --controller URL`` with the admin token follows a running gateway (here one with
``workers: 1``), serves its routes on its own port, answers its optional health listener, shows
in the controller's /status, and keeps serving its last snapshot while the controller cannot
answer. Real processes on loopback."""

from __future__ import annotations

import asyncio
import os
import signal
import subprocess
import sys
from pathlib import Path

import aiohttp

from tests.helpers import (
    REPO_ROOT,
    GatewayProc,
    dataplanes,
    echo_service,
    free_port,
    fresh_posts,
    kill_group,
    run_cli,
    wait_http_ok,
    wait_until,
)

SLOW = f"{{python}} {REPO_ROOT}/tests/workers/slow.py {{port}}"


async def test_a_data_plane_on_another_node_follows_the_controller(tmp_path: Path) -> None:
    async with GatewayProc(tmp_path, {"echo": echo_service(replicas=1)}) as gw:
        port, health = free_port(), free_port()
        exe = str(Path(sys.executable).with_name("serve-gateway"))
        remote = start_remote(gw, tmp_path, "node-b", port, health)
        try:
            await wait_http_ok(f"http://127.0.0.1:{health}/healthz", 15)
            url = f"http://127.0.0.1:{port}/v1/echo"
            assert await fresh_posts(url, 5) == [(200, "echo/v1")] * 5

            async def listed() -> bool:
                procs = dataplanes(await gw.status())
                return procs.get("node-b", {}).get("requests") == 5
            await wait_until(listed, 5, what="node-b in the controller's /status")
            doc = await gw.status()
            procs = dataplanes(doc)
            assert procs["node-b"]["pid"] == remote.pid
            assert procs["node-b"]["snapshot"] == doc["snapshot"]
            assert procs["main"]["pid"] == gw.proc.pid   # workers 1: the gateway itself

            # the controller cannot answer (stopped): the node serves on with what it has
            assert gw.proc is not None
            os.kill(gw.proc.pid, signal.SIGSTOP)
            try:
                await asyncio.sleep(0.5)
                assert await fresh_posts(url, 5) == [(200, "echo/v1")] * 5
            finally:
                os.kill(gw.proc.pid, signal.SIGCONT)
            remote.send_signal(signal.SIGTERM)
            assert await asyncio.to_thread(remote.wait, 20) == 0
        finally:
            kill_group(remote.pid)
            remote.wait()
        # a wrong token: the controller refuses it, the node says so and never binds its port
        wrong = subprocess.Popen(
            [exe, "dataplane", "--controller", f"http://127.0.0.1:{gw.admin_port}",
             "--listen", f"127.0.0.1:{port}"], cwd=REPO_ROOT,
            env={**os.environ, "SERVE_GATEWAY_ADMIN_TOKEN": "not-the-token"},
            stdout=subprocess.PIPE, stderr=subprocess.STDOUT, start_new_session=True)
        try:
            await asyncio.sleep(1.0)
            assert await asyncio.to_thread(port_closed, port)
            wrong.send_signal(signal.SIGTERM)       # stopped before any snapshot: exits at once
            out, _ = await asyncio.to_thread(wrong.communicate, timeout=20)
            assert wrong.returncode == 0 and b"answered 401" in out, out
        finally:
            kill_group(wrong.pid)
            wrong.wait()
        # a URL it cannot use: refused at once
        code, _, err = await run_cli("dataplane", "--controller", "ftp://127.0.0.1:1")
        assert code == 2 and "--controller must be http://HOST:PORT" in err
    async with aiohttp.ClientSession() as s:
        try:
            async with s.get(f"http://127.0.0.1:{health}/healthz"):
                raise AssertionError("the health listener outlived its process")
        except aiohttp.ClientConnectionError:
            pass


def start_remote(gw: GatewayProc, tmp_path: Path, name: str, port: int,
                 health: int) -> subprocess.Popen[bytes]:
    """``serve-gateway dataplane`` following ``gw`` as a gateway on another node would."""
    exe = str(Path(sys.executable).with_name("serve-gateway"))
    env = {**os.environ, "SERVE_GATEWAY_ADMIN_TOKEN": gw.token or ""}
    return subprocess.Popen(
        [exe, "dataplane", "--controller", f"http://127.0.0.1:{gw.admin_port}",
         "--name", name, "--listen", f"127.0.0.1:{port}", "--health", f"127.0.0.1:{health}"],
        cwd=REPO_ROOT, env=env, stdout=(tmp_path / f"{name}.log").open("wb"),
        stderr=subprocess.STDOUT, start_new_session=True)


async def test_a_replica_limit_holds_with_data_planes_on_other_nodes(tmp_path: Path) -> None:
    """max_concurrency 2 on one replica served by the gateway itself (workers 1) and by a data
    plane on another node: the controller gives each its share (1 slot), so the worker never
    has more than 2 requests at once with both taking traffic; when the other node goes away
    for good, the gateway takes the whole limit back."""
    services = {"m": {"route": "/m", "versions": {"v1": {
        "command": f"{SLOW} 0.3", "replicas": 1, "max_concurrency": 2}}}}
    async with GatewayProc(tmp_path, services, queue={"max_waiting": 64, "timeout": "30s"}) as gw:
        port, health = free_port(), free_port()
        remote = start_remote(gw, tmp_path, "node-b", port, health)
        try:
            await wait_http_ok(f"http://127.0.0.1:{health}/healthz", 15)

            async def shared() -> bool:
                procs = dataplanes(await gw.status())
                return (procs["main"]["share"], procs.get("node-b", {}).get("share")) == \
                    ([0, 2], [1, 2])
            await wait_until(shared, 5, what="main and node-b each keeping a share of 2")
            both = await asyncio.gather(
                fresh_posts(gw.url("/m"), 12, body=b"{}", concurrent=True),
                fresh_posts(f"http://127.0.0.1:{port}/m", 12, body=b"{}", concurrent=True))
            assert [s for s, _ in both[0] + both[1]] == [200] * 24
            doc = await gw.status()
            address = doc["services"]["m"]["versions"]["v1"]["replicas"][0]["address"]
            async with aiohttp.ClientSession() as s, s.get(f"http://{address}/stats") as r:
                stats = await r.json()
            assert stats["served"] == 24 and stats["peak"] <= 2, stats
            remote.send_signal(signal.SIGTERM)
            assert await asyncio.to_thread(remote.wait, 20) == 0
        finally:
            kill_group(remote.pid)
            remote.wait()

        async def alone() -> bool:
            procs = dataplanes(await gw.status())
            return "node-b" not in procs and procs["main"]["share"] == [0, 1]
        await wait_until(alone, 15, what="node-b forgotten, main keeping the whole limit")


async def test_a_controller_with_workers_0_serves_only_through_other_nodes(tmp_path: Path) -> None:
    """workers 0: the controller opens no data port and is no sharer, so the one other node's
    data plane keeps a replica's whole limit and serves its routes."""
    async with GatewayProc(tmp_path, {"echo": echo_service(replicas=1)}, workers=0) as gw:
        assert await asyncio.to_thread(port_closed, gw.port)
        async with aiohttp.ClientSession() as s, s.get(gw.admin("/readyz")) as r:
            assert r.status == 200
        port, health = free_port(), free_port()
        remote = start_remote(gw, tmp_path, "node-b", port, health)
        try:
            await wait_http_ok(f"http://127.0.0.1:{health}/healthz", 15)
            assert await fresh_posts(f"http://127.0.0.1:{port}/v1/echo", 3) == \
                [(200, "echo/v1")] * 3

            async def listed() -> bool:
                procs = dataplanes(await gw.status())
                return list(procs) == ["node-b"] and procs["node-b"]["share"] == [0, 1]
            await wait_until(listed, 5, what="node-b alone in /status, with the whole limit")
            remote.send_signal(signal.SIGTERM)
            assert await asyncio.to_thread(remote.wait, 20) == 0
        finally:
            kill_group(remote.pid)
            remote.wait()


def port_closed(port: int) -> bool:
    import socket

    with socket.socket() as sock:
        return sock.connect_ex(("127.0.0.1", port)) != 0
