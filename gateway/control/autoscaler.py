"""The autoscaler loop: samples each version's load, smooths it, runs its policy, and sets the
supervisor's desired replica count.

Per version and sample (every ``tick``): pending requests (``ReplicaSet.pending``: waiting for
a replica + queued in the batcher + in flight; a batcher counts instances), ready and starting
replicas, arrivals (answers since the last sample plus the change in pending), answers per
second and mean latency. Load figures are smoothed with an exponential moving average whose
time constant is a quarter of the version's ``scale_out_interval`` (0.1 s to 5 s), so one
sample's spike neither scales out nor cancels a scale-in.

Its counts and the operator's pins are its layer of the desired state (``layer()``, ``pins()``):
a decision publishes it, and the gateway's commit point merges it and hands the counts to the
supervisor (control/desired.py).

- **Scale from zero** does not wait for a sample: the supervisor calls ``demand`` as soon as a
  request finds no ready replica (Knative's activator) and one replica is wanted at once.
  Requests wait in the bounded queue meanwhile (``gateway.queue``): a full queue answers 503
  ``overloaded`` at once; a wait that ends while the replica still starts answers 504
  ``cold_start_timeout``; one that ends with no replica coming (pinned at 0, a failed start,
  a version not autoscaled) keeps the 503 ``no_ready_replica``, both with Retry-After.
- **Reload** (``apply``, right after ``Supervisor.apply`` reset counts to the file's): an
  autoscaled version keeps its current count, clamped into the new [min, max]; a new one
  starts at its ``replicas`` clamped the same way. Manual pins end with a reload.
- **Manual override** (``pin``): a fixed count, until ``pin(..., None)`` (``--auto``) or a
  reload.
- **Rollouts**: a version whose count a rollout holds (``held(service, version)``, set by
  control/rollouts.py) is left alone: sampled, never scaled, until the rollout lets it go; the
  rollout sizes it.
"""

from __future__ import annotations

import asyncio
import logging
import math
import time
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field, replace
from typing import Any

from gateway import tasks
from gateway.control.autoscale import (
    Bounds,
    Context,
    Policy,
    State,
    bounds,
    default_policy,
    effective,
    load_policy,
)
from gateway.control.checkpoint import checkpoint
from gateway.control.supervisor import Supervisor
from gateway.metrics import Metrics, gauge
from gateway.plugins import PluginError
from gateway.spec.models import Spec

log = logging.getLogger("gateway.autoscale")

Key = tuple[str, str]
TICK = 0.25


RESIDUE = 0.01   # a smoothed load this close to an input of 0 is 0 (a hundredth of a request)


@dataclass
class Smoothed:
    """Exponential moving average over time (not over samples)."""

    value: float = 0.0

    def add(self, x: float, dt: float, tau: float) -> float:
        self.value += (1.0 - math.exp(-dt / tau)) * (x - self.value)
        if x == 0 and abs(self.value) < RESIDUE:
            # an average only approaches zero: after silence it must read 0 (for policies,
            # plugins and /status), not 1e-26 pending requests
            self.value = 0.0
        return self.value


@dataclass
class Scaled:
    """One version as the autoscaler sees it: its settings, policy state and samples."""

    service: str
    version: str
    file_replicas: int = 1
    bounds: Bounds | None = None          # None: not autoscaled (a pin may still apply)
    policy: Policy = default_policy
    policy_ref: tuple[str, Any] = ("default", None)
    state: State = field(default_factory=State)
    pin: int | None = None
    desired: int = 0                      # the count this autoscaler last set or saw
    pending: Smoothed = field(default_factory=Smoothed)
    rate: Smoothed = field(default_factory=Smoothed)
    throughput: Smoothed = field(default_factory=Smoothed)
    latency: Smoothed = field(default_factory=Smoothed)
    pending_now: int = 0
    sampled_at: float | None = None
    answered: int = 0
    seconds: float = 0.0
    last: dict[str, Any] | None = None    # the last decision, for /status
    failing: bool = False                 # the policy raised at the last sample

    def tau(self) -> float:
        interval = self.bounds.scale_out_interval if self.bounds else 10.0
        return min(5.0, max(0.1, interval / 4))


class Autoscaler:
    """Runs every autoscaled version's policy and owns manual pins; see the module docstring."""

    def __init__(self, supervisor: Supervisor, metrics: Metrics, *,
                 clock: Callable[[], float] = time.monotonic, tick: float = TICK,
                 publish: Callable[[], None] | None = None) -> None:
        self.supervisor = supervisor
        # the gateway's commit point: merges layer() and pins() and hands the counts over
        self.publish: Callable[[], None] = publish or (lambda: None)
        self.metrics = metrics
        self.clock = clock
        self.tick = tick
        self.versions: dict[Key, Scaled] = {}
        # a rollout sizes this version now: no decisions for it (control/rollouts.py)
        self.held: Callable[[str, str], bool] = lambda service, version: False
        self._task: asyncio.Task[None] | None = None
        metrics.add_gauges(self._gauges)

    # -- configuration ------------------------------------------------------------------------
    def apply(self, spec: Spec) -> list[str]:
        """Take ``spec``'s settings (a reload, before the commit that merges ``layer()``): an
        autoscaled version keeps its count, clamped into the new bounds."""
        notes = []
        pinned = sorted(f"{s}/{v}" for (s, v), sc in self.versions.items() if sc.pin is not None)
        if pinned:
            notes.append("manual replica counts for " + ", ".join(pinned) + " replaced")
        new: dict[Key, Scaled] = {}
        for sname, svc in spec.services.items():
            for vname, ver in svc.versions.items():
                key = (sname, vname)
                sc = self.versions.get(key) or Scaled(sname, vname, desired=ver.replicas)
                was_scaled = sc.bounds is not None or sc.pin is not None
                sc.pin, sc.file_replicas = None, ver.replicas
                eff = effective(svc, ver)
                if eff is None:
                    sc.bounds = None
                    sc.desired = ver.replicas        # the file's count
                else:
                    sc.bounds = bounds(svc, eff)
                    self._load_policy(sc)
                    start = sc.desired if was_scaled else ver.replicas
                    if not self.held(sname, vname):
                        self._set(sc, self._clamp(sc, start), "reload",
                                  "reload: count clamped into [min, max]", before=start,
                                  publish=False)
                new[key] = sc
        self.versions = new
        return notes

    def layer(self) -> dict[Key, int]:
        """This controller's layer of the desired state (control/desired.py): the counts of the
        versions it scales."""
        return {key: sc.desired for key, sc in self.versions.items()
                if sc.bounds is not None and sc.pin is None}

    def pins(self) -> dict[Key, int]:
        """The operator's manual counts (``serve-gateway scale``), a layer above every other."""
        return {key: sc.pin for key, sc in self.versions.items() if sc.pin is not None}

    def _load_policy(self, sc: Scaled) -> None:
        assert sc.bounds is not None
        ref = (sc.bounds.policy, dict(sc.bounds.options or {}))
        if ref == sc.policy_ref:
            return                               # keep a stateful plugin object across reloads
        try:
            sc.policy = load_policy(ref[0], ref[1])
        except PluginError as exc:               # the config checks make this rare
            log.error("%s/%s: autoscale policy: %s; using the default", sc.service, sc.version, exc)
            sc.policy = default_policy
        sc.policy_ref = ref

    def _clamp(self, sc: Scaled, n: int) -> int:
        assert sc.bounds is not None
        low = min(sc.bounds.min_replicas, sc.bounds.max_replicas)
        return max(low, min(sc.bounds.max_replicas, n))

    # -- overrides ----------------------------------------------------------------------------
    def demand(self, service: str, version: str) -> None:
        """A request waits and no replica is ready: start one now if none is wanted."""
        sc = self.versions.get((service, version))
        seen = self.supervisor.observe(service, version)
        if sc is None or sc.bounds is None or sc.pin is not None or seen is None or seen.desired > 0 \
                or self.held(service, version):
            return
        now = self.clock()
        sc.state = replace(sc.state, last_out=now, low_since=None, idle_since=None)
        self._set(sc, self._clamp(sc, 1), "demand", "a request is waiting: scale from zero")

    def pin(self, service: str, version: str, replicas: int | None) -> None:
        """Hold ``replicas`` until a reload or ``pin(..., None)``, which hands the version back
        to its policy (or to the file's count when it is not autoscaled)."""
        sc = self.versions[(service, version)]
        sc.pin = replicas
        if replicas is not None:
            self._set(sc, replicas, "manual", f"pinned to {replicas} by the admin API")
        elif sc.bounds is not None:
            self._set(sc, self._clamp(sc, sc.desired), "manual", "back to autoscaling")
        else:
            self._set(sc, sc.file_replicas, "manual", "back to the config file's count")

    def _set(self, sc: Scaled, n: int, source: str, reason: str, before: int | None = None,
             publish: bool = True) -> None:
        """Make ``n`` the desired count; a change from ``before`` (default: the supervisor's
        count) is a decision, logged, counted and kept for /status. ``publish``: commit it now
        (a reload commits once, after every controller took the new spec)."""
        seen = self.supervisor.observe(sc.service, sc.version)
        if before is None:
            before = seen.desired if seen is not None else sc.desired
        sc.desired = n
        if seen is None:
            return
        if publish and seen.desired != n:
            self.publish()
        if n == before:
            return
        direction = "out" if n > before else "in"
        sc.last = {"at": time.time(), "from": before, "to": n, "direction": direction,
                   "source": source, "reason": reason}
        self.metrics.autoscale_decisions.labels(sc.service, sc.version, direction, source).inc()
        log.info("%s/%s: scale %s %d -> %d (%s: %s)", sc.service, sc.version, direction, before,
                 n, source, reason)

    def checkpoint(self) -> Callable[[], None]:
        """Every version's settings, counts and pins as they are now, and the way to put them
        back (a reload that fails half-way); the commit that follows merges ``layer()``."""
        back = checkpoint(self.versions)

        def restore() -> None:
            self.versions = back()
        return restore

    # -- the loop -----------------------------------------------------------------------------
    def start(self) -> None:
        self._task = tasks.spawn(self._run(), name="autoscaler")

    async def stop(self) -> None:
        await tasks.cancel_and_wait(self._task)

    async def _run(self) -> None:
        while True:
            try:
                self.step()
            except Exception:       # a bug here must not stop scaling for good
                log.exception("autoscaler step failed")
            await asyncio.sleep(self.tick)

    def step(self) -> None:
        """One sample of every version, and a decision for each autoscaled, unpinned one."""
        now = self.clock()
        observed = self.supervisor.observed()
        for key, sc in self.versions.items():
            seen = observed.get(key)
            if seen is None or seen.removed:
                continue
            ctx = self._sample(sc, now, seen.desired, seen.pending, seen.ready, seen.starting)
            if sc.bounds is None or sc.pin is not None or ctx is None \
                    or self.held(sc.service, sc.version):
                continue
            try:
                n, sc.state = sc.policy(ctx, sc.state)
            except Exception as exc:   # a plugin's bug keeps the current count
                if not sc.failing:
                    log.exception("%s/%s: autoscale policy failed", sc.service, sc.version)
                sc.failing = True
                sc.state = replace(sc.state, reason=f"policy failed: {exc!r}")
                continue
            sc.failing = False
            self._set(sc, n, "policy", sc.state.reason)

    def _sample(self, sc: Scaled, now: float, desired: int, pending: int, ready: int,
                starting: int) -> Context | None:
        vm = self.metrics.version(sc.service, sc.version)
        sc.desired = desired
        prev_at, prev_pending = sc.sampled_at, sc.pending_now
        answered, seconds = vm.answered - sc.answered, vm.seconds - sc.seconds
        sc.answered, sc.seconds, sc.sampled_at, sc.pending_now = vm.answered, vm.seconds, now, pending
        if prev_at is None:
            sc.pending.value = float(pending)
            return None
        dt = max(now - prev_at, 1e-3)
        tau = sc.tau()
        arrivals = max(0, answered + pending - prev_pending)
        sc.pending.add(pending, dt, tau)
        sc.rate.add(arrivals / dt, dt, tau)
        sc.throughput.add(answered / dt, dt, tau)
        if answered:
            sc.latency.add(seconds / answered, dt, tau)
        if sc.bounds is None:
            return None
        return Context(now=now, replicas=desired, ready=ready, starting=starting,
                       pending=sc.pending.value, pending_now=pending, arrivals=arrivals,
                       arrival_rate=sc.rate.value, throughput=sc.throughput.value,
                       latency=sc.latency.value, bounds=sc.bounds)

    # -- observation --------------------------------------------------------------------------
    def describe(self, service: str, version: str) -> dict[str, Any] | None:
        """The autoscale part of a version's /status entry (None: neither scaled nor pinned)."""
        sc = self.versions.get((service, version))
        if sc is None or (sc.bounds is None and sc.pin is None):
            return None
        b = sc.bounds
        return {
            "enabled": b is not None, "pinned": sc.pin,
            "min_replicas": b.min_replicas if b else None,
            "max_replicas": b.max_replicas if b else None,
            "target_pending": b.target_pending if b else None,
            "policy": b.policy if b else None,
            "pending": round(sc.pending.value, 2), "pending_now": sc.pending_now,
            "arrival_rate": round(sc.rate.value, 2), "throughput": round(sc.throughput.value, 2),
            "latency_s": round(sc.latency.value, 4),
            "reason": "held by the rollout" if self.held(service, version) else
            sc.state.reason if b and sc.pin is None else "pinned",
            "last_decision": sc.last,
        }

    def _gauges(self) -> Iterable[Any]:
        scaled = [sc for sc in self.versions.values() if sc.bounds is not None or sc.pin is not None]
        yield gauge("serve_gateway_autoscale_desired_replicas",
                    "Replicas the autoscaler (or a manual pin) wants", ["service", "version"],
                    (((sc.service, sc.version), sc.desired) for sc in scaled))
        yield gauge("serve_gateway_autoscale_pending", "Smoothed pending requests, the "
                    "autoscaler's load signal", ["service", "version"],
                    (((sc.service, sc.version), sc.pending.value) for sc in scaled))
