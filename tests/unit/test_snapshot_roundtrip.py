"""Routing snapshots (dataplane/snapshot.py): what the controller encodes is what a data-plane
process routes by, applied whole or not at all, keeping its endpoints (pools, in-flight counts)
across snapshots, with its share of every per-replica limit. Pure: no sockets, no loop."""

from __future__ import annotations

import orjson
import pytest

from gateway.admin.adminclient import TOKEN_ENV
from gateway.dataplane.balance import Endpoint, ReplicaSet
from gateway.dataplane.batchers import Batchers
from gateway.dataplane.child import TOKEN_ENV as CHILD_TOKEN_ENV
from gateway.dataplane.child import parse_share
from gateway.dataplane.snapshot import Applier, decode, encode, share
from gateway.dataplane.table import TableHolder
from gateway.errors import SnapshotError
from gateway.metrics import Metrics
from gateway.spec import Spec, parse_spec

CONFIG = """
gateway:
  queue: {max_waiting: 9}
services:
  echo:
    route: /v1/echo
    traffic: {weights: {v1: 90, v2: 10}}
    versions:
      v1: {command: "w --port {port}", max_concurrency: 5}
      v2: {command: "w --port {port}", max_concurrency: 1}
"""


def controller_side(spec: Spec, eps: dict[tuple[str, str], list[Endpoint]],
                    verdicts: dict[tuple[str, str], str] | None = None) -> bytes:
    sets = {}
    for (s, v), endpoints in eps.items():
        rs = ReplicaSet(s, v)
        rs.publish(endpoints)
        reason = (verdicts or {}).get((s, v))
        rs.hopeless = lambda reason=reason: reason
        sets[(s, v)] = rs
    return orjson.dumps(encode(spec, {"echo": {"v1": 0, "v2": 100}}, sets))


def applier(index: int = 0, count: int = 1) -> tuple[Applier, TableHolder]:
    holder, metrics = TableHolder(), Metrics()
    return Applier(holder, metrics, Batchers(metrics), index, count), holder


def test_what_the_controller_encodes_is_what_the_data_plane_routes_by() -> None:
    spec = parse_spec(CONFIG)
    wire = controller_side(spec, {("echo", "v1"): [Endpoint("r1", "127.0.0.1", 7001)],
                                  ("echo", "v2"): [Endpoint("r2", "127.0.0.1", 7002),
                                                   Endpoint("r3", "127.0.0.1", 7003)]},
                           {("echo", "v1"): "crash loop"})
    snap = decode(orjson.loads(wire))
    assert snap.spec == spec and snap.spec.digest() == spec.digest()
    app, holder = applier()
    table = app.apply(snap)
    assert holder.current is table and table.digest == spec.digest()
    route = table.match("/v1/echo/x")
    assert route is not None and dict(route.weights) == {"v1": 0, "v2": 100}   # live weights
    v2 = route.versions["v2"].replicas
    assert [(e.id, e.host, e.port) for e in v2.endpoints] == [("r2", "127.0.0.1", 7002),
                                                             ("r3", "127.0.0.1", 7003)]
    assert route.versions["v1"].replicas.hopeless() == "crash loop"
    assert route.versions["v2"].replicas.hopeless() is None


def test_endpoints_and_replica_sets_survive_the_next_snapshot() -> None:
    spec = parse_spec(CONFIG)
    app, holder = applier()
    app.apply(decode(orjson.loads(controller_side(
        spec, {("echo", "v1"): [Endpoint("r1", "127.0.0.1", 7001)], ("echo", "v2"): []}))))
    rs = holder.current.by_name["echo"].versions["v1"].replicas
    ep = rs.endpoints[0]
    ep.inflight = 3                       # requests in flight on it in this process
    app.apply(decode(orjson.loads(controller_side(
        spec, {("echo", "v1"): [Endpoint("r1", "127.0.0.1", 7001),
                                Endpoint("r4", "127.0.0.1", 7004)], ("echo", "v2"): []}))))
    after = holder.current.by_name["echo"].versions["v1"].replicas
    assert after is rs                    # its wait queue too
    assert rs.endpoints[0] is ep and ep.inflight == 3 and not ep.pool.closed
    assert [e.id for e in rs.endpoints] == ["r1", "r4"]
    app.apply(decode(orjson.loads(controller_side(
        spec, {("echo", "v1"): [Endpoint("r4", "127.0.0.1", 7004)], ("echo", "v2"): []}))))
    assert ep.pool.closed and [e.id for e in rs.endpoints] == ["r4"]   # drained away
    one_version = orjson.loads(controller_side(spec, {("echo", "v1"): [], ("echo", "v2"): []}))
    del one_version["spec"]["services"]["echo"]["versions"]["v2"]
    one_version["spec"]["services"]["echo"]["traffic"] = {"weights": {"v1": 100}}
    one_version["weights"] = {}
    del one_version["sets"]["echo/v2"]
    v2 = holder.current.by_name["echo"].versions["v2"].replicas
    app.apply(decode(one_version))
    assert list(holder.current.by_name["echo"].versions) == ["v1"]
    assert v2.verdict() is not None and "removed" in str(v2.verdict())   # its waiters: 503 now


def test_each_process_gets_its_share_of_the_per_replica_limits() -> None:
    spec = parse_spec(CONFIG)
    wire = orjson.loads(controller_side(spec, {("echo", "v1"): [], ("echo", "v2"): []}))
    limits = []
    for i in range(2):
        app, holder = applier(i, 2)
        app.apply(decode(wire))
        versions = holder.current.by_name["echo"].versions
        limits.append((versions["v1"].replicas.limit, versions["v2"].replicas.limit,
                       versions["v1"].replicas.max_waiting))
    assert limits == [(3, 1, 5), (2, 1, 4)]   # 5 = 3 + 2, 9 = 5 + 4; never 0 (v2's 1 each)
    assert [share(10, i, 4) for i in range(4)] == [3, 3, 2, 2]
    assert share(0, 1, 2) == 0


def test_a_new_share_applies_the_snapshot_in_force_again() -> None:
    """The controller's answer to a report moves a process's share (a node joined or left):
    the same routing, with the new limits, in one swap."""
    spec = parse_spec(CONFIG)
    app, holder = applier(0, 1)
    app.apply(decode(orjson.loads(controller_side(spec, {("echo", "v1"): [], ("echo", "v2"): []}))))
    rs = holder.current.by_name["echo"].versions["v1"].replicas
    assert (rs.limit, rs.max_waiting) == (5, 9)
    assert app.reshare(1, 2) and not app.reshare(1, 2)
    now = holder.current.by_name["echo"].versions["v1"].replicas
    assert now is rs and (rs.limit, rs.max_waiting) == (2, 4)   # the same set, its queue kept


def test_a_snapshot_that_cannot_apply_changes_nothing() -> None:
    spec = parse_spec(CONFIG)
    app, holder = applier()
    good = orjson.loads(controller_side(spec, {("echo", "v1"): [Endpoint("r1", "h", 1)],
                                               ("echo", "v2"): []}))
    table = app.apply(decode(good))
    bad = orjson.loads(orjson.dumps(good))
    bad["spec"]["services"]["echo"]["versions"]["v1"]["max_concurrency"] = -1
    with pytest.raises(SnapshotError, match="max_concurrency"):
        decode(bad)
    # a valid spec whose table cannot be built (a mirror comparator nobody installed) is
    # refused by apply before any endpoint or limit moves
    broken = orjson.loads(orjson.dumps(good))
    broken["spec"]["services"]["echo"]["traffic"]["mirror"] = {
        "to": "v2", "percent": 10, "comparator": "no_such_comparator_plugin"}
    broken["sets"]["echo/v1"]["endpoints"] = []
    refused = decode(broken)
    with pytest.raises(Exception, match="no_such_comparator_plugin"):
        app.apply(refused)
    assert holder.current is table
    assert [e.id for e in table.by_name["echo"].versions["v1"].replicas.endpoints] == ["r1"]
    with pytest.raises(SnapshotError):
        decode({"spec": {}, "weights": {}})


def test_the_child_command_line() -> None:
    assert CHILD_TOKEN_ENV == TOKEN_ENV      # the data plane reads the variable the admin sets
    assert parse_share("1/4") == (1, 4)
    for bad in ("4/4", "x", "1/0", "-1/2"):
        with pytest.raises(ValueError, match="--share"):
            parse_share(bad)
