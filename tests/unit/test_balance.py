import asyncio
import random

import pytest

from gateway.dataplane.balance import Endpoint, ReplicaSet, p2c
from gateway.errors import NoReadyReplica, Overloaded


def eps(n: int) -> list[Endpoint]:
    return [Endpoint(f"r{i}", "127.0.0.1", 1000 + i) for i in range(n)]


def test_p2c_prefers_the_less_loaded_of_two() -> None:
    a, b = eps(2)
    a.inflight = 5
    rng = random.Random(1)
    assert all(p2c([a, b], rng.randrange, 0.0) is b for _ in range(100))


def test_p2c_spreads_load_over_many() -> None:
    endpoints = eps(4)
    rng = random.Random(7)
    for _ in range(400):
        p2c(endpoints, rng.randrange, 0.0).inflight += 1   # type: ignore[union-attr]
    assert max(e.inflight for e in endpoints) - min(e.inflight for e in endpoints) <= 2


def test_ejected_endpoint_is_skipped_until_its_time_passes() -> None:
    a, b = eps(2)
    a.eject(now=10.0, seconds=2.0)
    rng = random.Random(3)
    assert {p2c([a, b], rng.randrange, 11.0) for _ in range(50)} == {b}
    assert a in {p2c([a, b], rng.randrange, 12.5) for _ in range(50)}


def test_all_ejected_still_serves_but_excluded_never() -> None:
    a, b = eps(2)
    a.eject(0.0, 10)
    b.eject(0.0, 10)
    rng = random.Random(3)
    assert p2c([a, b], rng.randrange, 1.0, exclude=a) is b
    assert p2c([a], rng.randrange, 1.0, exclude=a) is None


async def test_waiters_get_a_replica_once_one_is_published() -> None:
    rs = ReplicaSet("s", "v1")
    loop = asyncio.get_running_loop()
    waiter = asyncio.ensure_future(rs.acquire(loop.time() + 5))
    await asyncio.sleep(0.01)
    assert rs.waiting == 1 and not waiter.done()
    [e] = eps(1)
    rs.publish([e])
    assert await waiter is e and rs.waiting == 0


async def test_wait_is_bounded_in_time_and_in_size() -> None:
    rs = ReplicaSet("s", "v1", max_waiting=1)
    loop = asyncio.get_running_loop()
    first = asyncio.ensure_future(rs.acquire(loop.time() + 0.05))
    await asyncio.sleep(0)
    with pytest.raises(Overloaded):
        await rs.acquire(loop.time() + 1)
    with pytest.raises(NoReadyReplica):
        await first
    assert rs.waiting == 0


async def test_demand_is_signalled_when_nothing_is_ready() -> None:
    rs = ReplicaSet("s", "v1")
    calls = []
    rs.on_demand = lambda: calls.append(1)
    with pytest.raises(NoReadyReplica):
        await rs.acquire(asyncio.get_running_loop().time() + 0.01)
    assert calls == [1]
