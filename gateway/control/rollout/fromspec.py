"""The config's ``rollout:`` section (pydantic, ``gateway/spec/models.py``) as a planner ``Plan``.

Pure: the controller decides which version is stable (the journal's, ``from``, or the only
other version) and how large the full set is, and this builds the frozen plan the planners take.
"""

from __future__ import annotations

from typing import Any

from gateway.control.rollout.model import (
    ABPlan,
    AnalysisSpec,
    ArmComparison,
    BlueGreenPlan,
    CanaryPlan,
    CanaryStep,
    Plan,
    RampedPlan,
    RecreatePlan,
    RouteRule,
    ShadowPlan,
)
from gateway.spec import models as m


def serving_of(svc: m.ServiceSpec) -> str:
    """The version the rollout section is about: ``to``, else the service's only version."""
    r = svc.rollout
    assert r is not None
    return r.to if r.to is not None else next(iter(svc.versions))


def stable_of(svc: m.ServiceSpec) -> str:
    """The version serving before a move to ``to``, by the config alone: ``from``, else the one
    version that is not ``to`` (the config checks guarantee there is exactly one then)."""
    r = svc.rollout
    assert r is not None
    if r.from_ is not None:
        return r.from_
    return next(v for v in svc.versions if v != r.to)


def to_plan(service: str, svc: m.ServiceSpec, stable: str, target: str | None = None) -> Plan:
    """The plan of ``svc``'s rollout from ``stable`` to ``target`` (default: the section's
    version); the full set is the target version's ``replicas`` (at least one)."""
    r = svc.rollout
    assert r is not None
    goal = target or serving_of(svc)
    base: dict[str, Any] = {"service": service, "stable": stable, "target": goal,
                            "replicas": max(1, svc.versions[goal].replicas),
                            "scale_down_delay": r.scale_down_delay}
    if isinstance(r, m.RecreateRollout):
        return RecreatePlan(**base)
    if isinstance(r, m.RampedRollout):
        return RampedPlan(**base, max_surge=r.max_surge, max_unavailable=r.max_unavailable)
    if isinstance(r, m.BlueGreenRollout):
        return BlueGreenPlan(**base, preview=_rule(r.preview),
                             auto_promote_after=r.auto_promote_after)
    if isinstance(r, m.CanaryRollout):
        return CanaryPlan(**base, steps=tuple(CanaryStep(s.weight, s.pause) for s in r.steps),
                          analysis=_analysis(r.analysis),
                          canary_replicas=None if r.canary_replicas == "auto"
                          else r.canary_replicas,
                          mirror_percent=r.mirror_percent)
    if isinstance(r, m.ABRollout):
        a = r.analysis
        return ABPlan(**base, rule=_rule(r.rule), weight=r.weight,
                      candidate_replicas=r.candidate_replicas,
                      analysis=None if a is None else ArmComparison(
                          interval=a.interval, min_requests=a.min_requests,
                          failure_limit=a.failure_limit,
                          max_error_rate_delta=a.max_error_rate_delta,
                          max_p99_ratio=a.max_p99_ratio,
                          promote_after_passes=a.promote_after_passes))
    shadow = _analysis(r.analysis)
    assert shadow is not None
    return ShadowPlan(**base, percent=r.percent, duration=r.duration, analysis=shadow,
                      auto_promote=r.auto_promote)


def _rule(rule: m.RouteRuleSpec | None) -> RouteRule | None:
    if rule is None:
        return None
    if rule.header is not None:
        return RouteRule(rule.header, rule.value, kind="header")
    assert rule.cookie is not None
    return RouteRule(rule.cookie, rule.value, kind="cookie")


def _analysis(a: m.AnalysisSpec | None) -> AnalysisSpec | None:
    if a is None:
        return None
    return AnalysisSpec(interval=a.interval, min_requests=a.min_requests,
                        failure_limit=a.failure_limit, max_error_rate=a.max_error_rate,
                        max_p99_s=a.max_p99, min_agreement=a.min_agreement,
                        max_p99_increase_s=a.max_p99_increase)
