"""A/B planner: rule and weight after the candidate is ready, holds, arm comparison."""

from __future__ import annotations

from gateway.control.rollout.model import ABPlan, ArmComparison, Phase, RouteRule
from tests.fakes import GOOD, Sim

RULE = RouteRule(name="group", value="b", kind="cookie")
CMP = ArmComparison(interval=60, min_requests=100, failure_limit=2, max_error_rate_delta=0.01,
                    max_p99_ratio=1.2, promote_after_passes=None)


def ab(**kw: object) -> ABPlan:
    base: dict[str, object] = {"service": "mlp", "stable": "v1", "target": "v2", "replicas": 2,
                               "rule": RULE, "weight": 5, "candidate_replicas": 1}
    base.update(kw)
    return ABPlan(**base)  # type: ignore[arg-type]


def test_holds_until_promoted_by_hand() -> None:
    sim = Sim(ab())
    d = sim.tick()
    assert d.replicas == {"v1": 2, "v2": 1} and d.rules == () and d.weights["v2"] == 0
    d = sim.step()
    assert d.rules == (RouteRule(name="group", value="b", to="v2", kind="cookie"),)
    assert d.weights == {"v1": 95, "v2": 5}
    for _ in range(5):
        assert sim.tick(3600).phase == Phase.PROGRESSING
    d = sim.tick(0, "promote")
    assert d.phase == Phase.PROMOTING and d.replicas == {"v1": 2, "v2": 2}
    assert sim.step().phase == Phase.PROMOTED
    assert sim.tick(30).phase == Phase.DONE


def test_worse_candidate_is_rolled_back() -> None:
    sim = Sim(ab(analysis=CMP))
    sim.step()
    sim.set("v1", requests=1000, errors=2, p99_s=0.1)
    sim.set("v2", requests=200, errors=10, p99_s=0.1)       # 5% vs 0.2%
    assert sim.tick(60).phase == Phase.PROGRESSING
    d = sim.tick(60)
    assert d.phase == Phase.DEGRADED and d.weights["v2"] == 0 and d.replicas["v2"] == 0
    assert d.rules == () and "error_rate_delta=0.048" in sim.state.reason


def test_slower_candidate_fails_p99_ratio_and_thin_baseline_is_inconclusive() -> None:
    sim = Sim(ab(analysis=CMP))
    sim.step()
    sim.set("v1", requests=50, errors=0, p99_s=0.1)         # baseline below min_requests
    sim.set("v2", requests=500, errors=0, p99_s=0.5)
    sim.tick(60)
    assert sim.state.last_verdict == "inconclusive" and sim.state.failures == 0
    sim.set("v1", requests=500)
    sim.tick(60)
    assert sim.state.failures == 1 and "p99_ratio=5" in sim.state.last_checks[1]


def test_analysis_promotes_after_passes() -> None:
    sim = Sim(ab(analysis=ArmComparison(interval=60, min_requests=100, promote_after_passes=2)))
    sim.step()
    sim.set("v1", **GOOD)
    sim.set("v2", **GOOD)
    assert sim.tick(60).phase == Phase.PROGRESSING
    d = sim.tick(60)
    assert d.phase == Phase.PROMOTING
    assert sim.step().phase == Phase.PROMOTED


def test_abort_by_hand() -> None:
    sim = Sim(ab(rule=None, weight=50))
    sim.step()
    d = sim.tick(0, "abort")
    assert d.phase == Phase.ABORTED and d.weights == {"v1": 100, "v2": 0}
