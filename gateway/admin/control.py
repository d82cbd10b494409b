"""The data planes' side of the admin API (``gateway.workers`` >= 2, or gateways on other hosts):

- ``GET /control/v1/snapshot?after=EPOCH:VERSION&wait=SECONDS``: 200 with
  ``{"epoch", "version", "snapshot"}`` at once when the controller's version is not ``after``,
  else as soon as the next one is out, or 204 after ``wait`` seconds (at most 30);
- ``POST /control/v1/report``: a process's counters and observations, 200 ``{"ok": true,
  "share": [i, n]}``: the process keeps share i of n of every per-replica limit.

Both need a token even on loopback (a snapshot holds the workers' commands and environment, and
a report feeds the metrics and the autoscaler): the admin token, or the controller's own
``control_token`` its local data-plane processes get (good for these routes only).
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from aiohttp import web

from gateway.admin.server import AdminError, AdminServer, json_response, read_json

if TYPE_CHECKING:
    from gateway.admin.facade import Facade

SNAPSHOT = "/control/v1/snapshot"
REPORT = "/control/v1/report"
MAX_WAIT = 30.0
# what a report must carry (the rest, "observations" included, is passed on as it is)
REPORT_FIELDS = {"process": str, "incarnation": str, "pid": int, "snapshot": list,
                 "connections": int, "requests": int}


def parse_wait(raw: str | None) -> float:
    """The ``wait`` query parameter: seconds, 0 to 30 (default 0: answer at once)."""
    if raw is None:
        return 0.0
    try:
        wait = float(raw)
    except ValueError:
        raise ValueError(f"wait must be a number of seconds, not {raw!r}") from None
    if not 0 <= wait <= MAX_WAIT:
        raise ValueError(f"wait must be from 0 to {MAX_WAIT:.0f} seconds, not {raw}")
    return wait


def check_report(doc: dict[str, Any]) -> dict[str, Any]:
    """The report as sent, once its required fields have their types; ValueError otherwise."""
    for key, kind in REPORT_FIELDS.items():
        value = doc.get(key)
        if not isinstance(value, kind) or isinstance(value, bool):
            raise ValueError(f"report field {key!r} must be a {kind.__name__}, not {value!r}")
    if not isinstance(doc.get("observations", {}), dict):
        raise ValueError("report field 'observations' must be an object")
    return doc


def install(server: AdminServer, gateway: Facade) -> None:
    async def snapshot(request: web.Request) -> web.Response:
        try:
            wait = parse_wait(request.query.get("wait"))
        except ValueError as exc:
            raise AdminError(400, "bad_request", str(exc)) from None
        body = await gateway.snapshot(request.query.get("after"), wait)
        if body is None:
            return web.Response(status=204)
        return web.Response(body=body, content_type="application/json")

    async def report(request: web.Request) -> web.Response:
        try:
            share = gateway.report(check_report(await read_json(request)))
        except ValueError as exc:
            raise AdminError(400, "bad_request", str(exc)) from None
        return json_response({"ok": True, "share": list(share)})

    server.add_route("GET", SNAPSHOT, snapshot, control=True)
    server.add_route("POST", REPORT, report, mutating=True, control=True)
