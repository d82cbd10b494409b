"""The spine end to end: a real gateway, real worker processes, loopback only."""

from __future__ import annotations

import asyncio
import os
import signal
import subprocess
import sys
from pathlib import Path

import aiohttp
import orjson

from tests.helpers import (
    ECHO,
    REPO_ROOT,
    GatewayProc,
    alive,
    echo_service,
    metric_value,
    wait_until,
)

STUBBORN = f"{{python}} {REPO_ROOT}/tests/workers/stubborn.py {{port}}"


async def raw_request(port: int, path: str, method: str = "GET", headers: str = "",
                      body: bytes = b"") -> tuple[int, bytes]:
    """Send exactly these bytes (clients would normalise the path for us)."""
    r, w = await asyncio.open_connection("127.0.0.1", port)
    w.write(f"{method} {path} HTTP/1.1\r\nHost: t\r\nConnection: close\r\n{headers}"
            f"Content-Length: {len(body)}\r\n\r\n".encode() + body)
    data = await r.read()
    w.close()
    head, _, rest = data.partition(b"\r\n\r\n")
    return int(head.split()[1]), rest


async def test_routes_and_balances_over_replicas(tmp_path: Path) -> None:
    services = {"echo": echo_service(replicas=2), "other": echo_service("/v1/other", replicas=1)}
    async with GatewayProc(tmp_path, services) as gw, aiohttp.ClientSession() as s:
        async with s.post(gw.url("/v1/echo"), json={"x": 1}) as r:
            assert r.status == 200
            assert await r.json() == {"predictions": [{"x": 1}]}
        replicas = set()
        for _ in range(40):
            async with s.get(gw.url("/v1/echo")) as r:
                replicas.add((await r.json())["replica"])
        status = await gw.status()
        ids = {rep["id"] for rep in status["services"]["echo"]["versions"]["v1"]["replicas"]}
        assert replicas == ids and len(ids) == 2
        async with s.get(gw.url("/v1/echoes")) as r:     # whole segments only
            assert r.status == 404
            assert await r.json() == {"error": "no_route", "service": None,
                                      "detail": "no service is routed at /v1/echoes"}


async def test_path_normalisation_cannot_escape_a_route(tmp_path: Path) -> None:
    async with GatewayProc(tmp_path, {"echo": echo_service(replicas=1)}) as gw:
        assert (await raw_request(gw.port, "//v1//echo"))[0] == 200
        assert (await raw_request(gw.port, "/v1/%65cho"))[0] == 200
        assert (await raw_request(gw.port, "/other/../v1/echo"))[0] == 200
        for escape in ("/v1/echo/../../admin", "/v1/echo/%2e%2e/%2E%2E/status", "/v1/echo/.."):
            status, body = await raw_request(gw.port, escape)
            assert status == 404, escape
            assert orjson.loads(body)["error"] == "no_route"
        status, body = await raw_request(gw.port, "/v1/echo/%2f..%2fx")
        assert status == 400 and orjson.loads(body)["error"] == "bad_request"


async def test_headers_are_rewritten_both_ways(tmp_path: Path) -> None:
    async with GatewayProc(tmp_path, {"echo": echo_service(replicas=1)}) as gw:
        status, _ = await raw_request(gw.port, "/v1/echo", headers="Connection: close, X-Secret\r\n"
                                      "X-Secret: 1\r\nX-Forwarded-For: 1.2.3.4\r\n")
        assert status == 200
        async with aiohttp.ClientSession() as s, \
                s.post(gw.url("/v1/echo"), json=[1], headers={"X-Forwarded-For": "1.2.3.4"}) as r:
            assert r.status == 200 and "Keep-Alive" not in r.headers


async def test_body_limit_gives_413(tmp_path: Path) -> None:
    async with GatewayProc(tmp_path, {"echo": echo_service(replicas=1)}, max_body_bytes=1000) as gw, \
            aiohttp.ClientSession() as s:
        async with s.post(gw.url("/v1/echo"), data=b"x" * 2000) as r:
            assert r.status == 413
            assert (await r.json())["error"] == "body_too_large"

        async def chunks():   # no Content-Length: the limit is enforced while streaming
            for _ in range(40):
                yield b"y" * 100

        async with s.post(gw.url("/v1/echo"), data=chunks()) as r:
            assert r.status == 413
        async with s.post(gw.url("/v1/echo"), data=orjson.dumps({"ok": 1})) as r:
            assert r.status == 200


async def test_large_bodies_stream_through(tmp_path: Path) -> None:
    async with GatewayProc(tmp_path, {"echo": echo_service(replicas=1)},
                           max_body_bytes="64MiB") as gw, aiohttp.ClientSession() as s:
        doc = {"instances": ["z" * (3 << 20)]}          # 3 MiB: above the streaming threshold
        async with s.post(gw.url("/v1/echo"), data=orjson.dumps(doc)) as r:
            assert r.status == 200
            assert (await r.json())["predictions"] == doc["instances"]


async def test_upstream_timeout_gives_504(tmp_path: Path) -> None:
    svc = echo_service(replicas=1, timeouts={"request": "300ms"})
    async with GatewayProc(tmp_path, {"echo": svc}) as gw, aiohttp.ClientSession() as s:
        async with s.post(gw.url("/v1/echo"), json={"sleep": 2}) as r:
            assert r.status == 504
            assert await r.json() == {"error": "upstream_timeout", "service": "echo",
                                      "detail": "worker did not answer in time"}
        async with s.get(gw.admin("/metrics")) as r:
            text = await r.text()
        assert metric_value(text, "serve_gateway_upstream_errors_total", service="echo",
                            version="v1", kind="timeout") == 1


async def test_no_ready_replica_waits_then_503_with_retry_after(tmp_path: Path) -> None:
    never_ready = {"route": "/v1/slow", "versions": {"v1": {
        "command": ["sh", "-c", "exec sleep 600", "{port}"], "replicas": 1}}}
    async with GatewayProc(tmp_path, {"slow": never_ready}, ready=False,
                           queue={"timeout": "300ms", "max_waiting": 2}) as gw, \
            aiohttp.ClientSession() as s:
        loop = asyncio.get_running_loop()
        t0 = loop.time()
        async with s.get(gw.url("/v1/slow")) as r:
            assert r.status == 503 and r.headers["Retry-After"] == "1"
            assert (await r.json())["error"] == "no_ready_replica"
        assert loop.time() - t0 >= 0.3
        # the wait queue is bounded: the third concurrent waiter is refused at once
        results = await asyncio.gather(*(s.get(gw.url("/v1/slow")) for _ in range(3)))
        kinds = sorted([(await r.json())["error"] for r in results])
        assert kinds == ["no_ready_replica", "no_ready_replica", "overloaded"]


async def test_waiting_request_is_served_when_a_replica_becomes_ready(tmp_path: Path) -> None:
    slow_start = {"route": "/v1/echo", "rewrite": "/predict", "versions": {"v1": {
        "command": ["sh", "-c", f"sleep 1; exec {ECHO.replace('{port}', '$0')}", "{port}"],
        "replicas": 1}}}
    async with GatewayProc(tmp_path, {"echo": slow_start}, ready=False) as gw, \
            aiohttp.ClientSession() as s:
        async with s.post(gw.url("/v1/echo"), json=7) as r:
            assert r.status == 200 and await r.json() == {"predictions": [7]}


async def test_kill_9_of_a_replica_under_load_fails_no_idempotent_request(tmp_path: Path) -> None:
    async with GatewayProc(tmp_path, {"echo": echo_service(replicas=2)}) as gw, \
            aiohttp.ClientSession() as s:
        status = await gw.status()
        victim = status["services"]["echo"]["versions"]["v1"]["replicas"][0]["pid"]
        codes: list[int] = []
        stop = asyncio.Event()

        async def client() -> None:
            while not stop.is_set():
                async with s.get(gw.url("/v1/echo")) as r:
                    await r.read()
                    codes.append(r.status)

        clients = [asyncio.ensure_future(client()) for _ in range(8)]
        await wait_until(lambda: len(codes) > 200, 10, what="load to start")
        os.kill(victim, signal.SIGKILL)
        seen = len(codes)
        await wait_until(lambda: len(codes) > seen + 500, 15, what="load after the kill")

        async def replaced() -> bool:
            v = (await gw.status())["services"]["echo"]["versions"]["v1"]
            return v["ready"] == 2 and v["restarts"] == 1
        await wait_until(replaced, 20, what="a replacement replica")
        stop.set()
        await asyncio.gather(*clients)
        assert set(codes) == {200}, {c: codes.count(c) for c in set(codes)}


async def test_sigterm_drains_in_flight_and_leaves_no_orphans(tmp_path: Path) -> None:
    services = {"echo": echo_service(replicas=1),
                "stubborn": {"route": "/stubborn", "versions": {"v1": {"command": STUBBORN, "replicas": 1}}}}
    gw = GatewayProc(tmp_path, services, stop_grace="1s")
    async with gw, aiohttp.ClientSession() as s:
        pids = set(gw.worker_pids)
        assert len(pids) == 2
        slow = asyncio.ensure_future(s.post(gw.url("/v1/echo"), json={"sleep": 1}))
        await asyncio.sleep(0.3)
        code = await gw.stop()
        r = await slow
        assert r.status == 200 and (await r.json())["predictions"] == [{"sleep": 1}]
        assert code == 0, gw.log()
        assert not any(alive(p) for p in pids)   # the stubborn one was SIGKILLed after 1s
        assert "stopped" in gw.log()


async def test_crashing_replica_is_restarted_with_backoff_and_reported(tmp_path: Path) -> None:
    crasher = {"route": "/crash", "versions": {"v1": {
        "command": ["sh", "-c", "exit 3", "{port}"], "replicas": 1}}}
    async with GatewayProc(tmp_path, {"crash": crasher}, ready=False) as gw:
        async def restarted() -> bool:
            v = (await gw.status())["services"]["crash"]["versions"]["v1"]
            return v["restarts"] >= 3
        await wait_until(restarted, 10, what="three restarts")
        v = (await gw.status())["services"]["crash"]["versions"]["v1"]
        assert v["last_exit"] == "exited with code 3" and v["ready"] == 0
        assert "next start in" in gw.log()


def run_cli(*args: str) -> subprocess.CompletedProcess[str]:
    exe = str(Path(sys.executable).with_name("serve-gateway"))
    return subprocess.run([exe, *args], cwd=REPO_ROOT, capture_output=True, text=True, timeout=30)


def test_validate_names_field_and_line() -> None:
    bad = run_cli("validate", "config/broken.yaml")
    assert bad.returncode == 1
    assert "services.mlp.versions.v1.replicas: must be >= 0 (line 11)" in bad.stderr
    assert "services.mlp.versions.v1.replicaz: unknown key (line 12)" in bad.stderr
    good = run_cli("validate", "config/quickstart.yaml")
    assert good.returncode == 0 and "ok" in good.stdout
    assert run_cli("validate").returncode == 2
    assert run_cli("up", "config/broken.yaml").returncode == 1


def test_schema_is_json_schema() -> None:
    out = run_cli("schema")
    assert out.returncode == 0
    assert orjson.loads(out.stdout)["properties"]["services"]["type"] == "object"
