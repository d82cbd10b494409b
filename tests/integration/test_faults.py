"""The data plane under real faults, end to end: a real gateway, a raw-socket worker that
misbehaves on demand (tests/workers/rawworker.py), and clients that misbehave on purpose,
all on loopback. Issue #13 items 4-7."""

from __future__ import annotations

import asyncio
from copy import deepcopy
from pathlib import Path

import aiohttp
import orjson

from tests.helpers import REPO_ROOT, GatewayProc, echo_service, metric_value, run_cli, wait_until
from tests.integration.test_http1 import Client

RAW = f"{{python}} {REPO_ROOT}/tests/workers/rawworker.py {{port}}"
FAST = {"header_read": "500ms", "body_idle": "500ms", "upstream_idle": "500ms",
        "client_write": "500ms"}


def raw_service(log: Path, **extra: object) -> dict:
    return {"route": "/v1/raw", "versions": {"v1": {"command": RAW, "replicas": 1,
                                                     "env": {"RAW_LOG": str(log)}}}, **extra}


def logged(log: Path) -> list[str]:
    return log.read_text().splitlines() if log.exists() else []


async def metrics(gw: GatewayProc) -> str:
    async with aiohttp.ClientSession() as s, s.get(gw.admin("/metrics")) as r:
        return await r.text()


async def read_all(c: Client, deadline: float = 5.0) -> bytes:
    """Everything until the gateway closes the connection (a reset counts as the end)."""
    out = b""
    try:
        async with asyncio.timeout(deadline):
            while chunk := await c.r.read(65536):
                out += chunk
    except ConnectionResetError:
        pass
    return out


async def test_every_wait_on_a_peer_has_a_deadline(tmp_path: Path) -> None:
    log = tmp_path / "raw.log"
    async with GatewayProc(tmp_path, {"raw": raw_service(log)}, deadlines=FAST,
                           max_body_bytes="16MiB") as gw:
        loop = asyncio.get_running_loop()
        # a head that never completes: 408, not the 75 s keep-alive timer
        c = await Client.open(gw.port)
        t0 = loop.time()
        c.send(b"GET /v1/raw/x HTTP/1.1\r\nHost: t\r\nX-Slow: ")
        status, headers, body = await c.answer()
        assert status == 408 and headers["connection"] == "close" and loop.time() - t0 < 4
        assert orjson.loads(body)["error"] == "request_timeout"
        # an upload that goes silent after its first bytes: small (held whole) and large
        # (streamed to the worker, whose connection must be closed too)
        for path, length in (("/v1/raw/small", 5000), ("/v1/raw/upload", 4 << 20)):
            c = await Client.open(gw.port)
            t0 = loop.time()
            c.send(b"POST %s HTTP/1.1\r\nHost: t\r\nContent-Length: %d\r\n\r\n"
                   % (path.encode(), length) + b"u" * 1000)
            status, headers, body = await c.answer()
            assert status == 408 and loop.time() - t0 < 4, (path, body)
            assert "request body" in orjson.loads(body)["detail"]
            c.close()
        await wait_until(lambda: "closed /v1/raw/upload" in logged(log), 5,
                         what="the worker's connection of the silent upload to be closed")
        assert "req POST /v1/raw/small" not in logged(log)   # never forwarded half
        # a worker that stops mid-answer, chunked or with a large Content-Length: the answer
        # is cut (no clean end) and the worker's connection closed, within the idle deadline
        for what, head in (("stall-chunked", b"hello"), ("stall-length", b"s" * 1000)):
            c = await Client.open(gw.port)
            t0 = loop.time()
            c.send(b"GET /v1/raw/%s HTTP/1.1\r\nHost: t\r\n\r\n" % what.encode())
            got = await read_all(c)
            assert got.startswith(b"HTTP/1.1 200 ") and head in got and loop.time() - t0 < 4
            assert not got.endswith(b"0\r\n\r\n")
            await wait_until(lambda w=what: f"closed /v1/raw/{w}" in logged(log), 5,
                             what=f"the worker's {what} connection to be closed")
        # a client that stops reading a streamed answer: dropped, and the worker freed
        c = await Client.open(gw.port)
        c.w.transport.pause_reading()
        c.send(b"GET /v1/raw/flood HTTP/1.1\r\nHost: t\r\n\r\n")
        await wait_until(lambda: "closed /v1/raw/flood" in logged(log), 10,
                         what="the flooding worker's connection to be closed")
        c.close()
        # each deadline is counted
        text = await metrics(gw)
        counts = {k: metric_value(text, "serve_gateway_timeouts_total", kind=k)
                  for k in ("header_read", "body_idle", "upstream_idle", "client_write")}
        assert counts == {"header_read": 1, "body_idle": 2, "upstream_idle": 2,
                          "client_write": 1}, counts
        # and the worker still serves
        async with aiohttp.ClientSession() as s, s.post(gw.url("/v1/raw/ok"), data=b"abc") as r:
            assert r.status == 200 and await r.json() == {"n": 3}


async def test_body_limit_is_enforced_before_anything_is_buffered_or_forwarded(
        tmp_path: Path) -> None:
    log = tmp_path / "raw.log"
    async with GatewayProc(tmp_path, {"raw": raw_service(log)}, max_body_bytes=1000) as gw:
        # 413 at the head: the body is never sent (nor waited for)
        c = await Client.open(gw.port)
        c.send(b"POST /v1/raw/at-head HTTP/1.1\r\nHost: t\r\nContent-Length: 100000\r\n\r\n")
        status, headers, body = await c.answer()
        assert status == 413 and headers["connection"] == "close"
        assert orjson.loads(body) == {"error": "body_too_large", "service": "raw",
                                      "detail": "body of 100000 bytes is over the limit of 1000"}
        c.close()
        # a chunked body over the limit: 413, and the worker never sees its head
        c = await Client.open(gw.port)
        c.send(b"POST /v1/raw/chunked-over HTTP/1.1\r\nHost: t\r\nTransfer-Encoding: chunked\r\n"
               b"\r\n" + b"".join(b"64\r\n" + b"c" * 100 + b"\r\n" for _ in range(40))
               + b"0\r\n\r\n")
        assert (await c.answer())[0] == 413
        c.close()
        # under the limit, chunked: forwarded whole
        c = await Client.open(gw.port)
        c.send(b"POST /v1/raw/chunked-ok HTTP/1.1\r\nHost: t\r\nTransfer-Encoding: chunked\r\n"
               b"\r\n" + b"1f4\r\n" + b"k" * 500 + b"\r\n0\r\n\r\n")
        status, _, body = await c.answer()
        assert status == 200 and orjson.loads(body) == {"n": 500}
        c.close()
        assert "req POST /v1/raw/chunked-ok" in logged(log)
        assert not [line for line in logged(log) if "over" in line or "at-head" in line]


async def test_strict_http11_and_forwarding_headers(tmp_path: Path) -> None:
    log = tmp_path / "raw.log"
    services = {"echo": echo_service(replicas=1), "raw": raw_service(log)}
    async with GatewayProc(tmp_path, services) as gw:
        async def ask(raw: bytes) -> tuple[int, bytes]:
            c = await Client.open(gw.port)
            c.send(raw)
            status, _, body = await c.answer()
            c.close()
            return status, body

        assert (await ask(b"GET /v1/echo HTTP/1.1\r\nHost: a\r\nHost: b\r\n\r\n"))[0] == 400
        assert (await ask(b"GET /v1/echo HTTP/1.1\r\n\r\n"))[0] == 400
        assert (await ask(b"GET /v1/echo HTTP/2.0\r\nHost: a\r\n\r\n"))[0] == 505
        # a fragment used to be routed across '..' to another service
        status, body = await ask(b"GET /v1/echo#/../../v1/raw/headers HTTP/1.1\r\nHost: a\r\n\r\n")
        assert status == 400 and orjson.loads(body)["error"] == "bad_request"
        assert "headers" not in " ".join(logged(log))
        # what curl --http2 sends to a cleartext URL: served as HTTP/1.1, body intact
        doc = b'{"instances": [1, 2, 3]}'
        status, body = await ask(
            b"POST /v1/echo HTTP/1.1\r\nHost: a\r\nConnection: Upgrade, HTTP2-Settings\r\n"
            b"Upgrade: h2c\r\nHTTP2-Settings: AAMAAABkAAQAAP__\r\nContent-Type: application/json\r\n"
            b"Content-Length: %d\r\n\r\n%s" % (len(doc), doc))
        assert status == 200 and orjson.loads(body) == {"predictions": [1, 2, 3]}
        # forwarding headers a client forges never reach the worker
        forged = (b"GET /v1/raw/headers HTTP/1.1\r\nHost: api.example\r\n"
                  b"X-Forwarded-For: 1.1.1.1\r\nX-Forwarded-Proto: https\r\n"
                  b"X-Forwarded-Host: evil.example\r\nForwarded: for=6.6.6.6\r\n"
                  b"X-Shadow: 1\r\nX-Forwarded-For: 3.3.3.3\r\n\r\n")

        async def seen() -> dict[str, list[str]]:
            status, body = await ask(forged)
            assert status == 200
            out: dict[str, list[str]] = {}
            for name, value in orjson.loads(body)["headers"]:
                out.setdefault(name.lower(), []).append(value)
            return out

        h = await seen()
        assert h["x-forwarded-for"] == ["1.1.1.1, 3.3.3.3, 127.0.0.1"]
        assert h["x-forwarded-proto"] == ["http"] and h["x-forwarded-host"] == ["api.example"]
        assert h["forwarded"] == ['for=127.0.0.1;host="api.example";proto=http']
        assert "x-shadow" not in h
        # behind a trusted proxy (a reload applies it), its forwarding headers are kept
        config = deepcopy(gw.config)
        config["gateway"]["trusted_hops"] = 1
        gw.rewrite(config)
        rc, out, err = await run_cli("reload", "-c", gw.config_path)
        assert rc == 0, out + err
        h = await seen()
        assert h["x-forwarded-proto"] == ["https"] and h["x-forwarded-host"] == ["evil.example"]
        assert h["forwarded"] == ['for=6.6.6.6, for=127.0.0.1;host="api.example";proto=http']
        assert "x-shadow" not in h


def rss(pid: int) -> int:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) * 1024
    raise AssertionError("no VmRSS")


async def test_memory_comes_back_after_cut_uploads_and_cut_mirror_answers(tmp_path: Path) -> None:
    """Uploads that announce 1 MiB and stop 1 KB short, one after another, and mirror copies
    whose chunked answers are cut at the 1 MiB limit: RSS growth stays under 2x the body limit
    (10 MiB by default)."""
    log = tmp_path / "raw.log"
    version = {"command": RAW, "replicas": 1, "env": {"RAW_LOG": str(log)}}
    svc = {"route": "/v1/raw", "versions": {"v1": version, "v2": version},
           "traffic": {"weights": {"v1": 100, "v2": 0},
                       "mirror": {"to": "v2", "percent": 100, "concurrency": 2, "queue": 2}}}
    async with GatewayProc(tmp_path, {"raw": svc}) as gw:
        assert gw.proc is not None
        pid = gw.proc.pid
        limit = 10 << 20

        async def cut_upload() -> None:
            c = await Client.open(gw.port)
            c.send(b"POST /v1/raw/up HTTP/1.1\r\nHost: t\r\nContent-Length: 1048576\r\n\r\n"
                   + b"m" * (1048576 - 1024))
            await c.w.drain()
            c.w.transport.abort()

        for _ in range(10):                     # warm up: pools, buffers, code paths
            await cut_upload()
        await asyncio.sleep(0.3)
        before = rss(pid)
        for _ in range(150):
            await cut_upload()
        await asyncio.sleep(0.5)
        grown = rss(pid) - before
        assert grown < 2 * limit, f"RSS grew {grown / 2**20:.0f} MiB after 150 cut uploads"
        # mirror copies of a 2 MiB chunked answer, each cut at 1 MiB
        async with aiohttp.ClientSession() as s:
            for _ in range(5):
                async with s.get(gw.url("/v1/raw/big-chunked")) as r:
                    assert r.status == 200 and len(await r.read()) == 2 << 20
            await asyncio.sleep(0.3)
            before = rss(pid)
            for _ in range(100):
                async with s.get(gw.url("/v1/raw/big-chunked")) as r:
                    await r.read()
        await asyncio.sleep(0.5)
        text = await metrics(gw)
        errors = metric_value(text, "serve_gateway_shadow_requests_total", service="raw",
                              version="v2", result="error")
        assert errors is not None and errors >= 50
        grown = rss(pid) - before
        assert grown < 2 * limit, f"RSS grew {grown / 2**20:.0f} MiB after 100 cut mirror copies"
