"""Recreate planner: old set stops before the new one starts; traffic points at the new one."""

from __future__ import annotations

from gateway.control.rollout.model import Phase, RecreatePlan
from tests.fakes import Sim

PLAN = RecreatePlan(service="mlp", stable="v1", target="v2", replicas=2)


def test_stop_then_start_then_done() -> None:
    sim = Sim(PLAN)
    d = sim.tick()
    assert d.replicas == {"v1": 0, "v2": 0} and d.weights == {"v1": 0, "v2": 100}
    sim.set("v1", ready=0, starting=1)                       # still draining
    assert sim.tick(1).replicas["v2"] == 0
    sim.set("v1", ready=0, starting=0)
    d = sim.tick(1)
    assert d.replicas == {"v1": 0, "v2": 2} and d.step == 1
    sim.set("v2", ready=1)
    assert sim.tick(1).phase == Phase.PROGRESSING
    sim.set("v2", ready=2)
    d = sim.tick(1)
    assert d.phase == Phase.DONE and d.final and d.replicas == {"v1": 0, "v2": 2}
    assert "refused" in sim.tick(0, "undo").reasons[0]


def test_abort_in_the_gap_brings_the_old_set_back() -> None:
    sim = Sim(PLAN)
    sim.step()
    d = sim.tick(0, "abort")
    assert d.phase == Phase.ABORTED and d.replicas == {"v1": 2, "v2": 0}
    assert d.weights == {"v1": 100, "v2": 0}


def test_pause_holds_and_promote_is_refused() -> None:
    sim = Sim(PLAN)
    sim.tick(0, "pause")
    sim.set("v1", ready=0)
    d = sim.tick(5, "promote")
    assert d.phase == Phase.PAUSED and d.replicas["v2"] == 0 and "ignored" in d.reasons[0]
    sim.tick(0, "resume")
    assert sim.last.replicas["v2"] == 2
