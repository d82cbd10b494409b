"""Pure dry run of a rollout plan for ``serve-gateway plan``: what happens when, at the earliest.

The timeline assumes every analysis passes at its first chance and every replica becomes ready
``start_s`` seconds after it is asked for (the caller passes an estimate, e.g. the cold-start
histogram's median). ``to_full`` is the earliest instant all traffic is on the new version
(``None`` when a person must promote); ``to_rollback`` is the worst time from a bad new version to
the stable version serving alone. Warnings catch plans that cannot work as written: an analysis
whose ``min_requests`` the expected traffic share never reaches (the rollout would hold forever),
or a peak replica count above ``max_replicas``.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from gateway.control.rollout.canary import canary_replicas
from gateway.control.rollout.model import (
    STRATEGIES,
    ABPlan,
    AnalysisSpec,
    BlueGreenPlan,
    CanaryPlan,
    Plan,
    PlanBase,
    RampedPlan,
    RecreatePlan,
    ShadowPlan,
)
from gateway.control.rollout.ramped import limits
from gateway.control.rollout.shadow import shadow_replicas


@dataclass(frozen=True)
class TimelineStep:
    at: float                    # seconds after the rollout starts, at the earliest
    label: str
    weights: dict[str, int]
    replicas: dict[str, int]
    manual: bool = False         # waits for ``promote``; later steps are timed from the promote


@dataclass(frozen=True)
class Timeline:
    strategy: str
    steps: tuple[TimelineStep, ...]
    to_full: float | None
    to_rollback: float
    peak_replicas: int
    warnings: tuple[str, ...]


class _Builder:
    """Accumulates steps at a running clock, so each strategy reads as its sequence of events."""

    def __init__(self, plan: PlanBase) -> None:
        self.plan, self.t, self.manual = plan, 0.0, False
        self.steps: list[TimelineStep] = []
        self.warnings: list[str] = []
        self.to_full: float | None = None
        self.peak = plan.replicas

    def add(self, label: str, target_weight: int, stable_n: int, target_n: int,
            manual: bool = False) -> None:
        self.manual = self.manual or manual
        self.peak = max(self.peak, stable_n + target_n)
        p = self.plan
        self.steps.append(TimelineStep(self.t, label, {p.stable: 100 - target_weight,
                                                       p.target: target_weight},
                                       {p.stable: stable_n, p.target: target_n}, manual))

    def switch(self, start_s: float) -> None:
        """The common ending: scale to full, switch, stop the old set after the delay."""
        p = self.plan
        self.add(f"scale {p.target} to {p.replicas}", self.steps[-1].weights[p.target]
                 if self.steps else 0, p.replicas, p.replicas)
        self.t += start_s
        self.to_full = None if self.manual else self.t
        self.add(f"switch: all traffic to {p.target}; {p.stable} kept warm", 100,
                 p.replicas, p.replicas)
        self.t += p.scale_down_delay
        self.add(f"stop {p.stable}", 100, 0, p.replicas)

    def traffic(self, what: str, rps: float | None, share: float, spec: AnalysisSpec) -> None:
        """Warn when ``share`` of ``rps`` cannot fill an analysis window."""
        if rps is None or share <= 0:
            return
        per_window = rps * share * spec.interval
        if per_window < spec.min_requests:
            self.warnings.append(
                f"{what}: about {per_window:.0f} requests per {spec.interval:g}s analysis window "
                f"at {rps:g} req/s, below min_requests {spec.min_requests}: the analysis stays "
                f"inconclusive and the rollout holds")


def _recreate(plan: RecreatePlan, b: _Builder, rps: float | None, start_s: float) -> float:
    b.add(f"stop {plan.stable}; requests queue", 100, 0, 0)
    b.add(f"start {plan.target}", 100, 0, plan.replicas)
    b.t += start_s
    b.to_full = b.t
    b.add(f"{plan.target} serves", 100, 0, plan.replicas)
    if start_s > 0:
        b.warnings.append(f"requests wait about {start_s:g}s in the queue while {plan.target} "
                          f"starts; the queue timeout must be longer")
    return start_s   # the old set has to start again


def _ramped(plan: RampedPlan, b: _Builder, rps: float | None, start_s: float) -> float:
    surge, unavailable = limits(plan)
    rounds = math.ceil(plan.replicas / (surge + unavailable))
    b.peak = max(b.peak, plan.replicas + surge)
    for k in range(1, rounds + 1):
        b.t += start_s
        new_n = min(plan.replicas, k * (surge + unavailable))
        b.add(f"round {k}/{rounds}: {plan.target} {new_n}/{plan.replicas} ready",
              round(100 * new_n / plan.replicas), plan.replicas - new_n, new_n)
    b.to_full = b.t
    return rounds * start_s   # the walk back restarts old replicas round by round


def _blue_green(plan: BlueGreenPlan, b: _Builder, rps: float | None, start_s: float) -> float:
    note = f"; preview by header {plan.preview.name}" if plan.preview else ""
    b.add(f"start {plan.target} alongside{note}", 0, plan.replicas, plan.replicas)
    b.t += start_s
    manual = plan.auto_promote_after is None
    b.add("every new replica ready" + ("; waiting for promote" if manual else ""), 0,
          plan.replicas, plan.replicas, manual=manual)
    b.t += plan.auto_promote_after or 0.0
    b.switch(0.0)
    return 0.0   # undo within scale_down_delay is one weight change


def _canary(plan: CanaryPlan, b: _Builder, rps: float | None, start_s: float) -> float:
    spec, before, n = plan.analysis, 0, 0
    if spec is None:
        b.warnings.append("no analysis: steps advance on time alone and nothing rolls back "
                          "by itself")
    elif spec.min_agreement is not None and plan.mirror_percent <= 0:
        b.warnings.append("min_agreement is set but mirror_percent is 0: agreement is never "
                          "measured, so the analysis stays inconclusive")
    for i, step in enumerate(plan.steps, 1):
        if step.weight < before:
            b.warnings.append(f"step {i} lowers the weight ({before}% -> {step.weight}%)")
        want = canary_replicas(plan, step.weight)
        if want > n:
            b.t += start_s
        n, before = max(n, want), step.weight
        b.add(f"step {i}: {plan.target} at {step.weight}%", step.weight, plan.replicas, n,
              manual=step.pause is None)
        soak = step.pause or 0.0
        if spec is not None:
            b.traffic(f"step {i} ({step.weight}%)", rps, step.weight / 100, spec)
            soak = max(soak, spec.interval)
        b.t += soak
    b.switch(start_s)
    return spec.failure_limit * spec.interval if spec else 0.0


def _ab(plan: ABPlan, b: _Builder, rps: float | None, start_s: float) -> float:
    b.t += start_s
    spec = plan.analysis
    manual = spec is None or spec.promote_after_passes is None
    b.add(f"experiment: {plan.target} gets {plan.weight}%"
          + (f" and {plan.rule.kind} {plan.rule.name}={plan.rule.value}" if plan.rule else ""),
          plan.weight, plan.replicas, plan.candidate_replicas, manual=manual)
    if spec is not None:
        if plan.rule is None:   # a rule's share of traffic cannot be known in advance
            window = AnalysisSpec(interval=spec.interval, min_requests=spec.min_requests)
            b.traffic("candidate arm", rps, plan.weight / 100, window)
        b.t += spec.interval * (spec.promote_after_passes or 1)
    b.switch(start_s)
    return spec.failure_limit * spec.interval if spec else 0.0


def _shadow(plan: ShadowPlan, b: _Builder, rps: float | None, start_s: float) -> float:
    spec = plan.analysis
    b.t += start_s
    b.add(f"mirror {plan.percent:g}% to {plan.target}", 0, plan.replicas,
          shadow_replicas(plan), manual=not plan.auto_promote)
    b.traffic("shadow", rps, plan.percent / 100, spec)
    b.t += max(plan.duration, spec.interval)
    b.switch(start_s)
    return spec.failure_limit * spec.interval   # users see only stable answers meanwhile


_LAYOUTS: dict[str, Callable[[Any, _Builder, float | None, float], float]] = {
    "recreate": _recreate, "ramped": _ramped, "blue_green": _blue_green, "canary": _canary,
    "ab": _ab, "shadow": _shadow,
}


def timeline(plan: Plan, *, rps: float | None = None, start_s: float = 0.0) -> Timeline:
    """The plan's earliest timeline. ``rps`` is the service's expected (or, against a running
    gateway, observed) request rate; ``None`` skips the traffic warnings."""
    strategy = STRATEGIES[type(plan)]
    b = _Builder(plan)
    rollback = _LAYOUTS[strategy](plan, b, rps, start_s)
    if plan.max_replicas is not None and b.peak > plan.max_replicas:
        b.warnings.append(f"needs {b.peak} replicas at its peak, more than max_replicas "
                          f"{plan.max_replicas}")
    return Timeline(strategy, tuple(b.steps), b.to_full, rollback, b.peak, tuple(b.warnings))
