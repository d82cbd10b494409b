"""Manual replica counts: ``POST /services/{name}/scale`` on the admin API.

Body ``{"version": "v1", "replicas": 3}`` pins v1 at 3 replicas (the autoscaler leaves it alone)
until the next config reload; ``{"version": "v1", "auto": true}`` hands it back to its
autoscaling policy (or to the file's count when it has no ``autoscale:``). ``version`` may be
left out when the service has one version; ``{"auto": true}`` without it covers every version.
``serve-gateway scale SERVICE[/VERSION] N | --auto`` is the command-line front.
"""

from __future__ import annotations

import logging
from collections.abc import Mapping, Sequence
from typing import TYPE_CHECKING, Any

from aiohttp import web

from gateway.admin.server import AdminError, AdminServer, json_response, service_body

if TYPE_CHECKING:
    from gateway.admin.facade import Facade

log = logging.getLogger("gateway.scale")
PATH = "/services/{name}/scale"
MAX_REPLICAS = 1024


def parse_scale(doc: Mapping[str, Any], versions: Sequence[str]) -> tuple[list[str], int | None]:
    """(versions, replicas) a request body asks for; replicas None means back to auto.
    Raises ValueError with a message fit for the client."""
    extra = set(doc) - {"version", "replicas", "auto"}
    if extra:
        raise ValueError(f"unknown keys {sorted(extra)}: give 'version' and 'replicas' or 'auto'")
    auto = doc.get("auto")
    if (auto is True) == ("replicas" in doc):
        raise ValueError("give either 'replicas' (an integer) or 'auto': true")
    version = doc.get("version")
    if version is None:
        if auto is not True and len(versions) > 1:
            raise ValueError(f"the service has several versions ({', '.join(versions)}): "
                             "give 'version'")
        targets = list(versions)
    elif version not in versions:
        raise ValueError(f"no version named {version} (versions: {', '.join(versions)})")
    else:
        targets = [version]
    if auto is True:
        return targets, None
    n = doc["replicas"]
    if not isinstance(n, int) or isinstance(n, bool) or not 0 <= n <= MAX_REPLICAS:
        raise ValueError(f"'replicas' must be an integer from 0 to {MAX_REPLICAS}, not {n!r}")
    return targets, n


def install(server: AdminServer, gateway: Facade) -> None:
    """Register the endpoint on the admin API."""

    async def handler(request: web.Request) -> web.Response:
        name, _, (targets, replicas) = await service_body(
            request, gateway.services, lambda doc, svc: parse_scale(doc, list(svc.versions)))
        held = [v for v in targets if gateway.rollout_control.held(name, v)]
        if held:
            raise AdminError(409, "rollout_in_progress",
                             f"the rollout of {name} sizes {', '.join(held)}: use "
                             "'serve-gateway rollout' (promote, abort ...)", name)
        for version in targets:
            gateway.pin(name, version, replicas)
        return json_response({"service": name,
                              "versions": {v: gateway.replicas(name, v) for v in targets}})

    server.add_route("POST", PATH, handler, mutating=True)
