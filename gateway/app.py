"""Composition root: builds both planes from a Spec and owns start-up and ordered shutdown.

Start: runtime -> supervisor (adopts survivors, starts replicas) -> routing table -> data
listener -> admin listener. Stop (SIGTERM / SIGINT): stop accepting and drain in-flight
requests (bounded) -> stop every replica -> close the admin listener and the runtime.
Signal handlers only enqueue; this loop acts.
"""

from __future__ import annotations

import asyncio
import logging
import signal
import time
from pathlib import Path
from typing import Any

from gateway.admin import AdminServer
from gateway.control.supervisor import Supervisor
from gateway.dataplane.server import DataPlane
from gateway.dataplane.table import TableHolder, build_table
from gateway.metrics import Metrics
from gateway.runtimes import create_runtime
from gateway.runtimes.base import Runtime
from gateway.spec import Spec
from gateway.spec.types import split_listen

log = logging.getLogger("gateway")


class Gateway:
    def __init__(self, spec: Spec, config_path: str | Path | None = None) -> None:
        self.spec = spec
        self.config_path = Path(config_path) if config_path else None
        self.loaded_at = time.time()
        self.metrics = Metrics()
        self.runtime: Runtime = create_runtime(spec.gateway.runtime, **_runtime_options(spec))
        g = spec.gateway
        self.supervisor = Supervisor(self.runtime, self.metrics, stop_grace=g.stop_grace,
                                     drain_timeout=g.drain_timeout, max_waiting=g.queue.max_waiting)
        self.holder = TableHolder()
        self.dataplane = DataPlane(self.holder, self.metrics)
        self.admin = AdminServer(self.status, self.metrics)
        self.ports: dict[str, int] = {}
        # live weight changes (admin API / CLI, rollouts): service -> version -> weight.
        # The next file reload replaces them.
        self.weight_overrides: dict[str, dict[str, int]] = {}
        self._commands: asyncio.Queue[str] = asyncio.Queue()

    async def start(self) -> None:
        spec = self.spec
        Path(spec.gateway.state_dir).mkdir(parents=True, exist_ok=True)
        self.supervisor.apply(spec)
        self.rebuild_table()
        self._record_config()
        await self.supervisor.start()
        self.ports["data"] = await self.dataplane.start(*split_listen(spec.gateway.listen))
        self.ports["admin"] = await self.admin.start(*split_listen(spec.gateway.admin.listen))
        log.info("serving on %s (admin %s), %d services, config %s",
                 _addr(spec.gateway.listen, self.ports["data"]),
                 _addr(spec.gateway.admin.listen, self.ports["admin"]),
                 len(spec.services), spec.digest())

    async def stop(self) -> None:
        g = self.spec.gateway
        log.info("stopping: draining in-flight requests (up to %.0fs)", g.drain_timeout)
        await self.dataplane.stop(g.drain_timeout)
        log.info("stopping replicas")
        await self.supervisor.shutdown()
        await self.admin.stop()
        await self.runtime.close()
        log.info("stopped")

    async def run(self) -> None:
        """Serve until SIGTERM or SIGINT."""
        loop = asyncio.get_running_loop()
        for sig, cmd in ((signal.SIGTERM, "stop"), (signal.SIGINT, "stop")):
            loop.add_signal_handler(sig, self._commands.put_nowait, cmd)
        await self.start()
        try:
            while await self._commands.get() != "stop":
                pass
        finally:
            await self.stop()

    def rebuild_table(self) -> None:
        """Compile the running spec plus live overrides into a new table and swap it in: the
        one way routing changes."""
        self.holder.swap(build_table(self.spec, self.supervisor.replica_sets(), self.metrics,
                                     self.weight_overrides))

    def status(self) -> dict[str, Any]:
        table = self.holder.current
        groups = self.supervisor.status()
        services = {}
        for name, svc in self.spec.services.items():
            route = table.by_name.get(name)
            weights = dict(zip(route.split.names, route.split.weights)) if route else {}
            services[name] = {
                "route": svc.route,
                "weights": {v: weights.get(v, 0) for v in svc.versions},
                "versions": groups.get(name, {}),
            }
        return {"config": {"path": str(self.config_path) if self.config_path else None,
                           "hash": self.spec.digest(), "loaded_at": self.loaded_at},
                "runtime": self.runtime.name, "listen": self.ports, "services": services}

    def _record_config(self) -> None:
        self.metrics.config_info.info({"hash": self.spec.digest()})
        self.metrics.config_loaded.set(self.loaded_at)


def _runtime_options(spec: Spec) -> dict[str, Any]:
    g = spec.gateway
    opts: dict[str, Any] = {"state_dir": g.state_dir, "instance": g.instance}
    if g.runtime == "docker":
        opts.update(network=g.docker.network, base_url=g.docker.base_url, gpus=g.docker.gpus)
    return opts


def _addr(listen: str, port: int) -> str:
    host, _ = split_listen(listen)
    return f"{host}:{port}"
