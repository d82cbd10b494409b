"""GET /metrics after real traffic passes `promtool check metrics` and carries every family
an operator graphs, with bounded labels."""

from __future__ import annotations

import asyncio
from pathlib import Path

import aiohttp

from tests.helpers import GatewayProc, echo_service, metric_value

PROMTOOL = "/usr/bin/promtool"


async def promtool_check(text: str) -> tuple[int, str]:
    proc = await asyncio.create_subprocess_exec(
        PROMTOOL, "check", "metrics", stdin=asyncio.subprocess.PIPE,
        stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.STDOUT)
    out, _ = await asyncio.wait_for(proc.communicate(text.encode()), 30)
    assert proc.returncode is not None
    return proc.returncode, out.decode()


async def test_metrics_pass_promtool(tmp_path: Path) -> None:
    async with GatewayProc(tmp_path, {"echo": echo_service(replicas=1)}) as gw, \
            aiohttp.ClientSession() as s:
        for _ in range(5):
            async with s.post(gw.url("/v1/echo"), json={"x": 1}) as r:
                assert r.status == 200
        async with s.post(gw.url("/v1/echo"), json={"fail": "boom"}) as r:
            assert r.status == 500                                   # the model raised
        async with s.get(gw.url("/no/such/secret-path")) as r:
            assert r.status == 404
        gw.config_path.write_text("gateway: [unclosed\n")
        async with s.post(gw.admin("/reload"), headers=gw.auth) as r:
            assert r.status == 422
        gw.rewrite(gw.config)
        async with s.post(gw.admin("/reload"), headers=gw.auth) as r:
            assert r.status == 200
        config_hash = (await gw.status())["config"]["hash"]
        async with s.get(gw.admin("/metrics")) as r:
            assert r.status == 200 and r.headers["Content-Type"].startswith("text/plain")
            text = await r.text()

    rc, report = await promtool_check(text)
    assert rc == 0 and report.strip() == "", f"promtool check metrics:\n{report}"

    def value(name: str, **labels: str) -> float | None:
        return metric_value(text, name, **labels)

    echo = {"service": "echo", "version": "v1"}
    assert value("serve_gateway_requests_total", code="200", **echo) == 5
    assert value("serve_gateway_requests_total", code="500", **echo) == 1
    assert value("serve_gateway_request_duration_seconds_count", **echo) == 6
    assert value("serve_gateway_upstream_duration_seconds_count", **echo) == 6
    assert value("serve_gateway_upstream_errors_total", kind="5xx", **echo) == 1
    assert value("serve_gateway_errors_total", kind="no_route") == 1
    assert value("serve_gateway_replicas", state="ready", **echo) == 1
    assert value("serve_gateway_replicas", state="starting", **echo) == 0
    assert value("serve_gateway_inflight_requests", **echo) == 0
    assert value("serve_gateway_config_reloads_total", result="failure") == 1
    assert value("serve_gateway_config_reloads_total", result="success") == 1
    assert value("serve_gateway_config_info", hash=config_hash) == 1
    assert value("serve_gateway_config_restart_pending") == 0
    assert (value("process_resident_memory_bytes") or 0) > 0
    for family in ("serve_gateway_queue_wait_seconds", "serve_gateway_retries_total",
                   "serve_gateway_replica_restarts_total",
                   "serve_gateway_replica_cold_start_seconds_bucket"):
        assert family in text, family
    assert "secret-path" not in text        # paths never become label values
