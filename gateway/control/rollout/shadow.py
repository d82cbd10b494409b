"""shadow: mirror a share of live traffic to the new version, analyse it, then switch or abort.

Users only ever see the stable version's answers until the switch; the mirror copies are compared
and dropped. Mirroring starts once the shadow set is ready and the ``duration`` counts from then,
so a slow start does not eat the soak. The soak ends on a passing analysis only: an inconclusive
one (too few mirrored requests) keeps mirroring. Then the new version scales to full size and
takes all traffic in one switch (or waits for ``promote`` when ``auto_promote`` is off).
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
    CheckResult,
    Command,
    Decision,
    Mirror,
    Observations,
    Phase,
    RolloutState,
    ShadowPlan,
)


def shadow_replicas(rollout: ShadowPlan) -> int:
    """Sized for the mirrored share, at least one."""
    return max(1, math.ceil(rollout.replicas * rollout.percent / 100))


def plan(rollout: ShadowPlan, state: RolloutState, obs: Observations, now: float,
         command: Command | None) -> tuple[Decision, RolloutState]:
    state, reasons, promote = control(state, command, now)
    if promote:
        state, more = promote_full(state, now)   # a person may cut the soak short
        reasons += more
    new = obs.of(rollout.target)
    checks: tuple[CheckResult, ...] = ()
    spec = rollout.analysis
    if state.phase == Phase.PROGRESSING and state.ready_at is None \
            and new.ready >= shadow_replicas(rollout):
        state = replace(state, ready_at=now, step_started_at=now)
        reasons.append(f"mirroring {rollout.percent:g}% to {rollout.target} for "
                       f"{rollout.duration:g}s")
    if effective(state) in (Phase.PROGRESSING, Phase.PROMOTING) and state.ready_at is not None \
            and due(state, spec.interval, now):
        result = evaluate(spec, new)
        checks = result.checks
        state, more = fold(state, result, now, spec.failure_limit)
        reasons += more
    soak_end = None if state.ready_at is None else state.ready_at + rollout.duration
    if state.phase == Phase.PROGRESSING and soak_end is not None and now >= soak_end \
            and state.last_verdict == "pass":
        if rollout.auto_promote:
            state, more = promote_full(state, now, "after a passing shadow analysis "
                                       "(auto_promote)")
            reasons += more
        elif not state.reason.startswith("analysis passed"):
            state = replace(state, reason="analysis passed; waiting for promote")
            reasons.append(state.reason)
    if state.phase in (Phase.PROMOTING, Phase.PROMOTED):
        before = state.phase
        state = switch(rollout, state, new.ready, now)
        if state.phase != before:
            reasons.append(state.reason)
    phase = effective(state)
    if phase not in (Phase.PROGRESSING, Phase.PROMOTING):
        return finish(rollout, state, reasons, checks), state
    target_n = rollout.replicas if phase == Phase.PROMOTING else shadow_replicas(rollout)
    mirror = Mirror(rollout.target, rollout.percent) if state.ready_at is not None else None
    return decide(state, {rollout.stable: rollout.replicas, rollout.target: target_n},
                  weights(rollout, 0), reasons, checks=checks, mirror=mirror,
                  next_step_at=soak_end if phase == Phase.PROGRESSING else None), state
