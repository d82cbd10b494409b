"""What a data-plane process tells its controller about its traffic (the controller side is
gateway/control/gather.py; h16a's child moves the dict, opaque, in ``POST /control/v1/report``).

API (agreed with the process/transport side):

- ``Observer(metrics, holder, urgent=None)``; ``report() -> dict`` (JSON-able), called every
  100 ms and at once when ``urgent`` fires; ``acked(report)`` once the controller answered 200 to
  that report; ``attach(replica_sets)`` right after a snapshot is applied (``report`` attaches
  the table's sets too, as a safety net).
- The controller: ``Gather.absorb(process, incarnation, observations, snapshot=(epoch, version)
  applied)``, ``Gather.forget(process)`` when a process died.

Counters and histograms travel as **cumulative values of this process's life** (its
incarnation), and only the series that changed since the last report the controller
acknowledged. The controller keeps what it last absorbed per (process, incarnation) and adds the
difference. That makes a report idempotent: a POST retried after a timeout whose first copy did
arrive adds nothing the second time, and a lost report's counts arrive with the next one (its
series are still "changed since the last ack"). A restarted process is a new incarnation and
counts from 0 again, so nothing is counted twice. Plain deltas (the first design) would double
count a retried POST and drop a failed one.

Gauges (pending, waiting and in flight per version, in flight per replica, open streams, batch
queues) are current values of this process; the controller sums them over live processes.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Iterable
from functools import partial
from operator import attrgetter
from typing import Any

from prometheus_client import Counter, Gauge, Histogram

from gateway.dataplane.balance import Endpoint, ReplicaSet
from gateway.dataplane.table import TableHolder
from gateway.metrics import Metrics

FORMAT = 1

# Counter and histogram families only the controller moves (supervisor, reload, autoscaler,
# rollouts): a data-plane process never touches them, so they are not walked. Every other
# Counter and Histogram attribute of ``Metrics`` is a data-plane family (requests by code,
# request / upstream latency, queue wait, upstream errors, retries, errors by kind, timeouts,
# streams, shadow requests / comparisons / mismatches / latency difference, batch size / wait /
# shed / errors, model requests) and travels without a change here when one is added.
CONTROLLER_ONLY = frozenset({
    "replica_restarts", "replica_exits", "cold_start", "config_reloads", "autoscale_decisions",
    "rollout_checks", "rollouts", "rollout_journal_errors",
})

Labels = tuple[str, ...]
Series = tuple[str, Labels]                 # (Metrics attribute, label values)
HistValue = tuple[tuple[float, ...], float]  # (count per bucket, not cumulative; sum)


def families(metrics: Metrics) -> tuple[dict[str, Counter], dict[str, Histogram]]:
    """The data-plane counter and histogram families of ``metrics``, by attribute name (the
    name both ends use)."""
    counters: dict[str, Counter] = {}
    histograms: dict[str, Histogram] = {}
    for name, value in vars(metrics).items():
        if name in CONTROLLER_ONLY:
            continue
        if isinstance(value, Counter):
            counters[name] = value
        elif isinstance(value, Histogram):
            histograms[name] = value
    return counters, histograms


def children(family: Counter | Histogram | Gauge) -> Iterable[tuple[Labels, Any]]:
    """A labelled family's children by label values."""
    return family._metrics.items()   # type: ignore[return-value]  # noqa: SLF001 - no public walk


# prometheus_client's values sit behind a lock for threads; this process reads them on its one
# loop thread, where reading the float attribute is atomic, and 3x cheaper than ``get()``
_VALUE = attrgetter("_value")


def counter_value(child: Counter) -> float:
    return float(child._value._value)   # noqa: SLF001


def histogram_value(child: Histogram) -> HistValue:
    """(count per bucket, not cumulative, +Inf last; sum) of a histogram child."""
    return (tuple(map(_VALUE, child._buckets)),   # noqa: SLF001
            float(child._sum._value))              # noqa: SLF001


class Observer:
    """This process's side of the observations: reads the metrics and the applied table."""

    def __init__(self, metrics: Metrics, holder: TableHolder,
                 urgent: Callable[[], None] | None = None,
                 clock: Callable[[], float] = time.monotonic) -> None:
        self.metrics = metrics
        self.clock = clock        # the replica sets' (outlier ejection ends in its time)
        self.holder = holder
        self.urgent = urgent      # a report should go now (demand for a version with no replica)
        self._counters, self._histograms = families(metrics)
        # what the controller acknowledged having, per series: a series is sent while it differs
        self._acked_counters: dict[Series, float] = {}
        self._acked_histograms: dict[Series, HistValue] = {}
        self._demand: dict[tuple[str, str], None] = {}   # ordered set, since the last report
        # endpoints seen in a table, kept while requests are still in flight on them after a
        # snapshot dropped them: the controller's drain waits for those too
        self._endpoints: dict[str, Endpoint] = {}

    # -- wiring -------------------------------------------------------------------------------
    def attach(self, replica_sets: Iterable[ReplicaSet]) -> None:
        """Route the sets' scale-from-zero demand to the controller (this process has no
        autoscaler): call it after each applied snapshot, before its first request."""
        for rs in replica_sets:
            if rs.on_demand is None:
                rs.on_demand = partial(self._on_demand, rs.service, rs.version)

    def _on_demand(self, service: str, version: str) -> None:
        first = not self._demand
        self._demand[(service, version)] = None
        if first and self.urgent is not None:
            self.urgent()

    # -- the report ---------------------------------------------------------------------------
    def report(self) -> dict[str, Any]:
        self.metrics.flush()      # the hot path's tallies reach the children first
        sets = self._sets()
        self.attach(sets)
        counters, histograms = self._counter_rows(), self._histogram_rows()
        demand = [list(k) for k in self._demand]
        self._demand.clear()
        return {"format": FORMAT, "counters": counters, "histograms": histograms,
                "versions": self._versions(sets), "replicas": self._replicas(sets),
                "batches": self._batches(), "demand": demand}

    def _counter_rows(self) -> dict[str, list[list[Any]]]:
        """[labels, value] of every counter that moved since the last acknowledged report."""
        out: dict[str, list[list[Any]]] = {}
        for name, fam in self._counters.items():
            acked = self._acked_counters
            rows = [[list(labels), v] for labels, child in children(fam)
                    if (v := counter_value(child)) != acked.get((name, labels), 0.0)]
            if rows:
                out[name] = rows
        return out

    def _histogram_rows(self) -> dict[str, list[list[Any]]]:
        """[labels, count per bucket, sum] of every histogram that moved since then."""
        out: dict[str, list[list[Any]]] = {}
        for name, fam in self._histograms.items():
            rows = []
            for labels, child in children(fam):
                counts, total = histogram_value(child)
                acked = self._acked_histograms.get((name, labels))
                if (counts, total) != acked and (acked is not None or any(counts)):
                    rows.append([list(labels), list(counts), total])
            if rows:
                out[name] = rows
        return out

    def acked(self, report: dict[str, Any]) -> None:
        """The controller has ``report``: its series are not sent again until they change."""
        for name, rows in report["counters"].items():
            for labels, v in rows:
                self._acked_counters[(name, tuple(labels))] = v
        for name, rows in report["histograms"].items():
            for labels, counts, total in rows:
                self._acked_histograms[(name, tuple(labels))] = (tuple(counts), total)

    # -- gauges -------------------------------------------------------------------------------
    def _sets(self) -> list[ReplicaSet]:
        seen: dict[int, ReplicaSet] = {}
        for svc in self.holder.current.services:
            for route in svc.versions.values():
                seen.setdefault(id(route.replicas), route.replicas)
        return list(seen.values())

    def _versions(self, sets: list[ReplicaSet]) -> list[list[Any]]:
        """[service, version, pending, waiting, inflight, streams open, outlier ejections so
        far, [ids of the replicas ejected now]] per version."""
        opened = {labels: child._value.get()   # noqa: SLF001 - as counter_value
                  for labels, child in children(self.metrics.streams_open)}
        now = self.clock()
        return [[rs.service, rs.version, rs.pending, rs.waiting, rs.inflight,
                 opened.get((rs.service, rs.version), 0.0), rs.ejections,
                 [e.id for e in rs.endpoints if e.ejected_until > now]] for rs in sets]

    def _replicas(self, sets: list[ReplicaSet]) -> dict[str, int]:
        """In flight per replica id: every endpoint of the applied table (0 included, so the
        controller knows this process may still send there), and dropped ones until idle."""
        current: dict[str, Endpoint] = {e.id: e for rs in sets for e in rs.endpoints}
        for rid, e in list(self._endpoints.items()):
            if rid not in current and e.inflight <= 0:
                del self._endpoints[rid]
        self._endpoints.update(current)
        return {rid: e.inflight for rid, e in self._endpoints.items()}

    def _batches(self) -> list[list[Any]]:
        """[service, version, queue length, pending instances] per batcher of the table."""
        out = []
        for svc in self.holder.current.services:
            for route in svc.versions.values():
                b = route.batcher
                if b is not None:
                    out.append([b.service, b.version, b.queue.requests, b.pending_count()])
        return out

