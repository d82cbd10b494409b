"""Live traffic weights: ``POST /services/{name}/traffic`` on the admin API.

Body ``{"weights": {"v1": 50, "v2": 50}}`` replaces the service's weights until the next config
reload (versions left out get 0); ``{"reset": true}`` goes back to the file's weights. The
change is one ``rebuild_table()``: a new routing table swapped in whole, so sticky users move
exactly as they would for the same change in the file. ``serve-gateway traffic SERVICE v1=50
v2=50`` is the command-line front of this endpoint.
"""

from __future__ import annotations

import logging
from collections.abc import Iterable, Mapping
from typing import TYPE_CHECKING, Any

from aiohttp import web

from gateway.admin import AdminError, json_response, service_body
from gateway.dataplane.table import service_weights

if TYPE_CHECKING:
    from gateway.app import Gateway

log = logging.getLogger("gateway.traffic")
PATH = "/services/{name}/traffic"


def parse_weights(doc: Mapping[str, Any], versions: Iterable[str]) -> dict[str, int] | None:
    """The override a request body asks for (None: reset to the file's weights), over every
    version of the service. Raises ValueError with a message fit for the client."""
    known = list(versions)
    if doc.get("reset") is True and "weights" not in doc:
        return None
    extra = set(doc) - {"weights"}
    if extra:
        raise ValueError(f"unknown keys {sorted(extra)}: give 'weights' or 'reset'")
    weights = doc.get("weights")
    if not isinstance(weights, dict) or not weights:
        raise ValueError("'weights' must be an object of version -> integer weight")
    for name, w in weights.items():
        if name not in known:
            raise ValueError(f"no version named {name} (versions: {', '.join(known)})")
        if not isinstance(w, int) or isinstance(w, bool) or w < 0:
            raise ValueError(f"weight of {name} must be an integer >= 0, not {w!r}")
    if sum(weights.values()) == 0:
        raise ValueError("at least one weight must be above 0")
    return {v: int(weights.get(v, 0)) for v in known}


def describe(gateway: Gateway, name: str) -> dict[str, Any]:
    """The weights in force, the file's and the live override (None when there is none)."""
    svc = gateway.spec.services[name]
    route = gateway.holder.current.by_name.get(name)
    effective = dict(route.weights) if route else {}
    return {"weights": {v: effective.get(v, 0) for v in svc.versions},
            "file_weights": service_weights(svc),
            "weight_override": gateway.weight_overrides.get(name)}


def install(gateway: Gateway) -> None:
    """Register the endpoint on the gateway's admin API."""

    async def handler(request: web.Request) -> web.Response:
        name, svc, weights = await service_body(
            request, gateway.spec.services, lambda doc, svc: parse_weights(doc, svc.versions))
        if gateway.rollouts.governs(name):
            raise AdminError(409, "rollout_in_progress",
                             f"a rollout sets the weights of {name}: use 'serve-gateway rollout' "
                             "(promote, abort ...) or remove its rollout section", name)
        if weights is None:
            gateway.weight_overrides.pop(name, None)
            log.info("traffic for %s: live override removed, file weights %s", name,
                     service_weights(svc))
        else:
            gateway.weight_overrides[name] = weights
            log.info("traffic for %s: live override %s (the next config reload replaces it)",
                     name, weights)
        gateway.rebuild_table()
        return json_response({"service": name, **describe(gateway, name)})

    gateway.admin.add_route("POST", PATH, handler, mutating=True)
