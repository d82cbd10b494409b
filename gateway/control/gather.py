"""The controller's side of the observations of its data-plane processes (the process side is
gateway/dataplane/observe.py, whose docstring has the report's format and the reasons for it).

``absorb`` adds each process's counters and histograms into the controller's own prometheus
children and into the plain totals the autoscaler and rollout analysis read
(``VersionMetrics.answered / seconds / failed``, ``ShadowMetrics.agreed / compared``), so
``/metrics``, autoscaling and canary analysis see the whole gateway as with one process. Values
are cumulative per (process, incarnation): the controller adds the difference to what it last
absorbed from that life, so a repeated report adds nothing, and a restarted process (a new
incarnation) starts again from 0 without counting its predecessor twice. A dead process's
counts stay (they happened); only the last ~100 ms it had not reported are lost.

Gauges are per process and summed over live processes at scrape time; ``forget`` (a process
died) drops its gauges. Pending per version also feeds the controller's ``ReplicaSet.pending``
(the autoscaler's input), and demand for a version with no replica reaches its ``on_demand``
(scale from zero). ``drained`` tells the supervisor when no process can send to a replica any
more (see ``drain_check``).
"""

from __future__ import annotations

from collections import deque
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from typing import Any, NamedTuple, TypeVar

from prometheus_client import Counter, Histogram

from gateway.dataplane.balance import Endpoint, ReplicaSet
from gateway.dataplane.observe import FORMAT, HistValue, Labels, Series, families
from gateway.errors import BadObservations
from gateway.metrics import Metrics, gauge

Key = tuple[str, str]
Snapshot = tuple[str, int]          # (controller epoch, snapshot version) a process applied
# the families whose deltas also move plain totals (Metrics attribute names)
REQUESTS, LATENCY, COMPARISONS = "requests", "request_seconds", "shadow_comparisons"
F = TypeVar("F", Counter, Histogram)
_NUMBERS = (int, float)             # what json.loads makes of a number (bool is not one)
_NUMBER_TYPES = frozenset(_NUMBERS)
REMEMBER_DEAD = 256                 # ended incarnations whose late reports are refused


class Load(NamedTuple):
    """One version's gauges in one process."""

    pending: int = 0
    waiting: int = 0
    inflight: int = 0
    streams: float = 0.0
    ejected: frozenset[str] = frozenset()   # replica ids this process has ejected now


@dataclass
class _Process:
    """What the controller holds of one data-plane process's life."""

    incarnation: str
    counters: dict[Series, float] = field(default_factory=dict)
    histograms: dict[Series, HistValue] = field(default_factory=dict)
    # gauges: replaced by each report
    versions: dict[Key, Load] = field(default_factory=dict)
    replicas: dict[str, int] = field(default_factory=dict)
    ejections: dict[Key, int] = field(default_factory=dict)   # cumulative, like the counters
    batches: dict[Key, tuple[int, int]] = field(default_factory=dict)
    snapshot: Snapshot | None = None


@dataclass
class _Report:
    counters: list[tuple[str, Labels, float]]
    histograms: list[tuple[str, Labels, HistValue]]
    versions: dict[Key, Load]
    ejections: dict[Key, int]
    replicas: dict[str, int]
    batches: dict[Key, tuple[int, int]]
    demand: list[Key]


_IDLE = Load()


def _nothing() -> None:
    """The controller's sets are told of publishes; the gather has nothing to do then."""


class Gather:
    def __init__(self, metrics: Metrics,
                 replica_set: Callable[[str, str], ReplicaSet | None] | None = None) -> None:
        self.metrics = metrics
        # the controller's replica set of a version (Supervisor.replica_set), or None
        self._replica_set = replica_set or (lambda service, version: None)
        self._counters, self._histograms = families(metrics)
        self._procs: dict[str, _Process] = {}
        self._dead: deque[tuple[str, str]] = deque(maxlen=REMEMBER_DEAD)
        self._watched: dict[Key, ReplicaSet] = {}     # sets whose pending includes ours
        self._since: dict[str, Snapshot | None] = {}  # replica id -> snapshot at drain start
        self._cache: dict[Series, Any] = {}           # the controller's children by series
        metrics.add_gauges(self._gauges)

    # -- reports ------------------------------------------------------------------------------
    def absorb(self, process: str, incarnation: str, observations: Any,
               snapshot: Snapshot | None = None) -> None:
        """One report of ``process`` (``Observer.report()``); ``snapshot``: the (epoch,
        version) it had applied when it made the report. Raises ``BadObservations`` (and
        absorbs nothing) when the report cannot be read."""
        report = self._parse(observations)
        if (process, incarnation) in self._dead:
            return        # a late report of a life already replaced or forgotten
        p = self._procs.get(process)
        if p is None or p.incarnation != incarnation:
            if p is not None:
                self._dead.append((process, p.incarnation))
            p = self._procs[process] = _Process(incarnation)
        for name, labels, value in report.counters:
            self._add_counter(p, name, labels, value)
        for name, labels, hist in report.histograms:
            self._add_histogram(p, name, labels, hist)
        for key, total in report.ejections.items():
            self._add_ejections(p, key, total)
        p.versions, p.replicas, p.batches = report.versions, report.replicas, report.batches
        if snapshot is not None:
            p.snapshot = (str(snapshot[0]), int(snapshot[1]))
        for key in report.versions:
            self._watch(key)
        for service, version in report.demand:
            rs = self._replica_set(service, version)
            if rs is not None and rs.on_demand is not None:
                rs.on_demand()

    def forget(self, process: str) -> None:
        """``process`` died (or was stopped): its gauges go; what it counted stays."""
        p = self._procs.pop(process, None)
        if p is not None:
            self._dead.append((process, p.incarnation))

    @property
    def processes(self) -> list[str]:
        return list(self._procs)

    def _child(self, name: str, labels: Labels, family: Counter | Histogram) -> Any:
        """The controller's child of a series, looked up once (``labels()`` takes a lock)."""
        child = self._cache.get((name, labels))
        if child is None:
            child = self._cache[(name, labels)] = family.labels(*labels)
        return child

    def _add_counter(self, p: _Process, name: str, labels: Labels, value: float) -> None:
        last = p.counters.get((name, labels), 0.0)
        delta = value - last if value >= last else value   # lower: never within one life
        p.counters[(name, labels)] = value
        if not delta:
            return
        self._child(name, labels, self._counters[name]).inc(delta)
        if name == REQUESTS:
            vm = self.metrics.version(labels[0], labels[1])
            vm.answered += int(delta)
            if int(labels[2]) >= 500:
                vm.failed += int(delta)
        elif name == COMPARISONS:
            agreed = labels[2] == "agree"
            self.metrics.shadow(labels[0], labels[1]).absorb(
                int(delta) if agreed else 0, 0 if agreed else int(delta))

    def _add_histogram(self, p: _Process, name: str, labels: Labels, hist: HistValue) -> None:
        counts, total = hist
        last = p.histograms.get((name, labels))
        p.histograms[(name, labels)] = hist
        if last is not None:
            deltas = [c - lc for c, lc in zip(counts, last[0], strict=True)]
            if min(deltas) >= 0:        # else a new life's, under the same name: all of it
                counts, total = tuple(deltas), total - last[1]
        child = self._child(name, labels, self._histograms[name])
        for bucket, n in zip(child._buckets, counts, strict=True):   # noqa: SLF001
            if n:
                bucket.inc(n)
        child._sum.inc(total)   # noqa: SLF001 - no public way to add a batch of observations
        if name == LATENCY:
            self.metrics.version(labels[0], labels[1]).seconds += total

    def _add_ejections(self, p: _Process, key: Key, total: int) -> None:
        """Outlier ejections are each process's own (on its own traffic); their count is the
        controller set's plain ``ejections``, as a single process's is."""
        last = p.ejections.get(key, 0)
        p.ejections[key] = total
        rs = self._replica_set(*key)
        if rs is not None:
            rs.ejections += total - last if total >= last else total

    def _watch(self, key: Key) -> None:
        """The controller's set of ``key`` counts the processes' pending in its own."""
        rs = self._replica_set(*key)
        old = self._watched.get(key)
        if rs is None or rs is old:
            return
        if old is not None:
            old.unwatch(_nothing)
        rs.watch(_nothing, lambda: self.pending(*key))
        self._watched[key] = rs

    # -- the sums -----------------------------------------------------------------------------
    def pending(self, service: str, version: str) -> int:
        """Requests of the version not answered yet, over every live process."""
        return sum(p.versions.get((service, version), _IDLE).pending
                   for p in self._procs.values())

    def inflight(self, replica_id: str) -> int:
        """Requests in flight on a replica, over every live process."""
        return sum(p.replicas.get(replica_id, 0) for p in self._procs.values())

    def drained(self, replica_id: str, since: Snapshot | None) -> bool:
        """True when no live process can send to the replica any more: each has applied the
        snapshot ``since`` (the one published when the drain began) or a later one, and its
        report no longer lists the replica, i.e. its table has no such endpoint and nothing is
        in flight there. At ``since`` itself the replica may still be routed: then it is
        listed, and the wait goes on until the next snapshot, which leaves it out."""
        for p in self._procs.values():
            if replica_id in p.replicas:
                return False
            if since is not None and (p.snapshot is None or p.snapshot[0] != since[0]
                                      or p.snapshot[1] < since[1]):
                return False
        return True

    def drain_check(self, published: Callable[[], Snapshot | None] | None = None
                    ) -> Callable[[Endpoint], bool]:
        """The supervisor's ``drained`` hook with several processes. ``published``: the
        controller's latest published (epoch, version), read at the hook's first call for a
        replica, which the supervisor makes as the drain begins (right after it took the
        replica out of its set)."""
        def check(ep: Endpoint) -> bool:
            if ep.id not in self._since:
                self._since[ep.id] = published() if published is not None else None
            done = self.drained(ep.id, self._since[ep.id])
            if done:
                del self._since[ep.id]
            return done
        return check

    def _gauges(self) -> Iterable[Any]:
        """The processes' gauges, summed; ``Metrics.render`` adds each to the same-named family
        of the controller (whose own data-plane values are 0: it serves no request)."""
        versions: dict[Key, list[float]] = {}
        ejected: dict[Key, set[str]] = {}
        batches: dict[Key, list[int]] = {}
        for p in self._procs.values():
            for key, load in p.versions.items():
                acc = versions.setdefault(key, [0, 0, 0, 0.0])
                acc[0] += load.waiting
                acc[1] += load.inflight
                acc[2] += load.streams
                ejected.setdefault(key, set()).update(load.ejected)
            for key, (queued, pending) in p.batches.items():
                b = batches.setdefault(key, [0, 0])
                b[0] += queued
                b[1] += pending
        labels = ["service", "version"]
        yield gauge("serve_gateway_inflight_requests", "Requests being served by replicas",
                    labels, ((k, v[1]) for k, v in versions.items()))
        yield gauge("serve_gateway_waiting_requests", "Requests waiting for a ready replica",
                    labels, ((k, v[0]) for k, v in versions.items()))
        yield gauge("serve_gateway_streams_open", "Streamed answers being relayed now",
                    labels, ((k, v[2]) for k, v in versions.items()))
        # a replica ejected by two processes is one ejected replica
        yield gauge("serve_gateway_ejected_replicas", "Replicas ejected as outliers right now",
                    labels, ((k, len(ids)) for k, ids in ejected.items()))
        yield gauge("serve_gateway_batch_queue_length", "Requests queued for a batch", labels,
                    ((k, b[0]) for k, b in batches.items()))
        yield gauge("serve_gateway_batch_pending", "Instances queued or in flight in batches "
                    "(the autoscaler's load signal)", labels,
                    ((k, b[1]) for k, b in batches.items()))

    # -- input --------------------------------------------------------------------------------
    def _parse(self, obs: Any) -> _Report:
        try:
            return self._read(obs)
        except BadObservations:
            raise
        except (KeyError, TypeError, ValueError, AttributeError) as exc:
            raise BadObservations(f"unreadable observations: {type(exc).__name__}: {exc}") \
                from None

    def _read(self, obs: Any) -> _Report:
        if not isinstance(obs, dict) or obs.get("format") != FORMAT:
            raise BadObservations(f"observations must be an object with format {FORMAT}")
        counters = []
        for name, rows in obs["counters"].items():
            fam = _family(self._counters, name, "counter")
            for labels, value in rows:
                counters.append((name, _labels(fam, labels, name), _number(value, name)))
        histograms = []
        for name, rows in obs["histograms"].items():
            hfam = _family(self._histograms, name, "histogram")
            width = len(hfam._upper_bounds)   # noqa: SLF001 - buckets incl. +Inf
            for labels, counts, total in rows:
                if len(counts) != width:
                    raise BadObservations(f"{name}: {len(counts)} buckets, expected {width}")
                histograms.append((name, _labels(hfam, labels, name),
                                   (_counts(counts, name), float(total))))
        versions: dict[Key, Load] = {}
        ejections: dict[Key, int] = {}
        for s, v, pending, waiting, inflight, streams, ejections_total, ejected in obs["versions"]:
            key = (str(s), str(v))
            versions[key] = Load(int(pending), int(waiting), int(inflight), float(streams),
                                 frozenset(map(str, ejected)))
            ejections[key] = int(ejections_total)
        replicas = {str(k): int(v) for k, v in obs["replicas"].items()}
        batches = {(str(s), str(v)): (int(q), int(n)) for s, v, q, n in obs["batches"]}
        demand = [(str(s), str(v)) for s, v in obs["demand"]]
        return _Report(counters, histograms, versions, ejections, replicas, batches, demand)


def _family(known: dict[str, F], name: Any, kind: str) -> F:
    fam = known.get(name)
    if fam is None:
        raise BadObservations(f"unknown {kind} {name!r}")
    return fam


def _labels(fam: Counter | Histogram, values: Any, name: str) -> Labels:
    labels = tuple(values)
    want = len(fam._labelnames)   # noqa: SLF001
    if len(labels) != want or not all(isinstance(v, str) for v in labels):
        raise BadObservations(f"{name}: labels {values!r}, expected {want} strings")
    if name == REQUESTS and not labels[2].isdigit():
        raise BadObservations(f"{name}: status code {labels[2]!r}")
    return labels


def _number(value: Any, name: str) -> float:
    if type(value) not in _NUMBERS or not value >= 0:     # NaN is not a count either
        raise BadObservations(f"{name}: {value!r} is not a count")
    return float(value)


def _counts(values: Any, name: str) -> tuple[float, ...]:
    """A histogram's counts per bucket: checked as a whole (a report holds thousands)."""
    counts = tuple(values)
    if not set(map(type, counts)) <= _NUMBER_TYPES or not min(counts, default=0) >= 0:
        raise BadObservations(f"{name}: {values!r} are not counts")
    return tuple(map(float, counts))
