"""Value types shared by the rollout planners, the journal and the timeline.

Everything here is a frozen dataclass of plain values (str, int, float, bool, tuples, enums) so
that a later session can mirror the plan classes as pydantic models field for field, the journal
can write a ``RolloutState`` as JSON and read back an equal one, and the planners stay pure: they
take these values and return new ones, never mutating anything.

Versions are plain strings. A rollout between two revisions of one version (a changed image tag)
is expressed by the caller giving each revision its own key (e.g. ``"v1@3f2a"``); the planners do
not care what the key means.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from enum import StrEnum
from typing import Literal


class Phase(StrEnum):
    """Where a rollout is. ``done``, ``aborted`` and ``degraded`` end it: ``aborted`` was asked for
    (abort / undo), ``degraded`` was the planner's own rollback after a failed analysis, so an
    operator knows which one needs looking at."""

    PROGRESSING = "progressing"
    PAUSED = "paused"
    PROMOTING = "promoting"      # the new version is scaling to full size before the switch
    PROMOTED = "promoted"        # all traffic on the new version; old set still warm for undo
    ABORTED = "aborted"
    DEGRADED = "degraded"
    DONE = "done"


ENDED = frozenset({Phase.ABORTED, Phase.DEGRADED, Phase.DONE})

CommandKind = Literal["promote", "pause", "resume", "abort", "undo", "retry"]


@dataclass(frozen=True)
class Command:
    """An operator's request (CLI ``serve-gateway rollout ...`` or the admin API). ``full`` only
    matters for promote: skip every remaining step instead of just the current one."""

    kind: CommandKind
    full: bool = False


# -- plans ------------------------------------------------------------------------------------
@dataclass(frozen=True)
class RouteRule:
    """Send requests whose header (or cookie) ``name`` equals ``value`` to version ``to``."""

    name: str
    value: str
    to: str = ""
    kind: Literal["header", "cookie"] = "header"


@dataclass(frozen=True)
class AnalysisSpec:
    """Thresholds checked once per ``interval`` over the new version's window of metrics.

    A check whose sample count is under ``min_requests`` is inconclusive: it holds the rollout but
    never promotes it, because too little traffic proves nothing. ``failure_limit`` consecutive
    failed intervals abort the rollout. A threshold left ``None`` is not checked."""

    interval: float = 30.0
    min_requests: int = 50
    failure_limit: int = 3
    max_error_rate: float | None = 0.01
    max_p99_s: float | None = None
    min_agreement: float | None = None
    max_p99_increase_s: float | None = None   # over the stable's p99 in the same window


@dataclass(frozen=True)
class ArmComparison:
    """A/B analysis: the candidate arm against the baseline arm, not against fixed numbers, so a
    slow day for both arms does not fail the experiment."""

    interval: float = 60.0
    min_requests: int = 100
    failure_limit: int = 3
    max_error_rate_delta: float | None = 0.01   # candidate rate minus baseline rate
    max_p99_ratio: float | None = 1.2           # candidate p99 / baseline p99
    promote_after_passes: int | None = None     # None: only a person promotes


@dataclass(frozen=True)
class PlanBase:
    """What every strategy shares: the service, the version serving now (``stable``), the one to
    move to (``target``), the size of the full set, and how long the old set stays warm after the
    switch so that undo needs no cold start."""

    service: str
    stable: str
    target: str
    replicas: int = 1
    scale_down_delay: float = 30.0
    max_replicas: int | None = None    # what the runtime can hold (GPUs); only the timeline warns


@dataclass(frozen=True)
class RecreatePlan(PlanBase):
    """Stop the old set, then start the new one; the gap is covered by the request queue."""


@dataclass(frozen=True)
class RampedPlan(PlanBase):
    """Rolling replacement with at most ``max_surge`` extra and ``max_unavailable`` missing."""

    max_surge: int = 1
    max_unavailable: int = 0


@dataclass(frozen=True)
class BlueGreenPlan(PlanBase):
    """Full new set alongside the old; one atomic switch. ``auto_promote_after`` counts from the
    moment every new replica is ready; ``None`` waits for ``promote``."""

    preview: RouteRule | None = None
    auto_promote_after: float | None = 0.0


@dataclass(frozen=True)
class CanaryStep:
    """Send ``weight`` percent to the new version, then wait ``pause`` seconds (``None``: until
    promoted by hand)."""

    weight: int
    pause: float | None = 60.0


@dataclass(frozen=True)
class CanaryPlan(PlanBase):
    """Weighted steps with analysis between them. ``canary_replicas`` ``None`` means auto: the
    new version's replicas follow its weight."""

    steps: tuple[CanaryStep, ...] = (CanaryStep(10), CanaryStep(50))
    analysis: AnalysisSpec | None = field(default_factory=AnalysisSpec)
    canary_replicas: int | None = None
    mirror_percent: float = 0.0        # > 0: also mirror stable traffic for the agreement check


@dataclass(frozen=True)
class ABPlan(PlanBase):
    """An experiment: ``rule`` and/or ``weight`` pick the candidate's share; held until promoted
    or aborted, by hand or by ``analysis``."""

    rule: RouteRule | None = None
    weight: int = 0
    candidate_replicas: int = 1
    analysis: ArmComparison | None = None


@dataclass(frozen=True)
class ShadowPlan(PlanBase):
    """Mirror ``percent`` of traffic to the new version for ``duration`` seconds of analysis."""

    percent: float = 10.0
    duration: float = 300.0
    analysis: AnalysisSpec = field(default_factory=AnalysisSpec)
    auto_promote: bool = True


Plan = RecreatePlan | RampedPlan | BlueGreenPlan | CanaryPlan | ABPlan | ShadowPlan


# -- observations -----------------------------------------------------------------------------
@dataclass(frozen=True)
class VersionObs:
    """One version as the controller measured it. Counts cover the last analysis window (the
    controller keeps a sliding window of the plan's interval), so that consecutive analyses see
    disjoint evidence. ``p99_s`` is ``None`` with no samples."""

    ready: int = 0
    starting: int = 0
    requests: int = 0
    errors: int = 0
    p99_s: float | None = None
    agreement: float | None = None
    agreement_samples: int = 0


@dataclass(frozen=True)
class Observations:
    """Per-version measurements; a version the controller has not seen reads as all zero."""

    versions: dict[str, VersionObs] = field(default_factory=dict)

    def of(self, version: str) -> VersionObs:
        return self.versions.get(version, VersionObs())


# -- outputs ----------------------------------------------------------------------------------
Verdict = Literal["pass", "fail", "inconclusive"]


@dataclass(frozen=True)
class CheckResult:
    """One check of one analysis interval."""

    name: str                 # error_rate, p99, p99_increase, agreement, error_rate_delta, p99_ratio
    verdict: Verdict
    value: float | None
    threshold: float
    samples: int

    def __str__(self) -> str:
        value = "n/a" if self.value is None else f"{self.value:.4g}"
        return f"{self.name}={value} (threshold {self.threshold:.4g}, n={self.samples}): " \
               f"{self.verdict}"


@dataclass(frozen=True)
class Mirror:
    to: str
    percent: float


@dataclass(frozen=True)
class Decision:
    """What the controller applies this tick: replica counts and weights per version, an optional
    mirror, route rules (a blue/green preview or an A/B rule), and what to show and log.
    ``checks`` is the analysis run at this tick, if one ran (for the per-check metric);
    ``analysis`` the latest one's display lines. ``final`` says nothing will change without a
    command, so the controller may stop ticking."""

    replicas: dict[str, int]
    weights: dict[str, int]
    phase: Phase
    step: int = 0
    mirror: Mirror | None = None
    rules: tuple[RouteRule, ...] = ()
    next_step_at: float | None = None
    reasons: tuple[str, ...] = ()
    analysis: tuple[str, ...] = ()
    checks: tuple[CheckResult, ...] = ()
    final: bool = False


@dataclass(frozen=True)
class RolloutState:
    """Everything a rollout needs to resume exactly where it was: the journal persists this. It
    holds only instants the planner set at events (never "now"), so it changes at most once per
    event or analysis interval and writing it on every change stays cheap."""

    service: str
    strategy: str
    stable: str
    target: str
    started_at: float
    phase: Phase = Phase.PROGRESSING
    step: int = 0
    step_started_at: float | None = None
    weight: int = 0                     # traffic percent applied to the target
    new_replicas: int = 0               # ramped: desired counts it moved to
    old_replicas: int = 0
    failures: int = 0                   # consecutive failed analyses
    passes: int = 0                     # consecutive passed analyses
    last_verdict: str | None = None     # pass / fail / inconclusive, within the current step
    last_analysis_at: float | None = None
    last_checks: tuple[str, ...] = ()
    ready_at: float | None = None       # blue/green: all ready; shadow: mirroring began
    approved: bool = False              # promote asked before the planner could act on it
    paused_from: Phase | None = None
    paused_at: float | None = None
    promoted_at: float | None = None
    ended_at: float | None = None
    reason: str = ""
    # a revision rollout's old replica definition (JSON of the config's version), so that a
    # restarted gateway can run the old revision again under ``stable``; "" otherwise
    stable_spec: str = ""


STRATEGIES: dict[type, str] = {
    RecreatePlan: "recreate", RampedPlan: "ramped", BlueGreenPlan: "blue_green",
    CanaryPlan: "canary", ABPlan: "ab", ShadowPlan: "shadow",
}


def start_state(plan: Plan, now: float) -> RolloutState:
    """A fresh rollout of ``plan`` beginning at ``now``."""
    return RolloutState(service=plan.service, strategy=STRATEGIES[type(plan)], stable=plan.stable,
                        target=plan.target, started_at=now, old_replicas=plan.replicas)
