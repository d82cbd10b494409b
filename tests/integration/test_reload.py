"""Hot reload end to end: a real gateway and real echo workers; SIGHUP, POST /reload and
`serve-gateway reload` all read the file again and apply it in full or not at all."""

from __future__ import annotations

import asyncio
import signal
import time
from copy import deepcopy
from pathlib import Path
from typing import Any

import aiohttp

from tests.helpers import (
    ECHO,
    GatewayProc,
    alive,
    echo_service,
    free_port,
    metric_value,
    run_cli,
    wait_until,
)


def version(tag: str, **env: str) -> dict[str, Any]:
    return {"command": ECHO, "replicas": 1, "env": {"ECHO_TAG": tag, **env}}


def service(versions: dict[str, Any], weights: dict[str, int] | None = None) -> dict[str, Any]:
    svc: dict[str, Any] = {"route": "/v1/echo", "rewrite": "/predict", "versions": versions}
    if weights:
        svc["traffic"] = {"weights": weights}
    return svc


async def predict(s: aiohttp.ClientSession, url: str, **instance: Any) -> tuple[int, Any]:
    async with s.post(url, json=instance or {"x": 1}) as r:
        return r.status, await r.json(content_type=None)


async def reloads(gw: GatewayProc, result: str) -> float:
    async with aiohttp.ClientSession() as s, s.get(gw.admin("/metrics")) as r:
        text = await r.text()
    return metric_value(text, "serve_gateway_config_reloads_total", result=result) or 0.0


async def test_route_and_replica_changes_apply_and_listen_waits_for_restart(tmp_path: Path) -> None:
    async with GatewayProc(tmp_path, {"echo": echo_service(replicas=1)}) as gw, \
            aiohttp.ClientSession() as s:
        before = (await gw.status())["config"]["hash"]
        assert (await predict(s, gw.url("/v1/echo")))[0] == 200
        config = deepcopy(gw.config)
        config["gateway"]["access_log"] = {"enabled": True, "sample": 1.0}
        config["services"]["echo"]["route"] = "/v2/echo"
        config["services"]["echo"]["versions"]["v1"]["replicas"] = 2
        config["gateway"]["listen"] = f"127.0.0.1:{free_port()}"
        gw.rewrite(config)
        rc, out, err = await run_cli("reload", "-c", gw.config_path)
        assert rc == 0, out + err
        assert "service echo: route changed" in out
        assert "version echo/v1: replicas 1 -> 2" in out
        assert "needs restart: gateway.listen" in out
        assert "gateway.access_log changed" in out
        # the table swapped before the reload answered; the data listener stayed where it was
        assert (await predict(s, gw.url("/v2/echo")))[0] == 200
        async with s.get(gw.url("/v1/echo")) as r:
            assert r.status == 404
        # the access log is off by default and follows the reloaded setting; a line is written
        # once its answer is sent, so it may land just after the client has read the answer

        def access_lines() -> list[str]:
            return [line for line in gw.log().splitlines() if " gateway.access: " in line]
        await wait_until(lambda: len(access_lines()) >= 2, 5, what="two access log lines")
        access = access_lines()
        assert len(access) == 2, access
        assert "POST /v2/echo 200" in access[0] and "service=echo version=v1" in access[0]
        assert "GET /v1/echo 404" in access[1] and "service=- version=-" in access[1]
        await wait_until(gw.all_ready, 20, what="a second replica", interval=0.1)
        status = await gw.status()
        v1 = status["services"]["echo"]["versions"]["v1"]
        assert (v1["ready"], v1["desired"]) == (2, 2)
        assert status["services"]["echo"]["route"] == "/v2/echo"
        assert status["config"]["hash"] != before
        assert status["config"]["last_reload"]["needs_restart"] == ["gateway.listen"]
        served = set()
        for _ in range(20):
            async with s.get(gw.url("/v2/echo")) as r:
                served.add((await r.json())["replica"])
        assert served == {r["id"] for r in v1["replicas"]}


async def test_added_version_joins_routing_only_once_ready(tmp_path: Path) -> None:
    async with GatewayProc(tmp_path, {"echo": service({"v1": version("blue")})}) as gw, \
            aiohttp.ClientSession() as s:
        config = deepcopy(gw.config)
        echo = config["services"]["echo"]
        echo["versions"]["v2"] = version("green", ECHO_LOAD_SECONDS="1.5")   # slow to get ready
        echo["traffic"] = {"weights": {"v1": 1, "v2": 1}}
        gw.rewrite(config)
        assert gw.proc is not None
        gw.proc.send_signal(signal.SIGHUP)

        async def applied() -> bool:
            return "v2" in (await gw.status())["services"]["echo"]["versions"]
        await wait_until(applied, 10, what="the SIGHUP reload")
        status = (await gw.status())["services"]["echo"]
        assert status["versions"]["v2"]["joining"] and status["weights"] == {"v1": 1, "v2": 0}

        blue_while_joining = 0
        end = time.monotonic() + 20
        while time.monotonic() < end:
            began = time.monotonic()
            code, doc = await predict(s, gw.url("/v1/echo"))
            assert code == 200, doc
            if doc["predictions"][0]["tag"] == "green":
                # routed to v2 only after its replica was ready
                v2 = (await gw.status())["services"]["echo"]["versions"]["v2"]
                assert v2["ready"] == 1 and not v2["joining"]
                break
            blue_while_joining += 1
            assert time.monotonic() - began < 1.0, "a request waited for the loading version"
            await asyncio.sleep(0.02)
        else:
            raise AssertionError("v2 never got traffic")
        assert blue_while_joining >= 5
        assert (await gw.status())["services"]["echo"]["weights"] == {"v1": 1, "v2": 1}


async def test_removed_version_is_drained_then_stopped(tmp_path: Path) -> None:
    both = {"v1": version("blue"), "v2": version("green")}
    services = {"echo": service(both, {"v1": 1, "v2": 0})}
    async with GatewayProc(tmp_path, services) as gw, aiohttp.ClientSession() as s:
        v1 = (await gw.status())["services"]["echo"]["versions"]["v1"]["replicas"][0]
        slow = asyncio.ensure_future(predict(s, gw.url("/v1/echo"), sleep=1.5))

        async def v1_state() -> tuple[str, int]:
            doc = await gw.status()
            reps = doc["services"]["echo"]["versions"].get("v1", {}).get("replicas", [])
            return (reps[0]["state"], reps[0]["inflight"]) if reps else ("gone", 0)

        async def in_flight() -> bool:
            return (await v1_state())[1] == 1
        await wait_until(in_flight, 5, what="the slow request to reach v1")

        config = deepcopy(gw.config)
        del config["services"]["echo"]["versions"]["v1"]
        del config["services"]["echo"]["traffic"]
        gw.rewrite(config)
        async with s.post(gw.admin("/reload"), headers=gw.auth) as r:
            doc = await r.json()
        assert r.status == 200 and doc["ok"], doc
        assert "version echo/v1 removed" in doc["changes"]
        # new requests go to v2 at once; the one in flight on v1 is not cut
        code, fresh = await predict(s, gw.url("/v1/echo"))
        assert code == 200 and fresh["predictions"][0]["tag"] == "green"

        async def draining() -> bool:
            return await v1_state() == ("draining", 1)
        await wait_until(draining, 2, what="v1 to drain")
        assert not slow.done()
        code, answer = await slow
        assert code == 200 and answer["predictions"][0] == {"sleep": 1.5, "tag": "blue"}
        await wait_until(lambda: not alive(v1["pid"]), 10, what="the v1 worker to exit")

        async def v1_gone() -> bool:
            return (await v1_state())[0] == "gone"
        await wait_until(v1_gone, 5, what="v1 to leave the status")


async def test_invalid_reloads_keep_the_old_config_serving(tmp_path: Path) -> None:
    async with GatewayProc(tmp_path, {"echo": echo_service(replicas=1)}) as gw, \
            aiohttp.ClientSession() as s:
        good = gw.config_path.read_text()
        running = (await gw.status())["config"]["hash"]
        route = "    route: /v1/echo"
        cases = [   # (file text, expected problem, the text on the line it must name)
            (good.replace(route, "    route: [/v1/echo"), "YAML syntax error", None),
            (good.replace(route, route + "\n    routez: /x"),
             "services.echo.routez: unknown key", "routez:"),
            (good.replace("replicas: 1", "replicas: -1"),
             "services.echo.versions.v1.replicas: must be >= 0", "replicas: -1"),
            (good.replace(route, route + "\n    traffic: {weights: {v1: 1, v9: 1}}"),
             "services.echo.traffic.weights.v9: no version named v9", "v9: 1"),
        ]
        for n, (text, problem, marker) in enumerate(cases, 1):
            gw.config_path.write_text(text)
            # a file too broken to name its admin API is still refused through --admin
            where = ["--admin", gw.admin("")] if marker is None else ["-c", str(gw.config_path)]
            rc, out, err = await run_cli("reload", *where)
            assert rc == 1, out + err
            assert problem in err and str(gw.config_path) in err
            assert f"still serving config {running}" in err
            if marker is not None:
                line = next(i for i, t in enumerate(text.splitlines(), 1) if marker in t)
                for text_out in (err, gw.log()):   # the CLI and the gateway's own log line
                    said = next(t for t in text_out.splitlines() if problem in t)
                    assert f"(line {line})" in said, said
            assert (await predict(s, gw.url("/v1/echo")))[0] == 200
            assert (await gw.status())["config"]["hash"] == running
            assert await reloads(gw, "failure") == n
        # the CLI reading a broken file itself: prints the problem, sends nothing
        gw.config_path.write_text(cases[0][0])
        rc, out, err = await run_cli("reload", "-c", gw.config_path)
        assert rc == 1 and "YAML syntax error" in err and "nothing was reloaded" in err
        # SIGHUP takes the same path
        gw.config_path.write_text(cases[2][0])
        assert gw.proc is not None
        gw.proc.send_signal(signal.SIGHUP)

        async def counted() -> bool:
            return await reloads(gw, "failure") == len(cases) + 1
        await wait_until(counted, 10, what="the failed SIGHUP reload to be counted")
        assert (await predict(s, gw.url("/v1/echo")))[0] == 200
        assert await reloads(gw, "success") == 0
        gw.config_path.write_text(good)
        rc, out, err = await run_cli("reload", "-c", gw.config_path)
        assert rc == 0 and "no changes" in out, out + err


async def test_ten_reloads_under_load_fail_no_request(tmp_path: Path) -> None:
    both = {"v1": version("blue"), "v2": version("green")}
    services = {"echo": service(both, {"v1": 1, "v2": 1})}
    async with GatewayProc(tmp_path, services) as gw:
        config_a = deepcopy(gw.config)
        config_b = deepcopy(gw.config)
        config_b["services"]["echo"]["traffic"]["weights"] = {"v1": 3, "v2": 1}
        config_b["services"]["echo"]["timeouts"] = {"request": "20s"}
        hashes = {"a": (await gw.status())["config"]["hash"]}
        stop = asyncio.Event()
        ok = 0
        failures: list[str] = []

        async def client(session: aiohttp.ClientSession) -> None:
            nonlocal ok
            while not stop.is_set():
                try:
                    async with session.get(gw.url("/v1/echo")) as r:
                        await r.read()
                        if r.status == 200:
                            ok += 1
                        else:
                            failures.append(f"HTTP {r.status}")
                except (TimeoutError, aiohttp.ClientError, OSError) as exc:
                    failures.append(repr(exc))   # a refused connection lands here

        timeout = aiohttp.ClientTimeout(total=10)
        async with aiohttp.ClientSession(timeout=timeout) as keepalive, \
                aiohttp.ClientSession(connector=aiohttp.TCPConnector(force_close=True),
                                      timeout=timeout) as fresh, \
                aiohttp.ClientSession() as admin:
            loops = [asyncio.ensure_future(client(keepalive if i % 2 else fresh))
                     for i in range(20)]
            try:
                await wait_until(lambda: ok >= 50, 10, what="load to flow")
                began = time.monotonic()
                for i in range(10):
                    name, config = ("b", config_b) if i % 2 == 0 else ("a", config_a)
                    gw.rewrite(config)
                    if i % 3 == 2:      # SIGHUP: only enqueues; wait for the loop to apply it
                        assert gw.proc is not None
                        gw.proc.send_signal(signal.SIGHUP)

                        async def applied(want: str = hashes[name]) -> bool:
                            return (await gw.status())["config"]["hash"] == want
                        await wait_until(applied, 5, what=f"SIGHUP reload {i}")
                    else:
                        async with admin.post(gw.admin("/reload"), headers=gw.auth) as r:
                            doc = await r.json()
                        assert r.status == 200 and doc["ok"] and doc["changes"], doc
                        hashes[name] = doc["hash"]
                    await asyncio.sleep(0.3)
                elapsed = time.monotonic() - began
            finally:
                stop.set()
                await asyncio.gather(*loops)
        assert failures == []
        assert elapsed < 10
        assert ok >= 200
        assert await reloads(gw, "success") == 10
