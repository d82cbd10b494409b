"""Observations of several data-plane processes, gathered by the controller: /metrics, the
autoscaler's and the rollout analysis' totals see the whole gateway exactly as one process
serving all the traffic would, a report repeated or a process restarted counts nothing twice,
a dead process's gauges go, demand reaches the controller, and a replica is drained only when
no process can send to it any more."""

from __future__ import annotations

import asyncio
import json
from typing import Any

import pytest
from prometheus_client.parser import text_string_to_metric_families

from gateway.control.gather import Gather
from gateway.control.reconcile import DRAINING
from gateway.control.supervisor import Supervisor
from gateway.dataplane.balance import Endpoint, ReplicaSet
from gateway.dataplane.observe import Observer, families
from gateway.dataplane.table import TableHolder, build_table
from gateway.errors import BadObservations
from gateway.metrics import Metrics, gauge
from gateway.spec import Spec, parse_spec
from tests.fakes import FakeProber, FakeRuntime, ManualClock, VirtualTime
from tests.helpers import metric_value

TEXT = """\
gateway: {state_dir: /nonexistent}
services:
  echo:
    route: /v1/echo
    traffic:
      weights: {v1: 1, v2: 0}
      mirror: {to: v2, percent: 100}
    versions:
      v1: {command: "serve-gateway worker m:C --port {port}", replicas: 2}
      v2: {command: "serve-gateway worker m:C --port {port}", replicas: 1}
"""
KEYS = (("echo", "v1"), ("echo", "v2"))


def spec(v1_replicas: int = 2) -> Spec:
    return parse_spec(TEXT.replace("replicas: 2", f"replicas: {v1_replicas}"))


class Process:
    """One data-plane process: its own metrics, replica sets and endpoints, table, observer."""

    def __init__(self, urgent: Any = None) -> None:
        self.metrics = Metrics()
        self.sets = {k: ReplicaSet(*k, clock=lambda: 0.0) for k in KEYS}
        self.eps = {"r1": Endpoint("r1", "127.0.0.1", 1), "r2": Endpoint("r2", "127.0.0.1", 2),
                    "r3": Endpoint("r3", "127.0.0.1", 3)}
        self.sets[KEYS[0]].publish([self.eps["r1"], self.eps["r2"]])
        self.sets[KEYS[1]].publish([self.eps["r3"]])
        self.holder = TableHolder(build_table(spec(), self.sets, self.metrics))
        self.observer = Observer(self.metrics, self.holder, urgent, clock=lambda: 0.0)

    def report(self, ack: bool = True) -> dict[str, Any]:
        r = json.loads(json.dumps(self.observer.report()))    # what travels: JSON
        if ack:
            self.observer.acked(r)
        return r


def traffic(*targets: Metrics, n: int = 1) -> None:
    """The same mix of events in each of ``targets``: answers by code, latencies, errors,
    retries, timeouts, streams, mirror copies and comparisons, batches, models."""
    for m in targets:
        for _ in range(n):
            v1 = m.version("echo", "v1")
            v1.observe(200, 0.003)
            v1.observe(200, 0.2)
            v1.observe(503, 1.5)
            v1.upstream_latency.observe(0.002)
            v1.upstream_error("5xx")
            m.version("echo", "v2").observe(404, 0.04)
            m.errors.labels("no_route").inc()
            m.timeout("body_idle")
            m.retries.labels("echo", "v1").inc()
            m.queue_wait.labels("echo", "v1").observe(0.01)
            v1.streams.inc()
            sm = m.shadow("echo", "v2")
            sm.sent.inc()
            sm.compared_one(True)
            sm.compared_one(False)
            sm.mismatch.inc()
            sm.latency_diff.observe(-0.02)
            b = m.batch("echo", "v1")
            b.size.observe(8)
            b.wait.observe(0.004)
            b.shed.inc()
            b.error("deadline")
            m.models("echo", "v1", 2).count(b"m1", True)


def data_plane_samples(m: Metrics) -> dict[tuple[str, tuple[tuple[str, str], ...]], float]:
    """Every sample of the data-plane counter and histogram families (their _created
    timestamps aside: when a series began is each process's own)."""
    counters, histograms = families(m)
    names = {f._name for f in (*counters.values(), *histograms.values())}   # noqa: SLF001
    out = {}
    for fam in text_string_to_metric_families(m.render().decode()):
        if fam.name in names or fam.name.removesuffix("_total") in names:
            for s in fam.samples:
                if not s.name.endswith("_created"):
                    out[(s.name, tuple(sorted(s.labels.items())))] = s.value
    return out


def controller() -> tuple[Metrics, Gather, dict[tuple[str, str], ReplicaSet]]:
    m = Metrics()
    sets = {k: ReplicaSet(*k, clock=lambda: 0.0) for k in KEYS}
    build_table(spec(), sets, m)          # the controller builds its tables as today
    return m, Gather(m, lambda s, v: sets.get((s, v))), sets


def test_gathered_metrics_and_totals_equal_one_process_serving_everything() -> None:
    ctrl, gather, _ = controller()
    a, b, alone = Process(), Process(), Process()
    traffic(a.metrics, n=3)
    traffic(b.metrics, n=2)
    traffic(alone.metrics, n=5)
    gather.absorb("dp-0", "life-a", a.report())
    gather.absorb("dp-1", "life-b", b.report())
    traffic(a.metrics)                         # more traffic between two reports
    traffic(alone.metrics)
    gather.absorb("dp-0", "life-a", a.report())
    gather.absorb("dp-1", "life-b", b.report())   # nothing new: adds nothing

    want = data_plane_samples(alone.metrics)
    counters, histograms = families(alone.metrics)
    for fam in (*counters.values(), *histograms.values()):   # each one moved: each is compared
        assert any(n.startswith(fam._name) and v for (n, _), v in want.items()), fam   # noqa: SLF001
    assert data_plane_samples(ctrl) == want
    text = ctrl.render().decode()
    assert metric_value(text, "serve_gateway_requests_total", service="echo", version="v1",
                        code="503") == 6
    # the plain totals the autoscaler and the rollout analysis read
    for key in KEYS:
        got, want = ctrl.version(*key), alone.metrics.version(*key)
        assert (got.answered, got.failed, got.buckets()) == \
            (want.answered, want.failed, want.buckets())
        assert got.seconds == pytest.approx(want.seconds)
    got_s, want_s = ctrl.shadow("echo", "v2"), alone.metrics.shadow("echo", "v2")
    assert got_s.totals() == want_s.totals() == (6, 6, 6, 12)
    assert got_s.agreement() == 0.5
    assert metric_value(text, "serve_gateway_shadow_agreement_ratio", service="echo",
                        version="v2") == 0.5


def test_a_repeated_or_lost_report_and_a_restart_count_nothing_twice() -> None:
    ctrl, gather, _ = controller()
    a = Process()
    traffic(a.metrics, n=2)
    r = a.report(ack=False)
    gather.absorb("dp-0", "life-1", r)
    gather.absorb("dp-0", "life-1", r)         # a POST retried after a timeout
    traffic(a.metrics)
    a.report(ack=False)                         # lost on the way: never absorbed
    gather.absorb("dp-0", "life-1", a.report())    # unacked series are sent again
    assert ctrl.version("echo", "v1").answered == 9
    # dp-0 dies and restarts: a new life counts from 0; the old life's counts stay
    a2 = Process()
    traffic(a2.metrics)
    gather.absorb("dp-0", "life-2", a2.report())
    gather.absorb("dp-0", "life-1", r)         # a late report of the old life: refused
    assert ctrl.version("echo", "v1").answered == 12
    text = ctrl.render().decode()
    assert metric_value(text, "serve_gateway_errors_total", kind="no_route") == 4


def test_acknowledged_series_are_not_sent_again_until_they_move() -> None:
    a = Process()
    traffic(a.metrics)
    first = a.report()
    assert "requests" in first["counters"] and "request_duration" not in first["counters"]
    quiet = a.report()
    assert quiet["counters"] == {} and quiet["histograms"] == {}
    a.metrics.version("echo", "v1").observe(200, 0.01)
    moved = a.report()
    assert moved["counters"] == {"requests": [[["echo", "v1", "200"], 3.0]]}
    assert list(moved["histograms"]) == ["request_seconds"]


def test_gauges_are_summed_over_live_processes_and_a_dead_ones_go() -> None:
    ctrl, gather, sets = controller()
    # the controller's own collectors report the same gauges (0: it serves no request)
    ctrl.add_gauges(lambda: [gauge("serve_gateway_inflight_requests", "x",
                                   ["service", "version"], [(("echo", "v1"), 0)])])
    a, b = Process(), Process()
    a.eps["r1"].inflight, a.eps["r2"].inflight, b.eps["r1"].inflight = 2, 1, 4
    a.sets[KEYS[0]].waiting, b.sets[KEYS[0]].waiting = 3, 1
    a.metrics.version("echo", "v1").streams_open.inc()
    # outlier ejection is each process's own: r1 ejected by both is one ejected replica
    a.eps["r1"].ejected_until = b.eps["r1"].ejected_until = b.eps["r2"].ejected_until = 5.0
    a.sets[KEYS[0]].ejections, b.sets[KEYS[0]].ejections = 1, 2
    gather.absorb("dp-0", "a", a.report())
    gather.absorb("dp-1", "b", b.report())
    assert sets[KEYS[0]].ejections == 3          # the supervisor's outlier_ejections counter
    text = ctrl.render().decode()
    assert text.count("# TYPE serve_gateway_inflight_requests gauge") == 1
    assert text.count("# TYPE serve_gateway_streams_open gauge") == 1
    echo = {"service": "echo", "version": "v1"}
    assert metric_value(text, "serve_gateway_inflight_requests", **echo) == 7
    assert metric_value(text, "serve_gateway_waiting_requests", **echo) == 4
    assert metric_value(text, "serve_gateway_streams_open", **echo) == 1
    assert metric_value(text, "serve_gateway_ejected_replicas", **echo) == 2
    assert gather.inflight("r1") == 6
    # the autoscaler's input: the controller's set counts every process's pending
    assert sets[KEYS[0]].pending == (3 + 3) + (1 + 4)
    gather.forget("dp-0")
    text = ctrl.render().decode()
    assert metric_value(text, "serve_gateway_inflight_requests", **echo) == 4
    assert metric_value(text, "serve_gateway_waiting_requests", **echo) == 1
    assert sets[KEYS[0]].pending == 5 and gather.processes == ["dp-1"]
    assert sets[KEYS[0]].ejections == 3          # what happened stays counted


def test_demand_in_a_process_reaches_the_controllers_set_at_once() -> None:
    _, gather, sets = controller()
    urgent: list[int] = []
    called: list[str] = []
    sets[KEYS[1]].on_demand = lambda: called.append("echo/v2")
    a = Process(urgent=lambda: urgent.append(1))
    a.report()                                   # attaches on_demand to the table's sets
    a.sets[KEYS[1]].on_demand()                  # type: ignore[misc]
    a.sets[KEYS[1]].on_demand()                  # type: ignore[misc]
    assert urgent == [1]                         # one urgent report, not one per request
    gather.absorb("dp-0", "a", a.report())
    assert called == ["echo/v2"]
    gather.absorb("dp-0", "a", a.report())
    assert called == ["echo/v2"]                 # demand is reported once


def test_a_replica_is_drained_once_every_process_left_it_and_finished_on_it() -> None:
    _, gather, _ = controller()
    a, b = Process(), Process()
    published = [("e1", 7)]
    check = gather.drain_check(lambda: published[0])
    drained_r2 = Endpoint("r2", "127.0.0.1", 2)
    gather.absorb("dp-0", "a", a.report(), ("e1", 7))
    gather.absorb("dp-1", "b", b.report(), ("e1", 6))
    assert not check(drained_r2)               # the drain begins at snapshot 7; both route to r2
    published[0] = ("e1", 8)                   # snapshot 8 leaves r2 out
    a.sets[KEYS[0]].publish([a.eps["r1"]])
    a.eps["r2"].inflight = 1                   # still answering one request there
    gather.absorb("dp-0", "a", a.report(), ("e1", 8))
    assert not check(drained_r2)
    a.eps["r2"].inflight = 0
    gather.absorb("dp-0", "a", a.report(), ("e1", 8))
    assert not check(drained_r2)               # dp-1 still routes to it
    b.sets[KEYS[0]].publish([b.eps["r1"]])
    gather.absorb("dp-1", "b", b.report(), ("e2", 8))   # another controller's snapshot
    assert not check(drained_r2)
    gather.absorb("dp-1", "b", b.report(), ("e1", 8))
    assert check(drained_r2)
    assert gather.drained("r1", ("e1", 8)) is False


def test_a_dead_process_does_not_hold_a_drain() -> None:
    _, gather, _ = controller()
    a = Process()
    gather.absorb("dp-0", "a", a.report(), ("e1", 3))
    assert not gather.drained("r1", ("e1", 3))
    gather.forget("dp-0")
    assert gather.drained("r1", ("e1", 3))


async def test_the_supervisor_stops_a_scaled_in_replica_once_no_process_routes_to_it() -> None:
    VirtualTime(asyncio.get_running_loop())    # the drain's poll timer passes without waiting
    runtime = FakeRuntime()
    ctrl = Metrics()
    sup = Supervisor(runtime, ctrl, clock=ManualClock(), prober=FakeProber(), drain_timeout=30.0)
    gather = Gather(ctrl, sup.replica_set)
    published = [("e1", 1)]
    sup.drained = gather.drain_check(lambda: published[0])
    sup.apply(spec(2))
    sup.reconcile()
    await settle()
    assert sorted(e.id for e in sup.groups[KEYS[0]].replica_set.endpoints) == ["r1", "r2"]
    a, b = Process(), Process()                  # both route to r1 and r2 (snapshot 1)
    gather.absorb("dp-0", "a", a.report(), ("e1", 1))
    gather.absorb("dp-1", "b", b.report(), ("e1", 1))
    sup.apply(spec(1))
    sup.reconcile()
    await settle()
    gone = next(m for m in sup.groups[KEYS[0]].members if m.state == DRAINING)
    kept = "r1" if gone.replica.id == "r2" else "r2"
    assert gone.endpoint is not None and gone.endpoint.inflight == 0   # none here: 1 process
    published[0] = ("e1", 2)                     # the snapshot without it
    a.sets[KEYS[0]].publish([a.eps[kept]])
    gather.absorb("dp-0", "a", a.report(), ("e1", 2))
    await asyncio.sleep(5)                       # virtual: many drain polls
    assert runtime.stopped == []                 # dp-1 still routes to it
    b.sets[KEYS[0]].publish([b.eps[kept]])
    gather.absorb("dp-1", "b", b.report(), ("e1", 2))
    for _ in range(500):
        if runtime.stopped:
            break
        await asyncio.sleep(0.005)
    assert runtime.stopped == [gone.replica.id]
    await sup.shutdown()


async def settle() -> None:
    for _ in range(50):
        await asyncio.sleep(0)


@pytest.mark.parametrize("bad", [
    None, {"format": 99},
    {"format": 1, "counters": {"config_reloads": [[["success"], 1]]}, "histograms": {},
     "versions": [], "replicas": {}, "batches": [], "demand": []},
    {"format": 1, "counters": {"requests": [[["echo", "v1"], 1]]}, "histograms": {},
     "versions": [], "replicas": {}, "batches": [], "demand": []},
    {"format": 1, "counters": {"requests": [[["echo", "v1", "200"], -1]]}, "histograms": {},
     "versions": [], "replicas": {}, "batches": [], "demand": []},
    {"format": 1, "counters": {}, "histograms": {"request_seconds": [[["echo", "v1"], [1], 0]]},
     "versions": [], "replicas": {}, "batches": [], "demand": []},
    {"format": 1, "counters": {}, "histograms": {}, "versions": [["echo"]], "replicas": {},
     "batches": [], "demand": []},
])
def test_an_unreadable_report_is_refused_whole(bad: Any) -> None:
    ctrl, gather, _ = controller()
    good = Process()
    traffic(good.metrics)
    r = good.report()
    if isinstance(bad, dict) and "counters" in bad:
        bad = {**r, **{k: v for k, v in bad.items() if v or k in ("counters", "histograms")}}
        bad["counters"] = {**r["counters"], **bad["counters"]}
    with pytest.raises(BadObservations):
        gather.absorb("dp-0", "a", bad)
    assert ctrl.version("echo", "v1").answered == 0 and gather.processes == []
