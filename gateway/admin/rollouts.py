"""Rollout endpoints on the admin API (``serve-gateway rollout ...`` is their command-line front).

- ``GET /rollouts``: every service's rollout (phase, step, weights, analysis, next step, log);
- ``GET /rollouts/{name}``: one service's;
- ``POST /rollouts/{name}/{action}``, action one of promote (``?full=1``: skip every remaining
  step), pause, resume, abort, undo, retry (an aborted or rolled-back rollout from its first step
  again): mutating, so the admin token rules apply.

A command runs one planner tick at once, so the answer carries the new phase; ``accepted`` is
false when the planner refused or ignored it (the reason is the last line of ``log``).
"""

from __future__ import annotations

from typing import TYPE_CHECKING, get_args

from aiohttp import web

from gateway.admin.server import AdminError, AdminServer, json_response
from gateway.control.rollout.model import Command, CommandKind

if TYPE_CHECKING:
    from gateway.admin.facade import Facade

ACTIONS = get_args(CommandKind)


def install(server: AdminServer, gateway: Facade) -> None:
    rollouts = gateway.rollout_control

    def named(request: web.Request) -> str:
        name = request.match_info["name"]
        if not rollouts.governs(name):
            known = ", ".join(rollouts.runs) or "none"
            raise AdminError(404, "not_found", f"no rollout for service {name} (rollouts: "
                             f"{known}); a service gets one with a 'rollout:' section", name)
        return name

    async def list_all(request: web.Request) -> web.Response:
        return json_response(rollouts.status())

    async def one(request: web.Request) -> web.Response:
        return json_response(rollouts.describe(named(request)))

    async def act(request: web.Request) -> web.Response:
        name, action = named(request), request.match_info["action"]
        if action not in ACTIONS:
            raise AdminError(404, "not_found", f"no rollout action {action} (actions: "
                             f"{', '.join(ACTIONS)})", name)
        full = request.query.get("full", "") in ("1", "true", "yes")
        accepted, doc = await rollouts.command(name, Command(action, full=full))  # type: ignore[arg-type]
        return json_response({"accepted": accepted, **(doc or {})})

    server.add_route("GET", "/rollouts", list_all)
    server.add_route("GET", "/rollouts/{name}", one)
    server.add_route("POST", "/rollouts/{name}/{action}", act, mutating=True)
