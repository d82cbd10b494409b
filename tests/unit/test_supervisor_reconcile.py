"""The supervisor as reconcile(desired, observed) -> actions (pure), and executing them against
a fake runtime with a manual clock (tests/fakes.py): start, scale in with drain, crash backoff,
a crash loop, adoption of a previous gateway's replicas (in the manner of Ray Serve's
deployment state tests)."""

from __future__ import annotations

import asyncio

from gateway.control.groups import replica_spec
from gateway.control.reconcile import (
    DRAINING,
    READY,
    STARTING,
    Forget,
    Launch,
    Member,
    Seen,
    Stop,
    Want,
    reconcile,
)
from gateway.control.supervisor import Supervisor
from gateway.metrics import Metrics
from gateway.runtimes.base import Replica
from gateway.spec import parse_spec
from tests.fakes import FakeProber, FakeRuntime, ManualClock, VirtualTime

K = ("echo", "v1")


def m(id: str, state: str = READY, revision: str = "new", launched: float = 0.0) -> Member:
    return Member(id, state, revision, launched)


# -- the pure decisions --------------------------------------------------------------------------

def test_launches_the_difference_counting_launches_in_flight() -> None:
    assert reconcile({K: Want("new", 3)}, {}, 0.0) == [Launch(K, 3)]
    assert reconcile({K: Want("new", 3)}, {K: Seen((m("a"),), launching=1)}, 0.0) == [Launch(K, 1)]
    assert reconcile({K: Want("new", 2)}, {K: Seen((m("a"), m("b", STARTING)))}, 0.0) == []


def test_no_launch_during_crash_backoff_or_shutdown() -> None:
    seen = {K: Seen(not_before=10.0)}
    assert reconcile({K: Want("new", 1)}, seen, 9.9) == []
    assert reconcile({K: Want("new", 1)}, seen, 10.0) == [Launch(K, 1)]
    assert reconcile({K: Want("new", 1)}, {}, 0.0, stopping=True) == []


def test_scale_in_stops_starting_ones_first_then_the_newest_ready() -> None:
    seen = Seen((m("old", launched=1), m("young", launched=5), m("boot", STARTING, launched=9)))
    assert reconcile({K: Want("new", 1)}, {K: seen}, 0.0) == [
        Stop(K, "boot", "scale-in"), Stop(K, "young", "scale-in")]
    draining = Seen((m("a"), m("b", DRAINING)))     # already on its way out: not counted
    assert reconcile({K: Want("new", 1)}, {K: draining}, 0.0) == []


def test_a_stale_revision_goes_once_enough_of_the_new_one_is_ready() -> None:
    rolling = Seen((m("old1", revision="old"), m("new1", STARTING)))
    assert reconcile({K: Want("new", 1)}, {K: rolling}, 0.0) == []       # capacity kept
    ready = Seen((m("old1", revision="old"), m("new1")))
    assert reconcile({K: Want("new", 1)}, {K: ready}, 0.0) == [Stop(K, "old1", "replace")]


def test_a_removed_version_drains_at_once_and_is_forgotten_when_empty() -> None:
    seen = Seen((m("a", revision="old"),))
    assert reconcile({K: Want("new", 0, removed=True)}, {K: seen}, 0.0) == [Stop(K, "a", "replace")]
    assert reconcile({K: Want("new", 0, removed=True)}, {K: Seen()}, 0.0) == [Forget(K)]
    assert reconcile({K: Want("new", 0, removed=True)}, {K: Seen(launching=1)}, 0.0) == []


# -- executed against a fake runtime -------------------------------------------------------------

SPEC = """\
services:
  echo:
    route: /echo
    versions:
      v1: {{command: "w --port {{port}}", replicas: {n}, env: {{REV: "{rev}"}}}}
"""


def spec(n: int, rev: str = "1"):  # type: ignore[no-untyped-def]
    return parse_spec(SPEC.format(n=n, rev=rev))


async def settle() -> None:
    """Let every task the supervisor spawned run as far as it can without time passing."""
    for _ in range(50):
        await asyncio.sleep(0)


def supervisor(runtime: FakeRuntime, clock: ManualClock) -> Supervisor:
    VirtualTime(asyncio.get_running_loop())    # the drain's poll timer passes without waiting
    return Supervisor(runtime, Metrics(), clock=clock, prober=FakeProber(), drain_timeout=30.0)


def states(sup: Supervisor) -> list[str]:
    return sorted(mem.state for mem in sup.groups[K].members)


async def until(cond, what: str) -> None:  # type: ignore[no-untyped-def]
    """Poll with a deadline (virtual time): a drain checks in-flight requests on its own timer."""
    for _ in range(500):
        if cond():
            return
        await asyncio.sleep(0.005)
    raise AssertionError(f"never happened: {what}")


async def test_start_launches_replicas_and_routes_them_once_ready() -> None:
    runtime, clock = FakeRuntime(), ManualClock()
    sup = supervisor(runtime, clock)
    sup.apply(spec(2))
    assert sup.groups[K].replica_set.endpoints == ()
    sup.reconcile()
    await settle()
    assert len(runtime.started) == 2 and states(sup) == [READY, READY]
    assert {e.port for e in sup.groups[K].replica_set.endpoints} == {r.port for r in runtime.started}
    sup.reconcile()
    await settle()
    assert len(runtime.started) == 2            # converged: nothing more to do
    await sup.shutdown()
    assert sorted(runtime.stopped) == sorted(r.id for r in runtime.started)


async def test_scale_in_drains_in_flight_requests_before_stopping() -> None:
    runtime, clock = FakeRuntime(), ManualClock()
    sup = supervisor(runtime, clock)
    sup.apply(spec(2))
    sup.reconcile()
    await settle()
    newest = max(sup.groups[K].members, key=lambda mem: mem.launched)
    assert newest.endpoint is not None
    newest.endpoint.inflight = 1                 # a request is still being answered
    sup.apply(spec(1))                           # the commit point hands over a lower count
    sup.reconcile()
    await settle()
    assert newest.state == DRAINING and runtime.stopped == []
    assert newest.endpoint not in sup.groups[K].replica_set.endpoints   # no new requests
    newest.endpoint.inflight = 0
    await until(lambda: runtime.stopped == [newest.replica.id], "the drained replica stops")
    assert states(sup) == [READY]
    await sup.shutdown()


async def test_a_crash_leaves_routing_at_once_and_restarts_after_backoff() -> None:
    runtime, clock = FakeRuntime(), ManualClock()
    sup = supervisor(runtime, clock)
    sup.apply(spec(1))
    sup.reconcile()
    await settle()
    first = runtime.started[0]
    runtime.crash(first.id)
    await settle()
    g = sup.groups[K]
    assert g.members == [] and g.replica_set.endpoints == () and g.restarts == 1
    assert "exited with code 1: boom" in g.last_exit
    sup.reconcile()
    await settle()
    assert len(runtime.started) == 1            # backoff: 0.5 s after the first crash
    clock.advance(0.5)
    sup.reconcile()
    await settle()
    assert len(runtime.started) == 2 and states(sup) == [READY]
    await sup.shutdown()


async def test_a_crash_loop_backs_off_longer_and_says_so() -> None:
    runtime, clock = FakeRuntime(), ManualClock()
    sup = supervisor(runtime, clock)
    sup.apply(spec(1))
    runtime.fail_starts = 5                      # a worker that cannot start at all
    delays = []
    for _ in range(5):
        sup.reconcile()
        await settle()
        g = sup.groups[K]
        delays.append(g.not_before - clock.now)
        clock.advance(g.not_before - clock.now)
    assert delays == [0.5, 1.0, 2.0, 4.0, 8.0]
    status = sup.status()["echo"]["v1"]
    assert status["crash_loop"] is True and status["restarts"] == 5
    assert sup.groups[K].hopeless() is not None    # waiting requests get their 503 at once
    await sup.shutdown()


async def test_adoption_keeps_current_replicas_and_stops_stale_and_extra_ones() -> None:
    current = replica_spec("echo", "v1", spec(1).services["echo"].versions["v1"])
    stale = replica_spec("echo", "v1", spec(1, rev="0").services["echo"].versions["v1"])
    keep = Replica("left-1", current, "127.0.0.1", 31001, started_at=0.0)
    extra = Replica("left-2", current, "127.0.0.1", 31002, started_at=0.0)
    old = Replica("left-3", stale, "127.0.0.1", 31003, started_at=0.0)
    runtime, clock = FakeRuntime(left=[keep, old, extra]), ManualClock()
    sup = supervisor(runtime, clock)
    sup.apply(spec(1))
    await sup.start()
    await until(lambda: sorted(runtime.stopped) == ["left-2", "left-3"], "leftovers stopped")
    await settle()
    assert runtime.started == []                 # nothing launched: the survivor serves
    [adopted] = sup.status()["echo"]["v1"]["replicas"]
    assert adopted["id"] == "left-1" and adopted["adopted"] and adopted["state"] == READY
    await sup.shutdown()
