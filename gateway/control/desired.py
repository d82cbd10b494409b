"""Desired state as layers, and the one pure merge of them.

Each controller publishes a layer over the file spec; ``merge(spec, layers)`` is the only place
they meet, so who wins is a table, not a race between writers:

| what                          | lowest ................................................ highest |
|-------------------------------|-----------------------------------------------------------------|
| replicas of a version         | file ``replicas`` < autoscaler < rollout < operator pin         |
| weights of a service          | file ``traffic.weights`` < operator override < rollout          |
| rules, mirror of a service    | file < rollout (the rollout's rules go first, its mirror wins)  |
| versions of a service         | file, plus the old revision a revision rollout still runs       |

The admin API refuses an override or a pin while a rollout governs the service or sizes the
version (409), so "rollout < pin" and "override < rollout" only decide what a stale layer does.
Last, ``Desired.hold(joining)`` (versions added by a reload that have never been ready, which
the supervisor reports) routes those at weight 0 while another version of their service can
serve: an added version joins once it is ready.

Pure: no clock, no I/O; the commit point (``gateway/app.py``) gathers the layers, merges, builds
the routing table and only then swaps it in and hands the replica counts to the supervisor.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field

from gateway.dataplane.table import service_weights
from gateway.spec.models import MatchSpec, MirrorSpec, RuleSpec, ServiceSpec, Spec, VersionSpec

Key = tuple[str, str]           # (service, version)


@dataclass(frozen=True)
class RolloutLayer:
    """What a service's rollout wants this tick (control/rollouts.py publishes it)."""

    replicas: Mapping[str, int]             # the versions it sizes (drained ones at 0)
    weights: Mapping[str, int]              # every other version of the service gets 0
    rules: tuple[tuple[str, str, str, str], ...] = ()   # (kind, name, value, to), before the file's
    mirror: tuple[str, float] | None = None   # (to, percent); None: the file's mirror
    extra_versions: Mapping[str, VersionSpec] = field(default_factory=dict)   # old revision


@dataclass(frozen=True)
class Layers:
    overrides: Mapping[str, Mapping[str, int]] = field(default_factory=dict)   # live weights
    pins: Mapping[Key, int] = field(default_factory=dict)                      # live replicas
    rollouts: Mapping[str, RolloutLayer] = field(default_factory=dict)
    autoscaler: Mapping[Key, int] = field(default_factory=dict)


@dataclass(frozen=True)
class Desired:
    """The merged state: ``spec`` is what the table is built from and the supervisor runs (its
    versions carry the merged replica counts and its traffic the merged rules and mirror);
    ``weights`` are the weights to route by where they differ from ``spec``'s own (an operator's
    override, a joining version held at 0 by ``hold``)."""

    spec: Spec
    weights: Mapping[str, Mapping[str, int]]

    def hold(self, joining: frozenset[Key] | set[Key]) -> Desired:
        """The same state with each ``joining`` version at weight 0 while another version of its
        service can serve."""
        weights = dict(self.weights)
        for name, svc in self.spec.services.items():
            base = dict(self.weights.get(name) or service_weights(svc))
            held = {v for v, w in base.items() if w > 0 and (name, v) in joining}
            if held and any(w > 0 for v, w in base.items() if v not in held):
                weights[name] = {v: 0 if v in held else w for v, w in base.items()}
        return Desired(self.spec, weights)

    def replicas(self) -> dict[Key, int]:
        return {(s, v): ver.replicas for s, svc in self.spec.services.items()
                for v, ver in svc.versions.items()}


def merge(spec: Spec, layers: Layers) -> Desired:
    """The desired state of ``spec`` under ``layers``; see the module docstring's table."""
    services: dict[str, ServiceSpec] = {}
    weights: dict[str, Mapping[str, int]] = {}
    for name, svc in spec.services.items():
        roll = layers.rollouts.get(name)
        versions = dict(svc.versions)
        if roll is not None:
            versions.update({v: ver for v, ver in roll.extra_versions.items() if v not in versions})
        sized = {v: _replicas(name, v, ver.replicas, layers, roll) for v, ver in versions.items()}
        versions = {v: ver if ver.replicas == sized[v] else ver.model_copy(update={"replicas": sized[v]})
                    for v, ver in versions.items()}
        traffic = svc.traffic
        if roll is not None:
            traffic = traffic.model_copy(update={
                "weights": {v: roll.weights.get(v, 0) for v in versions},
                "rules": [_rule(r) for r in roll.rules] + list(traffic.rules),
                "mirror": _mirror(traffic.mirror, roll.mirror)})
        if versions != svc.versions or traffic is not svc.traffic:
            svc = svc.model_copy(update={"versions": versions, "traffic": traffic})
        services[name] = svc
        override = None if roll is not None else layers.overrides.get(name)
        if override is not None:
            weights[name] = dict(override)
    return Desired(spec.model_copy(update={"services": services}), weights)


def _replicas(service: str, version: str, file: int, layers: Layers,
              roll: RolloutLayer | None) -> int:
    key = (service, version)
    if key in layers.pins:
        return layers.pins[key]
    if roll is not None and version in roll.replicas:
        return roll.replicas[version]
    return layers.autoscaler.get(key, file)


def _rule(rule: tuple[str, str, str, str]) -> RuleSpec:
    kind, name, value, to = rule
    return RuleSpec(match=MatchSpec.model_validate({kind: {name: value}}), to=to)


def _mirror(file: MirrorSpec | None, roll: tuple[str, float] | None) -> MirrorSpec | None:
    if roll is None:
        return file
    to, percent = roll
    if file is None:
        return MirrorSpec(to=to, percent=percent)
    return file.model_copy(update={"to": to, "percent": percent})
