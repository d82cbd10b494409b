"""Pure analysis of a new version's live metrics against thresholds.

Three verdicts, not two: too few samples is *inconclusive*, which holds a rollout but never
promotes it (a canary nobody calls proves nothing) and never counts as a failure on its own (a
quiet hour must not roll back a good version). Each result names its check, value, threshold and
sample count, so the log line and metric of an automatic rollback can say exactly why.
"""

from __future__ import annotations

from dataclasses import dataclass, replace

from gateway.control.rollout.model import (
    AnalysisSpec,
    ArmComparison,
    CheckResult,
    Phase,
    RolloutState,
    Verdict,
    VersionObs,
)


@dataclass(frozen=True)
class AnalysisResult:
    """The checks of one interval and their combined verdict: any failure fails, else any
    inconclusive check makes the whole inconclusive, else it passes."""

    verdict: Verdict
    checks: tuple[CheckResult, ...]

    def failed(self) -> tuple[CheckResult, ...]:
        return tuple(c for c in self.checks if c.verdict == "fail")

    def lines(self) -> tuple[str, ...]:
        return tuple(str(c) for c in self.checks)


def combine(checks: list[CheckResult]) -> AnalysisResult:
    verdicts = {c.verdict for c in checks}
    verdict: Verdict = "fail" if "fail" in verdicts else \
        "inconclusive" if "inconclusive" in verdicts else "pass"
    return AnalysisResult(verdict, tuple(checks))


def _check(name: str, value: float | None, threshold: float, samples: int, needed: int,
           bad: bool) -> CheckResult:
    if samples < needed or value is None:
        return CheckResult(name, "inconclusive", value, threshold, samples)
    return CheckResult(name, "fail" if bad else "pass", value, threshold, samples)


def evaluate(spec: AnalysisSpec, obs: VersionObs,
             baseline: VersionObs | None = None) -> AnalysisResult:
    """Check one version's window against fixed thresholds (canary, shadow), and a canary's
    p99 against ``baseline``, the stable version over the same window: a fixed ceiling high
    enough for every model lets a much slower new version through (+200 ms under 500 ms)."""
    checks = []
    n = obs.requests
    if spec.max_error_rate is not None:
        rate = obs.errors / n if n else None
        checks.append(_check("error_rate", rate, spec.max_error_rate, n, spec.min_requests,
                             rate is not None and rate > spec.max_error_rate))
    if spec.max_p99_s is not None:
        p99 = obs.p99_s
        checks.append(_check("p99", p99, spec.max_p99_s, n, spec.min_requests,
                             p99 is not None and p99 > spec.max_p99_s))
    if spec.max_p99_increase_s is not None:
        increase = None
        if baseline is not None and obs.p99_s is not None and baseline.p99_s is not None:
            increase = obs.p99_s - baseline.p99_s
        both = min(n, baseline.requests) if baseline is not None else 0
        checks.append(_check("p99_increase", increase, spec.max_p99_increase_s, both,
                             spec.min_requests,
                             increase is not None and increase > spec.max_p99_increase_s))
    if spec.min_agreement is not None:
        agree = obs.agreement
        checks.append(_check("agreement", agree, spec.min_agreement, obs.agreement_samples,
                             spec.min_requests, agree is not None and agree < spec.min_agreement))
    return combine(checks)


def compare(spec: ArmComparison, baseline: VersionObs, candidate: VersionObs) -> AnalysisResult:
    """Check the candidate arm against the baseline arm (A/B). Both arms need ``min_requests``:
    a comparison with an empty baseline is as meaningless as one with an empty candidate."""
    checks = []
    n = min(baseline.requests, candidate.requests)
    if spec.max_error_rate_delta is not None:
        delta = None
        if baseline.requests and candidate.requests:
            delta = candidate.errors / candidate.requests - baseline.errors / baseline.requests
        checks.append(_check("error_rate_delta", delta, spec.max_error_rate_delta, n,
                             spec.min_requests,
                             delta is not None and delta > spec.max_error_rate_delta))
    if spec.max_p99_ratio is not None:
        ratio = None
        if baseline.p99_s is not None and candidate.p99_s is not None:
            # a zero baseline p99 (all answered in the first bucket) must not divide by zero
            ratio = candidate.p99_s / baseline.p99_s if baseline.p99_s > 0 else \
                (1.0 if candidate.p99_s <= 0 else float("inf"))
        checks.append(_check("p99_ratio", ratio, spec.max_p99_ratio, n, spec.min_requests,
                             ratio is not None and ratio > spec.max_p99_ratio))
    return combine(checks)


def due(state: RolloutState, interval: float, now: float) -> bool:
    """An analysis runs once per interval, counted from the last one or from the step's start,
    so each one sees a fresh window."""
    since = state.last_analysis_at if state.last_analysis_at is not None else \
        (state.step_started_at if state.step_started_at is not None else state.started_at)
    return now - since >= interval


def record(state: RolloutState, result: AnalysisResult, now: float,
           failure_limit: int) -> tuple[RolloutState, bool]:
    """Fold one interval's result into the consecutive counters; True when the failure limit is
    reached. A pass resets the failures; an inconclusive interval resets neither counter, so a
    failing version with patchy traffic cannot dodge the limit by alternating with quiet
    intervals, and a passing one cannot be promoted on the strength of old passes alone (the
    planners look at ``last_verdict``)."""
    failures, passes = state.failures, state.passes
    if result.verdict == "fail":
        failures, passes = failures + 1, 0
    elif result.verdict == "pass":
        failures, passes = 0, passes + 1
    new = replace(state, failures=failures, passes=passes, last_verdict=result.verdict,
                  last_analysis_at=now, last_checks=result.lines())
    return new, failures >= max(1, failure_limit)


def failure_reason(result: AnalysisResult, failures: int) -> str:
    """The log line of an automatic rollback: which checks failed with which values."""
    names = "; ".join(str(c) for c in result.failed())
    return f"analysis failed {failures} consecutive intervals: {names}"


def held(state: RolloutState, next_step_at: float | None, now: float) -> str | None:
    """Why a rollout whose step is due does not move (the planners go on only after a passing
    analysis), for ``rollout status``; None when it is not held. "next step in 0s" would say
    nothing is wrong."""
    if next_step_at is None or now < next_step_at or state.phase != Phase.PROGRESSING \
            or state.last_verdict == "pass":
        return None
    return f"step held: waiting for a passing analysis (last: {state.last_verdict or 'none yet'})"
