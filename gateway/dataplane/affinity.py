"""Model affinity with bounded load: which replica a multiplexed model's request goes to.

A replica that already holds the model (its worker said so in ``x-loaded-models``) is preferred,
so the model is not loaded twice, unless every holder is at its ``limit`` (max_concurrency) or
has more than ``slack`` requests in flight above the least loaded replica: then the request goes
to another replica, which loads the model (load elsewhere under saturation). Among those, the
one with the highest rendezvous hash of (model, replica) wins, so concurrent first requests for
a model agree on one replica instead of loading it everywhere.

Pure: the caller passes the endpoints, the time and the randomness; nothing here changes them.
"""

from __future__ import annotations

import hashlib
from collections.abc import Callable, Sequence
from typing import Protocol, TypeVar


class Replica(Protocol):
    """What the policy reads of a replica (``balance.Endpoint``)."""

    @property
    def id(self) -> str: ...
    @property
    def inflight(self) -> int: ...
    @property
    def ejected_until(self) -> float: ...
    @property
    def models(self) -> frozenset[bytes]: ...


R = TypeVar("R", bound=Replica)


def choose(endpoints: Sequence[R], model: bytes, limit: int, slack: int,
           randrange: Callable[[int], int], now: float, exclude: R | None = None) -> R | None:
    """The replica for a request of ``model``, or None when every replica is full. Ejected
    replicas are used only when all are; ``exclude`` (the one that just failed) never."""
    live = [e for e in endpoints if e is not exclude and e.ejected_until <= now]
    if not live:
        live = [e for e in endpoints if e is not exclude]
    free = [e for e in live if e.inflight < limit]
    if not free:
        return None
    bound = min(e.inflight for e in free) + slack
    holders = [e for e in free if model in e.models and e.inflight <= bound]
    if holders:
        least = min(e.inflight for e in holders)
        ties = [e for e in holders if e.inflight == least]
        return ties[randrange(len(ties))] if len(ties) > 1 else ties[0]
    # nobody holds it within the bound: the least loaded replica is a candidate, so this is
    # never empty
    return max((e for e in free if e.inflight <= bound), key=lambda e: rendezvous(model, e.id))


def rendezvous(model: bytes, replica: str) -> int:
    """Highest-random-weight hash: stable per (model, replica), spread over replicas."""
    digest = hashlib.blake2b(model + b"\0" + replica.encode(), digest_size=8).digest()
    return int.from_bytes(digest, "big")
