"""Cross-field rules, each reporting the exact YAML path it is about.

A check is a function ``(spec) -> list[(path, message)]``; register it in CHECKS. Later
features (traffic rules, rollouts ...) add their own checks here rather than in the models.
"""

from __future__ import annotations

import re
from collections.abc import Callable, Iterator

from gateway.spec.models import Spec

Finding = tuple[tuple[str | int, ...], str]
Check = Callable[[Spec], Iterator[Finding]]

_NAME = re.compile(r"^[a-z0-9]([a-z0-9_-]{0,62})$")


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
            if spec.gateway.runtime == "docker" and not ver.image:
                yield at, "the docker runtime needs an 'image'"
            if ver.command and spec.gateway.runtime == "process" and not any("{port}" in a for a in ver.command) \
                    and "PORT" not in " ".join(ver.command):
                yield at + ("command",), "must contain {port} (or read $PORT) so each replica gets its own port"


def weights(spec: Spec) -> Iterator[Finding]:
    for sname, svc in spec.services.items():
        at = ("services", sname, "traffic", "weights")
        for vname in svc.traffic.weights:
            if vname not in svc.versions:
                yield at + (vname,), f"no version named {vname} (versions: {', '.join(svc.versions)})"
        if len(svc.versions) > 1 and not svc.traffic.weights:
            yield ("services", sname, "traffic"), "a service with several versions needs traffic.weights"
        elif svc.traffic.weights and sum(svc.traffic.weights.values()) == 0:
            yield at, "at least one weight must be above 0"


CHECKS: list[Check] = [names, routes, launch, weights]
