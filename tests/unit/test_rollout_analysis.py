"""Analysis: verdicts per check, combination, consecutive counting, interval timing."""

from __future__ import annotations

from gateway.control.rollout.analysis import (
    CheckResult,
    combine,
    compare,
    due,
    evaluate,
    failure_reason,
    record,
)
from gateway.control.rollout.model import AnalysisSpec, ArmComparison, RolloutState, VersionObs

SPEC = AnalysisSpec(interval=30, min_requests=100, failure_limit=2, max_error_rate=0.02,
                    max_p99_s=0.25, min_agreement=0.99)
STATE = RolloutState(service="s", strategy="canary", stable="a", target="b", started_at=0.0)


def obs(**kw: object) -> VersionObs:
    base: dict[str, object] = {"requests": 1000, "errors": 0, "p99_s": 0.1, "agreement": 1.0,
                               "agreement_samples": 500}
    base.update(kw)
    return VersionObs(**base)  # type: ignore[arg-type]


def test_pass_and_each_failure_names_check_and_value() -> None:
    assert evaluate(SPEC, obs()).verdict == "pass"
    r = evaluate(SPEC, obs(errors=50))
    assert r.verdict == "fail" and [c.name for c in r.failed()] == ["error_rate"]
    assert r.failed()[0].value == 0.05 and "error_rate=0.05" in str(r.failed()[0])
    assert evaluate(SPEC, obs(p99_s=0.3)).failed()[0].name == "p99"
    agreement = evaluate(SPEC, obs(agreement=0.9)).failed()[0]
    assert agreement.name == "agreement" and agreement.samples == 500


def test_too_few_samples_is_inconclusive_even_when_bad() -> None:
    r = evaluate(SPEC, obs(requests=99, errors=99))
    assert r.verdict == "inconclusive" and not r.failed()
    r = evaluate(SPEC, obs(agreement_samples=10, agreement=0.0))
    assert r.verdict == "inconclusive" and r.checks[2].verdict == "inconclusive"
    assert evaluate(SPEC, obs(p99_s=None)).checks[1].verdict == "inconclusive"
    assert evaluate(SPEC, VersionObs()).verdict == "inconclusive"


def test_fail_beats_inconclusive_and_unset_thresholds_are_skipped() -> None:
    r = evaluate(SPEC, obs(errors=500, agreement_samples=0))
    assert r.verdict == "fail"
    only_errors = AnalysisSpec(max_error_rate=0.1, max_p99_s=None, min_agreement=None)
    assert [c.name for c in evaluate(only_errors, obs()).checks] == ["error_rate"]
    assert combine([]).verdict == "pass"


def test_compare_arms() -> None:
    spec = ArmComparison(min_requests=100, max_error_rate_delta=0.01, max_p99_ratio=1.5)
    assert compare(spec, obs(), obs(p99_s=0.14)).verdict == "pass"
    r = compare(spec, obs(errors=10), obs(errors=30))
    worse = r.failed()[0]
    assert worse.name == "error_rate_delta" and abs((worse.value or 0) - 0.02) < 1e-9
    assert compare(spec, obs(), obs(p99_s=0.2)).failed()[0].name == "p99_ratio"
    assert compare(spec, obs(requests=0), obs()).verdict == "inconclusive"
    assert compare(spec, obs(p99_s=0.0), obs(p99_s=0.0)).verdict == "pass"
    assert compare(spec, obs(p99_s=0.0), obs(p99_s=0.1)).verdict == "fail"


def test_record_counts_consecutive_failures() -> None:
    fail = evaluate(SPEC, obs(errors=500))
    ok = evaluate(SPEC, obs())
    quiet = evaluate(SPEC, VersionObs())
    s, hit = record(STATE, fail, 30.0, 2)
    assert (s.failures, hit, s.last_verdict, s.last_analysis_at) == (1, False, "fail", 30.0)
    s, hit = record(s, quiet, 60.0, 2)
    assert (s.failures, s.passes, hit) == (1, 0, False)
    s, hit = record(s, fail, 90.0, 2)
    assert hit and s.failures == 2
    s, hit = record(s, ok, 120.0, 2)
    assert (s.failures, s.passes, hit) == (0, 1, False)
    reason = failure_reason(fail, 2)
    assert "error_rate=0.5" in reason and "2 consecutive" in reason


def test_due_counts_from_last_analysis_or_step_start() -> None:
    assert not due(STATE, 30, 29.0) and due(STATE, 30, 30.0)
    from dataclasses import replace
    assert not due(replace(STATE, step_started_at=10.0), 30, 30.0)
    assert due(replace(STATE, step_started_at=10.0, last_analysis_at=0.0), 30, 30.0)


def test_check_str_without_value() -> None:
    assert "n/a" in str(CheckResult("p99", "inconclusive", None, 0.25, 0))
