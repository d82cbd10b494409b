"""Live traffic weights: ``POST /services/{name}/traffic`` on the admin API.

Body ``{"weights": {"v1": 50, "v2": 50}}`` replaces the service's weights until the next config
reload (versions left out get 0); ``{"reset": true}`` goes back to the file's weights. The
change is one commit (``Facade.set_weights``): a new routing table swapped in whole, so sticky users move
exactly as they would for the same change in the file. ``serve-gateway traffic SERVICE v1=50
v2=50`` is the command-line front of this endpoint.
"""

from __future__ import annotations

import logging
from collections.abc import Iterable, Mapping
from typing import TYPE_CHECKING, Any

from aiohttp import web

from gateway.admin.server import AdminError, AdminServer, json_response, service_body

if TYPE_CHECKING:
    from gateway.admin.facade import Facade

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


def install(server: AdminServer, gateway: Facade) -> None:
    """Register the endpoint on the admin API."""

    async def handler(request: web.Request) -> web.Response:
        name, _, weights = await service_body(
            request, gateway.services, lambda doc, svc: parse_weights(doc, svc.versions))
        if gateway.rollout_control.governs(name):
            raise AdminError(409, "rollout_in_progress",
                             f"a rollout sets the weights of {name}: use 'serve-gateway rollout' "
                             "(promote, abort ...) or remove its rollout section", name)
        gateway.set_weights(name, weights)
        doc = gateway.traffic(name)
        if weights is None:
            log.info("traffic for %s: live override removed, file weights %s", name,
                     doc["file_weights"])
        else:
            log.info("traffic for %s: live override %s (the next config reload replaces it)",
                     name, weights)
        return json_response({"service": name, **doc})

    server.add_route("POST", PATH, handler, mutating=True)
