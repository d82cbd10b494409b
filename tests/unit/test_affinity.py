"""The pure affinity policy (dataplane/affinity.py) and its use in ReplicaSet: holders first,
bounded load, load elsewhere when holders are full, one replica agreed for a new model."""

from __future__ import annotations

import random

from gateway.dataplane.affinity import choose
from gateway.dataplane.balance import Endpoint, ReplicaSet

LIMIT = 4


def eps(*inflight: int, holds: tuple[int, ...] = (), model: bytes = b"m") -> list[Endpoint]:
    out = []
    for i, n in enumerate(inflight):
        e = Endpoint(f"r{i}", "127.0.0.1", 1000 + i)
        e.inflight = n
        if i in holds:
            e.models = frozenset({model})
        out.append(e)
    return out


def pick(endpoints: list[Endpoint], slack: int = 2, seed: int = 0, now: float = 0.0,
         exclude: Endpoint | None = None, model: bytes = b"m") -> Endpoint | None:
    return choose(endpoints, model, LIMIT, slack, random.Random(seed).randrange, now, exclude)


def test_the_holder_wins_while_within_the_bound_over_the_least_loaded() -> None:
    a, b, c = eps(2, 0, 0, holds=(0,))
    assert all(pick([a, b, c], slack=2, seed=s) is a for s in range(20))


def test_a_holder_past_the_bound_sends_the_model_elsewhere() -> None:
    a, b, c = eps(3, 0, 1, holds=(0,))
    chosen = pick([a, b, c], slack=2)
    assert chosen is not a and chosen is not None
    assert chosen.inflight <= 0 + 2


def test_a_full_holder_sends_the_model_elsewhere_even_with_a_large_slack() -> None:
    a, b = eps(LIMIT, LIMIT - 1, holds=(0,))
    assert pick([a, b], slack=100) is b


def test_every_replica_full_gives_none_so_the_request_queues() -> None:
    assert pick(eps(LIMIT, LIMIT, holds=(0,))) is None


def test_ties_between_holders_are_broken_by_the_injected_rng() -> None:
    endpoints = eps(1, 1, 0, holds=(0, 1))
    chosen = {pick(endpoints, seed=s) for s in range(40)}
    assert chosen == {endpoints[0], endpoints[1]}
    assert pick(endpoints, seed=5) is pick(endpoints, seed=5)     # same seed, same answer


def test_the_less_loaded_holder_is_preferred() -> None:
    a, b, c = eps(2, 1, 0, holds=(0, 1))
    assert all(pick([a, b, c], seed=s) is b for s in range(20))


def test_a_new_model_goes_to_one_replica_whatever_the_rng() -> None:
    """Concurrent first requests of a model must not load it on every replica."""
    endpoints = eps(0, 0, 0, 0)
    for model in (b"alpha", b"beta", b"gamma"):
        assert len({pick(endpoints, seed=s, model=model) for s in range(30)}) == 1


def test_new_models_spread_over_the_replicas() -> None:
    endpoints = eps(0, 0, 0, 0)
    homes = {pick(endpoints, model=f"model-{i}".encode()) for i in range(40)}
    assert len(homes) == 4


def test_ejected_and_excluded_holders_are_passed_over() -> None:
    a, b = eps(0, 0, holds=(0,))
    a.eject(now=0.0, seconds=5.0)
    assert pick([a, b], now=1.0) is b
    assert pick([a, b], now=6.0) is a
    assert pick([a, b], now=6.0, exclude=a) is b
    b.eject(now=0.0, seconds=5.0)
    assert pick([a, b], now=1.0) is a        # all ejected: still served


def test_replica_set_take_model_counts_the_slot_and_learns_what_workers_hold() -> None:
    rs = ReplicaSet("svc", "v1", limit=2, rng=random.Random(1), clock=lambda: 0.0)
    a, b = eps(0, 0)
    rs.publish([a, b])
    first = rs.take_model(b"m", slack=2)
    assert first is not None and first.inflight == 1
    assert first.assign(b"m") is False           # it loads it now ...
    assert first.assign(b"m") is True            # ... and the next request finds it there
    again = rs.take_model(b"m", slack=2)
    assert again is first and first.inflight == 2
    other = rs.take_model(b"m", slack=2)         # the holder is full: the other one
    assert other is not None and other is not first
    assert rs.take_model(b"m", slack=2) is other
    assert rs.take_model(b"m", slack=2) is None  # every slot taken
    # an answer's x-loaded-models replaces the guess (the worker evicted m, holds x and y)
    first.learn([(b"Content-Type", b"application/json"), (b"X-Loaded-Models", b"x, y")])
    assert first.models == frozenset({b"x", b"y"})
    first.learn([(b"content-type", b"application/json")])     # no header: no change
    assert first.models == frozenset({b"x", b"y"})
