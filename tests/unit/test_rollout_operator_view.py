"""What an operator reads about a rollout: who decided a promotion (never "by operator" for an
automatic one), `retry` after an abort or a rollback, the history kept in the journal, and the
status text of a step held by a failing analysis."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from gateway.admin.render import render_rollout as render
from gateway.control.rollout import journal
from gateway.control.rollout.analysis import held
from gateway.control.rollout.model import (
    ABPlan,
    AnalysisSpec,
    ArmComparison,
    BlueGreenPlan,
    CanaryPlan,
    CanaryStep,
    Phase,
    ShadowPlan,
)
from tests.fakes import GOOD, T0, Sim

SPEC = AnalysisSpec(interval=30, min_requests=50, failure_limit=3, max_error_rate=0.01)
BAD = {**GOOD, "errors": 100}


def canary() -> Sim:
    sim = Sim(CanaryPlan(service="echo", stable="v1", target="v2", replicas=2,
                         steps=(CanaryStep(10, 60), CanaryStep(50, 60)), analysis=SPEC))
    sim.step()
    assert sim.last.weights == {"v1": 90, "v2": 10}
    return sim


def test_automatic_promotions_say_why_not_by_operator() -> None:
    sim = Sim(ShadowPlan(service="m", stable="v1", target="v2", replicas=2, percent=50,
                         duration=60, analysis=SPEC))
    sim.step()
    sim.set("v2", **GOOD)
    sim.run_until(Phase.DONE, 30)
    assert "promoting to full after a passing shadow analysis (auto_promote)" in sim.log
    assert not any("by operator" in line for line in sim.log), sim.log
    sim = Sim(ABPlan(service="m", stable="v1", target="v2", replicas=2, weight=50,
                     analysis=ArmComparison(interval=60, min_requests=100,
                                            promote_after_passes=2)))
    sim.step()
    sim.set("v1", **GOOD)
    sim.set("v2", **GOOD)
    sim.run_until(Phase.DONE, 60)
    assert any(line.startswith("promoting to full after the candidate matched the baseline 2 "
                               "intervals") for line in sim.log), sim.log
    assert not any("by operator" in line for line in sim.log), sim.log
    sim = Sim(BlueGreenPlan(service="m", stable="v1", target="v2", replicas=2,
                            auto_promote_after=30))
    sim.step()
    sim.run_until(Phase.DONE, 30)
    assert "promoting v2: ready for 30s (auto_promote_after)" in sim.log, sim.log
    # a person's promote still says so
    sim = canary()
    sim.tick(0, "promote", full=True)
    assert sim.log[-1] == "promoting to full by operator"


def test_retry_after_abort_and_after_rollback() -> None:
    sim = canary()
    sim.tick(5, "abort")
    assert sim.state.phase == Phase.ABORTED and sim.last.weights["v2"] == 0
    d = sim.tick(5, "retry")
    assert d.phase == Phase.PROGRESSING and sim.state.step == 0
    assert d.reasons[0] == ("retry by operator: v1 -> v2 starts again from the first step "
                            "(was aborted: aborted by operator)")
    assert sim.state.started_at == sim.now and sim.state.failures == 0
    sim.follow()
    assert sim.tick().weights == {"v1": 90, "v2": 10}       # step 1 applies again

    sim.set("v2", **BAD)                                      # the analysis rolls it back
    sim.run_until(Phase.DEGRADED, 30)
    d = sim.tick(1, "retry")
    assert d.phase == Phase.PROGRESSING and d.reasons[0].startswith("retry by operator")
    assert "(was degraded: analysis failed 3" in d.reasons[0]


def test_retry_refused_unless_ended_by_abort_or_rollback() -> None:
    sim = canary()
    before = sim.state
    d = sim.tick(1, "retry")
    assert d.reasons[0] == ("retry refused: it is progressing; only an aborted or rolled-back "
                            "rollout starts again")
    assert sim.state == before
    sim.set("v2", **GOOD)
    sim.tick(0, "promote", full=True)
    sim.run_until(Phase.DONE, 30)
    assert sim.tick(1, "retry").reasons[0].startswith("retry refused: it is done")


def test_history_survives_in_the_journal(tmp_path: Path) -> None:
    sim = canary()
    history = ((T0, "step 1/2: v2 at 10%"), (T0 + 5, "aborted by operator"))
    journal.save(tmp_path, sim.state, history)
    result = journal.load_all(tmp_path)
    assert result.states["echo"] == sim.state and result.histories["echo"] == history
    # a journal written before histories existed, or with a damaged history, keeps its state
    path = journal.path_for(tmp_path, "echo")
    doc = json.loads(path.read_bytes())
    doc["history"] = [[T0, "kept"], ["x", "no time"], [T0, 7], "junk", [True, "bool"]]
    path.write_text(json.dumps(doc))
    assert journal.load_all(tmp_path).histories["echo"] == ((T0, "kept"),)
    del doc["history"]
    path.write_text(json.dumps(doc))
    result = journal.load_all(tmp_path)
    assert result.states["echo"] == sim.state and result.histories["echo"] == ()
    assert not result.corrupt
    long = tuple((T0 + i, f"line {i}") for i in range(100))   # bounded
    journal.save(tmp_path, sim.state, long)
    assert journal.load_all(tmp_path).histories["echo"] == long[-journal.HISTORY:]


def test_a_due_step_without_a_passing_analysis_is_held() -> None:
    sim = canary()
    sim.set("v2", **BAD)
    due = sim.last.next_step_at
    assert due is not None and held(sim.state, due, due - 1) is None      # still pausing
    sim.tick(60)                                  # pause over; the analysis failed
    assert sim.state.failures == 1 and sim.state.step == 0
    assert sim.last.next_step_at == due
    assert held(sim.state, due, sim.now) == \
        "step held: waiting for a passing analysis (last: fail)"
    sim.set("v2", **GOOD)
    sim.tick(30)                                  # a pass: the step moves on
    assert sim.state.step == 1 and held(sim.state, sim.last.next_step_at, sim.now) is None


def status(**kw: Any) -> dict[str, Any]:
    doc = {"service": "echo", "strategy": "canary", "stable": "v1", "target": "v2",
           "phase": "progressing", "step": 0, "steps": 2, "weights": {"v1": 90, "v2": 10},
           "analysis": ["error_rate=0.5 (threshold 0.01, n=200): fail"], "failures": 2,
           "failure_limit": 3, "next_step_in": 0.0, "held": None, "log": []}
    return {**doc, **kw}


def test_status_shows_a_held_step_and_the_failure_count() -> None:
    text = render(status(held="step held: waiting for a passing analysis (last: fail)"))
    assert "  failed analyses in a row: 2/3 (rolls back at 3)" in text.splitlines()
    assert "  step held: waiting for a passing analysis (last: fail)" in text.splitlines()
    assert "next step in" not in text
    text = render(status(failures=0, next_step_in=42.0))
    assert "  next step in 42s" in text.splitlines()
    assert "failed analyses in a row: 0/3" in text
    assert "failed analyses" not in render(status(phase="done"))
