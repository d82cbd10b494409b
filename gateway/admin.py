"""The admin HTTP API, on its own listener (never reachable through the data listener)."""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from typing import Any

import orjson
from aiohttp import web
from prometheus_client import CONTENT_TYPE_LATEST

from gateway.metrics import Metrics


def _json(doc: Any, status: int = 200) -> web.Response:
    return web.Response(body=orjson.dumps(doc, option=orjson.OPT_INDENT_2), status=status,
                        content_type="application/json")


class AdminServer:
    """GET /healthz, /readyz, /status, /metrics."""

    def __init__(self, status: Callable[[], dict[str, Any]], metrics: Metrics) -> None:
        self._status = status
        self._metrics = metrics
        self.app = web.Application()
        self.app.router.add_get("/healthz", self.healthz)
        self.app.router.add_get("/readyz", self.readyz)
        self.app.router.add_get("/status", self.status)
        self.app.router.add_get("/metrics", self.metrics)
        self._runner: web.AppRunner | None = None

    def add_route(self, method: str, path: str,
                  handler: Callable[[web.Request], Awaitable[web.StreamResponse]],
                  mutating: bool = False) -> None:
        """Features add their endpoints here. A ``mutating`` route is POST only and gets the
        token and Origin rules (GET on it is 405)."""
        self.app.router.add_route(method, path, handler)

    async def start(self, host: str, port: int) -> int:
        self._runner = web.AppRunner(self.app, access_log=None)
        await self._runner.setup()
        site = web.TCPSite(self._runner, host, port, reuse_address=True)
        await site.start()
        server = site._server
        assert server is not None
        return int(server.sockets[0].getsockname()[1])  # type: ignore[attr-defined]

    async def stop(self) -> None:
        if self._runner is not None:
            await self._runner.cleanup()

    async def healthz(self, request: web.Request) -> web.Response:
        return _json({"status": "ok"})

    async def readyz(self, request: web.Request) -> web.Response:
        doc = self._status()
        not_ready = [name for name, svc in doc["services"].items()
                     if not any(v["ready"] for v in svc["versions"].values())]
        return _json({"ready": not not_ready, "not_ready": not_ready}, 200 if not not_ready else 503)

    async def status(self, request: web.Request) -> web.Response:
        return _json(self._status())

    async def metrics(self, request: web.Request) -> web.Response:
        return web.Response(body=self._metrics.render(),
                            headers={"Content-Type": CONTENT_TYPE_LATEST})
