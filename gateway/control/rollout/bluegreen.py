"""blue_green: the full new set starts alongside the old one; one atomic switch moves all traffic.

The switch waits for every new replica to be ready (a half-ready green set would be overloaded
the instant it took all traffic), then waits ``auto_promote_after`` more seconds, or for a
``promote`` when that is ``None``. Until then an optional preview rule lets testers reach the new
set by header. After the switch the old set stays up for ``scale_down_delay`` so that undo is a
weight change, not a cold start.
"""

from __future__ import annotations

from dataclasses import replace

from gateway.control.rollout.common import control, decide, effective, finish, switch, weights
from gateway.control.rollout.model import (
    BlueGreenPlan,
    Command,
    Decision,
    Observations,
    Phase,
    RolloutState,
)


def _due(rollout: BlueGreenPlan, state: RolloutState, now: float) -> float | None:
    """When the switch happens by itself, if it does."""
    if state.ready_at is None or rollout.auto_promote_after is None:
        return None
    return state.ready_at + rollout.auto_promote_after


def plan(rollout: BlueGreenPlan, state: RolloutState, obs: Observations, now: float,
         command: Command | None) -> tuple[Decision, RolloutState]:
    state, reasons, promote = control(state, command, now)
    if promote:
        if effective(state) in (Phase.PROMOTING, Phase.PROMOTED):
            reasons.append(f"promote ignored: already {effective(state).value}")
        else:
            # a paused rollout promoted by hand goes on: the person has decided
            state = replace(state, approved=True, phase=Phase.PROGRESSING, paused_from=None,
                            paused_at=None)
            reasons.append("promote: switching once every new replica is ready")
    ready = obs.of(rollout.target).ready
    if state.phase == Phase.PROGRESSING:
        if ready >= rollout.replicas and state.ready_at is None:
            waiting = "; waiting for promote" if rollout.auto_promote_after is None else ""
            state = replace(state, ready_at=now, reason=f"{rollout.target} ready{waiting}")
            reasons.append(state.reason)
        due = _due(rollout, state, now)
        if ready >= rollout.replicas and (state.approved or (due is not None and now >= due)):
            if not state.approved:   # the history says who switched: here, the timer
                reasons.append(f"promoting {rollout.target}: ready for "
                               f"{rollout.auto_promote_after or 0:g}s (auto_promote_after)")
            state = replace(state, phase=Phase.PROMOTING, approved=False)
    if state.phase in (Phase.PROMOTING, Phase.PROMOTED):
        before = state.phase
        state = switch(rollout, state, ready, now)
        if state.phase != before:
            reasons.append(state.reason)
    if effective(state) not in (Phase.PROGRESSING, Phase.PROMOTING):
        return finish(rollout, state, reasons), state
    preview = () if rollout.preview is None else (replace(rollout.preview, to=rollout.target),)
    return decide(state, {rollout.stable: rollout.replicas, rollout.target: rollout.replicas},
                  weights(rollout, 0), reasons, rules=preview,
                  next_step_at=_due(rollout, state, now)), state
