"""config/rollout-canary.yaml as shipped, driven by the real planner on latencies recorded in the
real metrics (histograms -> windows -> p99): a v2 200 ms slower than v1 must roll back, never be
promoted (on main its p99 of ~0.25 s passed the example's 500 ms ceiling)."""

from __future__ import annotations

from gateway.control import rolloutobs
from gateway.control.rollout import plan as run_plan
from gateway.control.rollout.fromspec import stable_of, to_plan
from gateway.control.rollout.model import Observations, Phase, RolloutState, start_state
from gateway.control.rollouts import window_start
from gateway.metrics import Metrics
from gateway.spec import load_spec
from tests.helpers import REPO_ROOT

RATE = 40          # requests/s over the service


def drive(extra_latency: float, seconds: int = 1800) -> tuple[RolloutState, list[str]]:
    """The shipped example under steady load; v2 answers ``extra_latency`` slower than v1."""
    svc = load_spec(REPO_ROOT / "config" / "rollout-canary.yaml").services["echo"]
    plan = to_plan("echo", svc, stable_of(svc))
    metrics, now = Metrics(), 1000.0
    state, log = start_state(plan, now), []
    versions = (plan.stable, plan.target)
    base = {v: rolloutobs.read(metrics, "echo", v) for v in versions}
    opened = window_start(state)
    ready = {plan.stable: plan.replicas, plan.target: 0}
    weight = 0
    for _ in range(seconds):
        now += 1
        for i in range(RATE):
            to_canary = i < RATE * weight // 100
            version = plan.target if to_canary else plan.stable
            latency = 0.004 + (i % 7) * 0.001 + (extra_latency if to_canary else 0.0)
            metrics.version("echo", version).observe(200, latency)
        current = {v: rolloutobs.read(metrics, "echo", v) for v in versions}
        obs = Observations({v: rolloutobs.window(current[v], base[v], ready[v], 0, False)
                            for v in versions})
        decision, state = run_plan(plan, state, obs, now, None)
        log += decision.reasons
        if window_start(state) != opened:       # as the controller does: a fresh window
            opened, base = window_start(state), current
        ready = dict(decision.replicas)         # a perfect supervisor
        weight = decision.weights.get(plan.target, 0)
        if state.phase in (Phase.PROMOTING, Phase.PROMOTED, Phase.DONE, Phase.DEGRADED):
            break
    return state, log


def test_shipped_canary_rolls_back_a_version_200ms_slower() -> None:
    state, log = drive(0.200)
    assert state.phase == Phase.DEGRADED, log
    assert "p99_increase" in state.reason, state.reason


def test_shipped_canary_still_promotes_a_version_as_fast() -> None:
    state, log = drive(0.0)
    assert state.phase == Phase.PROMOTING, log


def test_p99_increase_needs_both_versions_measured() -> None:
    from gateway.control.rollout.analysis import evaluate
    from gateway.control.rollout.model import AnalysisSpec, VersionObs

    spec = AnalysisSpec(min_requests=50, max_error_rate=None, max_p99_increase_s=0.1)
    canary = VersionObs(ready=1, requests=100, p99_s=0.30)
    assert evaluate(spec, canary).verdict == "inconclusive"              # no baseline
    quiet = VersionObs(ready=2, requests=10, p99_s=0.01)
    assert evaluate(spec, canary, quiet).verdict == "inconclusive"       # too few stable answers
    assert evaluate(spec, canary, VersionObs(ready=2, requests=900, p99_s=0.01)).verdict == "fail"
    assert evaluate(spec, canary, VersionObs(ready=2, requests=900, p99_s=0.25)).verdict == "pass"


def test_p99_increase_is_refused_on_a_shadow_rollout() -> None:
    import pytest

    from gateway.errors import ConfigError
    from gateway.spec import parse_spec

    text = (REPO_ROOT / "config" / "rollout-shadow.yaml").read_text().replace(
        "        min_agreement: 0.99", "        min_agreement: 0.99\n        max_p99_increase: 50ms")
    with pytest.raises(ConfigError, match="rollout.analysis.max_p99_increase: only a canary"):
        parse_spec(text)
