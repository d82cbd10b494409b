"""Pure rollout planners: (plan, state, observations, now, command) -> (decision, state).

One module per strategy, all with the same signature, looked up by the plan's type rather than by
an if-chain. Nothing here does I/O, reads a clock or draws a random number: the controller passes
``now`` and measurements in and applies the ``Decision`` it gets back, and the tests drive every
phase with a fake clock. ``journal`` (the one module with I/O) persists ``RolloutState``.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, replace
from typing import Any

from gateway.control.rollout import ab, bluegreen, canary, ramped, recreate, shadow
from gateway.control.rollout.common import end
from gateway.control.rollout.model import (
    ENDED,
    STRATEGIES,
    Command,
    Decision,
    Observations,
    Phase,
    Plan,
    RolloutState,
    start_state,
)

Planner = Callable[[Any, RolloutState, Observations, float, "Command | None"],
                   tuple[Decision, RolloutState]]

PLANNERS: dict[str, Planner] = {
    "recreate": recreate.plan, "ramped": ramped.plan, "blue_green": bluegreen.plan,
    "canary": canary.plan, "ab": ab.plan, "shadow": shadow.plan,
}


def plan(rollout: Plan, state: RolloutState, obs: Observations, now: float,
         command: Command | None = None) -> tuple[Decision, RolloutState]:
    """Run the planner of ``rollout``'s strategy once."""
    strategy = STRATEGIES[type(rollout)]
    if state.strategy != strategy or state.target != rollout.target:
        raise ValueError(f"state of a {state.strategy} rollout to {state.target} given to a "
                         f"{strategy} plan to {rollout.target}; use retarget()")
    if command is not None and command.kind == "retry":
        return _retry(rollout, state, obs, now)
    return PLANNERS[strategy](rollout, state, obs, now, command)


def _retry(rollout: Plan, state: RolloutState, obs: Observations,
           now: float) -> tuple[Decision, RolloutState]:
    """Start an aborted or rolled-back rollout again from its first step (the same plan: the
    operator fixed what failed, or wants a second look); any other phase refuses."""
    planner = PLANNERS[STRATEGIES[type(rollout)]]
    if state.phase not in (Phase.ABORTED, Phase.DEGRADED):
        why = "it is done" if state.phase == Phase.DONE else f"it is {state.phase.value}"
        line = f"retry refused: {why}; only an aborted or rolled-back rollout starts again"
        d, state = planner(rollout, state, obs, now, None)
        return replace(d, reasons=(line, *d.reasons)), state
    line = f"retry by operator: {state.stable} -> {state.target} starts again from the first " \
           f"step (was {state.phase.value}: {state.reason})"
    # a revision rollout keeps the old revision's definition to run it as the stable again
    fresh = replace(start_state(rollout, now), stable_spec=state.stable_spec)
    d, fresh = planner(rollout, fresh, obs, now, None)
    return replace(d, reasons=(line, *d.reasons)), fresh


def current_stable(state: RolloutState) -> str:
    """The version that serves when this rollout is left where it is: the target once the switch
    has happened, the old stable otherwise."""
    return state.target if state.phase in (Phase.PROMOTED, Phase.DONE) else state.stable


@dataclass(frozen=True)
class Retarget:
    """A new rollout replacing a running one. ``ended`` is the old rollout's final state (write it
    to the journal history), ``drain`` the versions whose replicas go to 0, ``log`` the line that
    says so."""

    plan: Plan
    state: RolloutState
    ended: RolloutState | None
    drain: tuple[str, ...]
    log: str


def supersede(running: RolloutState | None, keep: tuple[str, str], now: float,
              why: str) -> tuple[RolloutState | None, tuple[str, ...]]:
    """End a running rollout for a new one between the versions ``keep``: its final state (None
    when there was nothing running) and the versions it started that nobody keeps (to drain).
    Past the switch the old rollout did its job (done); before it, it is abandoned (aborted)."""
    if running is None or running.phase in ENDED:
        return None, ()
    outcome = Phase.DONE if running.phase == Phase.PROMOTED else Phase.ABORTED
    return end(running, outcome, now, why), \
        tuple(sorted({running.stable, running.target} - set(keep)))


def retarget(running: RolloutState | None, new: Plan, now: float) -> Retarget:
    """End the running rollout (if any) and start ``new`` from the version serving now, whatever
    ``new.stable`` said: a canary at 50% of v2 retargeted to v3 goes v1 -> v3, and v2's replicas
    are drained."""
    stable = new.stable if running is None else current_stable(running)
    fresh = replace(new, stable=stable)
    ended, drain = supersede(running, (stable, new.target), now,
                             f"superseded by a rollout to {new.target}")
    log = f"{new.service}: rollout {stable} -> {new.target} started"
    if running is not None and ended is not None:
        log = (f"{new.service}: rollout {running.stable} -> {running.target} ended "
               f"({running.phase.value}) by a new target {new.target}; starting from {stable}"
               + (f"; draining {', '.join(drain)}" if drain else ""))
    state = start_state(fresh, now)
    if stable == new.target:
        state = end(replace(state, weight=100), Phase.DONE, now, f"{stable} already serves")
        log = f"{new.service}: {stable} already serves; nothing to roll out"
    return Retarget(fresh, state, ended, drain, log)


__all__ = ["PLANNERS", "Planner", "Retarget", "current_stable", "plan", "retarget", "supersede"]
