"""Every fake the tests use, in one place (no sockets, no sleeps): a manual clock, virtual time
for an event loop, a runtime and a prober for the supervisor, and the rollout planner's simulated
observations."""

from __future__ import annotations

import asyncio
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
from gateway.runtimes.base import ExitInfo, ExitKind, Replica, ReplicaSpec
from gateway.spec.models import Spec


class ManualClock:
    """A clock that moves only when a test says so."""

    def __init__(self, now: float = 100.0) -> None:
        self.now = now

    def __call__(self) -> float:
        return self.now

    def advance(self, seconds: float) -> None:
        self.now += seconds


class VirtualTime:
    """Puts a running asyncio (selector) loop on virtual time: when nothing is ready, the loop's
    clock jumps to its next timer instead of waiting for it, so ``call_later``, ``asyncio.sleep``
    and ``wait_for`` deadlines run in order at once and a test of timing logic waits for nothing.
    ``loop.time`` is the clock; give it to the code under test in place of ``time.monotonic``."""

    def __init__(self, loop: asyncio.AbstractEventLoop) -> None:
        self.now = loop.time()
        selector = loop._selector  # type: ignore[attr-defined]  # asyncio's own, no public hook
        real = selector.select

        def select(timeout: float | None = None) -> Any:
            events = real(0)                       # whatever is ready now (callbacks, sockets)
            if not events and timeout is not None and timeout > 0:
                self.now += timeout                # the next timer is due: jump, do not wait
            elif not events and timeout is None:
                events = real(None)                # no timer at all: wait as the loop would
            return events

        selector.select = select
        loop.time = self.time  # type: ignore[method-assign]

    def time(self) -> float:
        return self.now


class FakeRuntime:
    """A runtime whose replicas exist only here: ``start`` makes one at once, ``crash`` ends one
    the way a crashing worker would, ``left`` seeds what ``adopt`` finds (a gateway restart)."""

    name = "fake"

    def __init__(self, left: list[Replica] | None = None) -> None:
        self.running: dict[str, Replica] = {}
        self.started: list[Replica] = []
        self.stopped: list[str] = []
        self.left = list(left or [])
        self.fail_starts = 0          # the next n starts raise
        self._ends: dict[str, asyncio.Future[ExitInfo]] = {}
        self._next = 0

    def replica(self, spec: ReplicaSpec) -> Replica:
        self._next += 1
        return Replica(f"r{self._next}", spec, "127.0.0.1", 20_000 + self._next, started_at=0.0)

    async def start(self, spec: ReplicaSpec) -> Replica:
        from gateway.errors import GatewayError

        if self.fail_starts:
            self.fail_starts -= 1
            raise GatewayError("no such command")
        r = self.replica(spec)
        self.running[r.id] = r
        self.started.append(r)
        return r

    async def stop(self, replica: Replica, grace: float) -> ExitInfo:
        self.running.pop(replica.id, None)
        self.stopped.append(replica.id)
        end = self._end(replica.id)
        if not end.done():
            end.set_result(ExitInfo(ExitKind.STOPPED))
        return ExitInfo(ExitKind.STOPPED)

    async def wait(self, replica: Replica) -> ExitInfo:
        return await self._end(replica.id)

    def crash(self, replica_id: str, code: int = 1) -> None:
        self.running.pop(replica_id, None)
        self._end(replica_id).set_result(ExitInfo(ExitKind.EXITED, code, log_tail=("boom",)))

    async def adopt(self) -> list[Replica]:
        for r in self.left:
            self.running[r.id] = r
        return list(self.left)

    async def check(self, spec: Spec) -> None:
        return None

    async def close(self) -> None:
        return None

    def _end(self, replica_id: str) -> asyncio.Future[ExitInfo]:
        if replica_id not in self._ends:
            self._ends[replica_id] = asyncio.get_running_loop().create_future()
        return self._ends[replica_id]


class FakeProber:
    """Readiness by decree: a replica is ready once its port is in ``ready`` (all: ``everyone``)."""

    def __init__(self, everyone: bool = True) -> None:
        self.everyone = everyone
        self.ready: set[int] = set()

    async def probe(self, host: str, port: int, path: str, timeout: float) -> bool:
        return self.everyone or port in self.ready

    async def close(self) -> None:
        return None


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
