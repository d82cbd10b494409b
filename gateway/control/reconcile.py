"""The supervisor's decisions as a pure function: ``reconcile(desired, observed, now)`` ->
actions, which ``Supervisor`` executes against its runtime (control/supervisor.py).

Per version (service, version):

- fewer replicas of the wanted revision than wanted (counting launches in flight), and its crash
  backoff has passed: launch the difference (never while shutting down);
- more than wanted: stop the extra ones, those still starting first, then the newest ready ones
  (the oldest have warm caches); a stop drains in-flight requests first;
- replicas of a stale revision (the config changed the version): stop them once enough of the
  new revision are ready (a version leaving the config: at once), so capacity never dips;
- a version gone from the config with nothing left: forget it.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from typing import Literal

STARTING, READY, DRAINING, STOPPING = "starting", "ready", "draining", "stopping"
STATES = (STARTING, READY, DRAINING, STOPPING)
Key = tuple[str, str]


@dataclass(frozen=True)
class Want:
    """What the commit point asks of one version."""

    revision: str
    replicas: int
    removed: bool = False        # gone from the config: drain everything


@dataclass(frozen=True)
class Member:
    id: str
    state: str
    revision: str
    launched: float              # supervisor clock at launch (or adoption)


@dataclass(frozen=True)
class Seen:
    """What the supervisor observes of one version."""

    members: tuple[Member, ...] = ()
    launching: int = 0
    not_before: float = 0.0      # crash backoff: no launch before this


@dataclass(frozen=True)
class Launch:
    key: Key
    count: int


@dataclass(frozen=True)
class Stop:
    key: Key
    replica: str
    why: Literal["scale-in", "replace"]


@dataclass(frozen=True)
class Forget:
    key: Key


Action = Launch | Stop | Forget


def reconcile(desired: Mapping[Key, Want], observed: Mapping[Key, Seen], now: float,
              stopping: bool = False) -> list[Action]:
    """The actions that move ``observed`` towards ``desired``; see the module docstring."""
    actions: list[Action] = []
    for key, want in desired.items():
        seen = observed.get(key, Seen())
        current = [m for m in seen.members
                   if m.state in (STARTING, READY) and m.revision == want.revision]
        have = len(current) + seen.launching
        if have < want.replicas and now >= seen.not_before and not stopping:
            actions.append(Launch(key, want.replicas - have))
        elif len(current) > want.replicas:
            extra = sorted(current, key=lambda m: (m.state == READY, -m.launched))
            actions += [Stop(key, m.id, "scale-in") for m in extra[:len(current) - want.replicas]]
        ready_now = sum(1 for m in current if m.state == READY)
        if ready_now >= want.replicas or want.removed:
            actions += [Stop(key, m.id, "replace") for m in seen.members
                        if m.revision != want.revision and m.state in (STARTING, READY)]
        if want.removed and not seen.members and not seen.launching:
            actions.append(Forget(key))
    return actions
