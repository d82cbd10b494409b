"""ab: an experiment that routes a precise subset to the candidate and holds.

The rule (header or cookie) and the weight are applied once the candidate's replicas are ready,
so no user of the subset waits on a cold start. The experiment then holds with no deadline: a
person promotes or aborts it, or an optional analysis compares the two arms each interval and
aborts after ``failure_limit`` worse intervals or promotes after ``promote_after_passes`` good
ones. Promotion is the common path: scale to full size, switch, keep the old arm warm.
"""

from __future__ import annotations

from dataclasses import replace

from gateway.control.rollout.analysis import compare, due
from gateway.control.rollout.common import (
    control,
    decide,
    effective,
    finish,
    fold,
    promote_full,
    switch,
    weights,
)
from gateway.control.rollout.model import (
    ABPlan,
    CheckResult,
    Command,
    Decision,
    Observations,
    Phase,
    RolloutState,
    RouteRule,
)


def _rules(rollout: ABPlan, state: RolloutState) -> tuple[RouteRule, ...]:
    if rollout.rule is None or state.step_started_at is None:
        return ()
    return (replace(rollout.rule, to=rollout.target),)


def plan(rollout: ABPlan, state: RolloutState, obs: Observations, now: float,
         command: Command | None) -> tuple[Decision, RolloutState]:
    state, reasons, promote = control(state, command, now)
    if promote:
        state, more = promote_full(state, now)   # one step only: the experiment itself
        reasons += more
    base, cand = obs.of(rollout.stable), obs.of(rollout.target)
    checks: tuple[CheckResult, ...] = ()
    spec = rollout.analysis
    if spec is not None and effective(state) == Phase.PROGRESSING \
            and state.step_started_at is not None and due(state, spec.interval, now):
        result = compare(spec, base, cand)
        checks = result.checks
        state, more = fold(state, result, now, spec.failure_limit)
        reasons += more
        if state.phase == Phase.PROGRESSING and spec.promote_after_passes is not None \
                and state.passes >= spec.promote_after_passes:
            state, more = promote_full(state, now, f"after the candidate matched the baseline "
                                       f"{state.passes} intervals (promote_after_passes)")
            reasons += more
    if state.phase == Phase.PROGRESSING and state.step_started_at is None \
            and cand.ready >= rollout.candidate_replicas:
        state = replace(state, weight=rollout.weight, step_started_at=now,
                        reason="experiment running; waiting for promote or abort")
        reasons.append(f"experiment started: {rollout.target} gets "
                       + ", ".join(filter(None, [
                           f"{rollout.weight}%" if rollout.weight else "",
                           f"{rollout.rule.kind} {rollout.rule.name}={rollout.rule.value}"
                           if rollout.rule else ""])))
    if state.phase in (Phase.PROMOTING, Phase.PROMOTED):
        before = state.phase
        state = switch(rollout, state, cand.ready, now)
        if state.phase != before:
            reasons.append(state.reason)
    phase = effective(state)
    if phase not in (Phase.PROGRESSING, Phase.PROMOTING):
        return finish(rollout, state, reasons, checks), state
    target_n = rollout.replicas if phase == Phase.PROMOTING else rollout.candidate_replicas
    return decide(state, {rollout.stable: rollout.replicas, rollout.target: target_n},
                  weights(rollout, state.weight), reasons, checks=checks,
                  rules=_rules(rollout, state)), state
