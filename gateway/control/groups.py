"""The supervisor's model of what runs (a ``Group`` of ``Managed`` replicas per version) and the
read-only views of it: ``observe`` (the ``Observed`` snapshot controllers read), ``/status`` and
the replica gauges. Only control/supervisor.py changes a group."""

from __future__ import annotations

import asyncio
from collections import deque
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from typing import Any

from gateway.control.observed import VersionObserved
from gateway.control.reconcile import READY, STARTING, STATES
from gateway.dataplane.balance import Endpoint, ReplicaSet
from gateway.metrics import Metrics, counter, gauge
from gateway.runtimes.base import Replica, ReplicaSpec
from gateway.spec.models import VersionSpec

CRASH_WINDOW = 60.0
CRASH_LOOP = 5
MAX_BACKOFF = 30.0


def backoff(crashes: int) -> float:
    """Delay before the next start after ``crashes`` recent crashes: 0.5 s doubling to 30 s."""
    return 0.0 if crashes <= 0 else min(MAX_BACKOFF, 0.5 * 2 ** (crashes - 1))


def not_starting() -> int:
    """``ReplicaSet.starting`` of a version that is not autoscaled: no cold start to wait for."""
    return 0


def replica_spec(service: str, version: str, v: VersionSpec) -> ReplicaSpec:
    return ReplicaSpec(service=service, version=version, revision=v.revision(),
                       command=tuple(v.command) if v.command else None, image=v.image,
                       port=v.port, env=tuple(sorted(v.worker_env().items())), workdir=v.workdir,
                       volumes=tuple(v.volumes), resources=v.resources,
                       placement=v.placement)


@dataclass
class Managed:
    replica: Replica
    group: Group                      # may change: a rollout moves an old revision's replicas
    state: str = STARTING
    launched: float = 0.0
    endpoint: Endpoint | None = None
    probe_task: asyncio.Task[None] | None = None
    watch_task: asyncio.Task[None] | None = None
    began: float | None = None        # time.time() before runtime.start(); None: adopted
    cold_start: float | None = None   # seconds from launch to first ready

    @property
    def revision(self) -> str:
        return self.replica.spec.revision


@dataclass
class Group:
    """Replicas of one version; ``replica_set`` is what the data plane sees of it."""

    service: str
    version: str
    spec: VersionSpec
    replica_set: ReplicaSet
    desired: int
    connect_timeout: float
    members: list[Managed] = field(default_factory=list)
    launching: int = 0
    restarts: int = 0
    crashes: deque[float] = field(default_factory=deque)
    not_before: float = 0.0
    removed: bool = False      # the version left the config: drain everything
    joined: bool = True        # False for a version added by a reload until a replica is ready
    last_exit: str = ""
    last_log: tuple[str, ...] = ()   # the last crashed replica's last log lines
    # told after every publish and crash: what other data-plane processes see of this group
    # (endpoints, verdict) may have changed (the supervisor sets it; control/publish.py listens)
    changed: Callable[[], None] = field(default=lambda: None, repr=False)

    @property
    def revision(self) -> str:
        return self.spec.revision()

    def starting(self) -> int:
        """Replicas on their way: launching, or started and not ready yet."""
        return self.launching + sum(1 for m in self.current() if m.state == STARTING)

    def current(self) -> list[Managed]:
        return [m for m in self.members if m.state in (STARTING, READY) and m.revision == self.revision]

    def publish(self) -> None:
        self.replica_set.publish([m.endpoint for m in self.members
                                  if m.state == READY and m.endpoint is not None])
        self.changed()

    def hopeless(self) -> str | None:
        """Why no replica is coming, or None while one may: requests waiting for a replica
        get their 503 at once instead of after the whole queue timeout."""
        if len(self.crashes) >= CRASH_LOOP:
            return f"crash loop ({len(self.crashes)} crashes in {CRASH_WINDOW:.0f}s, " \
                   f"last: {self.last_exit})"
        if self.starting() or len(self.current()) < self.desired:
            return None       # on its way, or about to be launched (after its backoff)
        if self.replica_set.starting == self.starting:
            return None       # the autoscaler follows it: demand starts one (scale from zero)
        return "no replica is starting"


def _ejection(ep: Endpoint | None, now: float) -> dict[str, Any]:
    """A replica's outlier state for /status (the balancer shares the supervisor's clock)."""
    left = 0.0 if ep is None else max(0.0, ep.ejected_until - now)
    return {"ejected": left > 0, "ejected_for_s": round(left, 3),
            "ejections": ep.ejections if ep else 0}


def observe(g: Group, metrics: Metrics) -> VersionObserved:
    """One version's part of ``Supervisor.observed()``: the one definition of ready."""
    revisions: dict[str, tuple[int, int]] = {}
    for m in g.members:
        ready, starting = revisions.get(m.revision, (0, 0))
        revisions[m.revision] = (ready + (m.state == READY), starting + (m.state == STARTING))
    vm = metrics.version(g.service, g.version)
    return VersionObserved(
        revision=g.revision, desired=g.desired, ready=sum(r for r, _ in revisions.values()),
        starting=g.starting(), pending=g.replica_set.pending, answered=vm.answered,
        seconds=vm.seconds, launching=g.launching, removed=g.removed, joined=g.joined,
        revisions=revisions)


def status(groups: dict[tuple[str, str], Group], now: float, metrics: Metrics) -> dict[str, Any]:
    """Every version's part of ``GET /status``."""
    out: dict[str, Any] = {}
    for (sname, vname), g in groups.items():
        out.setdefault(sname, {})[vname] = {
            "revision": g.revision, "desired": g.desired, "removed": g.removed,
            "joining": not g.joined,
            "ready": observe(g, metrics).ready,
            "restarts": g.restarts, "crash_loop": len(g.crashes) >= CRASH_LOOP,
            "last_exit": g.last_exit, "last_log": list(g.last_log),
            "waiting": g.replica_set.waiting,
            "max_concurrency": g.replica_set.limit, "ejected": g.replica_set.ejected,
            "ejections": g.replica_set.ejections,
            "replicas": [{
                "id": m.replica.id, "address": m.replica.address, "state": m.state,
                "revision": m.revision, "pid": m.replica.pid, "node": m.replica.node,
                "gpus": m.replica.reserved_gpus,
                "inflight": m.endpoint.inflight if m.endpoint else 0,
                **_ejection(m.endpoint, now),
                "log": m.replica.log_path, "adopted": m.began is None,
                "cold_start_s": None if m.cold_start is None else round(m.cold_start, 3),
            } for m in g.members],
        }
    return out

def gauges(groups: dict[tuple[str, str], Group]) -> Iterable[Any]:
    counts = []
    inflight = []
    for (s, v), g in groups.items():
        for state in STATES:
            counts.append(((s, v, state), sum(1 for m in g.members if m.state == state)))
        inflight.append(((s, v), g.replica_set.inflight))
    yield gauge("serve_gateway_replicas", "Replicas by state", ["service", "version", "state"], counts)
    yield gauge("serve_gateway_inflight_requests", "Requests being served by replicas",
                ["service", "version"], inflight)
    yield gauge("serve_gateway_ejected_replicas", "Replicas ejected as outliers right now",
                ["service", "version"],
                (((s, v), g.replica_set.ejected) for (s, v), g in groups.items()))
    yield counter("serve_gateway_outlier_ejections", "Replicas ejected after errors in a row",
                  ["service", "version"],
                  (((s, v), g.replica_set.ejections) for (s, v), g in groups.items()))
    yield gauge("serve_gateway_waiting_requests", "Requests waiting for a ready replica",
                ["service", "version"], (((s, v), g.replica_set.waiting) for (s, v), g in groups.items()))
