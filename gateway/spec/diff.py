"""What changed between two specs: a pure comparison, no side effects.

The reload path uses it to report what a reload does and to hold back settings that cannot
change in a running process. The comparison is generic over the models' fields, so settings
added later (traffic rules, batching ...) show up as changes without edits here.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from pydantic import BaseModel

from gateway.spec.models import GatewaySpec, Spec

VersionKey = tuple[str, str]

# gateway.* fields a running process cannot change: the listeners are bound, the runtime and
# its state file were chosen at start-up, replica labels carry the instance name, and the
# data-plane processes were started.
RESTART_FIELDS = ("listen", "runtime", "state_dir", "instance", "docker", "swarm", "tracing",
                  "workers")
RESTART_ADMIN_FIELDS = ("listen",)


@dataclass(frozen=True)
class SpecDiff:
    """Changes from ``old`` to ``new``; every path is the dotted YAML path."""

    services_added: tuple[str, ...] = ()
    services_removed: tuple[str, ...] = ()
    # service -> its own fields that changed (route, traffic, timeouts ...; not versions)
    services_changed: dict[str, tuple[str, ...]] = field(default_factory=dict)
    versions_added: tuple[VersionKey, ...] = ()      # includes versions of added services
    versions_removed: tuple[VersionKey, ...] = ()    # includes versions of removed services
    # the replica definition (command, image, env ...) changed: replicas get replaced
    versions_replaced: tuple[VersionKey, ...] = ()
    replicas: dict[VersionKey, tuple[int, int]] = field(default_factory=dict)  # old, new
    # other version fields (health ...) that apply without new replicas
    versions_changed: dict[VersionKey, tuple[str, ...]] = field(default_factory=dict)
    gateway_changed: tuple[str, ...] = ()            # gateway.* paths that apply live
    needs_restart: tuple[str, ...] = ()              # gateway.* paths held until a restart

    @property
    def empty(self) -> bool:
        return not (self.services_added or self.services_removed or self.services_changed
                    or self.versions_added or self.versions_removed or self.versions_replaced
                    or self.replicas or self.versions_changed or self.gateway_changed
                    or self.needs_restart)

    def lines(self) -> list[str]:
        """One readable line per change, for logs and the CLI."""
        out = [f"service {s} added" for s in self.services_added]
        out += [f"service {s} removed" for s in self.services_removed]
        out += [f"service {s}: {', '.join(f)} changed" for s, f in self.services_changed.items()]
        out += [f"version {s}/{v} added" for s, v in self.versions_added]
        out += [f"version {s}/{v} removed" for s, v in self.versions_removed]
        out += [f"version {s}/{v}: new revision, replicas replaced"
                for s, v in self.versions_replaced]
        out += [f"version {s}/{v}: replicas {a} -> {b}" for (s, v), (a, b) in self.replicas.items()]
        out += [f"version {s}/{v}: {', '.join(f)} changed"
                for (s, v), f in self.versions_changed.items()]
        out += [f"{p} changed" for p in self.gateway_changed]
        out += [f"{p} changed: needs a restart" for p in self.needs_restart]
        return out

    def as_dict(self) -> dict[str, Any]:
        """JSON-friendly form (the admin API's reload answer)."""
        def key(k: VersionKey) -> str:
            return f"{k[0]}/{k[1]}"
        return {
            "services_added": list(self.services_added),
            "services_removed": list(self.services_removed),
            "services_changed": {s: list(f) for s, f in self.services_changed.items()},
            "versions_added": [key(k) for k in self.versions_added],
            "versions_removed": [key(k) for k in self.versions_removed],
            "versions_replaced": [key(k) for k in self.versions_replaced],
            "replicas": {key(k): {"old": a, "new": b} for k, (a, b) in self.replicas.items()},
            "versions_changed": {key(k): list(f) for k, f in self.versions_changed.items()},
            "gateway_changed": list(self.gateway_changed),
            "needs_restart": list(self.needs_restart),
        }


def diff_specs(old: Spec, new: Spec) -> SpecDiff:
    """Compare two validated specs."""
    gateway_live, restart = _gateway_changes(old.gateway, new.gateway)
    added = tuple(s for s in new.services if s not in old.services)
    removed = tuple(s for s in old.services if s not in new.services)
    services_changed: dict[str, tuple[str, ...]] = {}
    v_added: list[VersionKey] = [(s, v) for s in added for v in new.services[s].versions]
    v_removed: list[VersionKey] = [(s, v) for s in removed for v in old.services[s].versions]
    replaced: list[VersionKey] = []
    replicas: dict[VersionKey, tuple[int, int]] = {}
    v_changed: dict[VersionKey, tuple[str, ...]] = {}
    for name, new_svc in new.services.items():
        old_svc = old.services.get(name)
        if old_svc is None:
            continue
        fields = _changed_fields(old_svc, new_svc, skip={"versions"})
        if fields:
            services_changed[name] = fields
        v_added += [(name, v) for v in new_svc.versions if v not in old_svc.versions]
        v_removed += [(name, v) for v in old_svc.versions if v not in new_svc.versions]
        for vname, new_ver in new_svc.versions.items():
            old_ver = old_svc.versions.get(vname)
            if old_ver is None:
                continue
            key = (name, vname)
            if old_ver.revision() != new_ver.revision():
                replaced.append(key)
            if old_ver.replicas != new_ver.replicas:
                replicas[key] = (old_ver.replicas, new_ver.replicas)
            # what the revision covers is reported as "replaced", replicas on their own
            other = _changed_fields(old_ver, new_ver, skip=_REVISION_FIELDS | {"replicas"})
            if other:
                v_changed[key] = other
    return SpecDiff(added, removed, services_changed, tuple(v_added), tuple(v_removed),
                    tuple(replaced), replicas, v_changed, gateway_live, restart)


def keep_restart_fields(running: Spec, new: Spec) -> Spec:
    """``new`` with the settings a running process cannot change taken from ``running``: what
    the process actually runs after a reload that also asked for a restart-only change."""
    g_new, g_old = new.gateway, running.gateway
    update: dict[str, Any] = {f: getattr(g_old, f) for f in RESTART_FIELDS}
    update["admin"] = g_new.admin.model_copy(
        update={f: getattr(g_old.admin, f) for f in RESTART_ADMIN_FIELDS})
    return new.model_copy(update={"gateway": g_new.model_copy(update=update)})


_REVISION_FIELDS = frozenset({"command", "image", "port", "env", "workdir", "volumes", "resources",
                              "placement"})


def _gateway_changes(old: GatewaySpec, new: GatewaySpec) -> tuple[tuple[str, ...], tuple[str, ...]]:
    live: list[str] = []
    restart: list[str] = []
    for name in type(new).model_fields:
        a, b = getattr(old, name), getattr(new, name)
        if a == b:
            continue
        if name == "admin":
            for sub in _changed_fields(a, b):
                (restart if sub in RESTART_ADMIN_FIELDS else live).append(f"gateway.admin.{sub}")
        else:
            (restart if name in RESTART_FIELDS else live).append(f"gateway.{name}")
    return tuple(live), tuple(restart)


def _changed_fields(old: BaseModel, new: BaseModel, skip: set[str] | frozenset[str] = frozenset()
                    ) -> tuple[str, ...]:
    return tuple(name for name in type(new).model_fields
                 if name not in skip and getattr(old, name) != getattr(new, name))
