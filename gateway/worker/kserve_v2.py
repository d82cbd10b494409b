"""KServe v2 / Open Inference Protocol endpoints of the worker, next to v1's ``/predict``:
``/v2``, ``/v2/health/live``, ``/v2/health/ready``, ``/v2/models/{name}``,
``/v2/models/{name}/ready`` and ``POST /v2/models/{name}[/versions/{v}]/infer``. Tensors become
the instances ``predict`` takes, and its predictions output tensors, in ``gateway.wire_v2``
(shared with the gateway's batcher); validation, typing and errors are the v1 path's.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

import orjson
from aiohttp import web

from gateway import wire_v2 as v2
from gateway.worker.model import Loaded, ModelError
from gateway.worker.typed import json_default

if TYPE_CHECKING:
    from gateway.worker.server import WorkerServer


def _json(status: int, doc: Any) -> web.Response:
    return web.Response(status=status, body=orjson.dumps(doc), content_type="application/json")


def _error(status: int, kind: str, detail: str) -> web.Response:
    return _json(status, {"error": kind, "detail": detail})


class V2Routes:
    """The v2 handlers of one worker; its state (model, pool, in-flight count) stays the
    server's."""

    def __init__(self, server: WorkerServer) -> None:
        self.server = server

    def add_to(self, router: web.UrlDispatcher) -> None:
        router.add_get("/v2", self.v2_server)
        router.add_get("/v2/health/live", self.v2_live)
        router.add_get("/v2/health/ready", self.server.readiness)
        router.add_get("/v2/models/{name}", self.v2_model)
        router.add_get("/v2/models/{name}/ready", self.v2_model_ready)
        router.add_post("/v2/models/{name}/infer", self.v2_infer)
        router.add_post("/v2/models/{name}/versions/{version}/infer", self.v2_infer)

    async def v2_live(self, request: web.Request) -> web.Response:
        return _json(200, {"live": True})

    async def v2_server(self, request: web.Request) -> web.Response:
        return _json(200, {"name": "serve-gateway-worker", "version": "2",
                           "extensions": []})

    def _v2_model(self, request: web.Request) -> Loaded | web.Response:
        loaded = self.server.loaded
        if loaded is None:
            return _error(503, "not_ready", "the model is still loading")
        if request.match_info["name"] != loaded.name:
            return _error(404, "model_not_found",
                          f"no model {request.match_info['name']!r} here; this worker serves "
                          f"{loaded.name!r}")
        if self.server.models is not None and request.method == "POST":
            return _error(400, "bad_request", "this worker serves many models (multiplexed): "
                          f"POST /predict with the {self.server.options.model_header} header")
        return loaded

    async def v2_model(self, request: web.Request) -> web.Response:
        loaded = self._v2_model(request)
        if isinstance(loaded, web.Response):
            return loaded
        return _json(200, {"name": loaded.name, "versions": [], "platform": "serve-gateway",
                           "inputs": v2.metadata_tensors(loaded.sig.input_schema(), "input"),
                           "outputs": v2.metadata_tensors(loaded.sig.output_schema(), "output")})

    async def v2_model_ready(self, request: web.Request) -> web.Response:
        loaded = self._v2_model(request)
        if isinstance(loaded, web.Response):
            return loaded
        return await self.server.readiness(request)

    async def v2_infer(self, request: web.Request) -> web.Response:
        self.server.in_flight += 1
        try:
            return await self._v2_infer(request)
        finally:
            self.server.in_flight -= 1

    async def _v2_infer(self, request: web.Request) -> web.Response:
        loaded = self._v2_model(request)
        if isinstance(loaded, web.Response):
            return loaded
        try:
            doc = orjson.loads(await request.read())
            items = v2.instances(doc)
        except (orjson.JSONDecodeError, ValueError, TypeError) as exc:
            return _error(400, "bad_request", f"{exc}")
        wanted = [o.get("name") for o in doc.get("outputs") or [] if isinstance(o, dict)]
        try:
            preds = [json_default(p) if hasattr(p, "model_dump") else p
                     for p in await self.server.predictor.predictions(loaded, items)]
            tensors = v2.outputs(preds, [w for w in wanted if isinstance(w, str)] or None)
        except LookupError as exc:
            return _error(400, "bad_request", str(exc))
        except ValueError as exc:            # predictions that form no tensor
            return self.server.failure(ModelError(str(exc)), len(items))
        except Exception as exc:  # noqa: BLE001 (as in _predict)
            return self.server.failure(exc, len(items))
        out: dict[str, Any] = {"model_name": loaded.name, "outputs": tensors}
        if isinstance(doc.get("id"), str):
            out["id"] = doc["id"]
        return web.Response(body=orjson.dumps(out, option=orjson.OPT_SERIALIZE_NUMPY),
                            content_type="application/json")
