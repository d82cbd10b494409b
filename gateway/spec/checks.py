"""Cross-field rules, each reporting the exact YAML path it is about.

A check is a function ``(spec) -> list[(path, message)]``; register it in CHECKS. Later
features (traffic rules, rollouts ...) add their own checks here rather than in the models.
"""

from __future__ import annotations

import re
from collections.abc import Callable, Iterator

from gateway import plugins
from gateway.spec.models import Spec

Finding = tuple[tuple[str | int, ...], str]
Check = Callable[[Spec], Iterator[Finding]]

_NAME = re.compile(r"^[a-z0-9]([a-z0-9_-]{0,62})$")


def not_empty(spec: Spec) -> Iterator[Finding]:
    """A config that lost its services (a truncated or emptied file) would stop every replica
    on reload and answer 404 to everyone: refused unless said on purpose."""
    if not spec.services and not spec.gateway.allow_empty:
        yield ("services",), ("no services: the gateway would serve nothing (a truncated "
                              "file?); set gateway.allow_empty: true if that is intended")


def names(spec: Spec) -> Iterator[Finding]:
    """Service and version names end up in labels, container names and metrics."""
    for sname, svc in spec.services.items():
        if not _NAME.match(sname):
            yield ("services", sname), "name must be lowercase letters, digits, '-' or '_'"
        for vname in svc.versions:
            if not _NAME.match(vname):
                yield ("services", sname, "versions", vname), \
                    "name must be lowercase letters, digits, '-' or '_'"


def routes(spec: Spec) -> Iterator[Finding]:
    seen: dict[str, str] = {}
    for sname, svc in spec.services.items():
        if svc.route in seen:
            yield ("services", sname, "route"), f"route {svc.route} is already used by service {seen[svc.route]}"
        seen.setdefault(svc.route, sname)


def launch(spec: Spec) -> Iterator[Finding]:
    for sname, svc in spec.services.items():
        for vname, ver in svc.versions.items():
            at = ("services", sname, "versions", vname)
            if spec.gateway.runtime == "process" and not ver.command:
                yield at, "the process runtime needs a 'command'"
            runtime = spec.gateway.runtime
            if runtime in ("docker", "swarm") and not ver.image:
                yield at, f"the {runtime} runtime needs an 'image'"
            if runtime == "swarm" and not isinstance(ver.resources.gpus, int | None):
                yield at + ("resources", "gpus"), \
                    "the swarm runtime reserves a count of GPUs (Swarm picks the devices): gpus: N"
            if runtime != "swarm" and ver.placement is not None:
                yield at + ("placement",), "placement applies to the swarm runtime only"
            if ver.command and spec.gateway.runtime == "process" and not any("{port}" in a for a in ver.command) \
                    and "PORT" not in " ".join(ver.command):
                yield at + ("command",), "must contain {port} (or read $PORT) so each replica gets its own port"


def weights(spec: Spec) -> Iterator[Finding]:
    for sname, svc in spec.services.items():
        at = ("services", sname, "traffic", "weights")
        for vname in svc.traffic.weights:
            if vname not in svc.versions:
                yield at + (vname,), f"no version named {vname} (versions: {', '.join(svc.versions)})"
        if len(svc.versions) > 1 and not svc.traffic.weights and svc.rollout is None:
            yield ("services", sname, "traffic"), \
                "a service with several versions needs traffic.weights (or a rollout)"
        elif svc.traffic.weights and sum(svc.traffic.weights.values()) == 0:
            yield at, "at least one weight must be above 0"


def traffic(spec: Spec) -> Iterator[Finding]:
    """Rules and the mirror name real versions; regexes compile; the comparator loads."""
    for sname, svc in spec.services.items():
        at = ("services", sname, "traffic")
        known = ", ".join(svc.versions)
        for i, rule in enumerate(svc.traffic.rules):
            if rule.to not in svc.versions:
                yield at + ("rules", i, "to"), f"no version named {rule.to} (versions: {known})"
            for kind, conds in (("header", rule.match.header), ("cookie", rule.match.cookie)):
                for name, cond in conds.items():
                    if cond.regex is None:
                        continue
                    try:
                        re.compile(cond.regex)
                    except re.error as exc:
                        yield at + ("rules", i, "match", kind, name, "regex"), f"bad regex: {exc}"
        mirror = svc.traffic.mirror
        if mirror is None:
            continue
        if mirror.to not in svc.versions:
            yield at + ("mirror", "to"), f"no version named {mirror.to} (versions: {known})"
        if mirror.methods and "POST" in mirror.methods and not svc.mirror_post:
            yield at + ("mirror", "methods"), "POST is copied only when the service says its " \
                "POSTs have no side effects: set mirror_post: true on the service"
        try:
            plugins.create("comparator", mirror.comparator, mirror.options)
        except plugins.PluginError as exc:
            yield at + ("mirror", "comparator"), str(exc)


def autoscale(spec: Spec) -> Iterator[Finding]:
    """min <= max on each version's effective block; the policy loads with its options."""
    from gateway.control.autoscale import effective, load_policy  # control imports the models

    seen: set[tuple[str | int, ...]] = set()     # a service's block, once for all versions
    for sname, svc in spec.services.items():
        for vname, ver in svc.versions.items():
            eff = effective(svc, ver)
            at: tuple[str | int, ...] = ("services", sname, "versions", vname, "autoscale") \
                if ver.autoscale is not None else ("services", sname, "autoscale")
            if eff is None or at in seen:
                continue
            seen.add(at)
            if eff.min_replicas > eff.max_replicas:
                yield at + ("min_replicas",), \
                    f"min_replicas {eff.min_replicas} is above max_replicas {eff.max_replicas}"
            try:
                load_policy(eff.policy, eff.options)
            except plugins.PluginError as exc:
                yield at + ("policy",), str(exc)


def rollout(spec: Spec) -> Iterator[Finding]:
    """``to`` and ``from`` name versions of the service, and differ; with more than two
    versions ``from`` says which one serves now."""
    for sname, svc in spec.services.items():
        r = svc.rollout
        if r is None:
            continue
        at = ("services", sname, "rollout")
        known = ", ".join(svc.versions)
        if r.strategy == "shadow" and r.analysis.max_p99_increase is not None:
            # copies have no latency of their own to compare: the check could never pass
            yield at + ("analysis", "max_p99_increase"), \
                "only a canary has a stable version answering the same window to compare with"
        for key, name in (("to", r.to), ("from", r.from_)):
            if name is not None and name not in svc.versions:
                yield at + (key,), f"no version named {name} (versions: {known})"
        if r.to is None:
            if r.from_ is not None:
                yield at + ("from",), "'from' needs a 'to'"
            if len(svc.versions) != 1:
                yield at, "a rollout without 'to' rolls out new revisions of a service's only " \
                          "version: name the version to move to in 'to'"
            continue
        if r.from_ == r.to:
            yield at + ("from",), "must differ from 'to'"
        if r.from_ is None and len(svc.versions) != 2:
            yield at, f"with {len(svc.versions)} versions, say which one serves now: 'from'"


def multiplex(spec: Spec) -> Iterator[Finding]:
    """A batch is one request to one replica: it cannot carry several models, and one batch
    queue per model id would split the queue (and its waits) N ways and need a second,
    affinity-aware dispatcher. So the two do not mix; a multiplexed model batches inside."""
    for sname, svc in spec.services.items():
        for vname, ver in svc.versions.items():
            if ver.multiplex is not None and svc.batching is not None:
                yield ("services", sname, "versions", vname, "multiplex"), \
                    ("multiplexing and batching do not mix: a batch goes to one replica as one "
                     "request, so it cannot carry several models (remove the service's "
                     "'batching' or this 'multiplex')")


CHECKS: list[Check] = [not_empty, names, routes, launch, weights, traffic, autoscale, rollout,
                       multiplex]
