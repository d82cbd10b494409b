"""Observed state: a read-only snapshot of what runs, the one thing controllers read.

The supervisor builds it (``Supervisor.observed()``) from its groups and the metrics; the
autoscaler, the rollouts and the admin facade read it instead of the supervisor's groups, so
"ready" has one definition: a replica that passed its readiness probe and has not started
draining.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field

Key = tuple[str, str]       # (service, version)


@dataclass(frozen=True)
class VersionObserved:
    revision: str                  # the revision the version runs by its desired state
    desired: int                   # the replica count the supervisor works towards
    ready: int                     # ready replicas, whatever their revision
    starting: int                  # launches in flight + started, not ready yet (own revision)
    pending: int                   # requests waiting for a replica + queued + in flight
    answered: int = 0              # answers so far (cumulative, from the metrics)
    seconds: float = 0.0           # ... and their summed latency
    launching: int = 0
    removed: bool = False          # gone from the config, draining
    joined: bool = True            # False: added by a reload, never ready yet
    # revision -> (ready, starting) replicas that run it (a reload's or a rollout's old one)
    revisions: Mapping[str, tuple[int, int]] = field(default_factory=dict)

    @property
    def latency(self) -> float:
        """Mean seconds per answer so far (0 before the first)."""
        return self.seconds / self.answered if self.answered else 0.0

    def of_revision(self, revision: str | None) -> tuple[int, int]:
        """(ready, starting) replicas that run ``revision`` (None: any). Launches run the
        version's own revision: they count only for it."""
        if revision is None:
            return self.ready, sum(s for _, s in self.revisions.values()) + self.launching
        ready, starting = self.revisions.get(revision, (0, 0))
        return ready, starting + (self.launching if revision == self.revision else 0)


Observed = Mapping[Key, VersionObserved]
