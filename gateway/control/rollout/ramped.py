"""ramped (rolling): replace the old set a few replicas at a time.

The Kubernetes rule: never more than ``replicas + max_surge`` asked for, never fewer than
``replicas - max_unavailable`` ready. Traffic follows ready replicas (each version's weight is its
share of the ready ones it is meant to keep), so no version gets more than it can serve. Both
limits 0 would deadlock, so ``max_surge`` is then taken as 1; with one replica and the defaults the
new replica starts, takes the traffic once ready, and only then is the old one drained.

An abort is the same walk backwards: the old set is brought back to full size first and the new
replicas keep serving until it is ready, so a rollback never opens a gap either.
"""

from __future__ import annotations

from dataclasses import replace

from gateway.control.rollout.common import control, decide, effective, end
from gateway.control.rollout.model import (
    Command,
    Decision,
    Observations,
    Phase,
    RampedPlan,
    RolloutState,
)


def limits(rollout: RampedPlan) -> tuple[int, int]:
    """(surge, unavailable), clamped so that progress is always possible."""
    surge, unavailable = max(0, rollout.max_surge), min(rollout.replicas,
                                                        max(0, rollout.max_unavailable))
    return (1 if surge == 0 and unavailable == 0 else surge), unavailable


def share(new_ready: int, old_ready: int, previous: int) -> int:
    """The new version's weight in proportion to ready replicas; with none ready anywhere the
    weight stays (requests queue for whichever comes first)."""
    total = new_ready + old_ready
    return previous if total == 0 else round(100 * new_ready / total)


def _roll(rollout: RampedPlan, state: RolloutState, obs: Observations) -> RolloutState:
    """One step forward: drain what readiness allows, then start what the surge allows."""
    surge, unavailable = limits(rollout)
    old, new = obs.of(rollout.stable), obs.of(rollout.target)
    # count only replicas we still want: one being drained must not be counted twice
    available = min(old.ready, state.old_replicas) + min(new.ready, state.new_replicas)
    removable = max(0, available - (rollout.replicas - unavailable))
    old_n = state.old_replicas - min(state.old_replicas, removable)
    room = rollout.replicas + surge - (old_n + state.new_replicas)
    new_n = min(rollout.replicas, state.new_replicas + max(0, room))
    return replace(state, old_replicas=old_n, new_replicas=new_n, step=new_n)


def plan(rollout: RampedPlan, state: RolloutState, obs: Observations, now: float,
         command: Command | None) -> tuple[Decision, RolloutState]:
    state, reasons, promote = control(state, command, now)
    if promote:
        reasons.append("promote ignored: ramped moves as fast as readiness allows")
    old, new = obs.of(rollout.stable), obs.of(rollout.target)
    full = rollout.replicas
    if state.phase == Phase.PROGRESSING:
        before = state
        state = _roll(rollout, state, obs)
        if (state.new_replicas, state.old_replicas) != (before.new_replicas, before.old_replicas):
            reasons.append(f"{rollout.target} {state.new_replicas}/{full}, "
                           f"{rollout.stable} {state.old_replicas}/{full}")
        if state.old_replicas == 0 and new.ready >= full and old.ready + old.starting == 0:
            state = end(replace(state, weight=100), Phase.DONE, now,
                        f"{rollout.target} serves with {full} replicas; ramped done")
            reasons.append(state.reason)
    elif state.phase in (Phase.ABORTED, Phase.DEGRADED):
        if state.old_replicas != full:
            state = replace(state, old_replicas=full)
        if state.new_replicas and old.ready >= full:
            state = replace(state, new_replicas=0)
            reasons.append(f"{rollout.stable} back to {full} ready; draining {rollout.target}")
    if effective(state) == Phase.DONE:
        return decide(state, {rollout.stable: 0, rollout.target: full},
                      {rollout.stable: 0, rollout.target: 100}, reasons), state
    new_eff, old_eff = min(new.ready, state.new_replicas), min(old.ready, state.old_replicas)
    w = share(new_eff, old_eff, state.weight)
    state = replace(state, weight=w)
    settled = state.phase != Phase.PROGRESSING and state.phase != Phase.PAUSED \
        and state.new_replicas == 0
    return decide(state, {rollout.stable: state.old_replicas, rollout.target: state.new_replicas},
                  {rollout.stable: 100 - w, rollout.target: w}, reasons, final=settled), state
