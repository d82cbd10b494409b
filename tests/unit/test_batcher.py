"""The batcher's loop side with a fake worker pool in place of sockets: reassembly, dispatch on
free slots, per-caller errors, retries, deadlines, disconnects, shedding, shutdown."""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable
from typing import Any

import orjson
import pytest

from gateway.dataplane.balance import Endpoint, ReplicaSet
from gateway.dataplane.batcher import Batcher
from gateway.dataplane.batchers import Batchers
from gateway.dataplane.batchpolicy import BatchConfig
from gateway.dataplane.batchwire import split_instances, timeout_from_header
from gateway.dataplane.upstream import UpstreamResponse
from gateway.errors import (
    BadRequest,
    ClientGone,
    DeadlineExceeded,
    NoReadyReplica,
    Overloaded,
    ProxyError,
    ShuttingDown,
    UpstreamConnectError,
    UpstreamReset,
    UpstreamTimeout,
)
from gateway.metrics import Metrics
from gateway.spec.models import BatchingSpec
from tests.fakes import VirtualTime

Handler = Callable[[list[Any]], Awaitable[UpstreamResponse]]


class FakePool:
    """Stands in for UpstreamPool: decodes the batch, lets the test answer it."""

    def __init__(self, handler: Handler) -> None:
        self.handler = handler
        self.batches: list[list[Any]] = []
        self.heads: list[bytes] = []

    async def request(self, head: bytes, body: Any, timeout: float,
                      head_only: bool = False) -> UpstreamResponse:
        self.heads.append(head)
        instances = orjson.loads(body)["instances"]
        self.batches.append(instances)
        return await self.handler(instances)


def answer(status: int, doc: Any) -> UpstreamResponse:
    return UpstreamResponse(status, [], orjson.dumps(doc), None)


async def echo(instances: list[Any]) -> UpstreamResponse:
    return answer(200, {"predictions": instances})


def endpoint(name: str, handler: Handler = echo) -> Endpoint:
    ep = Endpoint(name, "127.0.0.1", 1)
    ep.pool = FakePool(handler)  # type: ignore[assignment]
    return ep


def make(eps: list[Endpoint], **cfg: Any) -> tuple[Batcher, ReplicaSet]:
    """A batcher over ``eps`` on a loop that runs on virtual time: its timers (waits, deadlines,
    ejections) and the test's own sleeps pass in order without real waiting."""
    clock = VirtualTime(asyncio.get_running_loop()).time
    rs = ReplicaSet("svc", "v1", clock=clock)
    rs.publish(eps)
    config = BatchConfig(**{"max_batch_size": 8, "max_wait": 0.0, **cfg})
    b = Batcher("svc", "v1", rs, Metrics().batch("svc", "v1"), config, target="/predict",
                host="svc", request_timeout=5.0, retries=1)
    b.clock = clock
    return b, rs


async def call(b: Batcher, doc: Any, headers: dict[str, str] | None = None,
               alive: Callable[[], bool] | None = None) -> tuple[int, Any]:
    loop = asyncio.get_running_loop()
    try:
        resp = await b.submit(orjson.dumps(doc), headers or {}, alive, loop.time())
    except ProxyError as exc:
        return exc.status, exc
    return resp.status, orjson.loads(resp.body)


def gate() -> tuple[asyncio.Event, Handler]:
    """A worker that answers only once the test opens the gate."""
    opened = asyncio.Event()

    async def handler(instances: list[Any]) -> UpstreamResponse:
        await opened.wait()
        return await echo(instances)
    return opened, handler


def pool(ep: Endpoint) -> FakePool:
    assert isinstance(ep.pool, FakePool)
    return ep.pool


async def until(cond: Callable[[], bool]) -> None:
    for _ in range(200):
        if cond():
            return
        await asyncio.sleep(0.005)
    raise AssertionError("condition not met")


# -- body handling ----------------------------------------------------------------------------
def test_split_instances() -> None:
    assert split_instances(b'[1, 2]') == [b'[1, 2]']
    assert split_instances(b'{"instances": [[1], {"a": 2}]}') == [b"[1]", b'{"a":2}']
    assert split_instances(b'{"x": 1}') == [b'{"x": 1}']
    with pytest.raises(BadRequest):
        split_instances(b"{nope")
    with pytest.raises(BadRequest):
        split_instances(b'{"instances": 3}')


def test_timeout_header_only_shortens() -> None:
    assert timeout_from_header(None, 10.0) == 10.0
    assert timeout_from_header("250", 10.0) == 0.25
    assert timeout_from_header("99999", 10.0) == 10.0
    for bad in ("soon", "-5", "0", "nan"):
        with pytest.raises(BadRequest):
            timeout_from_header(bad, 10.0)


# -- batching ---------------------------------------------------------------------------------
async def test_callers_share_a_batch_and_get_their_own_answers_in_order() -> None:
    ep = endpoint("r0")
    b, _ = make([ep])
    results = await asyncio.gather(call(b, [1]), call(b, {"instances": [[2], [3]]}),
                                   call(b, {"k": 4}), call(b, {"instances": []}))
    assert results == [(200, {"predictions": [[1]]}), (200, {"predictions": [[2], [3]]}),
                       (200, {"predictions": [{"k": 4}]}), (200, {"predictions": []})]
    assert pool(ep).batches == [[[1], [2], [3], {"k": 4}]]
    assert b"POST /predict HTTP/1.1" in pool(ep).heads[0]
    assert b"X-Batch-Size: 4" in pool(ep).heads[0]


async def test_idle_dispatch_then_accumulation_while_the_slot_is_busy() -> None:
    opened, handler = gate()
    ep = endpoint("r0", handler)
    b, rs = make([ep])
    first = asyncio.ensure_future(call(b, 0))
    await until(lambda: len(pool(ep).batches) == 1)          # alone, without waiting
    assert ep.inflight == 1 and b.pending == 1
    rest = [asyncio.ensure_future(call(b, i)) for i in range(1, 4)]
    await asyncio.sleep(0.02)
    assert len(pool(ep).batches) == 1 and b.queue.requests == 3   # slot busy: they wait
    assert b.pending == 4 and rs.pending == 4
    opened.set()
    assert [r[1] for r in await asyncio.gather(first, *rest)] == \
        [{"predictions": [i]} for i in range(4)]
    assert pool(ep).batches == [[0], [1, 2, 3]]
    assert ep.inflight == 0 and b.pending == 0


async def test_batches_go_to_the_replica_with_free_slots() -> None:
    opened, handler = gate()
    eps = [endpoint("r0", handler), endpoint("r1", handler)]
    b, _ = make(eps, slots_per_replica=2, max_batch_size=1)
    calls = [asyncio.ensure_future(call(b, i)) for i in range(5)]
    await until(lambda: sum(len(pool(e).batches) for e in eps) == 4)
    assert [e.inflight for e in eps] == [2, 2] and b.queue.requests == 1
    opened.set()
    assert all(s == 200 for s, _ in await asyncio.gather(*calls))


async def test_a_replica_published_later_gets_the_queue() -> None:
    demand = []
    b, rs = make([])
    rs.on_demand = lambda: demand.append(1)
    calls = [asyncio.ensure_future(call(b, i)) for i in range(3)]
    await until(lambda: b.queue.requests == 3 and bool(demand))
    ep = endpoint("late")
    rs.publish([ep])
    assert [r[0] for r in await asyncio.gather(*calls)] == [200] * 3
    assert pool(ep).batches == [[0, 1, 2]]


async def test_removed_replica_gets_nothing_more() -> None:
    opened, handler = gate()
    old, new = endpoint("old", handler), endpoint("new")
    b, rs = make([old])
    first = asyncio.ensure_future(call(b, 0))
    await until(lambda: old.inflight == 1)
    queued = asyncio.ensure_future(call(b, 1))
    await asyncio.sleep(0.01)
    rs.publish([new])                      # old drains: its batch is still answered
    assert await queued == (200, {"predictions": [1]})
    opened.set()
    assert await first == (200, {"predictions": [0]})
    assert pool(old).batches == [[0]] and pool(new).batches == [[1]]


# -- errors, per caller -----------------------------------------------------------------------
@pytest.mark.parametrize("exc, status", [(UpstreamTimeout("slow"), 504), (UpstreamReset("rst"), 502)])
async def test_a_failed_exchange_fails_every_caller_of_the_batch(exc: Exception,
                                                                 status: int) -> None:
    async def handler(instances: list[Any]) -> UpstreamResponse:
        raise exc
    b, _ = make([endpoint("r0", handler)])
    results = await asyncio.gather(call(b, 1), call(b, {"instances": [2, 3]}))
    assert [r[0] for r in results] == [status, status]


@pytest.mark.parametrize("reply", [answer(200, {"predictions": [1]}), answer(200, {"nope": 1}),
                                   UpstreamResponse(200, [], b"<html>", None),
                                   answer(500, {"error": "model_error"})])
async def test_a_bad_worker_answer_fails_the_batch_with_502(reply: UpstreamResponse) -> None:
    async def handler(instances: list[Any]) -> UpstreamResponse:
        return reply
    b, _ = make([endpoint("r0", handler)])
    results = await asyncio.gather(call(b, 1), call(b, 2))
    assert [r[0] for r in results] == [502, 502]


async def test_one_bad_input_does_not_fail_the_others() -> None:
    async def handler(instances: list[Any]) -> UpstreamResponse:
        if "bad" in instances:
            return answer(400, {"error": "bad_request", "detail": "strings only"})
        return await echo(instances)
    ep = endpoint("r0", handler)
    b, _ = make([ep])
    results = await asyncio.gather(call(b, 1), call(b, "bad"), call(b, 3))
    assert results == [(200, {"predictions": [1]}),
                       (400, {"error": "bad_request", "detail": "strings only"}),
                       (200, {"predictions": [3]})]


async def test_connect_failure_retries_on_another_replica() -> None:
    async def refuse(instances: list[Any]) -> UpstreamResponse:
        raise UpstreamConnectError("refused")
    dead, good = endpoint("dead", refuse), endpoint("good")
    b, _ = make([dead, good])
    b._rr = 0                              # the dead one is tried first
    assert await asyncio.gather(call(b, 1), call(b, 2)) == \
        [(200, {"predictions": [1]}), (200, {"predictions": [2]})]
    assert dead.ejected_until > 0 and pool(good).batches == [[1, 2]]


async def test_connect_failure_everywhere_ends_in_502() -> None:
    async def refuse(instances: list[Any]) -> UpstreamResponse:
        raise UpstreamConnectError("refused")
    eps = [endpoint("dead0", refuse), endpoint("dead1", refuse)]
    b, _ = make(eps)
    status, exc = await call(b, 1)
    assert status == 502 and isinstance(exc, UpstreamConnectError)   # one retry, then the error
    assert [len(pool(e).batches) for e in eps] == [1, 1]


async def test_with_every_replica_refusing_the_queue_waits_for_a_new_one() -> None:
    async def refuse(instances: list[Any]) -> UpstreamResponse:
        raise UpstreamConnectError("refused")
    dead = endpoint("dead", refuse)
    b, rs = make([dead])
    waiting = asyncio.ensure_future(call(b, 1))
    await until(lambda: len(pool(dead).batches) == 1 and b.queue.requests == 1)
    await asyncio.sleep(0.02)
    assert not waiting.done() and len(pool(dead).batches) == 1   # ejected: not hammered
    good = endpoint("good")
    rs.publish([good])                     # the supervisor replaced it
    assert await waiting == (200, {"predictions": [1]})


# -- deadlines, disconnects, shedding ---------------------------------------------------------
async def test_deadline_in_the_queue_is_504_and_never_sent() -> None:
    opened, handler = gate()
    ep = endpoint("r0", handler)
    b, _ = make([ep])
    busy = asyncio.ensure_future(call(b, 0))
    await until(lambda: ep.inflight == 1)
    status, exc = await call(b, 1, headers={"x-request-timeout-ms": "30"})
    assert status == 504 and isinstance(exc, DeadlineExceeded) and b.queue.requests == 0
    opened.set()
    await busy
    await asyncio.sleep(0.01)
    assert pool(ep).batches == [[0]]


async def test_deadline_without_any_replica_is_503() -> None:
    b, _ = make([], timeout=0.03)
    status, exc = await call(b, 1)
    assert status == 503 and isinstance(exc, NoReadyReplica)


async def test_deadline_while_at_the_worker_frees_the_caller() -> None:
    opened, handler = gate()
    b, _ = make([endpoint("r0", handler)], timeout=0.05)
    status, exc = await call(b, 1)
    assert status == 504 and "at the worker" in exc.detail
    opened.set()


async def test_a_disconnected_client_is_dropped_before_sending() -> None:
    opened, handler = gate()
    ep = endpoint("r0", handler)
    b, _ = make([ep])
    busy = asyncio.ensure_future(call(b, 0))
    await until(lambda: ep.inflight == 1)
    connected = [True]
    gone = asyncio.ensure_future(call(b, 1, alive=lambda: connected[0]))
    stays = asyncio.ensure_future(call(b, 2))
    await asyncio.sleep(0.01)
    connected[0] = False
    opened.set()
    assert (await gone)[0] == 499 and isinstance((await gone)[1], ClientGone)
    assert await stays == (200, {"predictions": [2]})
    await busy
    assert pool(ep).batches == [[0], [2]]


async def test_queue_full_sheds_with_503_retry_after() -> None:
    opened, handler = gate()
    ep = endpoint("r0", handler)
    b, _ = make([ep], max_queue=2)
    busy = asyncio.ensure_future(call(b, 0))
    await until(lambda: ep.inflight == 1)
    queued = [asyncio.ensure_future(call(b, i)) for i in (1, 2)]
    await until(lambda: b.queue.requests == 2)
    status, exc = await call(b, 3)
    assert status == 503 and isinstance(exc, Overloaded) and exc.retry_after == 1
    assert b.metrics.shed._value.get() == 1
    opened.set()
    assert [r[0] for r in await asyncio.gather(busy, *queued)] == [200, 200, 200]


async def test_cancelled_caller_leaves_the_queue() -> None:
    opened, handler = gate()
    ep = endpoint("r0", handler)
    b, _ = make([ep])
    busy = asyncio.ensure_future(call(b, 0))
    await until(lambda: ep.inflight == 1)
    waiting = asyncio.ensure_future(call(b, 1))
    await until(lambda: b.queue.requests == 1)
    waiting.cancel()
    await asyncio.sleep(0.01)
    assert b.queue.requests == 0 and b.pending == 1
    opened.set()
    await busy


# -- shutdown ---------------------------------------------------------------------------------
async def test_close_answers_everyone_in_flight_and_queued() -> None:
    _, handler = gate()                    # never opened: the worker does not answer
    ep = endpoint("r0", handler)
    b, _ = make([ep])
    calls = [asyncio.ensure_future(call(b, i)) for i in range(3)]
    await until(lambda: ep.inflight == 1)
    calls.append(asyncio.ensure_future(call(b, 9)))
    await until(lambda: b.queue.requests >= 1)
    await b.close(grace=0.05)
    results = await asyncio.gather(*calls)
    assert all(s == 503 and isinstance(e, ShuttingDown) for s, e in results)
    assert ep.inflight == 0 and b.pending == 0
    assert (await call(b, 1))[0] == 503                      # closed: refuses newcomers


async def test_close_lets_work_finish_within_grace() -> None:
    async def slow(instances: list[Any]) -> UpstreamResponse:
        await asyncio.sleep(0.03)
        return await echo(instances)
    b, _ = make([endpoint("r0", slow)], max_batch_size=2)
    calls = [asyncio.ensure_future(call(b, i)) for i in range(5)]
    await asyncio.sleep(0)
    await b.close(grace=2.0)
    assert [r[0] for r in await asyncio.gather(*calls)] == [200] * 5


# -- the registry -----------------------------------------------------------------------------
async def test_registry_keeps_one_batcher_per_version_across_rebuilds() -> None:
    batchers = Batchers(Metrics())
    rs = ReplicaSet("svc", "v1")
    spec = BatchingSpec(max_batch_size=8)
    one = batchers.get("svc", "v1", spec, rs, target="/predict", host="svc",
                       request_timeout=5.0, retries=1)
    two = batchers.get("svc", "v1", BatchingSpec(max_batch_size=16, max_wait_ms="adaptive"), rs,
                       target="/predict", host="svc", request_timeout=5.0, retries=1)
    assert one is two and two.config.max_batch_size == 16 and two.config.max_wait is None
    fresh = ReplicaSet("svc", "v1")
    assert batchers.get("svc", "v1", spec, fresh, target="/p", host="svc", request_timeout=5.0,
                        retries=1).replicas is fresh
    batchers.retain([])
    assert list(batchers) == []


async def test_a_broken_connection_ejects_the_replica_so_the_queue_waits() -> None:
    opened = asyncio.Event()

    async def dies(instances: list[Any]) -> UpstreamResponse:
        await opened.wait()
        raise UpstreamReset("worker closed the connection without answering")
    dying = endpoint("dying", dies)
    b, rs = make([dying])
    first = asyncio.ensure_future(call(b, 0))
    await until(lambda: dying.inflight == 1)
    queued = asyncio.ensure_future(call(b, 1))
    await until(lambda: b.queue.requests == 1)
    opened.set()
    assert (await first)[0] == 502
    await asyncio.sleep(0.02)
    assert not queued.done() and len(pool(dying).batches) == 1     # not sent after it
    rs.publish([endpoint("fresh")])
    assert await queued == (200, {"predictions": [1]})


def test_replica_set_pending_counts_the_batcher_backlog() -> None:
    rs = ReplicaSet("svc", "v1")
    ep = Endpoint("r0", "127.0.0.1", 1)
    rs.publish([ep])
    ep.inflight = 2
    assert rs.pending == 2                     # no batcher: requests in flight
    b = Batcher("svc", "v1", rs, Metrics().batch("svc", "v1"), BatchConfig(), target="/p",
                host="svc", request_timeout=1.0, retries=0)
    assert rs.pending == 0 == b.pending        # with one: its instances, not its batches
    b.detach()
    assert rs.pending == 2


def test_build_table_keeps_batchers_across_builds_and_drops_them_with_batching() -> None:
    from gateway.dataplane.table import build_table
    from gateway.spec import parse_spec

    text = """
services:
  mlp:
    route: /v1/mlp
    rewrite: /predict
    batching: {max_batch_size: 16, max_wait_ms: adaptive, timeout_ms: 500}
    versions:
      v1: {command: "w --port {port}"}
"""
    spec = parse_spec(text)
    metrics = Metrics()
    batchers = Batchers(metrics)
    sets = {("mlp", "v1"): ReplicaSet("mlp", "v1")}
    one = build_table(spec, sets, metrics, batchers=batchers)
    two = build_table(spec, sets, metrics, batchers=batchers)
    b = one.by_name["mlp"].versions["v1"].batcher
    assert b is not None and b is two.by_name["mlp"].versions["v1"].batcher
    assert (b.target, b.config.max_batch_size, b.config.max_wait, b.config.timeout) == \
        ("/predict", 16, None, 0.5)
    plain = parse_spec(text.replace("    batching: {max_batch_size: 16, max_wait_ms: adaptive, "
                                    "timeout_ms: 500}\n", ""))
    assert build_table(plain, sets, metrics, batchers=batchers).by_name["mlp"] \
        .versions["v1"].batcher is None
    assert list(batchers) == []
    with pytest.raises(ValueError, match="Batchers"):
        build_table(spec, sets, metrics)


def test_batching_spec_rejects_bad_values() -> None:
    from gateway.errors import ConfigError
    from gateway.spec import parse_spec

    for bad in ("max_wait_ms: soon", "max_wait_ms: -1", "max_batch_size: 0", "max_queue: 0",
                "slots: 2"):
        with pytest.raises(ConfigError, match="batching"):
            parse_spec(f"""
services:
  s:
    route: /s
    batching: {{{bad}}}
    versions:
      v1: {{command: "w --port {{port}}"}}
""")
