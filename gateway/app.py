"""Composition root: builds both planes from a Spec and owns start-up and ordered shutdown.

Start: the state lock (one gateway per state_dir and instance, statelock.py) -> runtime (whose
``check`` refuses a plan it cannot run, e.g. too many GPUs) -> supervisor
(adopts survivors, starts replicas) -> routing table -> data listener -> admin listener. Stop
(SIGTERM / SIGINT): stop accepting and drain in-flight requests (bounded) -> stop every replica
(``up --keep-replicas``: leave them running for the next ``up`` to adopt) -> close the admin
listener and the runtime.
Signal handlers only enqueue; this loop acts. SIGHUP, ``POST /reload`` and ``serve-gateway
reload`` reload the config file (``reload()``, see control/reload.py).

With ``gateway.workers`` >= 2 this process is the controller: it holds the data port instead of
listening, and after the admin listener starts N data-plane processes (control/dataplanes.py)
that follow its routing snapshots (control/publish.py); on stop they drain first. With
``workers: 0`` it is only the controller: data planes on other hosts serve (deploy/stack.yml).
"""

from __future__ import annotations

import asyncio
import logging
import os
import signal
import socket
import time
import uuid
from collections.abc import Mapping
from pathlib import Path
from typing import Any

from gateway.admin import handlers
from gateway.admin.adminclient import TOKEN_ENV
from gateway.admin.server import AdminServer
from gateway.control.autoscaler import Autoscaler
from gateway.control.dataplanes import DataPlanes, controller_url, hold_port, resolve_workers
from gateway.control.desired import Desired, Layers, merge
from gateway.control.gather import Gather
from gateway.control.publish import Publisher
from gateway.control.reload import ReloadResult, reload_config
from gateway.control.rollout.store import store_for
from gateway.control.rollouts import Rollouts
from gateway.control.supervisor import Supervisor
from gateway.dataplane import snapshot
from gateway.dataplane.balance import ReplicaSet
from gateway.dataplane.gcsettle import settle_gc
from gateway.dataplane.server import DataPlane
from gateway.dataplane.table import RoutingTable, TableHolder, build_table, service_weights
from gateway.errors import ConfigError, GatewayError
from gateway.metrics import Metrics
from gateway.runtimes import create_runtime
from gateway.runtimes.base import Runtime
from gateway.spec import Spec
from gateway.spec.models import ServiceSpec
from gateway.spec.types import split_listen
from gateway.statelock import StateLock

log = logging.getLogger("gateway")


class Gateway:
    def __init__(self, spec: Spec, config_path: str | Path | None = None) -> None:
        self.spec = spec
        self.config_path = Path(config_path) if config_path else None
        self.loaded_at = time.time()
        self.metrics = Metrics()
        # one gateway per state_dir and instance; taken first thing in start()
        self.state_lock = StateLock(spec.gateway.state_dir, spec.gateway.instance)
        self.runtime: Runtime = create_runtime(spec.gateway.runtime, **_runtime_options(spec))
        g = spec.gateway
        self.supervisor = Supervisor(self.runtime, self.metrics, stop_grace=g.stop_grace,
                                     drain_timeout=g.drain_timeout, max_waiting=g.queue.max_waiting)
        self.holder = TableHolder()
        self.dataplane = DataPlane(self.holder, self.metrics)
        self.admin = AdminServer(self.status, self.metrics)
        self.autoscaler = Autoscaler(self.supervisor, self.metrics, publish=self.commit)
        self.supervisor.on_demand = self.autoscaler.demand   # scale from zero at once
        self.supervisor.on_joined = self.commit   # a version added by a reload is ready
        self.rollouts = Rollouts(self.supervisor, self.metrics, self.commit)
        self.autoscaler.held = self.rollouts.held        # a rollout sizes its versions
        self.last_reload: dict[str, Any] | None = None
        self._reload_lock = asyncio.Lock()
        self.ports: dict[str, int] = {}
        # live weight changes (admin API / CLI, rollouts): service -> version -> weight.
        # The next file reload replaces them.
        self.weight_overrides: dict[str, dict[str, int]] = {}
        self._commands: asyncio.Queue[str] = asyncio.Queue()
        # gateway.workers >= 2: this process is the controller and N children serve the data
        # port; either way other hosts' data planes may follow its snapshots (README: "Processes")
        self.workers = resolve_workers(g.workers)
        self.publisher = Publisher(self._snapshot)
        self.supervisor.on_change = self.publisher.changed
        # their observations: /metrics, the autoscaler, canary analysis and drains see them all
        self.gather = Gather(self.metrics, self.supervisor.replica_set)
        self.dataplanes = DataPlanes(self.workers if self.workers > 1 else 0, self.gather,
                                     main=self.workers == 1)
        # workers 1 and other hosts' data planes: this process keeps its share of the limits
        self.dataplanes.on_reshare = self.supervisor.reshare
        drained = self.gather.drain_check(lambda: (self.publisher.epoch, self.publisher.version))
        # a replica stops once nothing is in flight on it here (workers 1) and no other
        # data-plane process routes to it or has a request on it
        self.supervisor.drained = lambda ep: ep.inflight == 0 and drained(ep)
        self.supervisor.inflight = lambda ep: ep.inflight + self.gather.endpoint_inflight(ep)
        self._committed: tuple[Desired, Mapping[tuple[str, str], ReplicaSet]] | None = None
        self._held_port: socket.socket | None = None
        self.incarnation, self.started_at = uuid.uuid4().hex, time.time()
        self._listening = False   # start() got as far as the data port
        handlers.install(self.admin, self)   # the admin API sees the facade below, nothing else

    async def start(self) -> None:
        spec = self.spec
        self.state_lock.acquire(str(self.config_path or ""))   # before anything is touched
        # refuses an open admin listener before any start
        self.admin.configure(spec.gateway.admin, spec.gateway.state_dir)
        await self._check_runtime(spec)            # refuses a plan needing more GPUs than exist
        self._start_tracing()                      # refuses an exporter without the [otel] extra
        # once at start-up, before any traffic: a blocking mkdir costs nothing here
        Path(spec.gateway.state_dir).mkdir(parents=True, exist_ok=True)  # noqa: ASYNC240
        # resumes journaled rollouts, from where the runtime keeps them (files, or the swarm)
        store = store_for(self.runtime, spec.gateway.state_dir)
        loaded = await asyncio.to_thread(store.load_all, self.rollouts.clock())
        self.rollouts.restore(spec, store, loaded)
        self._rescale()
        self.commit()
        self._configure_dataplane()
        self._record_config()
        await self.supervisor.start()
        self.autoscaler.start()
        self.rollouts.start()
        if self.dataplanes.count:
            self._held_port = hold_port(*split_listen(spec.gateway.listen))
            self.ports["data"] = self._held_port.getsockname()[1]
        elif self.workers == 1:
            self.ports["data"] = await self.dataplane.start(*split_listen(spec.gateway.listen))
        self._listening = True   # with workers >= 2, serving() asks the processes too
        self.ports["admin"] = await self.admin.start(*split_listen(spec.gateway.admin.listen))
        # <state_dir>/admin-token (0600) for the CLI; only once the listener is ours, so a second
        # `up` that cannot bind never replaces the first one's token
        self.admin.publish_token()
        if self.dataplanes.count:
            await self._start_dataplanes()
        self.dataplanes.watch()
        log.info("serving on %s (admin %s), %d services, config %s",
                 _addr(spec.gateway.listen, self.ports["data"]) if "data" in self.ports
                 else "no data port (workers 0: data planes elsewhere follow the admin port)",
                 _addr(spec.gateway.admin.listen, self.ports["admin"]),
                 len(spec.services), spec.digest())

    async def _start_dataplanes(self) -> None:
        """The children, once the admin listener (their snapshots) is up; they bind the data
        port after their first snapshot, and ``up`` says "serving" once every one has."""
        g = self.spec.gateway
        self.dataplanes.start(controller_url(g.admin.listen, self.ports["admin"]),
                              self.admin.control_token, split_listen(g.listen)[0],
                              self.ports["data"])
        if not await self.dataplanes.wait_serving(
                lambda: [self.publisher.epoch, self.publisher.version], 30.0):
            log.warning("not every data-plane process serves yet: see /status dataplanes")

    def _start_tracing(self) -> None:
        t = self.spec.gateway.tracing
        if t.otlp_endpoint:
            from gateway.tracing import TracingUnavailable, otel_tracer
            try:
                self.dataplane.tracer = otel_tracer(t.otlp_endpoint, t.service_name)
            except TracingUnavailable as exc:
                raise GatewayError(str(exc)) from None
            log.info("tracing: spans go to %s", t.otlp_endpoint)

    async def _check_runtime(self, spec: Spec) -> None:
        """The runtime's own refusal of a config (runtime.check), as a ConfigError naming the
        config file."""
        try:
            await self.runtime.check(spec)
        except ConfigError as exc:
            raise ConfigError(exc.problems, exc.source or str(self.config_path or "")) from None

    async def stop(self, keep_replicas: bool = False) -> None:
        """Drain, then stop the replicas, or with ``keep_replicas`` leave them running for the
        next ``up`` to adopt (process replicas cannot outlive the gateway: they are stopped)."""
        if not self.state_lock.held:
            return                # refused at start: another gateway's replicas are not ours
        g = self.spec.gateway
        log.info("stopping: draining in-flight requests (up to %.0fs)", g.drain_timeout)
        if self.dataplanes.count:
            await self.dataplanes.stop(g.drain_timeout)    # each child drains its own
            if self._held_port is not None:
                self._held_port.close()
        else:
            await self.dataplane.stop(g.drain_timeout)
            await self.dataplanes.stop(0.0)                 # its sweeps
        await self.publisher.stop()
        if self.dataplane.tracer is not None:      # flush the spans still buffered
            await asyncio.to_thread(self.dataplane.tracer.shutdown)
        if keep_replicas and self.runtime.name == "process":
            log.warning("--keep-replicas: process replicas die with the gateway; stopping them")
            keep_replicas = False
        log.info("leaving replicas running" if keep_replicas else "stopping replicas")
        await self.rollouts.stop()
        await self.autoscaler.stop()
        await self.supervisor.shutdown(keep=keep_replicas)
        await self.admin.stop()
        self.admin.withdraw_token()
        await self.runtime.close()
        self.state_lock.release()
        log.info("stopped")

    async def run(self, keep_replicas: bool = False) -> None:
        """Serve until SIGTERM or SIGINT; reload the config on SIGHUP. ``keep_replicas``: see
        ``stop``."""
        loop = asyncio.get_running_loop()
        for sig, cmd in ((signal.SIGTERM, "stop"), (signal.SIGINT, "stop"),
                         (signal.SIGHUP, "reload")):
            loop.add_signal_handler(sig, self._commands.put_nowait, cmd)
        try:
            await self.start()
            settle_gc()
            while (cmd := await self._commands.get()) != "stop":
                if cmd == "reload":
                    try:
                        await self.reload()
                    except Exception:   # reload() reports its own failures; a bug must not stop us
                        log.exception("reload failed; still serving config %s", self.spec.digest())
        finally:
            await self.stop(keep_replicas)

    async def reload(self) -> ReloadResult:
        """Read the config file again and apply it in full, or keep the running one whole."""
        async with self._reload_lock:     # SIGHUP and POST /reload may overlap
            result = await reload_config(self.config_path, self.spec, self._apply, self.metrics,
                                         check=self._check_runtime)
        self.last_reload = {"ok": result.ok, "at": time.time(), "hash": result.digest,
                            "error": result.error.render() if result.error else None,
                            "needs_restart": result.needs_restart}
        return result

    def _apply(self, spec: Spec) -> list[str]:
        """Make ``spec`` the running config (reload.py's ``Apply``): in full, or, on any error,
        not at all: the state as it was is put back (not the old file re-applied, which would
        drop live weights and pins and read the way back as a new revision), then it raises."""
        self.admin.configure(spec.gateway.admin)   # the one step that may refuse: goes first
        previous, loaded_at, overrides = self.spec, self.loaded_at, self.weight_overrides
        restore_rollouts, restore_autoscaler = self.rollouts.checkpoint(), self.autoscaler.checkpoint()
        try:
            return self._reload(spec, previous)
        except Exception:
            try:
                self.admin.configure(previous.gateway.admin)
                self.spec, self.loaded_at, self.weight_overrides = previous, loaded_at, overrides
                restore_rollouts()
                restore_autoscaler()
                self.commit()   # a desired state: the old one back restores it
                self._configure_dataplane()
                self._record_config()
            except Exception:
                log.exception("restoring config %s after a failed reload failed too",
                              previous.digest())
            raise

    def _reload(self, spec: Spec, previous: Spec) -> list[str]:
        notes = []
        if self.weight_overrides:
            notes.append("live weight changes for " + ", ".join(sorted(self.weight_overrides))
                         + " replaced by the file's weights")
            log.info("reload: %s", notes[-1])
        self.spec = spec
        self.loaded_at = time.time()
        self.weight_overrides = {}
        notes += self.rollouts.apply(spec, previous)   # keeps, starts, supersedes or drops
        notes += self._rescale()
        self.commit()
        self._configure_dataplane()
        self._record_config()
        return notes

    def _desired(self) -> tuple[Desired, Mapping[tuple[str, str], ReplicaSet], RoutingTable]:
        """Merge the layers over the running spec and build the table: pure up to the replica
        sets of versions the supervisor does not run yet (made now, taken over by its apply)."""
        desired = merge(self.spec, self._layers())
        sets, joining = self.supervisor.prepare(desired.spec)
        desired = desired.hold(joining)
        return desired, sets, build_table(desired.spec, sets, self.metrics, desired.weights,
                                          self.dataplane.batchers)

    def _layers(self) -> Layers:
        return Layers(overrides=self.weight_overrides, pins=self.autoscaler.pins(),
                      rollouts=self.rollouts.layers(), autoscaler=self.autoscaler.layer())

    def _rescale(self) -> list[str]:
        """The autoscaler takes a new spec's settings (every version the rollouts run included)
        before the commit that merges its layer."""
        return self.autoscaler.apply(merge(self.spec, Layers(rollouts=self.rollouts.layers())).spec)

    def commit(self) -> None:
        """The one commit point: layers -> merge -> build the table (either may raise: nothing
        has changed yet) -> the supervisor gets the versions and their counts (starts added
        versions, drains removed ones) -> swap the table."""
        desired, sets, table = self._desired()
        self.supervisor.apply(desired.spec)
        self.holder.swap(table)
        self._committed = (desired, sets)
        self.publisher.changed()      # the other data planes get it as a snapshot

    def _snapshot(self) -> dict[str, Any]:
        """The committed state as data-plane processes apply it (control/publish.py)."""
        assert self._committed is not None, "a snapshot before the first commit"
        desired, sets = self._committed
        return snapshot.encode(desired.spec, desired.weights, sets)

    def _configure_dataplane(self) -> None:
        snapshot.configure(self.dataplane, self.spec.gateway)

    # -- the admin API's facade (gateway/admin/facade.py) -------------------------------------
    @property
    def services(self) -> Mapping[str, ServiceSpec]:
        return self.spec.services

    @property
    def rollout_control(self) -> Rollouts:
        return self.rollouts

    def routing(self) -> RoutingTable:
        return self.holder.current

    def traffic(self, service: str) -> dict[str, Any]:
        svc = self.spec.services[service]
        route = self.holder.current.by_name.get(service)
        effective = dict(route.weights) if route else {}
        return {"weights": {v: effective.get(v, 0) for v in svc.versions},
                "file_weights": service_weights(svc),
                "weight_override": self.weight_overrides.get(service)}

    def set_weights(self, service: str, weights: Mapping[str, int] | None) -> None:
        before = self.weight_overrides
        self.weight_overrides = {k: v for k, v in before.items() if k != service}
        if weights is not None:
            self.weight_overrides[service] = dict(weights)
        try:
            self.commit()
        except Exception:   # the layer that cannot be committed is not kept either
            self.weight_overrides = before
            raise

    def pin(self, service: str, version: str, replicas: int | None) -> None:
        self.autoscaler.pin(service, version, replicas)

    async def snapshot(self, after: str | None, wait: float) -> bytes | None:
        return await self.publisher.wait(after, wait)

    def report(self, doc: dict[str, Any]) -> tuple[int, int]:
        return self.dataplanes.report(doc).share

    def _dataplanes(self) -> list[dict[str, Any]]:
        """/status "dataplanes": the children (and other hosts' data planes), or this process
        when it serves the data port itself."""
        if not self.dataplanes.main:
            return self.dataplanes.status()
        requests = sum(self.metrics.version(s, v).answered
                       for s, svc in self.spec.services.items() for v in svc.versions)
        return [{"name": "main", "pid": os.getpid(), "incarnation": self.incarnation,
                 "snapshot": [self.publisher.epoch, self.publisher.version],
                 "connections": self.dataplane.connections, "requests": requests,
                 "restarts": 0, "up_since": self.started_at, "error": None,
                 "share": list(self.supervisor.share)},
                *self.dataplanes.status()]

    def replicas(self, service: str, version: str) -> dict[str, Any]:
        seen = self.supervisor.observe(service, version)
        return {"desired": seen.desired if seen else None, "ready": seen.ready if seen else None,
                "autoscale": self.autoscaler.describe(service, version)}

    def status(self) -> dict[str, Any]:
        table = self.holder.current
        groups = self.supervisor.status()
        services = {}
        for name, svc in self.spec.services.items():
            route = table.by_name.get(name)
            weights = dict(route.weights) if route else {}
            services[name] = {
                "route": svc.route,
                "weights": {v: weights.get(v, 0) for v in svc.versions},
                "file_weights": service_weights(svc),
                "weight_override": self.weight_overrides.get(name),
                "rollout": self.rollouts.describe(name),
                "max_batch_size": svc.batching.max_batch_size if svc.batching else None,
                "answered": sum(self.metrics.version(name, v).answered for v in svc.versions),
                "versions": {v: {**doc, "autoscale": self.autoscaler.describe(name, v)}
                             for v, doc in groups.get(name, {}).items()},
            }
        return {"config": {"path": str(self.config_path) if self.config_path else None,
                           "hash": self.spec.digest(), "loaded_at": self.loaded_at,
                           "last_reload": self.last_reload},
                "runtime": self.runtime.name, "listen": self.ports, "services": services,
                "corrupt_journals": list(self.rollouts.corrupt), "serving": self.serving,
                "snapshot": [self.publisher.epoch, self.publisher.version],
                "dataplanes": self._dataplanes()}

    @property
    def serving(self) -> bool:
        """The data port accepts requests: with ``workers`` >= 2, at least one data-plane process
        has routing and listens (one restarting does not take the gateway out of a load
        balancer; /status shows each); with ``workers`` 0, the controller is up."""
        return self._listening and (not self.dataplanes.count or self.dataplanes.serving())

    def _record_config(self) -> None:
        self.metrics.config_info.info({"hash": self.spec.digest()})
        self.metrics.config_loaded.set(self.loaded_at)


def _runtime_options(spec: Spec) -> dict[str, Any]:
    g = spec.gateway
    opts: dict[str, Any] = {"state_dir": g.state_dir, "instance": g.instance}
    if g.runtime == "docker":
        opts.update(network=g.docker.network, base_url=g.docker.base_url, gpus=g.docker.gpus)
    elif g.runtime == "swarm":
        s = g.swarm
        opts.update(network=s.network, base_url=s.base_url, placement=s.placement,
                    gpu_kind=s.gpu_kind, start_timeout=s.start_timeout, stop_grace=g.stop_grace)
    else:   # worker processes inherit the environment, minus the admin token's variables
        opts["private_env"] = tuple(filter(None, (g.admin.token_env, TOKEN_ENV)))
        opts["gpus"] = g.process.gpus
    return opts


def _addr(listen: str, port: int) -> str:
    host, _ = split_listen(listen)
    return f"{host}:{port}"

