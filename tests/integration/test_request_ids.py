"""Every request gets an id and a W3C trace context that the worker sees, and the worker SDK
logs the same id (tests/workers/rawworker.py echoes the header lines it received)."""

from __future__ import annotations

import re
from pathlib import Path

import aiohttp
import orjson

from tests.helpers import ECHO, REPO_ROOT, GatewayProc, wait_until

RAW = f"{{python}} {REPO_ROOT}/tests/workers/rawworker.py {{port}}"
HEX32 = re.compile(r"[0-9a-f]{32}")
TP = re.compile(r"00-([0-9a-f]{32})-([0-9a-f]{16})-([0-9a-f]{2})")
CLIENT_TP = "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01"


def raw_service() -> dict:
    return {"route": "/v1/raw", "versions": {"v1": {"command": RAW, "replicas": 1}}}


async def seen(s: aiohttp.ClientSession, gw: GatewayProc,
               headers: dict[str, str]) -> tuple[aiohttp.ClientResponse, dict[str, list[str]]]:
    """The answer and the worker's view of the request's headers (name -> values)."""
    async with s.get(gw.url("/v1/raw/headers"), headers=headers) as r:
        assert r.status == 200, await r.text()
        doc = orjson.loads(await r.read())
    got: dict[str, list[str]] = {}
    for name, value in doc["headers"]:
        got.setdefault(name.lower(), []).append(value)
    return r, got


async def test_request_id_and_traceparent_reach_the_worker(tmp_path: Path) -> None:
    async with GatewayProc(tmp_path, {"raw": raw_service()}) as gw, \
            aiohttp.ClientSession() as s:
        # none sent: a new id, returned and passed on; a new trace whose id is the request's
        r, got = await seen(s, gw, {})
        rid = r.headers["X-Request-Id"]
        assert HEX32.fullmatch(rid), rid
        assert got["x-request-id"] == [rid]
        (tp,) = got["traceparent"]
        m = TP.fullmatch(tp)
        assert m is not None and m[1] == rid, tp
        # another request, another id
        r2, _ = await seen(s, gw, {})
        assert r2.headers["X-Request-Id"] != rid

        # the client's own: kept, returned, passed on once (never twice)
        r, got = await seen(s, gw, {"X-Request-Id": "order-42/retry:1", "traceparent": CLIENT_TP,
                                    "tracestate": "vendor=abc"})
        assert r.headers["X-Request-Id"] == "order-42/retry:1"
        assert got["x-request-id"] == ["order-42/retry:1"]
        assert got["traceparent"] == [CLIENT_TP]
        assert got["tracestate"] == ["vendor=abc"]

        # bad ones are replaced: too long, a space, a comma; an all-zero or malformed parent
        for bad_id, bad_tp in (("x" * 129, "00-" + "0" * 32 + "-00f067aa0ba902b7-01"),
                               ("two words", "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa"),
                               ("a,b", "ff-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01"),
                               ("", "00-4BF92F3577B34DA6A3CE929D0E0E4736-00f067aa0ba902b7-01")):
            r, got = await seen(s, gw, {"X-Request-Id": bad_id, "traceparent": bad_tp})
            rid = r.headers["X-Request-Id"]
            assert HEX32.fullmatch(rid) and got["x-request-id"] == [rid], (bad_id, rid)
            (tp,) = got["traceparent"]
            assert TP.fullmatch(tp) and tp != bad_tp and tp.split("-")[1] == rid, (bad_tp, tp)

        # the first of a repeated X-Request-Id counts (and only it is passed on)
        async with s.get(gw.url("/v1/raw/headers"),
                         headers=[("X-Request-Id", "first"), ("X-Request-Id", "second")]) as r:
            assert r.headers["X-Request-Id"] == "first"
            sent = [v for n, v in orjson.loads(await r.read())["headers"]
                    if n.lower() == "x-request-id"]
            assert sent == ["first"]

        # a later version's traceparent is passed on as version 00, its extra fields dropped
        future = "01-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01-whatever"
        _, got = await seen(s, gw, {"traceparent": future})
        assert got["traceparent"] == [CLIENT_TP]

        # the gateway's own errors carry an id too
        async with s.get(gw.url("/nowhere"), headers={"X-Request-Id": "lost-1"}) as r:
            assert r.status == 404 and r.headers["X-Request-Id"] == "lost-1"


def json_lines(text: str) -> list[dict]:
    out = []
    for line in text.splitlines():
        if line.startswith("{"):
            out.append(orjson.loads(line))
    return out


async def test_json_logs_carry_the_request_id_at_gateway_and_worker(tmp_path: Path) -> None:
    cmd = ECHO + " --access-log --log-format json"
    services = {"echo": {"route": "/v1/echo", "rewrite": "/predict",
                         "versions": {"v1": {"command": cmd, "replicas": 1}}}}
    gw = GatewayProc(tmp_path, services, access_log={"enabled": True, "sample": 1.0})
    gw.up_args = ["--log-format", "json"]
    async with gw, aiohttp.ClientSession() as s:
        async with s.post(gw.url("/v1/echo"), json={"x": 1},
                          headers={"X-Request-Id": "req-json-1"}) as r:
            assert r.status == 200 and r.headers["X-Request-Id"] == "req-json-1"
        replica = (await gw.status())["services"]["echo"]["versions"]["v1"]["replicas"][0]["id"]
        worker_logs = list((gw.state_dir / "logs").glob("*"))

        def worker_lines() -> list[dict]:
            return [d for f in worker_logs for d in json_lines(f.read_text(errors="replace"))]

        await wait_until(lambda: any(d.get("request_id") == "req-json-1" for d in worker_lines()),
                         10, what="the worker's line for req-json-1")
    # the gateway: every line one JSON object; the access line has the fields, not one string
    lines = gw.log().splitlines()
    assert lines and all(line.startswith("{") for line in lines), lines[:5]
    docs = json_lines(gw.log())
    (access,) = [d for d in docs if d.get("event") == "access"]
    assert access["request_id"] == "req-json-1" and access["status"] == 200
    assert access["service"] == "echo" and access["version"] == "v1"
    assert access["replica"] == replica and isinstance(access["latency_ms"], float)
    assert access["method"] == "POST" and access["path"] == "/v1/echo"
    ready = [d for d in docs if d.get("event") == "replica_ready"]
    assert ready and ready[0]["service"] == "echo" and ready[0]["replica"] == replica
    # the worker logs the same id
    (pred,) = [d for d in worker_lines() if d.get("event") == "predict"]
    assert pred["request_id"] == "req-json-1" and pred["status"] == 200
    assert "latency_ms" in pred
