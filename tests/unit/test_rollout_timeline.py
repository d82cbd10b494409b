"""Timeline (serve-gateway plan): earliest promotion, rollback time, warnings."""

from __future__ import annotations

from gateway.control.rollout.model import (
    ABPlan,
    AnalysisSpec,
    ArmComparison,
    BlueGreenPlan,
    CanaryPlan,
    CanaryStep,
    RampedPlan,
    RecreatePlan,
    RouteRule,
    ShadowPlan,
)
from gateway.control.rollout.timeline import timeline

COMMON = {"service": "mlp", "stable": "v1", "target": "v2", "replicas": 4}
SPEC = AnalysisSpec(interval=30, min_requests=100, failure_limit=3)


def test_canary_timeline() -> None:
    plan = CanaryPlan(**COMMON, steps=(CanaryStep(10, 60), CanaryStep(50, 20)),  # type: ignore
                      analysis=SPEC)
    t = timeline(plan, rps=100.0, start_s=5.0)
    # 5 start + 60 soak + 5 start (2 replicas) + max(20, 30) + 5 start (full) = 105
    assert t.strategy == "canary" and t.to_full == 105.0
    assert t.to_rollback == 90.0 and t.peak_replicas == 8 and t.warnings == ()
    assert [s.at for s in t.steps] == [5.0, 70.0, 100.0, 105.0, 135.0]
    assert t.steps[1].weights == {"v1": 50, "v2": 50} and t.steps[1].replicas["v2"] == 2
    assert t.steps[-1].replicas == {"v1": 0, "v2": 4}


def test_canary_warnings() -> None:
    plan = CanaryPlan(**COMMON, max_replicas=6,  # type: ignore[arg-type]
                      steps=(CanaryStep(1, 60), CanaryStep(50, None), CanaryStep(20, 60)),
                      analysis=AnalysisSpec(interval=30, min_requests=100, min_agreement=0.9))
    t = timeline(plan, rps=2.0)
    text = "\n".join(t.warnings)
    assert "step 1 (1%): about 1 requests per 30s" in text and "min_requests 100" in text
    assert "step 3 lowers the weight" in text and "mirror_percent is 0" in text
    assert "needs 8 replicas at its peak, more than max_replicas 6" in text
    assert t.to_full is None and t.steps[1].manual
    no_analysis = timeline(CanaryPlan(**COMMON, analysis=None))  # type: ignore[arg-type]
    assert no_analysis.to_rollback == 0.0 and "no analysis" in no_analysis.warnings[0]


def test_blue_green_recreate_ramped() -> None:
    bg = timeline(BlueGreenPlan(**COMMON, auto_promote_after=15,  # type: ignore[arg-type]
                                preview=RouteRule("x-preview", "1")), start_s=10)
    assert bg.to_full == 25.0 and bg.to_rollback == 0.0 and bg.peak_replicas == 8
    assert "preview by header x-preview" in bg.steps[0].label
    manual = BlueGreenPlan(**COMMON, auto_promote_after=None)  # type: ignore[arg-type]
    assert timeline(manual).to_full is None
    rc = timeline(RecreatePlan(**COMMON), start_s=8)  # type: ignore[arg-type]
    assert rc.to_full == 8.0 and rc.to_rollback == 8.0 and rc.peak_replicas == 4
    assert "queue" in rc.warnings[0]
    rp = timeline(RampedPlan(**COMMON, max_surge=1, max_unavailable=1), start_s=10)  # type: ignore
    assert rp.to_full == 20.0 and rp.peak_replicas == 5 and len(rp.steps) == 2
    assert rp.steps[-1].weights["v2"] == 100


def test_ab_and_shadow() -> None:
    ab = timeline(ABPlan(**COMMON, weight=10,  # type: ignore[arg-type]
                         analysis=ArmComparison(interval=60, min_requests=500,
                                                promote_after_passes=3)), rps=50.0, start_s=2)
    assert ab.to_full == 2 + 180 + 2 and "candidate arm" in ab.warnings[0]
    held = timeline(ABPlan(**COMMON, rule=RouteRule("g", "b", kind="cookie")))  # type: ignore
    assert held.to_full is None and held.warnings == ()
    sh = timeline(ShadowPlan(**COMMON, percent=50, duration=100,  # type: ignore[arg-type]
                             analysis=SPEC), rps=1000.0, start_s=3)
    assert sh.to_full == 3 + 100 + 3 and sh.to_rollback == 90 and sh.warnings == ()
    assert sh.steps[0].replicas == {"v1": 4, "v2": 2}
    thin = ShadowPlan(**COMMON, percent=1, analysis=SPEC)  # type: ignore[arg-type]
    assert timeline(thin, rps=10.0).warnings
