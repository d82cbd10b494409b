"""Every endpoint beyond the server's built-in ones, installed in one place against a facade."""

from __future__ import annotations

from gateway.admin import control, rollouts, scale, schema, traffic
from gateway.admin.facade import Facade
from gateway.admin.server import AdminServer, reload_endpoint


def install(server: AdminServer, gateway: Facade) -> None:
    server.add_route("POST", "/reload", reload_endpoint(gateway.reload), mutating=True)
    traffic.install(server, gateway)      # POST /services/{name}/traffic
    scale.install(server, gateway)        # POST /services/{name}/scale
    rollouts.install(server, gateway)     # /rollouts endpoints
    schema.install(server, gateway)       # GET /services/{name}/schema
    control.install(server, gateway)      # /control/v1: the data planes' snapshots and reports
