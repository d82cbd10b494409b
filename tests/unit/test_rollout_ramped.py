"""Ramped planner: surge / unavailability limits hold at every tick, with a lagging supervisor."""

from __future__ import annotations

import pytest

from gateway.control.rollout.model import Phase, RampedPlan
from gateway.control.rollout.ramped import limits, share
from tests.fakes import Sim


def ramped(replicas: int, surge: int = 1, unavailable: int = 0) -> RampedPlan:
    return RampedPlan(service="mlp", stable="v1", target="v2", replicas=replicas,
                      max_surge=surge, max_unavailable=unavailable)


def lagging_supervisor(sim: Sim) -> None:
    """Old replicas stop at once; each missing new replica becomes ready one tick later."""
    d = sim.last
    old, new = sim.obs["v1"], sim.obs.get("v2")
    sim.set("v1", ready=min(old.ready, d.replicas["v1"]))
    have = new.ready if new else 0
    sim.set("v2", ready=min(d.replicas["v2"], have + 1))


@pytest.mark.parametrize("replicas,surge,unavailable", [
    (1, 1, 0), (1, 0, 1), (4, 1, 0), (4, 0, 1), (4, 2, 1), (5, 3, 0), (3, 0, 0)])
def test_rolls_to_done_within_limits(replicas: int, surge: int, unavailable: int) -> None:
    sim = Sim(ramped(replicas, surge, unavailable))
    s, u = limits(sim.plan)  # type: ignore[arg-type]
    for _ in range(100):
        d = sim.tick(5)
        assert sum(d.replicas.values()) <= replicas + s
        ready = sum(min(sim.obs[v].ready, n) for v, n in d.replicas.items() if v in sim.obs)
        assert ready >= replicas - u, (d, sim.obs)
        assert d.weights["v1"] + d.weights["v2"] == 100
        if d.phase == Phase.DONE:
            break
        lagging_supervisor(sim)
    assert d.phase == Phase.DONE and d.final
    assert d.replicas == {"v1": 0, "v2": replicas} and d.weights == {"v1": 0, "v2": 100}


def test_single_replica_never_leaves_zero_ready() -> None:
    sim = Sim(ramped(1))
    d = sim.tick()
    assert d.replicas == {"v1": 1, "v2": 1} and d.weights == {"v1": 100, "v2": 0}
    sim.set("v2", ready=1)
    d = sim.tick()
    assert d.replicas == {"v1": 0, "v2": 1} and d.weights == {"v1": 0, "v2": 100}
    sim.set("v1", ready=0)
    assert sim.tick().phase == Phase.DONE


def test_max_unavailable_drains_first() -> None:
    d = Sim(ramped(1, surge=0, unavailable=1)).tick()
    assert d.replicas == {"v1": 0, "v2": 1}


def test_traffic_follows_ready_replicas() -> None:
    sim = Sim(ramped(4, surge=2))
    sim.tick()
    sim.set("v2", ready=2)
    d = sim.tick()
    assert d.replicas == {"v1": 2, "v2": 4} and d.weights == {"v1": 50, "v2": 50}
    assert share(0, 0, 37) == 37 and share(1, 3, 0) == 25


def test_abort_walks_back_without_a_gap() -> None:
    sim = Sim(ramped(2, surge=0, unavailable=1))
    sim.tick()
    sim.set("v1", ready=1)
    sim.set("v2", ready=1)
    d = sim.tick(0, "abort")
    assert d.phase == Phase.ABORTED and d.replicas == {"v1": 2, "v2": 1}
    assert d.weights["v2"] == 50 and not d.final                # v2 serves until v1 is back
    sim.set("v1", ready=2)
    d = sim.tick()
    assert d.replicas == {"v1": 2, "v2": 0} and d.weights == {"v1": 100, "v2": 0} and d.final


def test_pause_holds_counts_and_promote_is_refused() -> None:
    sim = Sim(ramped(3))
    sim.tick()
    assert sim.tick(0, "pause").phase == Phase.PAUSED
    sim.set("v2", ready=1)
    d = sim.tick(10, "promote")
    assert d.replicas == {"v1": 3, "v2": 1} and "promote ignored" in d.reasons[0]
    sim.tick(0, "resume")
    assert sim.last.replicas == {"v1": 2, "v2": 2}
