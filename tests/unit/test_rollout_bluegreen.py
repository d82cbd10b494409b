"""Blue/green planner: full set, preview, switch only when all ready, warm undo."""

from __future__ import annotations

from gateway.control.rollout.model import BlueGreenPlan, Phase, RouteRule
from tests.fakes import Sim

PREVIEW = RouteRule(name="x-preview", value="1")


def bg(**kw: object) -> BlueGreenPlan:
    base: dict[str, object] = {"service": "mlp", "stable": "v1", "target": "v2", "replicas": 3,
                               "preview": PREVIEW, "auto_promote_after": 10.0}
    base.update(kw)
    return BlueGreenPlan(**base)  # type: ignore[arg-type]


def test_full_set_preview_auto_switch_and_scale_down() -> None:
    sim = Sim(bg())
    d = sim.tick()
    assert d.replicas == {"v1": 3, "v2": 3} and d.weights == {"v1": 100, "v2": 0}
    assert d.rules == (RouteRule(name="x-preview", value="1", to="v2"),)
    sim.set("v2", ready=2)
    assert sim.tick(60).phase == Phase.PROGRESSING          # 2/3 ready: never switch
    sim.set("v2", ready=3)
    d = sim.tick(1)
    assert d.phase == Phase.PROGRESSING and d.next_step_at == sim.now + 10
    d = sim.tick(10)
    assert d.phase == Phase.PROMOTED and d.weights == {"v1": 0, "v2": 100}
    assert d.replicas == {"v1": 3, "v2": 3} and d.rules == () and d.next_step_at == sim.now + 30
    assert sim.tick(29).phase == Phase.PROMOTED
    d = sim.tick(1)
    assert d.phase == Phase.DONE and d.replicas == {"v1": 0, "v2": 3} and d.final


def test_manual_promote_waits_then_switches() -> None:
    sim = Sim(bg(auto_promote_after=None, preview=None))
    sim.step()
    d = sim.tick(3600)
    assert d.phase == Phase.PROGRESSING and d.next_step_at is None and d.rules == ()
    assert "waiting for promote" in sim.state.reason
    assert sim.tick(0, "promote").phase == Phase.PROMOTED


def test_promote_before_ready_switches_once_ready() -> None:
    sim = Sim(bg(auto_promote_after=None))
    sim.tick()
    assert sim.tick(0, "promote").phase == Phase.PROGRESSING
    sim.set("v2", ready=3)
    assert sim.tick().phase == Phase.PROMOTED


def test_undo_within_scale_down_delay_is_instant() -> None:
    sim = Sim(bg(auto_promote_after=0.0))
    assert sim.step().phase == Phase.PROMOTED
    d = sim.tick(20, "undo")
    assert d.phase == Phase.ABORTED and d.weights == {"v1": 100, "v2": 0}
    assert d.replicas == {"v1": 3, "v2": 0} and "undone" in sim.state.reason


def test_undo_after_scale_down_is_refused() -> None:
    sim = Sim(bg(auto_promote_after=0.0))
    sim.step()
    sim.tick(30)
    before = sim.state
    d = sim.tick(1, "undo")
    assert d.phase == Phase.DONE and sim.state == before and "refused" in d.reasons[0]


def test_abort_before_switch_and_pause_blocks_auto_switch() -> None:
    sim = Sim(bg())
    sim.tick()
    sim.tick(0, "pause")
    sim.set("v2", ready=3)
    d = sim.tick(100)
    assert d.phase == Phase.PAUSED and d.weights["v2"] == 0
    sim.tick(0, "resume")
    assert sim.tick(10).phase == Phase.PROMOTED
    sim = Sim(bg())
    sim.tick()
    d = sim.tick(0, "abort")
    assert d.phase == Phase.ABORTED and d.replicas == {"v1": 3, "v2": 0} and d.rules == ()
