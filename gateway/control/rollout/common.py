"""What the strategies share: operator commands, the analysis fold, the final switch with the old
set kept warm, and building a ``Decision`` from state. One copy here keeps the six planners
telling the same story about pause, abort, undo and promotion.
"""

from __future__ import annotations

from dataclasses import replace

from gateway.control.rollout.analysis import AnalysisResult, failure_reason, record
from gateway.control.rollout.model import (
    ENDED,
    CheckResult,
    Command,
    Decision,
    Mirror,
    Phase,
    PlanBase,
    RolloutState,
    RouteRule,
)


def end(state: RolloutState, phase: Phase, now: float, reason: str) -> RolloutState:
    """End the rollout; a rollback also puts the target's weight back to 0."""
    weight = state.weight if phase == Phase.DONE else 0
    return replace(state, phase=phase, ended_at=now, reason=reason, paused_from=None,
                   paused_at=None, approved=False, weight=weight)


def effective(state: RolloutState) -> Phase:
    """The phase whose replicas and weights to hold: a paused rollout holds what it had."""
    if state.phase == Phase.PAUSED and state.paused_from is not None:
        return state.paused_from
    return state.phase


def control(state: RolloutState, command: Command | None,
            now: float) -> tuple[RolloutState, list[str], bool]:
    """Apply pause / resume / abort / undo, the same for every strategy. Returns the new state,
    log lines, and whether the command still needs the strategy (promote). A command that does
    not fit the phase is refused with a reason and changes nothing: never a silent no-op."""
    if command is None:
        return state, [], False
    kind, phase = command.kind, state.phase
    if phase in ENDED:
        return state, [f"{kind} refused: rollout already {phase.value}"
                       + ("; the old set is stopped, roll the old version out again"
                          if kind == "undo" and phase == Phase.DONE else "")], False
    if kind == "pause":
        if phase not in (Phase.PROGRESSING, Phase.PROMOTING):
            return state, [f"pause refused: rollout is {phase.value}"], False
        return replace(state, phase=Phase.PAUSED, paused_from=phase, paused_at=now), \
            ["paused by operator"], False
    if kind == "resume":
        if phase != Phase.PAUSED or state.paused_from is None:
            return state, [f"resume refused: rollout is {phase.value}"], False
        # the pause timer keeps the time it had left, so a pause never shortens a step's soak
        held = now - (state.paused_at if state.paused_at is not None else now)
        started = state.step_started_at + held if state.step_started_at is not None else None
        return replace(state, phase=state.paused_from, paused_from=None, paused_at=None,
                       step_started_at=started), ["resumed by operator"], False
    if kind in ("abort", "undo"):
        # after the switch the old set is still warm, so both are an instant switch back
        word = "aborted" if kind == "abort" else "undone"
        return end(state, Phase.ABORTED, now, f"{word} by operator"), [f"{word} by operator"], \
            False
    return state, [], True


def promote_full(state: RolloutState, now: float,
                 why: str = "by operator") -> tuple[RolloutState, list[str]]:
    """Skip every remaining step: scale the new version to full size, then switch. ``why`` says
    who decided (an operator, or the analysis of an automatic promotion) for the log."""
    if effective(state) in (Phase.PROMOTING, Phase.PROMOTED):
        return state, [f"promote ignored: already {effective(state).value}"]
    return replace(state, phase=Phase.PROMOTING, paused_from=None, paused_at=None,
                   step_started_at=now), [f"promoting to full {why}"]


def fold(state: RolloutState, result: AnalysisResult, now: float,
         failure_limit: int) -> tuple[RolloutState, list[str]]:
    """Record one analysis; at the failure limit, end the rollout as degraded with a reason that
    names each failed check and its value."""
    previous = state.last_verdict
    state, exceeded = record(state, result, now, failure_limit)
    if not exceeded:
        # a failure is news every time; a run of inconclusive intervals only when it begins
        news = result.verdict == "fail" or (result.verdict == "inconclusive"
                                            and previous != "inconclusive")
        return state, ([f"analysis {result.verdict}: " + "; ".join(result.lines())]
                       if news else [])
    reason = failure_reason(result, state.failures)
    return end(state, Phase.DEGRADED, now, reason), [reason + "; rolled back"]


def switch(plan: PlanBase, state: RolloutState, ready: int, now: float) -> RolloutState:
    """PROMOTING -> PROMOTED once the full new set is ready (one atomic weight change), then
    PROMOTED -> DONE once the old set has stayed warm for ``scale_down_delay``."""
    if state.phase == Phase.PROMOTING and ready >= plan.replicas:
        return replace(state, phase=Phase.PROMOTED, weight=100, promoted_at=now,
                       reason="switched to " + plan.target)
    if state.phase == Phase.PROMOTED and state.promoted_at is not None \
            and now >= state.promoted_at + plan.scale_down_delay:
        return end(replace(state, weight=100), Phase.DONE, now,
                   f"promoted {plan.target}; old set stopped")
    return state


def ended_view(plan: PlanBase, state: RolloutState) -> tuple[dict[str, int], dict[str, int]]:
    """Replicas and weights after the switch or after a rollback."""
    full, nothing = plan.replicas, 0
    phase = state.phase
    if phase == Phase.PROMOTED:
        return {plan.stable: full, plan.target: full}, weights(plan, 100)
    if phase == Phase.DONE:
        return {plan.stable: nothing, plan.target: full}, weights(plan, 100)
    return {plan.stable: full, plan.target: nothing}, weights(plan, 0)


def weights(plan: PlanBase, target_weight: int) -> dict[str, int]:
    w = max(0, min(100, target_weight))
    return {plan.stable: 100 - w, plan.target: w}


def decide(state: RolloutState, replicas: dict[str, int], weights_: dict[str, int],
           reasons: list[str], *, next_step_at: float | None = None, mirror: Mirror | None = None,
           rules: tuple[RouteRule, ...] = (), checks: tuple[CheckResult, ...] = (),
           final: bool | None = None) -> Decision:
    return Decision(replicas=replicas, weights=weights_, phase=state.phase, step=state.step,
                    mirror=mirror, rules=rules, next_step_at=next_step_at,
                    reasons=tuple(reasons), analysis=state.last_checks, checks=checks,
                    final=state.phase in ENDED if final is None else final)


def finish(plan: PlanBase, state: RolloutState, reasons: list[str],
           checks: tuple[CheckResult, ...] = ()) -> Decision:
    """The decision of a rollout at or after the switch, or rolled back."""
    replicas, w = ended_view(plan, state)
    nxt = state.promoted_at + plan.scale_down_delay \
        if state.phase == Phase.PROMOTED and state.promoted_at is not None else None
    return decide(state, replicas, w, reasons, next_step_at=nxt, checks=checks)
