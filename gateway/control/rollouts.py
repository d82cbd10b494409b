"""The rollout controller: runs the pure planners (``control/rollout/``) against the live gateway.

One ``Run`` per service whose config has a ``rollout:`` section. Each tick (every ``TICK``
seconds, and at once for an operator's command) it measures both versions (ready replicas from
the supervisor, a window of answers, 5xx, p99 and shadow agreement from the metrics), asks the
planner for a ``Decision`` and publishes it as its layer (``layers()``: replica counts of the
versions it holds, weights, route rules, the mirror), which the gateway's commit point merges
(control/desired.py), compiles into the next routing table (one atomic swap) and hands to the
supervisor. Every state change is journaled (``rollout/journal.py``) before the next tick, so a gateway killed mid-rollout resumes at the same step and weights.

Ownership: this controller is the only writer of the ``Run``s and of the replica counts of the
versions a rollout holds (``held``: the autoscaler leaves those alone). Reloads go through
``apply``: the same target keeps its run (a done rollout is not started again), a new target
ends the running one and starts from the version serving now (``rollout.retarget``), and a
removed ``rollout:`` section hands the service back to the file's weights.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections import deque
from collections.abc import Callable
from dataclasses import dataclass, field, replace
from typing import Any

from gateway import tasks
from gateway.control import rollout, rolloutobs
from gateway.control.checkpoint import checkpoint
from gateway.control.desired import RolloutLayer
from gateway.control.rollout import journal
from gateway.control.rollout.analysis import held as held_step
from gateway.control.rollout.common import end
from gateway.control.rollout.fromspec import serving_of, stable_of, to_plan
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
from gateway.control.rollout.store import FileStore, JournalStore
from gateway.control.rolloutobs import Counts
from gateway.control.supervisor import Supervisor
from gateway.errors import GatewayError
from gateway.metrics import Metrics
from gateway.spec.models import ServiceSpec, Spec, VersionSpec

log = logging.getLogger("gateway.rollout")
TICK = 0.5
HISTORY = journal.HISTORY


@dataclass
class Run:
    plan: Plan
    state: RolloutState
    decision: Decision | None = None
    drain: tuple[str, ...] = ()            # versions of a superseded rollout, held at 0
    window_at: float | None = None         # where the current analysis window opened ...
    baseline: dict[str, Counts] = field(default_factory=dict)   # ... and the counts then
    routed: Any = None                     # the routing part of the last applied decision
    saved: RolloutState | None = None      # what the journal holds ...
    history: deque[tuple[float, str]] = field(default_factory=lambda: deque(maxlen=HISTORY))
    saved_history: journal.History = ()    # ... with these lines
    revisions: dict[str, str] = field(default_factory=dict)   # version -> what the config runs
    _old: VersionSpec | None = None

    def old_revision(self) -> VersionSpec:
        """A revision rollout's stable: the version as the config defined it before."""
        if self._old is None:
            self._old = VersionSpec.model_validate_json(self.state.stable_spec)
        return self._old


def window_start(state: RolloutState) -> float:
    """Where the analysis window opened (the same instant ``analysis.due`` counts from)."""
    for at in (state.last_analysis_at, state.step_started_at):
        if at is not None:
            return at
    return state.started_at


class Rollouts:
    def __init__(self, supervisor: Supervisor, metrics: Metrics, rebuild: Callable[[], None],
                 clock: Callable[[], float] = time.time, tick: float = TICK) -> None:
        self.supervisor = supervisor
        self.metrics = metrics
        self.rebuild = rebuild            # commits: merges layers(), builds the next table
        self.clock = clock
        self.tick = tick
        self.runs: dict[str, Run] = {}
        self.corrupt: list[str] = []      # journals moved aside at start-up, for /status
        self.state_dir = ""
        self.store: JournalStore = FileStore("")   # chosen at restore() (store_for the runtime)
        self._lock = asyncio.Lock()       # one tick (and its journal writes) at a time
        self._wake = asyncio.Event()
        self._task: asyncio.Task[None] | None = None
        self._histories: dict[str, journal.History] = {}   # from the journals, while restoring

    # -- configuration ------------------------------------------------------------------------
    def restore(self, spec: Spec, store: JournalStore | None = None,
                loaded: journal.LoadResult | None = None) -> list[str]:
        """Start-up: read every journal (an unreadable one is moved aside and reported, never
        reset), then ``apply`` the config, which resumes each rollout whose target it still
        names. ``store``: where journals live (default: files under state_dir); ``loaded``:
        its journals, when the caller read them off the loop."""
        self.state_dir = spec.gateway.state_dir
        self.store = store or FileStore(self.state_dir)
        result = loaded if loaded is not None else self.store.load_all(self.clock())
        for exc in result.corrupt:
            log.error("%s; its rollout is not resumed", exc)
            self.metrics.rollout_journal_errors.inc()
            self.corrupt.append(str(exc))
        self._histories = result.histories   # the lines each resumed rollout shows again
        try:
            return self._apply(spec, None, result.states)
        finally:
            self._histories = {}

    def apply(self, spec: Spec, previous: Spec | None = None) -> list[str]:
        """Take a reloaded config (``previous``: the one it replaces, to see new revisions);
        see the module docstring. Changes no replica or route by itself: the caller commits
        the merged ``layers()``."""
        return self._apply(spec, previous, {})

    def _apply(self, spec: Spec, previous: Spec | None,
               journals: dict[str, RolloutState]) -> list[str]:
        now = self.clock()
        notes = [self._forget(name, now) for name in list(self.runs)
                 if name not in spec.services or spec.services[name].rollout is None]
        for name, state in journals.items():
            svc = spec.services.get(name)
            if svc is None or svc.rollout is None:
                notes.append(self._archive(name, state, now, "the config has no rollout for it"))
        for name, svc in spec.services.items():
            if svc.rollout is not None:
                before = previous.services.get(name) if previous is not None else None
                notes.append(self._configure(name, svc, before, journals.get(name), now))
        for name, run in self.runs.items():
            run.revisions = rolloutobs.revisions(spec.services[name], run.plan, run.state)
            if run.decision is None:
                self._step(name, run, now)
        return [n for n in notes if n]

    def _configure(self, name: str, svc: ServiceSpec, before: ServiceSpec | None,
                   journaled: RolloutState | None, now: float) -> str:
        """Keep, resume, start or supersede the service's rollout; returns the log line."""
        r = svc.rollout
        assert r is not None
        serving = serving_of(svc)
        run = self.runs.get(name)
        state = run.state if run is not None else journaled
        old = before.versions.get(serving) if before is not None else None
        revised = old is not None and old.revision() != svc.versions[serving].revision()
        if not revised and state is not None and state.target == serving \
                and state.strategy == r.strategy \
                and (state.stable in svc.versions or state.stable_spec):
            plan = to_plan(name, svc, state.stable)
            if run is not None:
                run.plan = plan          # same rollout: new thresholds apply from the next tick
                return ""
            history = self._histories.get(name, ())
            resumed = self.runs[name] = Run(plan, state, saved=state, saved_history=history)
            resumed.history.extend(history)
            line = f"{name}: rollout {state.stable} -> {state.target} resumed " \
                   f"({state.phase.value}, step {state.step + 1}, {state.target} at {state.weight}%)"
            log.info(line)
            resumed.history.append((now, line.partition(": ")[2] + " after a gateway restart"))
            return line
        if revised and old is not None and (r.to is None or state is not None
                                            and rollout.current_stable(state) == serving):
            return self._revision(name, svc, serving, old, state, now)
        if r.to is None:
            return ""                    # nothing to roll out until the version changes
        running = state if state is not None \
            and rollout.current_stable(state) in svc.versions else None
        rt = rollout.retarget(running, to_plan(name, svc, stable_of(svc)), now)
        if rt.ended is not None:
            self._count_end(name, rt.ended)
        log.info(rt.log)
        self.runs[name] = Run(rt.plan, rt.state,
                              drain=tuple(v for v in rt.drain if v in svc.versions))
        return rt.log

    def _revision(self, name: str, svc: ServiceSpec, serving: str, old: VersionSpec,
                  state: RolloutState | None, now: float) -> str:
        """The serving version's definition changed: roll it out from the old revision, which
        keeps running (and serving) as ``<version>.<old revision>`` until the strategy is done.
        A revision rollout that had not switched yet keeps its old revision as the stable."""
        if state is not None and state.phase not in (*ENDED, Phase.PROMOTED) \
                and state.target == serving and state.stable_spec:
            stable, spec_json = state.stable, state.stable_spec
        else:
            stable, spec_json = f"{serving}.{old.revision()}", old.model_dump_json()
        plan = to_plan(name, svc, stable, serving)
        ended, drain = rollout.supersede(state, (stable, serving), now,
                                         f"superseded by a new revision of {serving}")
        if ended is not None:
            self._count_end(name, ended)
        self.runs[name] = Run(plan, replace(start_state(plan, now), stable_spec=spec_json),
                              drain=tuple(v for v in drain if v in svc.versions))
        line = f"{name}: {serving} has a new revision {svc.versions[serving].revision()}: " \
               f"rollout {stable} -> {serving} ({STRATEGIES[type(plan)]}) started"
        log.info(line)
        return line

    def _forget(self, name: str, now: float) -> str:
        run = self.runs.pop(name)
        return self._archive(name, run.state, now, "the rollout section was removed")

    def _archive(self, name: str, state: RolloutState, now: float, why: str) -> str:
        """Move a journal out of the way (kept for the record); the file's weights apply."""
        if state.phase not in ENDED:
            self._count_end(name, end(state, Phase.ABORTED, now, why))
        try:
            self.store.archive(name, now)
        except OSError as exc:
            log.error("%s: could not archive the rollout journal: %s", name, exc)
        line = f"{name}: rollout {state.stable} -> {state.target} ({state.phase.value}) " \
               f"dropped: {why}; the file's weights apply"
        log.info(line)
        return line

    def checkpoint(self) -> Callable[[], None]:
        """The runs as they are now, and the way to put them back: a reload that fails half-way
        must leave every rollout as it was (a journal write is not undone; the next tick
        rewrites it from the restored state)."""
        back = checkpoint(self.runs)

        def restore() -> None:
            self.runs = back()
        return restore

    def layers(self) -> dict[str, RolloutLayer]:
        """This controller's layer of the desired state (control/desired.py merges it): each
        rolled-out service's replica counts (of the versions it holds), weights (versions outside the rollout get 0), rules
        (the rollout's first), mirror, and a revision rollout's old revision."""
        out = {}
        for name, run in self.runs.items():
            d = run.decision
            if d is None:
                continue
            old = {run.state.stable: run.old_revision()} if run.state.stable_spec else {}
            counts = {**d.replicas, **{v: 0 for v in run.drain}}
            out[name] = RolloutLayer(
                replicas={v: n for v, n in counts.items() if self.held(name, v)},
                weights=dict(d.weights),
                rules=tuple((r.kind, r.name, r.value, r.to) for r in d.rules),
                mirror=None if d.mirror is None else (d.mirror.to, d.mirror.percent),
                extra_versions=old)
        return out

    def governs(self, service: str) -> bool:
        """A rollout sets this service's weights (live traffic overrides are refused)."""
        return service in self.runs

    def held(self, service: str, version: str) -> bool:
        """The rollout owns this version's replica count (the autoscaler leaves it alone): both
        versions while it runs; afterwards only the one it stopped."""
        run = self.runs.get(service)
        if run is None:
            return False
        if version in run.drain:
            return True
        if version not in (run.plan.stable, run.plan.target):
            return False
        return run.state.phase not in ENDED or version != rollout.current_stable(run.state)

    # -- the loop -----------------------------------------------------------------------------
    def start(self) -> None:
        self._task = tasks.spawn(self._run(), name="rollouts")

    async def stop(self) -> None:
        await tasks.cancel_and_wait(self._task)

    async def _run(self) -> None:
        while True:
            async with self._lock:
                now = self.clock()
                changed = False
                for name, run in list(self.runs.items()):
                    if run.state.phase in ENDED and run.decision is not None:
                        continue
                    try:
                        changed |= self._step(name, run, now)
                    except Exception:   # a bug in one rollout must not stop the others
                        log.exception("%s: rollout tick failed", name)
                if changed:
                    self.rebuild()
                await self._save()
            self._wake.clear()
            try:
                await asyncio.wait_for(self._wake.wait(), self._sleep())
            except TimeoutError:
                pass

    def _sleep(self) -> float:
        now = self.clock()
        due = [r.decision.next_step_at for r in self.runs.values()
               if r.decision is not None and r.decision.next_step_at is not None]
        return max(0.01, min([self.tick] + [at - now for at in due]))

    def wake(self) -> None:
        self._wake.set()

    async def command(self, service: str, command: Command) -> tuple[bool, dict[str, Any]]:
        """Apply an operator's command now; (whether it changed anything, the new status). The
        planner's reasons (including a refusal's) are in the status's ``log``."""
        async with self._lock:
            run = self.runs[service]
            before = run.state
            if self._step(service, run, self.clock(), command):
                self.rebuild()
            await self._save()
        self.wake()
        return run.state != before, self._describe(service, run)

    def _step(self, name: str, run: Run, now: float, command: Command | None = None) -> bool:
        """One planner tick; True when its layer changed (weights, rules, mirror, the counts of
        the versions it holds): the caller commits."""
        current = {v: rolloutobs.read(self.metrics, name, v)
                   for v in (run.plan.stable, run.plan.target)}
        if run.window_at is None:
            run.window_at, run.baseline = window_start(run.state), current
        before = run.state
        d, state = rollout.plan(run.plan, run.state, self._observe(name, run, current, now), now,
                                command)
        run.state, run.decision = state, d
        if window_start(state) != run.window_at:   # the next window starts with these counts
            run.window_at, run.baseline = window_start(state), current
        if command is not None and not d.reasons:
            d = run.decision = replace(d, reasons=(f"{command.kind}: nothing to do",))
        for line in d.reasons:
            level = logging.WARNING if state.phase == Phase.DEGRADED else logging.INFO
            log.log(level, "%s: %s", name, line)
            run.history.append((now, line))
        self._export(name, run, before, d)
        routed = (tuple(sorted(d.weights.items())), d.rules, d.mirror)
        changed, run.routed = routed != run.routed, routed
        return changed or self._resized(name, run, d)

    def _observe(self, name: str, run: Run, current: dict[str, Counts],
                 now: float) -> Observations:
        obs = {}
        for v, counts in current.items():
            seen = self.supervisor.observe(name, v)
            # the revision the rollout's config gives the version, not the supervisor's: a
            # reload plans its first step before the supervisor has the new config, and the
            # old revision's replicas must not count as the new one's
            ready, starting = (0, 0) if seen is None else seen.of_revision(run.revisions.get(v))
            shadow = run.state.strategy == "shadow" and v == run.plan.target
            obs[v] = rolloutobs.window(counts, run.baseline.get(v, Counts()), ready, starting,
                                       shadow)
        return Observations(obs)

    def _resized(self, name: str, run: Run, d: Decision) -> bool:
        """Whether the decision sizes a version it holds otherwise than the supervisor runs it:
        its layer changed, a commit is due."""
        for v, n in {**d.replicas, **{v: 0 for v in run.drain}}.items():
            seen = self.supervisor.observe(name, v)
            if seen is not None and self.held(name, v) and seen.desired != n:
                return True
        return False

    def _export(self, name: str, run: Run, before: RolloutState, d: Decision) -> None:
        m, state = self.metrics, run.state
        for phase in Phase:
            m.rollout_phase.labels(name, phase.value).set(1 if phase == state.phase else 0)
        m.rollout_step.labels(name).set(state.step)
        for v, w in d.weights.items():
            m.rollout_weight.labels(name, v).set(w)
        for c in d.checks:
            m.rollout_checks.labels(name, c.name, c.verdict).inc()
            if c.value is not None:
                m.rollout_check_value.labels(name, c.name).set(c.value)
        if state.phase in ENDED and before.phase not in ENDED:
            self._count_end(name, state)

    def _count_end(self, name: str, state: RolloutState) -> None:
        self.metrics.rollouts.labels(name, state.strategy, state.phase.value).inc()

    async def _save(self) -> None:
        if self.store.pending:
            try:
                await asyncio.to_thread(self.store.flush)
            except (OSError, GatewayError) as exc:   # retried at the next tick
                log.error("archiving rollout journals in %s failed: %s", self.store.where, exc)
        for name, run in list(self.runs.items()):
            history = tuple(run.history)
            if run.state == run.saved and history == run.saved_history:
                continue
            try:
                await asyncio.to_thread(self.store.save, run.state, history)
            except (OSError, GatewayError) as exc:   # retried at the next tick; the rollout goes on
                log.error("%s: writing the rollout journal failed: %s", name, exc)
                continue
            run.saved, run.saved_history = run.state, history

    # -- observation --------------------------------------------------------------------------
    def describe(self, service: str) -> dict[str, Any] | None:
        """The service's rollout for /status and ``serve-gateway rollout status``."""
        run = self.runs.get(service)
        return None if run is None else self._describe(service, run)

    def _describe(self, service: str, run: Run) -> dict[str, Any]:
        s, d, now = run.state, run.decision, self.clock()
        nxt = d.next_step_at if d is not None else None
        steps = getattr(run.plan, "steps", None)
        limit = getattr(getattr(run.plan, "analysis", None), "failure_limit", None)
        held = held_step(s, nxt, now) if limit is not None else None
        return {
            "service": service, "strategy": s.strategy, "stable": s.stable, "target": s.target,
            "phase": s.phase.value, "step": s.step, "steps": len(steps) if steps else None,
            "weights": dict(d.weights) if d else {}, "replicas": dict(d.replicas) if d else {},
            "mirror": {"to": d.mirror.to, "percent": d.mirror.percent}
            if d is not None and d.mirror is not None else None,
            "rules": [f"{r.kind} {r.name}={r.value} -> {r.to}" for r in d.rules] if d else [],
            "analysis": list(s.last_checks), "last_verdict": s.last_verdict,
            "failures": s.failures, "failure_limit": limit, "held": held,
            "started_at": s.started_at, "ended_at": s.ended_at,
            "next_step_at": nxt, "next_step_in": None if nxt is None else max(0.0, nxt - now),
            "reason": s.reason, "draining": list(run.drain),
            "log": [{"at": at, "line": line} for at, line in run.history],
        }

    def status(self) -> dict[str, Any]:
        return {"rollouts": {name: self.describe(name) for name in self.runs},
                "corrupt_journals": list(self.corrupt)}
