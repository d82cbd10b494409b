"""A new target while a rollout runs; dispatch by plan type."""

from __future__ import annotations

from dataclasses import replace

import pytest

from gateway.control.rollout import PLANNERS, current_stable, plan, retarget
from gateway.control.rollout.model import (
    STRATEGIES,
    BlueGreenPlan,
    CanaryPlan,
    Observations,
    Phase,
    start_state,
)
from tests.fakes import GOOD, Sim

TO_V2 = CanaryPlan(service="mlp", stable="v1", target="v2", replicas=2)
TO_V3 = CanaryPlan(service="mlp", stable="v2", target="v3", replicas=2)   # file says v2 serves


def test_new_target_mid_canary_restarts_from_stable_and_drains() -> None:
    sim = Sim(TO_V2)
    sim.step()
    sim.set("v2", **GOOD)
    r = retarget(sim.state, TO_V3, sim.now)
    assert r.plan.stable == "v1" and r.state.stable == "v1" and r.state.target == "v3"
    assert r.ended is not None and r.ended.phase == Phase.ABORTED and r.ended.weight == 0
    assert r.drain == ("v2",) and "ended" in r.log and "draining v2" in r.log
    assert r.state.phase == Phase.PROGRESSING and r.state.step == 0
    d, _ = plan(r.plan, r.state, Observations(), sim.now)
    assert d.weights == {"v1": 100, "v3": 0}


def test_new_target_after_switch_starts_from_the_new_version() -> None:
    sim = Sim(TO_V2)
    sim.step()
    sim.step(0, "promote", full=True)
    assert sim.state.phase == Phase.PROMOTED and current_stable(sim.state) == "v2"
    r = retarget(sim.state, TO_V3, sim.now)
    assert r.plan.stable == "v2" and r.drain == ("v1",)
    assert r.ended is not None and r.ended.phase == Phase.DONE


def test_no_running_rollout_and_already_serving() -> None:
    r = retarget(None, TO_V2, 5.0)
    assert r.ended is None and r.drain == () and r.state == start_state(TO_V2, 5.0)
    r = retarget(replace(start_state(TO_V2, 0.0), phase=Phase.DONE), TO_V2, 6.0)
    assert r.state.phase == Phase.DONE and "already serves" in r.log


def test_dispatch_rejects_a_foreign_state() -> None:
    assert set(PLANNERS) == set(STRATEGIES.values())
    bg = BlueGreenPlan(service="mlp", stable="v1", target="v2")
    with pytest.raises(ValueError, match="retarget"):
        plan(bg, start_state(TO_V2, 0.0), Observations(), 0.0)
    with pytest.raises(ValueError):
        plan(TO_V3, start_state(TO_V2, 0.0), Observations(), 0.0)
