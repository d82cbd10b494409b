"""What a rollout analysis sees of a version: counter snapshots and the window between two.

The data plane keeps running totals per version (answers, 5xx answers, latency buckets) and per
mirror target (copies answered, failed, compared, agreed). An analysis must judge one interval's
evidence, never the totals since start (one bad minute would otherwise fail every later
interval), so the controller takes a ``Counts`` snapshot when a window opens and subtracts it
from the one taken when the window is judged. Pure functions but ``read``.
"""

from __future__ import annotations

from dataclasses import dataclass

from gateway.control.rollout.model import Plan, RolloutState, VersionObs
from gateway.metrics import LATENCY_BUCKETS, Metrics
from gateway.spec.models import ServiceSpec, VersionSpec


@dataclass(frozen=True)
class Counts:
    answered: int = 0
    failed: int = 0                                 # 5xx answers
    buckets: tuple[float, ...] = ()                 # cumulative latency counts, +Inf last
    shadow: tuple[int, int, int, int] = (0, 0, 0, 0)  # answered, failed, agreed, compared


def read(metrics: Metrics, service: str, version: str) -> Counts:
    vm = metrics.version(service, version)
    return Counts(vm.answered, vm.failed, vm.buckets(), metrics.shadow(service, version).totals())


def quantile(q: float, bounds: tuple[float, ...], cumulative: tuple[float, ...]) -> float | None:
    """Prometheus' ``histogram_quantile``: linear inside the bucket holding rank ``q * n``; the
    +Inf bucket answers with the highest finite bound. None with no samples."""
    if not cumulative or cumulative[-1] <= 0:
        return None
    rank = q * cumulative[-1]
    lower, below = 0.0, 0.0
    for bound, count in zip((*bounds, float("inf")), cumulative, strict=True):
        if count >= rank:
            if bound == float("inf"):
                return bounds[-1]
            inside = count - below
            return lower + (bound - lower) * ((rank - below) / inside if inside else 1.0)
        lower, below = bound, count
    return bounds[-1]


def window(now: Counts, base: Counts, ready: int, starting: int, shadow: bool) -> VersionObs:
    """The version's evidence since ``base``. ``shadow``: the version serves only mirror
    copies, so its requests and errors are the copies'; agreement is the mirror's either way."""
    s_answered, s_failed, agreed, compared = (a - b for a, b in zip(now.shadow, base.shadow,
                                                                     strict=True))
    if shadow:
        requests, errors, p99 = s_answered, s_failed, None
    else:
        requests, errors = now.answered - base.answered, now.failed - base.failed
        start = base.buckets or (0.0,) * len(now.buckets)
        p99 = quantile(0.99, LATENCY_BUCKETS, tuple(a - b for a, b in zip(now.buckets, start,
                                                                           strict=True)))
    return VersionObs(ready=ready, starting=starting, requests=requests, errors=errors,
                      p99_s=p99, agreement=agreed / compared if compared else None,
                      agreement_samples=compared)


def revisions(svc: ServiceSpec, plan: Plan, state: RolloutState) -> dict[str, str]:
    """The revision each version of a rollout must run, by the config (a revision rollout's
    stable: the old definition it journaled)."""
    out = {v: svc.versions[v].revision() for v in (plan.stable, plan.target) if v in svc.versions}
    if plan.stable not in svc.versions and state.stable_spec:
        out[plan.stable] = VersionSpec.model_validate_json(state.stable_spec).revision()
    return out
