"""The routing table: an immutable snapshot compiled from a Spec, swapped as one reference.

The request handler reads ``holder.current`` once and uses that table for the whole request, so
a reload never changes the rules under a request in flight. Replica sets are not copied: the
control plane owns them and hands the same objects to each new table.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field

from gateway.dataplane.balance import ReplicaSet
from gateway.dataplane.split import WeightedSplit
from gateway.metrics import Metrics, VersionMetrics
from gateway.spec.models import ServiceSpec, Spec


@dataclass(frozen=True, slots=True)
class VersionRoute:
    name: str
    replicas: ReplicaSet
    metrics: VersionMetrics


@dataclass(frozen=True, slots=True)
class ServiceRoute:
    name: str
    prefix: str
    rewrite: str | None
    versions: Mapping[str, VersionRoute]
    split: WeightedSplit
    connect_timeout: float
    request_timeout: float
    queue_timeout: float
    retries: int
    max_body: int

    def upstream_path(self, path: str) -> str:
        """The worker's path: the matched prefix replaced by ``rewrite`` when set."""
        if self.rewrite is None:
            return path
        rest = path if self.prefix == "/" else path[len(self.prefix):]   # "" or "/..."
        return (self.rewrite.rstrip("/") + rest) or "/"

    def choose(self) -> VersionRoute | None:
        name = self.split.next()
        return self.versions[name] if name is not None else None


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


def service_weights(svc: ServiceSpec) -> dict[str, int]:
    if svc.traffic.weights:
        return dict(svc.traffic.weights)
    return {name: 1 for name in svc.versions}   # one version (checks enforce weights otherwise)


def build_table(spec: Spec, replica_sets: Mapping[tuple[str, str], ReplicaSet], metrics: Metrics,
                weights: Mapping[str, Mapping[str, int]] | None = None) -> RoutingTable:
    """Compile ``spec`` into a table. ``weights`` overrides a service's file weights (live
    traffic changes and rollouts)."""
    services = []
    for name, svc in spec.services.items():
        versions = {v: VersionRoute(v, replica_sets[(name, v)], metrics.version(name, v))
                    for v in svc.versions}
        w = (weights or {}).get(name) or service_weights(svc)
        services.append(ServiceRoute(
            name=name, prefix=svc.route, rewrite=svc.rewrite, versions=versions,
            split=WeightedSplit(w),
            connect_timeout=svc.timeouts.connect, request_timeout=svc.timeouts.request,
            queue_timeout=spec.gateway.queue.timeout, retries=svc.retries,
            max_body=spec.gateway.max_body_bytes))
    services.sort(key=lambda s: len(s.prefix), reverse=True)
    return RoutingTable(tuple(services), spec.digest(), {s.name: s for s in services})
