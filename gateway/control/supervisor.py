"""The supervisor: desired replicas per (service, version) vs what the runtime runs.

It starts what is missing, drains then stops what is extra or stale, probes readiness before a
replica gets traffic, takes a crashed replica out of routing at once and restarts it with
exponential backoff, reports a crash loop instead of hiding it, and stops everything it started
on shutdown. It is the only writer of the ``ReplicaSet``s the data plane reads.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Callable, Coroutine, Iterable
from functools import partial
from typing import Any, Protocol

from gateway import tasks
from gateway.control.autoscale import effective
from gateway.control.groups import (
    CRASH_LOOP,
    CRASH_WINDOW,
    Group,
    Managed,
    backoff,
    gauges,
    not_starting,
    observe,
    replica_spec,
)
from gateway.control.groups import status as status_doc
from gateway.control.health import HttpProber
from gateway.control.observed import VersionObserved
from gateway.control.reconcile import (
    DRAINING,
    READY,
    STARTING,
    STOPPING,
    Forget,
    Launch,
    Member,
    Seen,
    Stop,
    Want,
    reconcile,
)
from gateway.dataplane.balance import Endpoint, ReplicaSet
from gateway.dataplane.outlier import outlier_policy
from gateway.dataplane.snapshot import share
from gateway.errors import GatewayError
from gateway.logs import fields
from gateway.metrics import Metrics
from gateway.runtimes.base import ExitInfo, ExitKind, Replica, Runtime
from gateway.spec.models import Spec

log = logging.getLogger("gateway.supervisor")

class Prober(Protocol):
    """Readiness / liveness check of one replica (control/health.py; a fake in unit tests)."""

    async def probe(self, host: str, port: int, path: str, timeout: float) -> bool: ...

    async def close(self) -> None: ...


class Supervisor:
    def __init__(self, runtime: Runtime, metrics: Metrics, *, stop_grace: float = 10.0,
                 drain_timeout: float = 30.0, max_waiting: int = 1024,
                 clock: Callable[[], float] = time.monotonic,
                 prober: Prober | None = None) -> None:
        self.runtime = runtime
        self.metrics = metrics
        self.stop_grace = stop_grace
        self.drain_timeout = drain_timeout
        self.max_waiting = max_waiting
        # this process's part of every per-replica limit (index, count): (0, 1) unless other
        # hosts' data planes send to the same replicas (DataPlanes.on_reshare)
        self.share: tuple[int, int] = (0, 1)
        self.clock = clock
        self.groups: dict[tuple[str, str], Group] = {}
        # replica sets of versions a commit routes to before apply() makes their groups
        self._prepared: dict[tuple[str, str], ReplicaSet] = {}
        self.prober: Prober = prober or HttpProber()
        self._wake = asyncio.Event()
        self._loop_task: asyncio.Task[None] | None = None
        self._stopping = False
        self._orphans: list[Replica] = []
        self._runtime_tasks: set[asyncio.Task[None]] = set()   # launches and stops in flight
        self.on_joined: Callable[[], None] | None = None   # rebuilds routing: a version joined
        # a request waits for a replica of (service, version): the autoscaler may start one
        self.on_demand: Callable[[str, str], None] | None = None
        # the endpoints or the verdict of a version changed: the snapshot other data-plane
        # processes get is due again (control/publish.py)
        self.on_change: Callable[[], None] | None = None
        # a draining replica may be stopped: nothing in flight here by default; with several
        # data-plane processes, none routes to it or has a request on it (Gather.drain_check)
        self.drained: Callable[[Endpoint], bool] = _idle
        # requests in flight on a replica, for /status (Gather.inflight with several processes)
        self.inflight: Callable[[Endpoint], int] = _local_inflight
        metrics.add_gauges(self._gauges)

    # -- configuration ------------------------------------------------------------------------
    def apply(self, spec: Spec) -> None:
        """Make ``spec`` the desired state. New versions get groups (and empty replica sets the
        next table can route to); versions gone from the spec are drained and stopped."""
        self.stop_grace = spec.gateway.stop_grace
        self.drain_timeout = spec.gateway.drain_timeout
        self.max_waiting = spec.gateway.queue.max_waiting
        wanted = set()
        added: list[Group] = []
        for sname, svc in spec.services.items():
            for vname, ver in svc.versions.items():
                key = (sname, vname)
                wanted.add(key)
                g = self.groups.get(key)
                if g is None:
                    rs = self._prepared.pop(key, None) or \
                        ReplicaSet(sname, vname, max_waiting=spec.gateway.queue.max_waiting)
                    self.groups[key] = g = Group(sname, vname, ver, rs, ver.replicas, svc.timeouts.connect)
                    # added while running: routing holds it back until it can serve
                    g.joined = self._loop_task is None or ver.replicas == 0
                    added.append(g)
                g.removed = False
                g.spec, g.desired, g.connect_timeout = ver, ver.replicas, svc.timeouts.connect
                g.replica_set.on_demand = partial(self._demand, g)
                g.changed = self._changed
                g.replica_set.hopeless = g.hopeless
                # an autoscaled version's waiting requests see its cold start (504, not 503)
                g.replica_set.starting = g.starting if effective(svc, ver) is not None \
                    else not_starting
                self._limits(g)
        for key, g in self.groups.items():
            if key not in wanted:
                g.removed, g.desired = True, 0
        for g in added:      # once every group has its new spec, so revisions compare right
            self._claim(g)
        self.wake()

    def _limits(self, g: Group) -> None:
        """The version's per-replica limit, wait queue and outlier policy in its replica set:
        this process's ``share`` of the limits when other hosts' data planes send to the same
        replicas (control/dataplanes.py)."""
        index, count = self.share
        g.replica_set.configure(limit=share(g.spec.max_concurrency, index, count),
                                max_waiting=share(self.max_waiting, index, count),
                                outlier=outlier_policy(g.spec.outlier))

    def reshare(self, part: tuple[int, int]) -> None:
        """This process is now sharer ``index`` of ``count``: every version's limits again."""
        self.share = part
        for g in self.groups.values():
            if not g.removed:
                self._limits(g)

    def replica_set(self, service: str, version: str) -> ReplicaSet | None:
        """The replica set of a version (its group's, or the one prepared for a commit)."""
        g = self.groups.get((service, version))
        return g.replica_set if g is not None else self._prepared.get((service, version))

    def prepare(self, spec: Spec) -> tuple[dict[tuple[str, str], ReplicaSet], set[tuple[str, str]]]:
        """What ``apply(spec)`` will show the data plane, computed before anything changes (the
        commit point builds its routing table from it first): the replica set of every version
        (a new version's is made now and taken over by ``apply``) and the versions that will be
        joining: added while running, never ready yet, with replicas wanted."""
        sets: dict[tuple[str, str], ReplicaSet] = {}
        joining: set[tuple[str, str]] = set()
        for sname, svc in spec.services.items():
            for vname, ver in svc.versions.items():
                key = (sname, vname)
                g = self.groups.get(key)
                if g is not None:
                    sets[key] = g.replica_set
                    if not g.joined and ver.replicas > 0:
                        joining.add(key)
                    continue
                rs = self._prepared.get(key)
                if rs is None:
                    rs = self._prepared[key] = ReplicaSet(
                        sname, vname, max_waiting=spec.gateway.queue.max_waiting)
                sets[key] = rs
                if self._loop_task is not None and ver.replicas > 0 and not any(
                        m.state == READY for _, m in self._claimable(sname, ver.revision(), None)):
                    joining.add(key)
        return sets, joining

    def _claimable(self, service: str, revision: str,
                   taker: Group | None) -> list[tuple[Group, Managed]]:
        """Replicas of ``service`` that run ``revision`` as another group's stale revision."""
        return [(other, m) for other in self.groups.values()
                if other is not taker and other.service == service
                for m in other.members if m.revision == revision != other.revision
                and m.state in (STARTING, READY)]

    def _claim(self, g: Group) -> None:
        """A new group whose revision another group of the service still runs as a stale
        revision takes those replicas over, ready and serving, instead of starting new ones: a
        revision rollout keeps the old revision under its own version key (control/rollouts.py)
        while the version's own group gets the new one."""
        claimable = self._claimable(g.service, g.revision, g)
        for other in {id(o): o for o, _ in claimable}.values():
            moved = [m for o, m in claimable if o is other]
            for m in moved:
                other.members.remove(m)
                g.members.append(m)
                m.group = g
                log.info("replica %s of %s/%s (revision %s) now serves as %s/%s", m.replica.id,
                         other.service, other.version, m.revision, g.service, g.version)
            if moved:
                other.publish()
                g.publish()
                g.joined = g.joined or any(m.state == READY for m in moved)

    # -- lifecycle ----------------------------------------------------------------------------
    async def start(self) -> None:
        """Adopt replicas an earlier instance left (those of a current revision are kept after a
        readiness probe, the rest are stopped), then start the reconcile loop."""
        for r in await self.runtime.adopt():
            # by revision: a revision rollout may run the version's old revision under its own
            # key (e.g. v1.3f2a1b9c0d2e for v1)
            g = next((g for g in self.groups.values() if g.service == r.spec.service
                      and g.revision == r.spec.revision and not g.removed
                      and g.version.split(".")[0] == r.spec.version.split(".")[0]), None)
            if g is not None and len(g.current()) < g.desired:
                log.info("adopted replica %s of %s/%s", r.id, g.service, g.version)
                self._track(g, r)
            else:
                self._orphans.append(r)
        self._loop_task = tasks.spawn(self._run(), name="supervisor")

    async def shutdown(self, keep: bool = False) -> None:
        """Stop every replica this gateway runs (routing first, then the processes). With
        ``keep``, release them instead: out of routing and no longer watched, but left running
        for the next gateway to adopt. Leftovers of stale revisions are stopped either way."""
        self._stopping = True
        await tasks.cancel_and_wait(self._loop_task)
        members = [(g, m) for g in self.groups.values() for m in list(g.members)]
        if keep:
            for g, m in members:
                self._forget(m)
                log.info("leaving replica %s of %s/%s running (%s) for the next gateway",
                         m.replica.id, g.service, g.version, m.replica.address)
            await tasks.cancel_and_wait(*(t for _, m in members for t in (m.probe_task, m.watch_task)))
        await asyncio.gather(*(self._stop(m, drain=False) for g, m in members if not keep),
                             *(self.runtime.stop(r, self.stop_grace) for r in self._orphans),
                             *self._runtime_tasks, return_exceptions=True)
        await self.prober.close()

    def _spawn(self, coro: Coroutine[Any, Any, None], name: str) -> None:
        """A task that starts or stops a replica: shutdown waits for it, so the runtime is not
        closed under it and nothing it started is left behind."""
        task = tasks.spawn(coro, name=name)
        self._runtime_tasks.add(task)
        task.add_done_callback(self._runtime_tasks.discard)

    def wake(self) -> None:
        self._wake.set()

    def _changed(self) -> None:
        if self.on_change is not None:
            self.on_change()

    def _demand(self, g: Group) -> None:
        if self.on_demand is not None:
            self.on_demand(g.service, g.version)
        self.wake()

    async def _run(self) -> None:
        for r in self._orphans:
            log.info("stopping leftover replica %s (%s/%s, revision %s)", r.id, r.spec.service,
                     r.spec.version, r.spec.revision)
        orphans, self._orphans = self._orphans, []
        await asyncio.gather(*(self.runtime.stop(r, self.stop_grace) for r in orphans),
                             return_exceptions=True)
        while True:
            self._wake.clear()
            try:
                self.reconcile()
            except Exception:   # a bug here must not stop supervision
                log.exception("reconcile failed")
            try:
                await asyncio.wait_for(self._wake.wait(), 0.5)
            except TimeoutError:
                pass

    def reconcile(self) -> None:
        """One pass of control/reconcile.py's decisions over every group, executed now."""
        desired = {k: Want(g.revision, g.desired, g.removed) for k, g in self.groups.items()}
        observed = {k: Seen(tuple(Member(m.replica.id, m.state, m.revision, m.launched)
                                  for m in g.members), g.launching, g.not_before)
                    for k, g in self.groups.items()}
        for action in reconcile(desired, observed, self.clock(), self._stopping):
            g = self.groups[action.key]
            if isinstance(action, Launch):
                for _ in range(action.count):
                    g.launching += 1
                    self._spawn(self._launch(g), f"launch {g.service}/{g.version}")
            elif isinstance(action, Stop):
                m = next(m for m in g.members if m.replica.id == action.replica)
                self._spawn(self._stop(m), f"{action.why} {m.replica.id}")
            elif isinstance(action, Forget):
                del self.groups[action.key]

    # -- one replica --------------------------------------------------------------------------
    async def _launch(self, g: Group) -> None:
        spec = replica_spec(g.service, g.version, g.spec)
        began = time.time()
        try:
            replica = await self.runtime.start(spec)
        except GatewayError as exc:
            self._crashed(g, f"start failed: {exc}")
            return
        finally:
            g.launching -= 1
        if self._stopping:
            await self.runtime.stop(replica, self.stop_grace)
            return
        log.info("started replica %s of %s/%s at %s", replica.id, g.service, g.version, replica.address,
                 extra=fields("replica_started", service=g.service, version=g.version,
                              replica=replica.id, address=replica.address))
        self._track(g, replica, began)

    def _track(self, g: Group, replica: Replica, began: float | None = None) -> None:
        m = Managed(replica, g, launched=self.clock(), began=began)
        g.members.append(m)
        m.probe_task = tasks.spawn(self._probe(m), name=f"probe {replica.id}")
        m.watch_task = tasks.spawn(self._watch(m), name=f"watch {replica.id}")

    async def _probe(self, m: Managed) -> None:
        h = m.group.spec.health
        r = m.replica
        deadline = self.clock() + h.start_timeout
        while not await self.prober.probe(r.host, r.port, h.path, h.timeout):
            if self.clock() > deadline:
                log.error("replica %s of %s/%s not ready after %.0fs: restarting it", r.id,
                          m.group.service, m.group.version, h.start_timeout,
                          extra=fields("replica_start_timeout", service=m.group.service,
                                       version=m.group.version, replica=r.id))
                self._spawn(self._stop(m, drain=False), f"restart {r.id}")
                return
            await asyncio.sleep(h.interval)
        if m.state != STARTING:
            return
        m.state = READY
        m.endpoint = Endpoint(r.id, r.host, r.port, m.group.connect_timeout)
        m.group.publish()
        if m.began is not None:     # an adopted replica started long ago: no cold start
            m.cold_start = time.time() - m.began
            self.metrics.cold_start.labels(m.group.service, m.group.version).observe(m.cold_start)
        log.info("replica %s of %s/%s is ready", r.id, m.group.service, m.group.version,
                 extra=fields("replica_ready", service=m.group.service, version=m.group.version,
                              replica=r.id, latency_ms=None if m.cold_start is None
                              else round(m.cold_start * 1000, 1)))
        if not m.group.joined:
            m.group.joined = True
            log.info("%s/%s joins routing", m.group.service, m.group.version)
            if self.on_joined is not None:
                self.on_joined()
        self.wake()
        failures = 0
        while m.state == READY:
            await asyncio.sleep(h.liveness_interval)
            if m.state != READY:
                return
            failures = 0 if await self.prober.probe(r.host, r.port, h.path, h.timeout) else failures + 1
            if failures >= h.failure_threshold:
                log.error("replica %s of %s/%s failed %d health checks: replacing it", r.id,
                          m.group.service, m.group.version, failures,
                          extra=fields("replica_unhealthy", service=m.group.service,
                                       version=m.group.version, replica=r.id))
                self._spawn(self._stop(m), f"unhealthy {r.id}")
                return

    async def _watch(self, m: Managed) -> None:
        info = await self.runtime.wait(m.replica)
        if m.state in (DRAINING, STOPPING):
            return
        self._forget(m)
        if info.kind == ExitKind.OOM:
            reason = "oom_killed"
        else:
            reason = info.kind.value
        self.metrics.replica_exits.labels(m.group.service, m.group.version, reason).inc()
        log.info("replica %s of %s/%s ended: %s", m.replica.id, m.group.service, m.group.version,
                 reason, extra=fields("replica_exit", service=m.group.service,
                                      version=m.group.version, replica=m.replica.id,
                                      reason=reason))
        m.group.last_log = info.log_tail
        self._crashed(m.group, _describe(info, m.replica.log_path))
        self.metrics.replica_restarts.labels(m.group.service, m.group.version).inc()
        # what is left of it (an exited container) goes now, not at the next gateway start
        self._spawn(self._remove(m.replica), f"remove {m.replica.id}")

    async def _remove(self, replica: Replica) -> None:
        try:
            await self.runtime.stop(replica, 0)
        except GatewayError as exc:
            log.warning("removing ended replica %s failed: %s", replica.id, exc)

    def _crashed(self, g: Group, why: str) -> None:
        now = self.clock()
        g.restarts += 1
        g.crashes.append(now)
        while g.crashes and g.crashes[0] < now - CRASH_WINDOW:
            g.crashes.popleft()
        delay = backoff(len(g.crashes))
        g.not_before = now + delay
        g.last_exit = why
        level = logging.ERROR if len(g.crashes) >= CRASH_LOOP else logging.WARNING
        log.log(level, "%s/%s: replica %s; %d crashes in %.0fs%s, next start in %.1fs", g.service,
                g.version, why, len(g.crashes), CRASH_WINDOW,
                " (crash loop)" if len(g.crashes) >= CRASH_LOOP else "", delay)
        self.wake()
        g.replica_set.recheck()     # a crash loop now: whoever waits gets its 503
        g.changed()                 # ... in every data-plane process too
        if delay:
            asyncio.get_running_loop().call_later(delay, self.wake)

    def _forget(self, m: Managed) -> None:
        """Out of routing at once, and out of the group."""
        m.state = STOPPING
        if m in m.group.members:
            m.group.members.remove(m)
        m.group.publish()
        if m.endpoint is not None:
            m.endpoint.pool.close()
        if m.probe_task is not None and m.probe_task is not asyncio.current_task():
            m.probe_task.cancel()

    async def _stop(self, m: Managed, drain: bool = True) -> None:
        if m.state in (DRAINING, STOPPING):
            return
        m.state = DRAINING
        m.group.publish()
        if drain and m.endpoint is not None:
            deadline = self.clock() + self.drain_timeout
            # in-flight is a plain counter the data plane bumps (no event to wait on); the poll
            # is bounded by the drain deadline
            while not self.drained(m.endpoint) and self.clock() < deadline:  # noqa: ASYNC110
                await asyncio.sleep(0.02)
        self._forget(m)
        try:
            await self.runtime.stop(m.replica, self.stop_grace)
        except GatewayError as exc:
            log.error("stopping replica %s failed: %s", m.replica.id, exc)
        self.wake()

    # -- observation (control/groups.py) ------------------------------------------------------
    def observed(self) -> dict[tuple[str, str], VersionObserved]:
        """The read-only snapshot every controller reads (control/observed.py)."""
        return {key: observe(g, self.metrics) for key, g in self.groups.items()}

    def observe(self, service: str, version: str) -> VersionObserved | None:
        """One version's part of ``observed()``."""
        g = self.groups.get((service, version))
        return None if g is None else observe(g, self.metrics)

    def status(self) -> dict[str, Any]:
        """Every version's part of ``GET /status``."""
        return status_doc(self.groups, self.clock(), self.metrics, self.inflight)

    def _gauges(self) -> Iterable[Any]:
        return gauges(self.groups)


def _idle(ep: Endpoint) -> bool:
    return ep.inflight == 0


def _local_inflight(ep: Endpoint) -> int:
    return ep.inflight


def _describe(info: ExitInfo, log_path: str | None = None) -> str:
    if info.kind == ExitKind.OOM:
        how = "was OOM-killed"
    elif info.kind == ExitKind.KILLED:
        how = f"was killed ({info.detail or info.code})"
    else:
        how = f"exited with code {info.code}"
    if info.kind != ExitKind.EXITED or not info.log_tail:
        return how      # killed from outside: the log would not say why (it is in last_log)
    # a worker that ended by itself: the last line of its log is where a Python traceback says
    # what went wrong
    where = f" (full log: {log_path})" if log_path else ""
    return f"{how}: {info.log_tail[-1]}{where}"
