"""A service's schema: ``GET /services/{name}/schema[?version=V]`` on the admin API.

The gateway holds no schema of its own: a ready replica of the version (the one with the
highest weight unless ``version`` says) is asked for its ``/openapi.json`` (the worker SDK
builds it from ``predict``'s annotations) and the answer is relayed with where it came from.
``serve-gateway describe SERVICE`` renders it.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

import aiohttp
import orjson
from aiohttp import web

from gateway.admin.server import AdminError, AdminServer, json_response

if TYPE_CHECKING:
    from gateway.admin.facade import Facade

PATH = "/services/{name}/schema"
FETCH_TIMEOUT = 5.0      # a replica that cannot say its schema in this long is not waited for


async def fetch_schema(host: str, port: int, timeout: float = FETCH_TIMEOUT) -> dict[str, Any]:
    """A worker's ``/openapi.json``. Raises AdminError 502 / 504 saying what went wrong."""
    url = f"http://{host}:{port}/openapi.json"
    try:
        async with aiohttp.ClientSession(timeout=aiohttp.ClientTimeout(total=timeout)) as http, \
                http.get(url) as resp:
            body = await resp.read()
    except TimeoutError:
        raise AdminError(504, "upstream_timeout", f"{url} did not answer in {timeout:g}s") from None
    except aiohttp.ClientError as exc:
        raise AdminError(502, "upstream_error", f"{url}: {exc}") from None
    if resp.status == 404:
        raise AdminError(502, "no_schema", f"{url} answered 404: the worker does not serve a "
                                           "schema (not built on the serve-gateway worker SDK?)")
    try:
        doc = orjson.loads(body)
    except orjson.JSONDecodeError:
        doc = None
    if resp.status != 200 or not isinstance(doc, dict):
        raise AdminError(502, "upstream_error", f"{url} answered {resp.status}: "
                                                f"{body[:200].decode(errors='replace')}")
    return doc


def install(server: AdminServer, gateway: Facade) -> None:
    """Register the endpoint on the gateway's admin API."""

    async def handler(request: web.Request) -> web.Response:
        name = request.match_info["name"]
        route = gateway.routing().by_name.get(name)
        if route is None:
            raise AdminError(404, "unknown_service", f"no service named {name}", name)
        version = request.query.get("version") or max(
            route.versions, key=lambda v: (route.weights.get(v, 0), v))
        vroute = route.versions.get(version)
        if vroute is None:
            raise AdminError(404, "unknown_version", f"{name} has no version {version} "
                                                     f"(versions: {', '.join(route.versions)})", name)
        endpoints = vroute.replicas.endpoints
        if not endpoints:
            raise AdminError(503, "no_ready_replica", f"{name}/{version} has no ready replica "
                                                      "to ask for its schema", name)
        ep = endpoints[0]
        doc = await fetch_schema(ep.pool.host, ep.pool.port)
        return json_response({"service": name, "version": version, "replica": ep.id,
                              "route": route.prefix, "openapi": doc})

    server.add_route("GET", PATH, handler)
