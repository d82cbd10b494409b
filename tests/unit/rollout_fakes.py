"""Fake clock and fake observations for the rollout planner tests (no sockets, no sleeps)."""

from __future__ import annotations

from dataclasses import replace
from typing import Any

from gateway.control.rollout import plan as run_plan
from gateway.control.rollout.model import (
    Command,
    Decision,
    Observations,
    Phase,
    Plan,
    RolloutState,
    VersionObs,
    start_state,
)

T0 = 1_000.0
GOOD = {"requests": 200, "errors": 0, "p99_s": 0.05, "agreement": 1.0, "agreement_samples": 200}
QUIET = {"requests": 3, "errors": 0, "p99_s": 0.05, "agreement": 1.0, "agreement_samples": 3}


class Sim:
    """Drives one planner tick by tick. ``follow()`` plays a perfect supervisor: every version
    gets exactly the replicas the last decision asked for."""

    def __init__(self, plan: Plan, now: float = T0) -> None:
        self.plan = plan
        self.now = now
        self.state: RolloutState = start_state(plan, now)
        self.obs: dict[str, VersionObs] = {plan.stable: VersionObs(ready=plan.replicas)}
        self.decisions: list[Decision] = []
        self.log: list[str] = []

    @property
    def last(self) -> Decision:
        return self.decisions[-1]

    def set(self, version: str, **fields: Any) -> None:
        self.obs[version] = replace(self.obs.get(version, VersionObs()), **fields)

    def tick(self, dt: float = 0.0, command: Command | str | None = None,
             full: bool = False) -> Decision:
        self.now += dt
        if isinstance(command, str):
            command = Command(command, full=full)   # type: ignore[arg-type]
        d, self.state = run_plan(self.plan, self.state, Observations(dict(self.obs)), self.now,
                                 command)
        self.decisions.append(d)
        self.log += d.reasons
        return d

    def follow(self) -> None:
        for version, n in self.last.replicas.items():
            self.set(version, ready=n, starting=0)

    def step(self, dt: float = 0.0, command: Command | str | None = None,
             full: bool = False) -> Decision:
        """Tick, let the supervisor catch up, tick again at the same instant."""
        self.tick(dt, command, full)
        self.follow()
        return self.tick()

    def run_until(self, phase: Phase, dt: float, limit: int = 200) -> Decision:
        for _ in range(limit):
            d = self.step(dt)
            if d.phase == phase:
                return d
        raise AssertionError(f"never reached {phase}; at {self.last.phase} {self.log[-5:]}")
