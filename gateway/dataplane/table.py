"""The routing table: an immutable snapshot compiled from a Spec, swapped as one reference.

The request handler reads ``holder.current`` once and uses that table for the whole request, so
a reload never changes the rules under a request in flight. Replica sets are not copied: the
control plane owns them and hands the same objects to each new table.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field

from gateway import plugins
from gateway.dataplane.balance import ReplicaSet
from gateway.dataplane.batcher import Batcher
from gateway.dataplane.batchers import Batchers
from gateway.dataplane.http1msg import header_lines
from gateway.dataplane.match import RequestView, Rules
from gateway.dataplane.mirror import Mirror, mirror_methods
from gateway.dataplane.split import TrafficPolicy
from gateway.metrics import Metrics, ModelMetrics, VersionMetrics
from gateway.spec.models import ServiceSpec, Spec, VersionSpec

Headers = tuple[tuple[str, str], ...]


@dataclass(frozen=True, slots=True)
class Multiplexing:
    """A multiplexed version's routing: the header naming the model, the load bound."""

    header: bytes               # lowercase, as raw request headers are compared
    slack: int                  # see dataplane/affinity.py
    metrics: ModelMetrics


@dataclass(frozen=True, slots=True)
class VersionRoute:
    name: str
    replicas: ReplicaSet
    metrics: VersionMetrics
    served_by: Headers = ()      # (("x-served-by", "service/version"),) unless turned off
    batcher: Batcher | None = None   # set when the service has `batching:`
    multiplex: Multiplexing | None = None   # set when the version has `multiplex:`
    # ``served_by`` as header lines, encoded once per table rather than looked up per answer
    served_lines: bytes = field(init=False, repr=False, compare=False)

    def __post_init__(self) -> None:
        object.__setattr__(self, "served_lines", header_lines(self.served_by))


@dataclass(frozen=True, slots=True)
class ServiceRoute:
    name: str
    prefix: str
    rewrite: str | None
    versions: Mapping[str, VersionRoute]
    weights: Mapping[str, int]          # effective (file or live override), for status
    policy: TrafficPolicy
    # the single live version when there are no rules and no sticky key: choosing is free
    fixed: tuple[VersionRoute, None] | None
    mirror: Mirror | None
    connect_timeout: float
    request_timeout: float
    queue_timeout: float
    retries: int
    max_body: int
    # the name as the upstream Host of an HTTP/1.0 client's request: encoded once per table
    host: bytes = field(init=False, repr=False, compare=False)

    def __post_init__(self) -> None:
        object.__setattr__(self, "host", self.name.encode())

    def upstream_path(self, path: str) -> str:
        return upstream_path(self.prefix, self.rewrite, path)

    def choose(self, request: RequestView) -> tuple[VersionRoute | None, str | None]:
        """The version for this request, and a Set-Cookie value when the gateway just gave the
        client its sticky key. None as the version: every weight is 0."""
        if self.fixed is not None:
            return self.fixed
        name, cookie = self.policy.choose(request)
        return (self.versions[name] if name is not None else None), cookie


@dataclass(frozen=True)
class RoutingTable:
    services: tuple[ServiceRoute, ...]     # longest prefix first
    digest: str = ""
    by_name: Mapping[str, ServiceRoute] = field(default_factory=dict)

    def match(self, path: str) -> ServiceRoute | None:
        """Longest prefix on whole segments: /v1/echo matches /v1/echo and /v1/echo/x, not
        /v1/echoes."""
        for svc in self.services:
            p = svc.prefix
            if p == "/" or path == p or (path.startswith(p) and path[len(p)] == "/"):
                return svc
        return None


class TableHolder:
    """One reference to the current table; ``swap`` is the only way routing changes."""

    __slots__ = ("current",)

    def __init__(self, table: RoutingTable | None = None) -> None:
        self.current = table or RoutingTable(())

    def swap(self, table: RoutingTable) -> RoutingTable:
        old, self.current = self.current, table
        return old


def upstream_path(prefix: str, rewrite: str | None, path: str) -> str:
    """The worker's path: the matched prefix replaced by ``rewrite`` when set."""
    if rewrite is None:
        return path
    rest = path if prefix == "/" else path[len(prefix):]   # "" or "/..."
    return (rewrite.rstrip("/") + rest) or "/"


def service_weights(svc: ServiceSpec) -> dict[str, int]:
    if svc.traffic.weights:
        return dict(svc.traffic.weights)
    return {name: 1 for name in svc.versions}   # one version (checks enforce weights otherwise)


def build_table(spec: Spec, replica_sets: Mapping[tuple[str, str], ReplicaSet], metrics: Metrics,
                weights: Mapping[str, Mapping[str, int]] | None = None,
                batchers: Batchers | None = None) -> RoutingTable:
    """Compile ``spec`` into a table. ``weights`` overrides a service's file weights (live
    traffic changes and rollouts). ``batchers`` (the data plane's) keeps one batcher per
    version across builds, so a reload never drops a queued request."""
    services = []
    for name, svc in spec.services.items():
        versions = {v: VersionRoute(v, replica_sets[(name, v)], metrics.version(name, v),
                                    (("x-served-by", f"{name}/{v}"),)
                                    if svc.traffic.served_by_header else (),
                                    _batcher(name, v, svc, replica_sets[(name, v)], batchers),
                                    _multiplexing(name, v, ver, metrics))
                    for v, ver in svc.versions.items()}
        w = (weights or {}).get(name) or service_weights(svc)
        t = svc.traffic
        policy = TrafficPolicy(list(svc.versions), w, Rules(t.rules), t.sticky)
        live = [v for v, n in w.items() if n > 0]
        fixed = (versions[live[0]], None) if len(live) == 1 and not t.rules and not t.sticky \
            else None
        services.append(ServiceRoute(
            name=name, prefix=svc.route, rewrite=svc.rewrite, versions=versions,
            weights=dict(w), policy=policy, fixed=fixed,
            mirror=_mirror(name, svc, replica_sets, metrics),
            connect_timeout=svc.timeouts.connect, request_timeout=svc.timeouts.request,
            queue_timeout=spec.gateway.queue.timeout, retries=svc.retries,
            max_body=spec.gateway.max_body_bytes))
    services.sort(key=lambda s: len(s.prefix), reverse=True)
    if batchers is not None:
        batchers.retain((s.name, v) for s in services for v, r in s.versions.items() if r.batcher)
    return RoutingTable(tuple(services), spec.digest(), {s.name: s for s in services})


def _batcher(service: str, version: str, svc: ServiceSpec, replicas: ReplicaSet,
             batchers: Batchers | None) -> Batcher | None:
    if svc.batching is None:
        return None
    if batchers is None:
        raise ValueError(f"service {service} batches: build_table needs the data plane's Batchers")
    return batchers.get(service, version, svc.batching, replicas,
                        target=upstream_path(svc.route, svc.rewrite, svc.route), host=service,
                        request_timeout=svc.timeouts.request, retries=svc.retries)


def _multiplexing(service: str, version: str, ver: VersionSpec,
                  metrics: Metrics) -> Multiplexing | None:
    m = ver.multiplex
    if m is None:
        return None
    return Multiplexing(m.header.lower().encode(), m.load_slack,
                        metrics.models(service, version, m.metrics_models))


def _mirror(name: str, svc: ServiceSpec, replica_sets: Mapping[tuple[str, str], ReplicaSet],
            metrics: Metrics) -> Mirror | None:
    m = svc.traffic.mirror
    if m is None or m.percent == 0:
        return None
    return Mirror(name, m.to, replica_sets[(name, m.to)], percent=m.percent,
                  methods=frozenset(m.methods) if m.methods else mirror_methods(svc.mirror_post),
                  max_body=m.max_body,
                  concurrency=m.concurrency, queue=m.queue, timeout=m.timeout,
                  compare=plugins.create("comparator", m.comparator, m.options),
                  metrics=metrics.shadow(name, m.to))
