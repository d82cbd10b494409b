"""Every Prometheus metric in one place.

Labels stay bounded: service, version, status code, state and error kind come from the config
or from small fixed sets, never from paths or user input. Hot-path code keeps the labelled
children it needs (``VersionMetrics``) instead of looking labels up per request.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram, Info
from prometheus_client.core import GaugeMetricFamily, Metric
from prometheus_client.exposition import generate_latest
from prometheus_client.registry import Collector

LATENCY_BUCKETS = (0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0,
                   2.5, 5.0, 10.0, 30.0)
START_BUCKETS = (0.25, 0.5, 1, 2, 5, 10, 20, 30, 60, 120, 300)


class VersionMetrics:
    """The labelled children one version's requests touch, resolved once per table build."""

    __slots__ = ("_m", "service", "version", "latency", "upstream_latency", "_codes")

    def __init__(self, m: Metrics, service: str, version: str) -> None:
        self._m = m
        self.service = service
        self.version = version
        self.latency = m.request_seconds.labels(service, version)
        self.upstream_latency = m.upstream_seconds.labels(service, version)
        self._codes: dict[int, Counter] = {}

    def observe(self, status: int, seconds: float) -> None:
        c = self._codes.get(status)
        if c is None:
            c = self._codes[status] = self._m.requests.labels(self.service, self.version, str(status))
        c.inc()
        self.latency.observe(seconds)

    def upstream_error(self, kind: str) -> None:
        self._m.upstream_errors.labels(self.service, self.version, kind).inc()


class Metrics:
    def __init__(self, registry: CollectorRegistry | None = None) -> None:
        r = self.registry = registry or CollectorRegistry()
        self.requests = Counter("serve_gateway_requests", "Requests answered, by status code",
                                ["service", "version", "code"], registry=r)
        self.request_seconds = Histogram(
            "serve_gateway_request_duration_seconds", "Time from request arrival to response",
            ["service", "version"], buckets=LATENCY_BUCKETS, registry=r)
        self.upstream_seconds = Histogram(
            "serve_gateway_upstream_duration_seconds", "Time a worker took to answer",
            ["service", "version"], buckets=LATENCY_BUCKETS, registry=r)
        self.queue_wait = Histogram(
            "serve_gateway_queue_wait_seconds", "Time a request waited for a ready replica",
            ["service", "version"], buckets=LATENCY_BUCKETS, registry=r)
        self.upstream_errors = Counter(
            "serve_gateway_upstream_errors", "Failed upstream exchanges by kind",
            ["service", "version", "kind"], registry=r)
        self.retries = Counter("serve_gateway_retries", "Requests retried on another replica",
                               ["service", "version"], registry=r)
        self.errors = Counter("serve_gateway_errors", "Errors the gateway answered itself",
                              ["kind"], registry=r)
        self.replica_restarts = Counter("serve_gateway_replica_restarts",
                                        "Replicas restarted after an exit",
                                        ["service", "version"], registry=r)
        self.replica_exits = Counter("serve_gateway_replica_exits",
                                     "Replica exits not asked for, by reason",
                                     ["service", "version", "reason"], registry=r)
        self.cold_start = Histogram("serve_gateway_replica_cold_start_seconds",
                                    "Replica launch to first successful readiness probe",
                                    ["service", "version"], buckets=START_BUCKETS, registry=r)
        self.config_reloads = Counter("serve_gateway_config_reloads", "Config reloads by result",
                                      ["result"], registry=r)
        self.config_info = Info("serve_gateway_config", "The loaded config", registry=r)
        self.config_loaded = Gauge("serve_gateway_config_last_load_timestamp_seconds",
                                   "When the running config was loaded", registry=r)
        self._versions: dict[tuple[str, str], VersionMetrics] = {}

    def version(self, service: str, version: str) -> VersionMetrics:
        key = (service, version)
        vm = self._versions.get(key)
        if vm is None:
            vm = self._versions[key] = VersionMetrics(self, service, version)
        return vm

    def add_gauges(self, collect: Callable[[], Iterable[Metric]]) -> None:
        """Register a collector computed at scrape time (replica states, in-flight counts):
        the owner of the state reports it, the hot path never updates a gauge."""
        self.registry.register(_Callback(collect))

    def render(self) -> bytes:
        return generate_latest(self.registry)


class _Callback(Collector):
    def __init__(self, collect: Callable[[], Iterable[Metric]]) -> None:
        self._collect = collect

    def collect(self) -> Iterable[Metric]:
        return self._collect()

    def describe(self) -> Iterable[Metric]:
        return []


def gauge(name: str, doc: str, labels: list[str],
          samples: Iterable[tuple[tuple[str, ...], float]]) -> GaugeMetricFamily:
    g = GaugeMetricFamily(name, doc, labels=labels)
    for values, v in samples:
        g.add_metric(list(values), v)
    return g
