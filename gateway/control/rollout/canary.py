"""canary: weighted steps with an analysis of the new version between them.

A step's weight is applied only once the canary has the replicas that weight needs (otherwise a
jump from 10% to 50% would land on a set sized for 10%); its pause counts from that moment. A
step moves on when its pause has passed *and* the latest analysis in that step passed: an
inconclusive one holds. ``failure_limit`` consecutive failed analyses end the rollout as
``degraded`` with the target's weight and replicas back to 0, at once: the stable set was never
scaled down, so the rollback needs no start-up. Analysis keeps running while paused, so a pause
never shields a failing canary. After the last step the new version scales to full size and takes
all traffic in one switch, with the stable set kept warm for ``scale_down_delay``.
"""

from __future__ import annotations

import math
from dataclasses import replace

from gateway.control.rollout.analysis import due, evaluate
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
    CanaryPlan,
    CheckResult,
    Command,
    Decision,
    Mirror,
    Observations,
    Phase,
    RolloutState,
)


def canary_replicas(rollout: CanaryPlan, weight: int) -> int:
    """Replicas the canary needs for ``weight`` percent: fixed, or (auto) the stable set's size
    scaled by the weight, at least one so that analysis has something to measure."""
    if rollout.canary_replicas is not None:
        return rollout.canary_replicas
    return max(1, math.ceil(rollout.replicas * weight / 100))


def next_step(rollout: CanaryPlan, state: RolloutState, now: float,
              why: str) -> tuple[RolloutState, list[str]]:
    """Go to the next step (its weight is applied once its replicas are ready), or after the last
    one, to promotion. The step's analysis starts afresh: a pass at 10% says little about 50%."""
    if state.step + 1 >= len(rollout.steps):
        return replace(state, phase=Phase.PROMOTING, step_started_at=now), \
            [f"last step passed {why}; promoting {rollout.target}"]
    return replace(state, step=state.step + 1, step_started_at=None, last_verdict=None,
                   passes=0), [f"step {state.step + 1} -> {state.step + 2} {why}"]


def _apply_step(rollout: CanaryPlan, state: RolloutState, ready: int,
                now: float) -> tuple[RolloutState, list[str]]:
    step = rollout.steps[state.step]
    if ready < canary_replicas(rollout, step.weight):
        return state, []
    state = replace(state, weight=step.weight, step_started_at=now, last_analysis_at=None,
                    last_verdict=None, passes=0)
    return state, [f"step {state.step + 1}/{len(rollout.steps)}: {rollout.target} at "
                   + f"{step.weight}%"]


def _step_due(rollout: CanaryPlan, state: RolloutState) -> float | None:
    pause = rollout.steps[state.step].pause
    if state.step_started_at is None or pause is None:
        return None
    return state.step_started_at + pause


def plan(rollout: CanaryPlan, state: RolloutState, obs: Observations, now: float,
         command: Command | None) -> tuple[Decision, RolloutState]:
    state, reasons, promote = control(state, command, now)
    if promote and command is not None:
        if command.full:
            state, more = promote_full(state, now)
        elif effective(state) == Phase.PROGRESSING:
            state, more = next_step(rollout, replace(state, phase=Phase.PROGRESSING,
                                                     paused_from=None, paused_at=None),
                                    now, "by operator")
        else:
            more = [f"promote ignored: already {effective(state).value}"]
        reasons += more
    new = obs.of(rollout.target)
    checks: tuple[CheckResult, ...] = ()
    spec = rollout.analysis
    if spec is not None and effective(state) in (Phase.PROGRESSING, Phase.PROMOTING) \
            and state.weight > 0 and due(state, spec.interval, now):
        result = evaluate(spec, new, obs.of(rollout.stable))
        checks = result.checks
        state, more = fold(state, result, now, spec.failure_limit)
        reasons += more
    if state.phase == Phase.PROGRESSING:
        if state.step_started_at is None:
            state, more = _apply_step(rollout, state, new.ready, now)
            reasons += more
        else:
            at = _step_due(rollout, state)
            passed = spec is None or state.last_verdict == "pass"
            if at is not None and now >= at and passed:
                state, more = next_step(rollout, state, now, "after analysis" if spec else "on time")
                reasons += more
                if state.phase == Phase.PROGRESSING:
                    state, more = _apply_step(rollout, state, new.ready, now)
                    reasons += more
    if state.phase in (Phase.PROMOTING, Phase.PROMOTED):
        before = state.phase
        state = switch(rollout, state, new.ready, now)
        if state.phase != before:
            reasons.append(state.reason)
    phase = effective(state)
    if phase not in (Phase.PROGRESSING, Phase.PROMOTING):
        return finish(rollout, state, reasons, checks), state
    mirror = Mirror(rollout.target, rollout.mirror_percent) if rollout.mirror_percent > 0 \
        else None
    if phase == Phase.PROMOTING:
        target_n = rollout.replicas
    else:
        # hold the larger set while a step down in weight waits to be applied
        target_n = canary_replicas(rollout, rollout.steps[state.step].weight)
        if state.weight > 0:
            target_n = max(target_n, canary_replicas(rollout, state.weight))
    return decide(state, {rollout.stable: rollout.replicas, rollout.target: target_n},
                  weights(rollout, state.weight), reasons, checks=checks, mirror=mirror,
                  next_step_at=_step_due(rollout, state) if phase == Phase.PROGRESSING
                  else None), state
