"""The worker's HTTP server.

Endpoints (every body is JSON, Content-Type application/json):

- ``GET /health``: 200 ``{"status": "ok"}`` while the process lives, even during ``load()``.
- ``GET /ready``: 200 ``{"ready": true}`` once ``load()`` returned; 503 before and while draining.
- ``POST /predict``: one JSON document, or ``{"instances": [...]}``; answers
  ``{"predictions": [...]}`` (one element for a single document). Errors:
  400 ``bad_request`` (bad JSON, ``instances`` not a list, the model raised ``BadInput``),
  500 ``model_error`` (the model raised, or returned the wrong number of predictions),
  503 ``not_ready`` (still loading).
- ``GET /predict``: metadata ``{"model", "pid", "replica", "ready", "in_flight"}``.
- ``GET /models``: ``{"multiplexed", "capacity", "models", "loads", "evictions"}``; a model with
  ``load_model`` is multiplexed (``multiplex.py``): ``/predict`` needs the model header, and
  every answer carries ``x-loaded-models``.
- ``GET /openapi.json``, ``GET /docs``: the schema of an instance and a prediction
  (``openapi.py``, from ``predict``'s annotations: ``typed.py``).
- KServe v2 / Open Inference Protocol: ``/v2``, ``/v2/health/live``, ``/v2/health/ready``,
  ``/v2/models/{name}``, ``/v2/models/{name}/ready``, ``POST /v2/models/{name}/infer``
  (``kserve_v2.py``; ``gateway.wire_v2`` turns tensors into instances and predictions into
  tensors).

A typed ``predict`` refuses a request with a bad instance whole: 400 ``bad_request`` whose
``errors`` list names each bad instance's index and field. ``async def predict`` runs on the
loop; a generator ``predict`` streams (``stream.py``) when Accept asks for
``text/event-stream`` or ``application/x-ndjson`` (any predict does: one item per prediction).

``load()`` runs in a daemon thread after the socket listens, so probes answer during a slow load
and SIGTERM need not wait for it. ``predict()`` runs in a bounded thread pool: the event loop
only moves bytes, so probes stay fast while the model computes.
"""

from __future__ import annotations

import asyncio
import logging
import os
import signal
import threading
import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from typing import Any

import orjson
from aiohttp import web

from gateway.wire import parse_request
from gateway.worker import BadInput, stream
from gateway.worker.kserve_v2 import V2Routes
from gateway.worker.model import (  # noqa: F401 (load_target, encode_predictions: public here)
    Loaded,
    Model,
    ModelError,
    Predictor,
    encode_predictions,
    load_target,
)
from gateway.worker.multiplex import DEFAULT_HEADER, LOADED_HEADER, ModelCache, check_id
from gateway.worker.openapi import docs_page, document
from gateway.worker.typed import InvalidInstances

log = logging.getLogger("gateway.worker")

_INLINE_PARSE_BYTES = 256 * 1024     # bigger bodies are decoded in a thread, off the loop
_ERROR_KINDS = {404: "not_found", 405: "method_not_allowed", 413: "body_too_large"}


@dataclass(frozen=True)
class WorkerOptions:
    target: str
    host: str = "127.0.0.1"
    port: int = 0
    threads: int = 1
    drain_timeout: float = 10.0
    max_body_bytes: int = 256 * 1024 * 1024
    model_name: str | None = None     # the v2 model name; default: the class name, lowercased
    max_models: int = 1               # multiplexed models (load_model) held at once
    model_header: str = DEFAULT_HEADER   # the request header naming a multiplexed model
    access_log: bool = False      # one line per predict call, with the gateway's request id


def parse_instances(body: bytes) -> list[Any]:
    """Request body -> the list of items for ``predict``. A single document is a batch of one."""
    try:
        doc, items = parse_request(body)
    except ValueError as exc:
        raise BadInput(str(exc)) from None
    return [doc] if items is None else items


def _request_id(request: web.Request) -> str | None:
    """The gateway's ``X-Request-Id`` (a batch's: its callers' ids, comma-separated)."""
    return request.headers.get("X-Request-Id")


def _json(status: int, doc: Any) -> web.Response:
    return web.Response(status=status, body=orjson.dumps(doc), content_type="application/json")


def _error(status: int, kind: str, detail: str) -> web.Response:
    return _json(status, {"error": kind, "detail": detail})


@web.middleware
async def _json_errors(request: web.Request,
                       handler: Callable[[web.Request], Awaitable[web.StreamResponse]]
                       ) -> web.StreamResponse:
    """aiohttp's own 404 / 405 / 413 come as text; the gateway expects JSON bodies everywhere."""
    try:
        return await handler(request)
    except web.HTTPException as exc:
        if exc.status < 400:
            raise
        return _error(exc.status, _ERROR_KINDS.get(exc.status, "http_error"), exc.reason)


class WorkerServer:
    """One model behind the HTTP endpoints; owns the loading state (the pool: ``Predictor``)."""

    def __init__(self, options: WorkerOptions) -> None:
        self.options = options
        self.loaded: Loaded | None = None
        self.load_error: BaseException | None = None
        self.draining = False
        self.in_flight = 0
        self.predictor = Predictor(options.threads)
        self._openapi: bytes | None = None
        self.models: ModelCache | None = None    # set at load when the model is multiplexed

    @property
    def model(self) -> Model | None:
        return self.loaded.model if self.loaded is not None else None

    @property
    def ready(self) -> bool:
        return self.loaded is not None and not self.draining

    @property
    def busy(self) -> int:
        return self.predictor.busy

    def app(self) -> web.Application:
        app = web.Application(middlewares=[_json_errors], client_max_size=self.options.max_body_bytes)
        app.router.add_get("/health", self.health)
        app.router.add_get("/ready", self.readiness)
        app.router.add_get("/predict", self.metadata)
        app.router.add_post("/predict", self.predict)
        app.router.add_get("/openapi.json", self.openapi)
        app.router.add_get("/docs", self.docs)
        app.router.add_get("/models", self.held_models)
        V2Routes(self).add_to(app.router)
        app.on_response_prepare.append(self._loaded_models_header)
        return app

    async def _loaded_models_header(self, request: web.Request,
                                    response: web.StreamResponse) -> None:
        """Every answer of a multiplexed worker says what it holds: the gateway's affinity
        learns it from the answers it relays anyway (no polling)."""
        if self.models is not None:
            response.headers[LOADED_HEADER] = self.models.header()

    def start_loading(self, loop: asyncio.AbstractEventLoop, on_failure: Callable[[], None]) -> None:
        """Import, build and load() the model in a daemon thread (a daemon so that a SIGTERM
        during a long load does not wait for it at interpreter exit)."""

        def finish(loaded: Loaded | None, error: BaseException | None) -> None:
            if error is not None:
                self.load_error = error
                log.error("loading %s failed", self.options.target, exc_info=error)
                on_failure()
            else:
                assert loaded is not None
                self.models = ModelCache.of(loaded.model, self.options.max_models)
                self.loaded = loaded

        def target() -> None:
            started = time.monotonic()
            try:
                model = load_target(self.options.target)
                load = getattr(model, "load", None)
                if callable(load):
                    load()
                loaded = Loaded(model, self._model_name(model))
            except BaseException as exc:  # noqa: BLE001 (SystemExit from a model is a failed load too)
                result: tuple[Loaded | None, BaseException | None] = (None, exc)
            else:
                log.info("model %s loaded in %.2fs", self.options.target, time.monotonic() - started)
                result = (loaded, None)
            try:
                loop.call_soon_threadsafe(finish, *result)
            except RuntimeError:           # the loop already closed: the worker is exiting
                pass

        threading.Thread(target=target, name="model-load", daemon=True).start()

    def _model_name(self, model: Model) -> str:
        name = self.options.model_name or getattr(model, "name", None)
        return name if isinstance(name, str) and name else type(model).__name__.lower()

    def close(self) -> None:
        self.predictor.close()

    async def health(self, request: web.Request) -> web.Response:
        return _json(200, {"status": "ok"})

    async def readiness(self, request: web.Request) -> web.Response:
        if self.ready:
            return _json(200, {"ready": True})
        return _json(503, {"ready": False, "draining": self.draining})

    async def metadata(self, request: web.Request) -> web.Response:
        return _json(200, {"model": self.options.target, "pid": os.getpid(),
                           "replica": os.environ.get("SGW_REPLICA_ID"), "ready": self.ready,
                           "in_flight": self.in_flight})

    async def held_models(self, request: web.Request) -> web.Response:
        """``{"multiplexed", "capacity", "models"}``: the ids held (most recent first)."""
        models = self.models
        return _json(200, {"multiplexed": models is not None,
                           "capacity": models.capacity if models else None,
                           "models": models.ids() if models else [],
                           "loads": models.loads if models else 0,
                           "evictions": models.evictions if models else 0})

    async def openapi(self, request: web.Request) -> web.Response:
        if self.loaded is None:
            return _error(503, "not_ready", "the model is still loading")
        if self._openapi is None:
            self._openapi = orjson.dumps(document(self.loaded, self.options.target))
        return web.Response(body=self._openapi, content_type="application/json")

    async def docs(self, request: web.Request) -> web.Response:
        if self.loaded is None:
            return _error(503, "not_ready", "the model is still loading")
        page = docs_page(document(self.loaded, self.options.target))
        return web.Response(text=page, content_type="text/html")

    async def predict(self, request: web.Request) -> web.StreamResponse:
        self.in_flight += 1
        started = time.monotonic()
        status = 500
        try:
            if self.models is None or self.loaded is None:
                response = await self._predict(request, self.loaded)
            else:
                response = await self._multiplexed(request, self.models, self.loaded)
            status = response.status
            return response
        finally:
            self.in_flight -= 1
            if self.options.access_log:
                ms = round((time.monotonic() - started) * 1000, 1)
                rid = _request_id(request)
                log.info("POST /predict %d %.1fms request_id=%s", status, ms, rid,
                         extra={"event": "predict", "status": status, "latency_ms": ms,
                                "request_id": rid,
                                "replica": os.environ.get("SGW_REPLICA_ID")})

    async def _multiplexed(self, request: web.Request, models: ModelCache,
                           loaded: Loaded) -> web.StreamResponse:
        """The request's model (``model_header``) from the LRU, held while it predicts."""
        header = self.options.model_header
        try:
            model_id = check_id(request.headers.get(header), header)
            lease = await models.acquire(model_id)
        except BadInput as exc:            # no id, a bad one, or load_model refused it
            return _error(400, "bad_request", str(exc))
        except Exception as exc:    # whatever load_model raised is the answer
            log.error("load_model(%s) failed", request.headers.get(header), exc_info=exc)
            return _error(500, "model_error", f"loading model {model_id} failed: "
                                              f"{type(exc).__name__}: {exc}")
        try:
            return await self._predict(request, loaded.with_model(lease.value))
        finally:
            lease.release()

    async def _items(self, request: web.Request) -> list[Any]:
        body = await request.read()
        if len(body) <= _INLINE_PARSE_BYTES:
            return parse_instances(body)
        return await asyncio.to_thread(parse_instances, body)

    async def _predict(self, request: web.Request, loaded: Loaded | None) -> web.StreamResponse:
        if loaded is None:
            return _error(503, "not_ready", "the model is still loading")
        try:
            items = await self._items(request)
        except BadInput as exc:
            return _error(400, "bad_request", str(exc))
        kind = stream.negotiate(request.headers.get("Accept"))
        if kind is not None:
            return await self._stream(request, loaded, items, kind)
        if not items:
            return _json(200, {"predictions": []})
        try:
            payload = await self.predictor.payload(loaded, items)
        except Exception as exc:  # noqa: BLE001 (whatever the model raised becomes its answer)
            return self.failure(exc, len(items), _request_id(request))
        return web.Response(status=200, body=payload, content_type="application/json")

    async def _stream(self, request: web.Request, loaded: Loaded, items: list[Any],
                      kind: str) -> web.StreamResponse:
        """Validation and the first item come before the head, so that a bad instance or a
        model failing at once still gets its status code."""
        if not items:
            return web.Response(status=200, body=stream.end_frame(kind), content_type=kind)
        gen = self.predictor.stream(loaded, items)
        try:
            first = await gen.__anext__()
        except StopAsyncIteration:
            return web.Response(status=200, body=stream.end_frame(kind), content_type=kind)
        except Exception as exc:  # noqa: BLE001 (as in _predict)
            await gen.aclose()
            return self.failure(exc, len(items))
        return await stream.respond(request, kind, first, gen)

    def failure(self, exc: Exception, items: int, request_id: str | None = None) -> web.Response:
        """A predict that raised -> its JSON error answer (logged with the request id)."""
        if isinstance(exc, InvalidInstances):
            return _json(400, {"error": "bad_request", "detail": str(exc),
                               "errors": [p.as_dict() for p in exc.problems]})
        if isinstance(exc, BadInput):
            return _error(400, "bad_request", str(exc))
        fields = {"event": "predict_error", "request_id": request_id}
        if isinstance(exc, ModelError):
            log.error("model %s: %s (request_id=%s)", self.options.target, exc, request_id,
                      extra=fields)
            return _error(500, "model_error", str(exc))
        log.error("predict failed on %d instances (request_id=%s)", items, request_id,
                  exc_info=exc, extra=fields)
        return _error(500, "model_error", f"{type(exc).__name__}: {exc}")


async def serve(options: WorkerOptions) -> tuple[int, bool]:
    """Serve until SIGTERM / SIGINT or a failed load. Returns (exit status, whether predict
    threads are still running after the drain timeout)."""
    server = WorkerServer(options)
    runner = web.AppRunner(server.app(), access_log=None, handle_signals=False,
                           shutdown_timeout=options.drain_timeout)
    await runner.setup()
    try:
        await web.TCPSite(runner, options.host, options.port).start()
    except OSError as exc:
        log.error("cannot listen on %s:%d: %s", options.host, options.port, exc)
        await runner.cleanup()
        server.close()
        return 1, False
    log.info("worker %s listening on http://%s:%d (pid %d)", options.target, options.host,
             options.port, os.getpid())

    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(sig, stop.set)      # handlers only flag; the loop does the work
    server.start_loading(loop, on_failure=stop.set)
    await stop.wait()

    server.draining = True
    if server.load_error is None:
        log.info("stopping: draining %d in-flight requests (at most %.0fs)", server.in_flight,
                 options.drain_timeout)
    # Closes the listener, then waits up to drain_timeout for in-flight handlers.
    await runner.cleanup()
    for sig in (signal.SIGTERM, signal.SIGINT):
        loop.remove_signal_handler(sig)
    server.close()
    stuck = server.busy > 0
    if stuck:
        log.warning("%d predict calls still running after the drain timeout", server.busy)
    return (1 if server.load_error is not None else 0), stuck


def run_server(options: WorkerOptions) -> int:
    """Run the worker on uvloop when installed; returns the exit status."""
    loop_factory: Callable[[], asyncio.AbstractEventLoop] | None = None
    try:
        import uvloop
        loop_factory = uvloop.new_event_loop
    except ImportError:
        pass
    with asyncio.Runner(loop_factory=loop_factory) as runner:
        code, stuck = runner.run(serve(options))
    if stuck:
        # Pool threads cannot be interrupted, and interpreter exit would join them: leave now.
        logging.shutdown()
        os._exit(code)
    return code
