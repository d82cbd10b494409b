"""Traffic policies end to end: one real gateway, real echo workers, loopback only.

One gateway (module scope: the workers start once) serves every case:
- ``ab``: header, cookie and regex rules, then 90/10/0 weights, sticky by x-user-id header;
- ``web``: 50/50 sticky by a cookie the gateway sets;
- ``agree`` / ``disagree``: 50% mirrored to a version that answers the same / differently;
- ``plain``, ``bad``, ``dead``: the primary's latency alone, with a mirror that never answers
  (or answers 100 MB), and with a mirror that has no replica at all.
"""

from __future__ import annotations

import asyncio
import os
import re
import subprocess
import sys
from collections import Counter
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import aiohttp
import pytest
import pytest_asyncio

from tests.helpers import ECHO, REPO_ROOT, GatewayProc, wait_until

pytestmark = pytest.mark.asyncio(loop_scope="module")

BLACKHOLE = f"{{python}} {REPO_ROOT}/tests/workers/blackhole.py {{port}}"


def version(command: str = ECHO, tag: str | None = None, replicas: int = 1,
            **env: str) -> dict[str, Any]:
    return {"command": command, "replicas": replicas, "env": {**env, **({"ECHO_TAG": tag} if tag else {})}}


def service(route: str, versions: dict[str, Any], traffic: dict[str, Any], **extra: Any) -> dict:
    return {"route": route, "rewrite": "/predict", "versions": versions, "traffic": traffic,
            **extra}


def mirrored(route: str, mirror: dict[str, Any], **shadow: Any) -> dict:
    return service(route, {"p": version(tag="same"), "m": shadow or version(tag="same")},
                   {"weights": {"p": 1, "m": 0}, "mirror": {"percent": 50, **mirror, "to": "m"}},
                   mirror_post=True)


def services(log: Path) -> dict[str, Any]:
    bad_mirror = {"percent": 100, "timeout": "300ms", "concurrency": 2, "queue": 2}
    return {
        "ab": service("/ab", {"v1": version(tag="v1"), "v2": version(tag="v2"),
                              "v3": version(tag="v3")}, {
            "rules": [
                {"match": {"header": {"x-model-version": "v2"}}, "to": "v2"},
                {"match": {"cookie": {"ab-group": "beta"}}, "to": "v3"},
                {"match": {"header": {"x-user": {"regex": "qa-[0-9]+"}},
                           "cookie": {"ab-group": "internal"}}, "to": "v3"},
            ],
            "weights": {"v1": 90, "v2": 10, "v3": 0},
            "sticky": {"header": "x-user-id"}}),
        "web": service("/web", {"a": version(tag="a"), "b": version(tag="b")},
                       {"weights": {"a": 50, "b": 50}, "sticky": {"cookie": "sgw-bucket",
                                                                   "max_age": "1h"}}),
        "agree": mirrored("/agree", {}),
        "disagree": mirrored("/disagree", {"comparator": "exact"},
                             **version(tag="different")),
        "plain": service("/plain", {"v1": version()}, {"served_by_header": False}),
        "bad": mirrored("/bad", bad_mirror, **version(BLACKHOLE, BLACKHOLE_LOG=str(log))),
        "dead": mirrored("/dead", bad_mirror, **version(replicas=0)),
    }


@pytest_asyncio.fixture(loop_scope="module", scope="module")
async def gw(tmp_path_factory: pytest.TempPathFactory) -> AsyncIterator[GatewayProc]:
    tmp = tmp_path_factory.mktemp("traffic")
    async with GatewayProc(tmp, services(tmp / "blackhole.log"), drain_timeout="1s",
                           stop_grace="1s") as g:
        yield g


@pytest_asyncio.fixture(loop_scope="module")
async def http() -> AsyncIterator[aiohttp.ClientSession]:
    async with aiohttp.ClientSession(cookie_jar=aiohttp.DummyCookieJar()) as s:
        yield s


async def call(s: aiohttp.ClientSession, gw: GatewayProc, route: str, doc: Any = None,
               **kw: Any) -> tuple[str | None, aiohttp.ClientResponse]:
    """POST one document; returns the tag the answering worker put on it, and the response."""
    async with s.post(gw.url(route), json={"x": 1} if doc is None else doc, **kw) as r:
        assert r.status == 200, await r.text()
        body = await r.json()
        return body["predictions"][0].get("tag"), r


async def tags(s: aiohttp.ClientSession, gw: GatewayProc, route: str, n: int,
               **kw: Any) -> Counter[str | None]:
    out: Counter[str | None] = Counter()
    for _ in range(0, n, 10):      # ten at a time: concurrent, but bounded
        for tag, _ in await asyncio.gather(*(call(s, gw, route, **kw) for _ in range(10))):
            out[tag] += 1
    return out


async def metrics(s: aiohttp.ClientSession, gw: GatewayProc) -> dict[str, float]:
    async with s.get(gw.admin("/metrics")) as r:
        text = await r.text()
    return {m[1]: float(m[2]) for m in re.finditer(r"^(serve_gateway_shadow_\S+) (\S+)$", text,
                                                    re.MULTILINE)}


def shadow(kind: str, service: str, **labels: str) -> str:
    extra = "".join(f'{k}="{v}",' for k, v in labels.items())
    return f'serve_gateway_shadow_{kind}{{{extra}service="{service}",version="m"}}'


# -- rules ------------------------------------------------------------------------------------
async def test_header_and_cookie_rules_route_and_say_where(gw: GatewayProc,
                                                           http: aiohttp.ClientSession) -> None:
    tag, r = await call(http, gw, "/ab", headers={"x-model-version": "v2"})
    assert tag == "v2" and r.headers["x-served-by"] == "ab/v2"
    tag, r = await call(http, gw, "/ab", headers={"Cookie": "ab-group=beta"})
    assert tag == "v3" and r.headers["x-served-by"] == "ab/v3"
    both = {"x-user": "qa-7", "Cookie": "other=1; ab-group=internal"}
    assert (await call(http, gw, "/ab", headers=both))[0] == "v3"
    # one condition of the match missing, or the regex only matching part of the value: weights
    for headers in ({"x-user": "qa-7"}, {**both, "x-user": "qa-7-x"}):
        assert await tags(http, gw, "/ab", 10, headers=headers) == {"v1": 9, "v2": 1}
    _, r = await call(http, gw, "/plain")
    assert "x-served-by" not in r.headers


async def test_90_10_split_counts(gw: GatewayProc, http: aiohttp.ClientSession) -> None:
    assert await tags(http, gw, "/ab", 200) == {"v1": 180, "v2": 20}


# -- sticky -----------------------------------------------------------------------------------
async def test_sticky_header_keeps_each_user_on_one_version(gw: GatewayProc,
                                                            http: aiohttp.ClientSession) -> None:
    users = [f"user-{i}" for i in range(40)]
    first = [(await call(http, gw, "/ab", headers={"x-user-id": u}))[0] for u in users]
    again = [(await call(http, gw, "/ab", headers={"x-user-id": u}))[0] for u in users]
    assert first == again and set(first) <= {"v1", "v2"}


async def test_sticky_cookie_is_set_then_honoured(gw: GatewayProc,
                                                  http: aiohttp.ClientSession) -> None:
    tag, r = await call(http, gw, "/web")
    cookie = r.headers["Set-Cookie"]
    value = re.match(r"sgw-bucket=([0-9a-f]{16}); ", cookie)
    assert value, cookie
    for attr in ("Path=/", "Max-Age=3600", "HttpOnly", "SameSite=Lax"):
        assert attr in cookie.split("; ")
    for _ in range(10):
        again, r2 = await call(http, gw, "/web", headers={"Cookie": f"sgw-bucket={value[1]}"})
        assert again == tag and "Set-Cookie" not in r2.headers
    fresh = await tags(http, gw, "/web", 40)      # new visitors: each drawn a random bucket
    assert set(fresh) == {"a", "b"}


# -- live override ----------------------------------------------------------------------------
async def test_live_override_via_admin_api(gw: GatewayProc, http: aiohttp.ClientSession) -> None:
    url = gw.admin("/services/ab/traffic")
    try:
        async with http.post(url, json={"weights": {"v2": 3, "v3": 1}}, headers=gw.auth) as r:
            assert r.status == 200
            doc = await r.json()
        assert doc["weights"] == {"v1": 0, "v2": 3, "v3": 1}
        assert await tags(http, gw, "/ab", 40) == {"v2": 30, "v3": 10}
        svc = (await gw.status())["services"]["ab"]
        assert svc["weights"] == {"v1": 0, "v2": 3, "v3": 1}
        assert svc["file_weights"] == {"v1": 90, "v2": 10, "v3": 0}
        assert svc["weight_override"] == {"v1": 0, "v2": 3, "v3": 1}
        for bad in ({"weights": {"v9": 1}}, {"weights": {"v1": -1}}, {"weights": {"v1": 0}},
                    {"weights": {"v1": "x"}}):
            async with http.post(url, json=bad, headers=gw.auth) as r:
                assert r.status == 400, bad
        async with http.post(gw.admin("/services/nope/traffic"), json={"weights": {}}, headers=gw.auth) as r:
            assert r.status == 404
        async with http.get(url) as r:
            assert r.status == 405
    finally:
        async with http.post(url, json={"reset": True}, headers=gw.auth) as r:
            assert r.status == 200 and (await r.json())["weight_override"] is None
    assert (await gw.status())["services"]["ab"]["weights"] == {"v1": 90, "v2": 10, "v3": 0}


async def test_live_override_via_cli(gw: GatewayProc, http: aiohttp.ClientSession) -> None:
    exe = str(Path(sys.executable).with_name("serve-gateway"))

    def cli(*args: str) -> subprocess.CompletedProcess[str]:
        return subprocess.run([exe, "traffic", "ab", *args, "-c", str(gw.config_path)],
                              capture_output=True, text=True, timeout=30, check=False,
                              env={**os.environ, "NO_PROXY": "*"})

    try:
        done = await asyncio.to_thread(cli, "v1=0", "v3=100")
        assert done.returncode == 0, done.stderr
        assert "v3=100 (100%)" in done.stdout and "live override" in done.stdout
        assert await tags(http, gw, "/ab", 10) == {"v3": 10}
        done = await asyncio.to_thread(cli, "v9=1")
        assert done.returncode == 1 and "no version named v9" in done.stderr
        done = await asyncio.to_thread(cli, "v1=lots")
        assert done.returncode == 2
    finally:
        done = await asyncio.to_thread(cli, "--reset")
        assert done.returncode == 0, done.stderr
    assert await tags(http, gw, "/ab", 10) == {"v1": 9, "v2": 1}


# -- mirroring --------------------------------------------------------------------------------
async def test_mirror_counts_and_agreement(gw: GatewayProc, http: aiohttp.ClientSession) -> None:
    for route in ("/agree", "/disagree"):
        assert await tags(http, gw, route, 20) == {"same": 20}     # the primary answers alone
    async with http.put(gw.url("/agree"), json={"x": 1}) as r:      # not a mirrored method
        await r.read()

    async def counted() -> bool:
        m = await metrics(http, gw)
        return all(m.get(shadow("requests_total", s, result="sent")) == 10
                   for s in ("agree", "disagree"))

    await wait_until(counted, 10, what="10 mirror copies answered per service")
    m = await metrics(http, gw)
    assert m[shadow("agreement_ratio", "agree")] == 1.0
    assert m[shadow("agreement_ratio", "disagree")] == 0.0
    assert m[shadow("comparisons_total", "disagree", result="disagree")] == 10
    for s in ("agree", "disagree"):
        assert m[shadow("requests_total", s, result="dropped")] == 0
        assert m[shadow("requests_total", s, result="error")] == 0
        assert m[shadow("status_mismatch_total", s)] == 0
        assert m[shadow("latency_difference_seconds_count", s)] == 10


async def test_slow_huge_or_dead_mirror_leaves_the_primary_alone(
        gw: GatewayProc, http: aiohttp.ClientSession) -> None:
    loop = asyncio.get_running_loop()

    async def p99(route: str, n: int = 240, conc: int = 6) -> float:
        lat: list[float] = []

        async def one(i: int) -> None:
            t0 = loop.time()
            async with http.post(gw.url(route), json={"i": i, "m": "huge" if i % 2 else ""}) as r:
                assert r.status == 200
                await r.read()
            lat.append(loop.time() - t0)

        for i in range(0, n, conc):
            await asyncio.gather(*(one(i + j) for j in range(conc)))
        lat.sort()
        return lat[int(len(lat) * 0.99) - 1]

    await p99("/plain", 30)                               # warm every pool first
    base = [await p99("/plain")]
    bad = await p99("/bad")
    dead = await p99("/dead")
    base.append(await p99("/plain"))
    # generous: two busy cores shared with other test runs; a mirror that held the primary up
    # would cost it 300 ms (the mirror timeout) or more
    limit = 2 * max(base) + 0.05
    assert bad <= limit and dead <= limit, (base, bad, dead)

    async def failed() -> bool:     # timed out (300 ms after its send), or too big
        return (await metrics(http, gw))[shadow("requests_total", "bad", result="error")] > 0

    await wait_until(failed, 5, what="a copy to the bad mirror to fail")
    m = await metrics(http, gw)
    assert m[shadow("requests_total", "dead", result="error")] > 0
    assert m[shadow("requests_total", "bad", result="sent")] == 0
    assert m[shadow("requests_total", "bad", result="dropped")] > 0   # the gate was full
    await wait_until(lambda: (gw.config_path.parent / "blackhole.log").exists(), 5,
                     what="the mirror to receive a copy")
    seen = (gw.config_path.parent / "blackhole.log").read_text().splitlines()
    assert seen and all(line == "POST /predict HTTP/1.1 x-shadow=1" for line in seen)
