"""A real Prometheus (Debian's /usr/bin/prometheus) scrapes a running gateway; every expression
of the Grafana dashboards in config/grafana is queried through its HTTP API: none may fail, and
those an operator relies on must have data after some traffic, including the panels of events
that did not happen (replica exits) or happened before the window (cold starts)."""

from __future__ import annotations

import asyncio
import json
import math
import shutil
import subprocess
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import aiohttp

from tests.helpers import ECHO, REPO_ROOT, GatewayProc, Load, free_port, wait_until

# Debian's package (scripts/setup.sh installs it): missing, the test fails rather than skips
PROMETHEUS = shutil.which("prometheus") or "/usr/bin/prometheus"
DASHBOARDS = sorted((REPO_ROOT / "config" / "grafana" / "dashboards").glob("*.json"))
# Grafana's variables, as the dashboard is opened: all services, a window that holds a few
# 1 s scrapes, the last 5 minutes
VARIABLES = {"$service": ".*", "$__rate_interval": "15s", "$__range": "5m",
             "$__interval": "1s"}
# panels that may be empty here: a rollout phase shows only while a rollout runs
MAY_BE_EMPTY = {"Rollout phase"}


def panels(doc: dict[str, Any]) -> Iterator[dict[str, Any]]:
    for panel in doc.get("panels", []):
        yield panel
        yield from panels(panel)          # rows hold their panels


def expressions() -> list[tuple[str, str, str]]:
    """(dashboard, panel title, expr) of every Prometheus target."""
    out = []
    for path in DASHBOARDS:
        doc = json.loads(path.read_text())
        for panel in panels(doc):
            for target in panel.get("targets", []):
                if target.get("expr"):
                    out.append((path.name, panel.get("title", ""), target["expr"]))
    return out


def substitute(expr: str) -> str:
    for name in sorted(VARIABLES, key=len, reverse=True):
        expr = expr.replace(name, VARIABLES[name])
    assert "$" not in expr, f"a Grafana variable this test does not know: {expr}"
    return expr


class Prometheus:
    def __init__(self, tmp_path: Path, target: str) -> None:
        self.port = free_port()
        self.dir = tmp_path / "prometheus"
        self.dir.mkdir()
        config = self.dir / "prometheus.yml"
        config.write_text(
            "global: {scrape_interval: 1s, evaluation_interval: 1s}\n"
            "scrape_configs:\n"
            f"  - job_name: serve-gateway\n    static_configs: [{{targets: ['{target}']}}]\n")
        self.log = self.dir / "prometheus.log"
        self.proc = subprocess.Popen(
            [PROMETHEUS, f"--config.file={config}", f"--storage.tsdb.path={self.dir / 'data'}",
             f"--web.listen-address=127.0.0.1:{self.port}"],
            stdout=self.log.open("wb"), stderr=subprocess.STDOUT)

    async def query(self, s: aiohttp.ClientSession, expr: str) -> dict[str, Any]:
        try:
            async with s.get(f"http://127.0.0.1:{self.port}/api/v1/query",
                             params={"query": expr}) as r:
                doc: dict[str, Any] = await r.json(content_type=None)
        except aiohttp.ClientConnectionError as exc:     # still starting
            return {"status": "unreachable", "error": repr(exc)}
        return doc

    def stop(self) -> None:
        self.proc.terminate()
        try:
            self.proc.wait(10)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            self.proc.wait()


def finite(result: list[dict[str, Any]]) -> bool:
    return any(math.isfinite(float(r["value"][1])) for r in result)


async def test_every_dashboard_expression_works_on_a_real_prometheus(tmp_path: Path) -> None:
    exprs = expressions()
    assert len(exprs) >= 20, exprs          # the dashboard is there and was read
    services = {
        "echo": {"route": "/v1/echo", "rewrite": "/predict", "mirror_post": True,
                 "versions": {"v1": {"command": ECHO, "replicas": 1},
                              "v2": {"command": ECHO, "replicas": 1}},
                 "traffic": {"weights": {"v1": 100, "v2": 0},
                             "mirror": {"to": "v2", "percent": 100}}},
        "batched": {"route": "/v1/batched", "rewrite": "/predict",
                    "batching": {"max_batch_size": 8},
                    "versions": {"v1": {"command": ECHO, "replicas": 1}}},
    }
    async with GatewayProc(tmp_path, services) as gw, aiohttp.ClientSession() as s:
        prom = Prometheus(tmp_path, f"127.0.0.1:{gw.admin_port}")
        try:
            async with s.post(gw.admin("/reload"), headers=gw.auth) as r:
                assert r.status == 200
            async with s.get(gw.url("/nowhere")) as r:
                assert r.status == 404
            ok = Load([gw.url("/v1/echo"), gw.url("/v1/batched")], clients=2, pause=0.05)
            failing = Load([gw.url("/v1/echo")], clients=1, body=b'{"fail": "boom"}', pause=0.2)
            async with ok, failing:
                async def scraped() -> bool:
                    doc = await prom.query(s, "sum(rate(serve_gateway_requests_total[15s])) > 0"
                                              " and sum(serve_gateway_shadow_agreement_ratio) >= 0")
                    return doc.get("status") == "success" and bool(doc["data"]["result"])

                await wait_until(scraped, 60, what="prometheus to scrape traffic", interval=0.5)
                problems = []
                for dashboard, title, expr in exprs:
                    doc = await prom.query(s, substitute(expr))
                    if doc.get("status") != "success":
                        problems.append(f"{dashboard} / {title}: {expr}\n  -> {doc}")
                    elif title not in MAY_BE_EMPTY and not doc["data"]["result"]:
                        problems.append(f"{dashboard} / {title}: no data for {expr}")
                # the events that did not happen read 0, not "no data"
                for expr in ("sum(increase(serve_gateway_replica_exits_total[5m]))",
                             'sum(rate(serve_gateway_errors_total{kind="overloaded"}[15s]))',
                             'sum(rate(serve_gateway_upstream_errors_total{kind="connect"}[15s]))',
                             'sum(rate(serve_gateway_timeouts_total{kind="header_read"}[15s]))'):
                    doc = await prom.query(s, expr)
                    if doc.get("status") != "success" or not finite(doc["data"]["result"]):
                        problems.append(f"{expr}: no value ({doc})")
                # cold starts happened minutes... or seconds ago: the panel shows them anyway
                cold = [e for _, t, e in exprs if t.startswith("Cold start")]
                for expr in cold:
                    doc = await prom.query(s, substitute(expr).replace("[5m]", "[1s]"))
                    if not finite(doc["data"]["result"]):
                        problems.append(f"cold start with no start in the window: {doc}")
            assert not ok.failures, ok.failures[:3]
            assert not problems, "\n".join(problems) + "\n" + prom.log.read_text()[-2000:]
        finally:
            prom.stop()
    await asyncio.sleep(0)
