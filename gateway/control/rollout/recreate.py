"""recreate: stop the old set, then start the new one.

All traffic points at the new version from the first tick, so requests arriving in the gap wait
in the data plane's bounded queue for its first ready replica instead of being sent to replicas
that are stopping. The old set is gone when this finishes, so there is nothing warm to undo to.
"""

from __future__ import annotations

from dataclasses import replace

from gateway.control.rollout.common import control, decide, effective, end, finish, weights
from gateway.control.rollout.model import (
    Command,
    Decision,
    Observations,
    Phase,
    RecreatePlan,
    RolloutState,
)

STOPPING, STARTING = 0, 1


def plan(rollout: RecreatePlan, state: RolloutState, obs: Observations, now: float,
         command: Command | None) -> tuple[Decision, RolloutState]:
    state, reasons, promote = control(state, command, now)
    if promote:
        reasons.append("promote ignored: recreate has no steps to skip")
    old, new = obs.of(rollout.stable), obs.of(rollout.target)
    if state.phase == Phase.PROGRESSING:
        if state.step == STOPPING and old.ready + old.starting == 0:
            state = replace(state, step=STARTING, step_started_at=now)
            reasons.append(f"{rollout.stable} stopped; starting {rollout.target}")
        if state.step == STARTING and new.ready >= rollout.replicas:
            state = end(replace(state, weight=100), Phase.DONE, now,
                        f"{rollout.target} ready; recreate done")
            reasons.append(state.reason)
    if effective(state) in (Phase.DONE, Phase.ABORTED, Phase.DEGRADED):
        return finish(rollout, state, reasons), state
    replicas = {rollout.stable: 0,
                rollout.target: rollout.replicas if state.step == STARTING else 0}
    return decide(state, replicas, weights(rollout, 100), reasons), state
