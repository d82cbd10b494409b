"""Canary planner: steps, analysis, every abort path, commands, and a hypothesis property."""

from __future__ import annotations

from hypothesis import given, settings
from hypothesis import strategies as st

from gateway.control.rollout.canary import canary_replicas
from gateway.control.rollout.model import AnalysisSpec, CanaryPlan, CanaryStep, Mirror, Phase
from tests.fakes import GOOD, QUIET, Sim

SPEC = AnalysisSpec(interval=30, min_requests=50, failure_limit=3, max_error_rate=0.01,
                    max_p99_s=0.5, min_agreement=0.95)


def canary(**kw: object) -> CanaryPlan:
    base: dict[str, object] = {"service": "mlp", "stable": "v1", "target": "v2", "replicas": 4,
                               "steps": (CanaryStep(10, 60), CanaryStep(50, 60)),
                               "analysis": SPEC}
    base.update(kw)
    return CanaryPlan(**base)  # type: ignore[arg-type]


def at_first_step(**kw: object) -> Sim:
    sim = Sim(canary(**kw))
    d = sim.step()
    assert d.weights == {"v1": 90, "v2": 10} and d.replicas == {"v1": 4, "v2": 1}
    sim.set("v2", **GOOD)
    return sim


def test_happy_path_through_every_phase() -> None:
    sim = Sim(canary())
    d = sim.tick()
    assert d.phase == Phase.PROGRESSING and d.weights["v2"] == 0 and d.replicas["v2"] == 1
    sim.follow()
    sim.set("v2", **GOOD)
    d = sim.tick()
    assert d.weights["v2"] == 10 and d.next_step_at == sim.now + 60
    assert sim.tick(30).weights["v2"] == 10                      # analysis passed, pause not over
    d = sim.tick(30)                                             # step 2 needs 2 replicas first
    assert d.step == 1 and d.weights["v2"] == 10 and d.replicas["v2"] == 2
    d = sim.step()
    assert d.weights == {"v1": 50, "v2": 50}
    d = sim.step(60)
    assert d.phase == Phase.PROMOTED and d.weights == {"v1": 0, "v2": 100}
    assert d.replicas == {"v1": 4, "v2": 4} and d.next_step_at == sim.now + 30
    d = sim.tick(30)
    assert d.phase == Phase.DONE and d.final and d.replicas == {"v1": 0, "v2": 4}


def test_canary_replicas_follow_weight() -> None:
    p = canary()
    assert [canary_replicas(p, w) for w in (1, 10, 25, 26, 50, 100)] == [1, 1, 1, 2, 2, 4]
    assert canary_replicas(canary(replicas=3), 34) == 2
    assert canary_replicas(canary(canary_replicas=3), 10) == 3


def _abort_by(sim: Sim, check: str) -> None:
    for i in range(3):
        d = sim.tick(30)
        assert (d.phase == Phase.DEGRADED) == (i == 2), sim.log
    assert d.weights["v2"] == 0 and d.replicas == {"v1": 4, "v2": 0} and d.final
    assert check in sim.state.reason and check in d.reasons[-1]
    failed = [c for c in d.checks if c.verdict == "fail"]          # for the per-check metric
    assert failed and check.split("=")[0] in {c.name for c in failed}
    assert sim.state.weight == 0


def test_abort_by_error_rate() -> None:
    sim = at_first_step()
    sim.set("v2", requests=100, errors=5)
    _abort_by(sim, "error_rate=0.05")


def test_abort_by_p99() -> None:
    sim = at_first_step()
    sim.set("v2", p99_s=0.9)
    _abort_by(sim, "p99=0.9")


def test_abort_by_agreement_with_mirror() -> None:
    sim = at_first_step(mirror_percent=20.0)
    assert sim.last.mirror == Mirror("v2", 20.0)
    sim.set("v2", agreement=0.8, agreement_samples=100)
    _abort_by(sim, "agreement=0.8")
    assert sim.last.mirror is None


def test_inconclusive_holds_then_proceeds() -> None:
    sim = at_first_step()
    sim.set("v2", **QUIET)
    for _ in range(10):
        d = sim.tick(30)
        assert d.phase == Phase.PROGRESSING and d.step == 0 and d.weights["v2"] == 10
    assert sim.state.failures == 0 and sim.state.last_verdict == "inconclusive"
    assert any("inconclusive" in line for line in d.analysis)
    sim.set("v2", **GOOD)
    assert sim.tick(30).step == 1


def test_failure_limit_counts_consecutive_failures() -> None:
    sim = at_first_step()
    bad, good = {"requests": 100, "errors": 10}, GOOD
    for obs in (bad, bad, good, bad, bad):
        sim.set("v2", **obs)
        sim.tick(30)
    assert sim.state.phase == Phase.PROGRESSING and sim.state.failures == 2
    sim.set("v2", **QUIET)                                # inconclusive keeps the count
    sim.tick(30)
    assert sim.state.failures == 2
    sim.set("v2", **bad)
    assert sim.tick(30).phase == Phase.DEGRADED


def test_analysis_runs_while_paused() -> None:
    sim = at_first_step()
    assert sim.tick(0, "pause").phase == Phase.PAUSED
    sim.set("v2", requests=100, errors=50)
    for _ in range(3):
        d = sim.tick(30)
    assert d.phase == Phase.DEGRADED and d.weights["v2"] == 0


def test_pause_resume_keeps_remaining_pause() -> None:
    sim = at_first_step()
    sim.tick(30)
    sim.tick(0, "pause")
    sim.tick(500)
    assert sim.last.weights["v2"] == 10 and sim.last.step == 0
    d = sim.tick(0, "resume")
    assert d.phase == Phase.PROGRESSING and d.next_step_at == sim.now + 30


def test_manual_promote_next_step_and_full() -> None:
    sim = at_first_step()
    d = sim.step(0, "promote")
    assert d.step == 1 and d.weights["v2"] == 50
    d = sim.tick(0, "promote", full=True)
    assert d.phase == Phase.PROMOTING and d.replicas["v2"] == 4 and d.weights["v2"] == 50
    assert sim.step().phase == Phase.PROMOTED


def test_step_without_pause_waits_for_promote() -> None:
    sim = at_first_step(steps=(CanaryStep(10, None),))
    for _ in range(5):
        d = sim.tick(300)
    assert d.phase == Phase.PROGRESSING and d.next_step_at is None
    assert sim.tick(0, "promote").phase == Phase.PROMOTING


def test_manual_abort_and_undo_after_promotion() -> None:
    sim = at_first_step()
    d = sim.tick(0, "abort")
    assert d.phase == Phase.ABORTED and d.weights["v2"] == 0 and d.replicas["v2"] == 0
    assert "refused" in sim.tick(0, "resume").reasons[0]
    sim = at_first_step()
    sim.step(0, "promote", full=True)
    assert sim.last.phase == Phase.PROMOTED
    d = sim.tick(10, "undo")                       # within scale_down_delay: v1 still warm
    assert d.phase == Phase.ABORTED and d.weights == {"v1": 100, "v2": 0}


def test_no_analysis_advances_on_time() -> None:
    sim = Sim(canary(analysis=None))
    sim.step()
    sim.step(60)
    assert sim.step().weights["v2"] == 50


EVENTS = st.sampled_from(["good", "quiet", "bad", "follow", "abort", "pause", "resume"])


@settings(max_examples=60, deadline=None)
@given(st.lists(st.integers(1, 100), min_size=1, max_size=4).map(sorted),
       st.lists(st.tuples(EVENTS, st.sampled_from([0.0, 10.0, 30.0, 60.0])), max_size=40))
def test_weight_never_drops_until_abort_and_abort_zeroes(weights: list[int],
                                                         events: list[tuple[str, float]]) -> None:
    sim = Sim(canary(steps=tuple(CanaryStep(w, 30) for w in weights)))
    sim.step()
    seen = 0
    for event, dt in events:
        command = event if event in ("abort", "pause", "resume") else None
        if event in ("good", "quiet", "bad"):
            sim.set("v2", **(GOOD if event == "good" else QUIET if event == "quiet"
                             else {"requests": 100, "errors": 40}))
        d = sim.tick(dt, command)
        if event == "follow":
            sim.follow()
        if d.phase in (Phase.ABORTED, Phase.DEGRADED):
            assert d.weights["v2"] == 0 and d.replicas["v2"] == 0 and d.final
            return
        assert d.weights["v2"] >= seen and d.weights["v1"] + d.weights["v2"] == 100
        seen = d.weights["v2"]
        if d.phase != Phase.DONE:           # the stable set is only scaled down once it is over
            assert d.replicas["v1"] == 4
