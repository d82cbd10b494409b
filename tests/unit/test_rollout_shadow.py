"""Shadow planner: mirror after ready, soak for duration, switch or roll back."""

from __future__ import annotations

from gateway.control.rollout.model import AnalysisSpec, Mirror, Phase, ShadowPlan
from tests.fakes import GOOD, QUIET, Sim

SPEC = AnalysisSpec(interval=30, min_requests=50, failure_limit=2, max_error_rate=0.01,
                    max_p99_s=1.0, min_agreement=0.9)


def shadow(**kw: object) -> ShadowPlan:
    base: dict[str, object] = {"service": "mlp", "stable": "v1", "target": "v2", "replicas": 4,
                               "percent": 25.0, "duration": 120.0, "analysis": SPEC}
    base.update(kw)
    return ShadowPlan(**base)  # type: ignore[arg-type]


def mirroring(**kw: object) -> Sim:
    sim = Sim(shadow(**kw))
    d = sim.tick()
    assert d.replicas == {"v1": 4, "v2": 1} and d.mirror is None
    d = sim.step()
    assert d.mirror == Mirror("v2", 25.0) and d.weights == {"v1": 100, "v2": 0}
    assert d.next_step_at == sim.now + 120
    return sim


def test_soak_then_switch() -> None:
    sim = mirroring()
    sim.set("v2", **GOOD)
    for _ in range(3):
        assert sim.tick(30).phase == Phase.PROGRESSING
    d = sim.tick(30)
    assert d.phase == Phase.PROMOTING and d.replicas == {"v1": 4, "v2": 4}
    assert d.weights["v2"] == 0
    d = sim.step()
    assert d.phase == Phase.PROMOTED and d.weights == {"v1": 0, "v2": 100} and d.mirror is None
    assert sim.tick(30).phase == Phase.DONE


def test_inconclusive_keeps_mirroring() -> None:
    sim = mirroring()
    sim.set("v2", **QUIET)
    for _ in range(10):
        d = sim.tick(30)
    assert d.phase == Phase.PROGRESSING and d.mirror is not None
    sim.set("v2", **GOOD)
    assert sim.tick(30).phase == Phase.PROMOTING


def test_disagreement_rolls_back() -> None:
    sim = mirroring()
    sim.set("v2", **{**GOOD, "agreement": 0.5})
    sim.tick(30)
    d = sim.tick(30)
    assert d.phase == Phase.DEGRADED and d.mirror is None and d.replicas == {"v1": 4, "v2": 0}
    assert "agreement=0.5" in sim.state.reason


def test_errors_and_latency_roll_back() -> None:
    for bad in ({"errors": 20}, {"p99_s": 3.0}):
        sim = mirroring()
        sim.set("v2", **{**GOOD, **bad})
        sim.tick(30)
        assert sim.tick(30).phase == Phase.DEGRADED


def test_without_auto_promote_waits_for_promote() -> None:
    sim = mirroring(auto_promote=False)
    sim.set("v2", **GOOD)
    d = sim.tick(150)
    assert d.phase == Phase.PROGRESSING and "waiting for promote" in sim.state.reason
    assert sim.tick(0, "promote").phase == Phase.PROMOTING
