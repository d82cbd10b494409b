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


async def test_a_data_plane_on_another_node_follows_the_controller(tmp_path: Path) -> None:
    async with GatewayProc(tmp_path, {"echo": echo_service(replicas=1)}) as gw:
        port, health = free_port(), free_port()
        exe = str(Path(sys.executable).with_name("serve-gateway"))
        env = {**os.environ, "SERVE_GATEWAY_ADMIN_TOKEN": gw.token or ""}
        remote = subprocess.Popen(
            [exe, "dataplane", "--controller", f"http://127.0.0.1:{gw.admin_port}",
             "--name", "node-b", "--listen", f"127.0.0.1:{port}",
             "--health", f"127.0.0.1:{health}"],
            cwd=REPO_ROOT, env=env, stdout=(tmp_path / "remote.log").open("wb"),
            stderr=subprocess.STDOUT, start_new_session=True)
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


def port_closed(port: int) -> bool:
    import socket

    with socket.socket() as sock:
        return sock.connect_ex(("127.0.0.1", port)) != 0
