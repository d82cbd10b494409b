"""Outlier ejection: a pure policy over the endpoints of one version (Envoy's consecutive-5xx).

A replica can pass its readiness probe and still answer 500 to everything (a model that failed
to load its weights, a broken GPU). Probes cannot see that; answers can. After
``consecutive`` 5xx or gateway errors in a row a replica is ejected (no new requests) for
``base * n`` seconds, n its ejection count, at most ``max_time``; a replica that stays clean
for ``max_time`` after coming back starts again from one. Never more than ``max_percent`` of a
version's replicas are out at once (at least one of two or more, none of one): with every
replica failing, spreading the load is better than refusing it.

The time is passed in by the caller (the balancer's clock), so tests drive it by hand.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING, Protocol

if TYPE_CHECKING:
    from gateway.spec.models import OutlierSpec


class Ejectable(Protocol):
    fails: int              # errors in a row
    ejections: int          # times ejected (decays after a clean max_time)
    ejected_until: float
    back_at: float          # when the last outlier ejection ended


@dataclass(frozen=True, slots=True)
class OutlierPolicy:
    consecutive: int = 5
    base: float = 10.0
    max_time: float = 300.0
    max_percent: int = 50

    def allowed(self, n: int) -> int:
        """How many of ``n`` replicas may be ejected at once."""
        if n < 2 or self.max_percent <= 0:
            return 0
        return max(1, n * self.max_percent // 100)

    def success(self, ep: Ejectable) -> None:
        ep.fails = 0

    def failure(self, ep: Ejectable, peers: Sequence[Ejectable], now: float) -> bool:
        """Count one error of ``ep``; True when that ejects it."""
        ep.fails += 1
        if ep.fails < self.consecutive or ep.ejected_until > now:
            return False
        out = sum(1 for p in peers if p is not ep and p.ejected_until > now)
        if out >= self.allowed(len(peers)):
            return False        # the share is taken: keep counting, eject when one returns
        if ep.ejections and now - ep.back_at > self.max_time:
            ep.ejections = 0    # clean for a long while: forgive earlier ejections
        ep.ejections += 1
        seconds = min(self.max_time, self.base * ep.ejections)
        ep.ejected_until = now + seconds
        ep.back_at = ep.ejected_until
        ep.fails = 0
        return True


def outlier_policy(o: OutlierSpec) -> OutlierPolicy:
    """A version's ``outlier:`` settings as the policy (the controller's replica sets and a
    data-plane process's own, built from a snapshot, read the same settings the same way)."""
    return OutlierPolicy(o.consecutive_errors, o.base_ejection, o.max_ejection,
                         o.max_ejected_percent)
