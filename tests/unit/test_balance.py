import asyncio
import random

import pytest

from gateway.dataplane.balance import Endpoint, ReplicaSet, p2c
from gateway.dataplane.outlier import OutlierPolicy
from gateway.errors import ClientGone, NoReadyReplica, Overloaded
from tests.fakes import ManualClock as Clock


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
    await asyncio.sleep(0)                  # one turn: the waiter queues itself
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


# -- admission: per-replica limit, one FIFO queue, hand-off of freed slots ------------------------

def limited(n: int, limit: int, **kw: object) -> tuple[ReplicaSet, list[Endpoint]]:
    rs = ReplicaSet("s", "v1", limit=limit, rng=random.Random(5), **kw)  # type: ignore[arg-type]
    endpoints = eps(n)
    rs.publish(endpoints)
    return rs, endpoints


def far() -> float:
    return asyncio.get_running_loop().time() + 3600


def test_take_respects_the_limit_and_release_frees_the_slot() -> None:
    rs, (a, _b) = limited(2, 2)
    taken = [rs.take() for _ in range(4)]
    assert sorted(e.id for e in taken if e) == ["r0", "r0", "r1", "r1"]
    assert rs.take() is None and rs.pick() is None
    rs.release(a)
    assert rs.take() is a


async def test_a_freed_slot_goes_to_the_oldest_waiter_on_whichever_replica_frees_first() -> None:
    rs, (a, b) = limited(2, 1)
    assert {rs.take(), rs.take()} == {a, b}
    first = asyncio.ensure_future(rs.wait(far()))
    second = asyncio.ensure_future(rs.wait(far()))
    await asyncio.sleep(0)
    assert rs.waiting == 2
    rs.release(b)
    await asyncio.sleep(0)
    assert first.done() and first.result() is b and not second.done()
    assert b.inflight == 1 and rs.waiting == 1     # the slot moved, it was never free
    rs.release(a)
    assert await second is a and rs.waiting == 0


async def test_a_new_replica_takes_queued_requests_up_to_its_limit() -> None:
    rs, [a] = limited(1, 1)
    rs.take()
    waiters = [asyncio.ensure_future(rs.wait(far())) for _ in range(3)]
    await asyncio.sleep(0)
    b, c = eps(3)[1:]
    rs.publish([a, b, c])
    await asyncio.sleep(0)
    assert [w.done() for w in waiters] == [True, True, False]
    assert {w.result() for w in waiters[:2]} == {b, c}
    rs.release(a)
    assert await waiters[2] is a


async def test_the_queue_bound_refuses_at_once() -> None:
    rs, _ = limited(1, 1, max_waiting=1)
    rs.take()
    waiter = asyncio.ensure_future(rs.wait(far()))
    await asyncio.sleep(0)
    with pytest.raises(Overloaded):
        await rs.wait(far())
    waiter.cancel()


async def test_a_slot_is_never_handed_to_a_replica_that_left_routing() -> None:
    rs, (a, b) = limited(2, 1)
    rs.take(), rs.take()
    waiter = asyncio.ensure_future(rs.wait(far()))
    await asyncio.sleep(0)
    rs.publish([b])              # a drains
    rs.release(a)
    await asyncio.sleep(0)
    assert not waiter.done() and a.inflight == 0
    rs.release(b)
    assert await waiter is b


async def test_a_cancelled_waiter_gives_back_a_slot_it_was_just_handed() -> None:
    rs, [a] = limited(1, 1)
    rs.take()
    waiter = asyncio.ensure_future(rs.wait(far()))
    await asyncio.sleep(0)
    rs.release(a)                # handed: a.inflight is 1 again, for the waiter
    waiter.cancel()              # ... which is cancelled before it runs
    with pytest.raises(asyncio.CancelledError):
        await waiter
    assert a.inflight == 0 and rs.waiting == 0


async def test_a_raised_limit_serves_waiters_at_once() -> None:
    rs, [a] = limited(1, 1)
    rs.take()
    waiter = asyncio.ensure_future(rs.wait(far()))
    await asyncio.sleep(0)
    rs.configure(limit=2, max_waiting=10, outlier=rs.outlier)
    assert await waiter is a and a.inflight == 2


async def test_nothing_coming_fails_at_once_and_fails_those_waiting() -> None:
    rs = ReplicaSet("s", "v1")
    verdict: list[str | None] = [None]
    rs.hopeless = lambda: verdict[0]
    waiter = asyncio.ensure_future(rs.wait(far()))
    await asyncio.sleep(0)
    verdict[0] = "crash loop"
    rs.recheck()
    with pytest.raises(NoReadyReplica, match="crash loop"):
        await waiter
    with pytest.raises(NoReadyReplica, match="crash loop"):
        await rs.wait(far())
    assert rs.waiting == 0


def test_failures_eject_a_replica_and_the_waiters_skip_it() -> None:
    clock = Clock()
    rs, (a, _b, _c) = limited(3, 4, clock=clock,
                            outlier=OutlierPolicy(consecutive=3, base=10, max_time=60))
    assert not rs.failure(a) and not rs.failure(a)
    assert rs.failure(a) and rs.ejections == 1 and rs.ejected == 1
    assert all(rs.pick() is not a for _ in range(50))
    clock.now += 10.5
    assert a in {rs.pick() for _ in range(50)} and rs.ejected == 0


async def test_a_request_the_queue_cannot_reach_in_time_is_refused_at_once() -> None:
    clock = Clock()
    rs, [a] = limited(1, 1, clock=clock)
    rs.take()
    loop = asyncio.get_running_loop()
    waiters = [asyncio.ensure_future(rs.wait(far())) for _ in range(3)]
    await asyncio.sleep(0)
    for w in waiters[:2]:          # the queue moves one request per second
        clock.now += 1.0
        rs.release(a)
        await w
    # one waits; a newcomer would be served in about 2 s
    with pytest.raises(Overloaded, match="too long"):
        await rs.wait(loop.time() + 1.5)
    late = asyncio.ensure_future(rs.wait(loop.time() + 2.5))
    await asyncio.sleep(0)
    assert not late.done() and rs.waiting == 2
    late.cancel()
    waiters[2].cancel()


async def test_a_waiter_whose_client_left_is_skipped_not_sent() -> None:
    rs, [a] = limited(1, 1)
    rs.take()
    gone = asyncio.ensure_future(rs.wait(far(), alive=lambda: False))
    here = asyncio.ensure_future(rs.wait(far(), alive=lambda: True))
    await asyncio.sleep(0)
    rs.release(a)
    assert await here is a and a.inflight == 1
    with pytest.raises(ClientGone):
        await gone
    assert rs.waiting == 0
