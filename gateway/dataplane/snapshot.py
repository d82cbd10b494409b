"""Routing snapshots: the committed routing state as JSON, and its atomic apply in a data-plane
process that does not run the controller (``gateway.workers`` >= 2, or another host).

The controller encodes (``encode``, called by control/publish.py); a data-plane process decodes
(``decode``) and applies (``Applier.apply``). One module owns both ends of the format::

    {"spec":    the merged desired Spec, model_dump(mode="json"),
     "weights": {service: {version: weight}}   (where they differ from the spec's own),
     "sets":    {"service/version": {"endpoints": [{"id", "host", "port"}],
                                     "verdict": why none is coming or null,
                                     "starting": replicas on their way}}}

The gateway-wide data-plane settings (deadlines, body limit, trusted hops, access sampling)
are read from ``spec.gateway`` (``configure``), the same function the single-process gateway
uses, so the two can never disagree.

Apply is all or nothing: the spec is validated and the table built first (either may raise:
nothing visible has changed); only then are endpoints published, limits set and the table
swapped in, once. A request reads ``holder.current`` once, so it sees one snapshot, never a
mix. Replica sets (their queues) and endpoints (their pools, outlier state, in-flight counts)
are kept per key and per replica id across snapshots.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from pydantic import ValidationError

from gateway.dataplane.balance import Endpoint, ReplicaSet
from gateway.dataplane.batchers import Batchers
from gateway.dataplane.http1rules import Deadlines
from gateway.dataplane.outlier import outlier_policy
from gateway.dataplane.table import RoutingTable, TableHolder, build_table
from gateway.errors import SnapshotError
from gateway.metrics import Metrics
from gateway.spec.models import GatewaySpec, Spec

if TYPE_CHECKING:
    from gateway.dataplane.server import DataPlane

Key = tuple[str, str]


def encode(spec: Spec, weights: Mapping[str, Mapping[str, int]],
           sets: Mapping[Key, ReplicaSet]) -> dict[str, Any]:
    """The snapshot of a committed state: ``spec`` and ``weights`` as the commit merged them,
    each version's ready endpoints and verdict as its (controller-side) replica set has them."""
    return {"spec": spec.model_dump(mode="json"),
            "weights": {s: dict(w) for s, w in sorted(weights.items())},
            "sets": {f"{s}/{v}": {"endpoints": [{"id": e.id, "host": e.host, "port": e.port}
                                                for e in rs.endpoints],
                                  "verdict": rs.hopeless(), "starting": rs.starting()}
                     for (s, v), rs in sorted(sets.items())}}


@dataclass(frozen=True)
class SetState:
    """One version's replicas as the controller sees them."""

    endpoints: tuple[tuple[str, str, int], ...] = ()     # (id, host, port), ready ones
    verdict: str | None = None      # why no replica is coming (requests get their 503 at once)
    starting: int = 0               # a cold start under way (a waiting request's 504, not 503)


@dataclass(frozen=True)
class Snapshot:
    spec: Spec
    weights: Mapping[str, Mapping[str, int]]
    sets: Mapping[Key, SetState]


def decode(doc: Any) -> Snapshot:
    """A snapshot document as sent by the controller; SnapshotError says what is wrong."""
    if not isinstance(doc, dict) or not {"spec", "weights", "sets"} <= doc.keys():
        raise SnapshotError("a snapshot is an object with 'spec', 'weights' and 'sets'")
    try:
        spec = Spec.model_validate(doc["spec"])
    except ValidationError as exc:
        raise SnapshotError(f"the snapshot's spec is not valid: {exc}") from None
    try:
        weights = {str(s): {str(v): int(w) for v, w in ws.items()}
                   for s, ws in doc["weights"].items()}
        sets = {}
        for key, state in doc["sets"].items():
            service, _, version = str(key).partition("/")
            sets[(service, version)] = SetState(
                tuple((str(e["id"]), str(e["host"]), int(e["port"])) for e in state["endpoints"]),
                None if state.get("verdict") is None else str(state["verdict"]),
                int(state.get("starting", 0)))
    except (AttributeError, KeyError, TypeError, ValueError) as exc:
        raise SnapshotError(f"malformed snapshot: {exc!r}") from None
    return Snapshot(spec, weights, sets)


def share(total: int, index: int, count: int) -> int:
    """Process ``index`` of ``count``'s part of ``total`` (a per-replica concurrency limit, a
    wait queue): the parts add up to ``total`` exactly when ``total >= count``; each is at least
    1 when ``total`` is (a process with no slot at all could not serve the version)."""
    part = total // count + (1 if index < total % count else 0)
    return max(part, 1 if total > 0 else 0)


def configure(dataplane: DataPlane, g: GatewaySpec) -> None:
    """The gateway-wide data-plane settings of ``g`` (at start and on every reload or
    snapshot): one reading of the config for the single process and for every data plane."""
    access = g.access_log
    dataplane.access_sample = access.sample if access.enabled else 0.0
    d = g.deadlines
    dataplane.configure(Deadlines(d.header_read, d.body_idle, d.upstream_idle, d.client_write),
                        g.max_body_bytes, g.trusted_hops)


def _constant(value: Any) -> Callable[[], Any]:
    return lambda: value


class Applier:
    """A data-plane process's routing state, replaced by each snapshot as a whole.

    ``index`` of ``count``: this process's share of the per-replica limits and wait queues
    (README: "shared vs per process")."""

    def __init__(self, holder: TableHolder, metrics: Metrics, batchers: Batchers,
                 index: int = 0, count: int = 1) -> None:
        self.holder = holder
        self.metrics = metrics
        self.batchers = batchers
        self.index, self.count = index, count
        self.sets: dict[Key, ReplicaSet] = {}
        self.endpoints: dict[str, Endpoint] = {}
        self.spec: Spec | None = None
        self.last: Snapshot | None = None       # the snapshot in force

    def apply(self, snap: Snapshot) -> RoutingTable:
        """Make ``snap`` the routing state, in full or (on an exception) not at all."""
        spec = snap.spec
        keys = [(s, v) for s, svc in spec.services.items() for v in svc.versions]
        max_waiting = spec.gateway.queue.max_waiting
        sets = {k: self.sets.get(k) or ReplicaSet(k[0], k[1], max_waiting=self._share(max_waiting))
                for k in keys}
        table = build_table(spec, sets, self.metrics, snap.weights, self.batchers)
        # from here on nothing raises: the new state goes in whole
        endpoints: dict[str, Endpoint] = {}
        for (s, v), rs in sets.items():
            svc = spec.services[s]
            ver = svc.versions[v]
            state = snap.sets.get((s, v), SetState())
            eps = [self._endpoint(rid, host, port, svc.timeouts.connect, endpoints)
                   for rid, host, port in state.endpoints]
            rs.hopeless = _constant(state.verdict)
            rs.starting = _constant(state.starting)
            rs.configure(limit=self._share(ver.max_concurrency),
                         max_waiting=self._share(max_waiting), outlier=outlier_policy(ver.outlier))
            rs.publish(eps)
        for key, rs in self.sets.items():
            if key not in sets:      # the version left the config: its waiters get their 503
                rs.hopeless = _constant("the version was removed")
                rs.publish(())
        for rid, ep in self.endpoints.items():
            if endpoints.get(rid) is not ep:
                ep.pool.close()      # idle connections now; busy ones when their answer ends
        self.sets, self.endpoints, self.spec, self.last = sets, endpoints, spec, snap
        self.holder.swap(table)
        return table

    def reshare(self, index: int, count: int) -> bool:
        """This process is now sharer ``index`` of ``count`` (the controller says so in its
        answer to each report): the snapshot in force is applied again with the new limits.
        False when nothing changed."""
        if (index, count) == (self.index, self.count):
            return False
        before, (self.index, self.count) = (self.index, self.count), (index, count)
        if self.last is not None:
            try:
                self.apply(self.last)
            except Exception:
                self.index, self.count = before      # in full or not at all
                raise
        return True

    def _share(self, total: int) -> int:
        return share(total, self.index, self.count)

    def _endpoint(self, rid: str, host: str, port: int, connect_timeout: float,
                  into: dict[str, Endpoint]) -> Endpoint:
        """The replica's endpoint of the last snapshot (pool, outlier state and in-flight count
        kept), or a new one."""
        ep = into.get(rid) or self.endpoints.get(rid)
        if ep is None or (ep.host, ep.port) != (host, port):
            ep = Endpoint(rid, host, port, connect_timeout)
        into[rid] = ep
        return ep
