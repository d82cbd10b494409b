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

``load()`` runs in a daemon thread after the socket listens, so probes answer during a slow load
and SIGTERM need not wait for it. ``predict()`` runs in a bounded thread pool: the event loop
only moves bytes, so probes stay fast while the model computes.
"""

from __future__ import annotations

import asyncio
import importlib
import logging
import os
import signal
import threading
import time
from collections.abc import Awaitable, Callable
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from typing import Any, Protocol

import orjson
from aiohttp import web

from gateway.wire import parse_request
from gateway.worker import BadInput

log = logging.getLogger("gateway.worker")

_INLINE_PARSE_BYTES = 256 * 1024     # bigger bodies are decoded in a thread, off the loop
_ERROR_KINDS = {404: "not_found", 405: "method_not_allowed", 413: "body_too_large"}


class Model(Protocol):
    def predict(self, items: list[Any]) -> Any: ...


class ModelError(Exception):
    """The model broke the contract: wrong number of predictions, or output JSON cannot hold."""


@dataclass(frozen=True)
class WorkerOptions:
    target: str
    host: str = "127.0.0.1"
    port: int = 0
    threads: int = 1
    drain_timeout: float = 10.0
    max_body_bytes: int = 256 * 1024 * 1024
    access_log: bool = False      # one line per predict call, with the gateway's request id


def load_target(target: str) -> Model:
    """Import ``module:attr`` and turn it into a model: a class or factory is called with no
    arguments; an object that already has ``predict`` is used as is."""
    module_name, _, attr = target.partition(":")
    obj: Any = importlib.import_module(module_name)
    for part in attr.split("."):
        obj = getattr(obj, part)
    if isinstance(obj, type) or (callable(obj) and not hasattr(obj, "predict")):
        obj = obj()
    if not callable(getattr(obj, "predict", None)):
        raise TypeError(f"{target} gives a {type(obj).__name__} without a predict(items) method")
    model: Model = obj
    return model


def parse_instances(body: bytes) -> list[Any]:
    """Request body -> the list of items for ``predict``. A single document is a batch of one."""
    try:
        doc, items = parse_request(body)
    except ValueError as exc:
        raise BadInput(str(exc)) from None
    return [doc] if items is None else items


def encode_predictions(predictions: Any, expected: int) -> bytes:
    """Check what ``predict`` returned and serialise ``{"predictions": ...}``."""
    if isinstance(predictions, (str, bytes, dict)) or not hasattr(predictions, "__len__"):
        raise ModelError(f"predict must return a list, got {type(predictions).__name__}")
    if len(predictions) != expected:
        raise ModelError(f"predict returned {len(predictions)} predictions for {expected} instances")
    try:
        return orjson.dumps({"predictions": predictions}, option=orjson.OPT_SERIALIZE_NUMPY)
    except TypeError as exc:     # orjson.JSONEncodeError is a TypeError
        raise ModelError(f"predictions are not JSON serializable: {exc}") from None


def _request_id(request: web.Request) -> str | None:
    """The gateway's ``X-Request-Id`` (a batch's: its callers' ids, comma-separated)."""
    return request.headers.get("X-Request-Id")


def _error_fields(request: web.Request) -> dict[str, Any]:
    return {"event": "predict_error", "request_id": _request_id(request)}


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
    """One model behind the HTTP endpoints; owns the predict pool and the loading state."""

    def __init__(self, options: WorkerOptions) -> None:
        self.options = options
        self.model: Model | None = None
        self.load_error: BaseException | None = None
        self.draining = False
        self.in_flight = 0
        self._busy = 0                   # predict() calls running in pool threads
        self._busy_lock = threading.Lock()
        self._pool = ThreadPoolExecutor(max_workers=options.threads, thread_name_prefix="predict")

    @property
    def ready(self) -> bool:
        return self.model is not None and not self.draining

    @property
    def busy(self) -> int:
        """predict() calls still running (a handler cancelled by the drain timeout leaves its
        thread running: Python threads cannot be stopped)."""
        with self._busy_lock:
            return self._busy

    def app(self) -> web.Application:
        app = web.Application(middlewares=[_json_errors], client_max_size=self.options.max_body_bytes)
        app.router.add_get("/health", self.health)
        app.router.add_get("/ready", self.readiness)
        app.router.add_get("/predict", self.metadata)
        app.router.add_post("/predict", self.predict)
        return app

    def start_loading(self, loop: asyncio.AbstractEventLoop, on_failure: Callable[[], None]) -> None:
        """Import, build and load() the model in a daemon thread (a daemon so that a SIGTERM
        during a long load does not wait for it at interpreter exit)."""

        def finish(model: Model | None, error: BaseException | None) -> None:
            if error is not None:
                self.load_error = error
                log.error("loading %s failed", self.options.target, exc_info=error)
                on_failure()
            else:
                self.model = model

        def target() -> None:
            started = time.monotonic()
            try:
                model = load_target(self.options.target)
                load = getattr(model, "load", None)
                if callable(load):
                    load()
            except BaseException as exc:  # noqa: BLE001 (SystemExit from a model is a failed load too)
                result: tuple[Model | None, BaseException | None] = (None, exc)
            else:
                log.info("model %s loaded in %.2fs", self.options.target, time.monotonic() - started)
                result = (model, None)
            try:
                loop.call_soon_threadsafe(finish, *result)
            except RuntimeError:           # the loop already closed: the worker is exiting
                pass

        threading.Thread(target=target, name="model-load", daemon=True).start()

    def close(self) -> None:
        self._pool.shutdown(wait=False, cancel_futures=True)

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

    async def predict(self, request: web.Request) -> web.Response:
        self.in_flight += 1
        started = time.monotonic()
        status = 500
        try:
            response = await self._predict(request)
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

    async def _predict(self, request: web.Request) -> web.Response:
        model = self.model
        if model is None:
            return _error(503, "not_ready", "the model is still loading")
        body = await request.read()
        try:
            if len(body) <= _INLINE_PARSE_BYTES:
                items = parse_instances(body)
            else:
                items = await asyncio.to_thread(parse_instances, body)
        except BadInput as exc:
            return _error(400, "bad_request", str(exc))
        if not items:
            return _json(200, {"predictions": []})
        loop = asyncio.get_running_loop()
        try:
            payload = await loop.run_in_executor(self._pool, self._run_model, model, items)
        except BadInput as exc:
            return _error(400, "bad_request", str(exc))
        except ModelError as exc:
            log.error("model %s: %s (request_id=%s)", self.options.target, exc,
                      _request_id(request), extra=_error_fields(request))
            return _error(500, "model_error", str(exc))
        except Exception as exc:
            log.error("predict failed on %d instances (request_id=%s)", len(items),
                      _request_id(request), exc_info=exc, extra=_error_fields(request))
            return _error(500, "model_error", f"{type(exc).__name__}: {exc}")
        return web.Response(status=200, body=payload, content_type="application/json")

    def _run_model(self, model: Model, items: list[Any]) -> bytes:
        """Pool thread: predict and serialise, so that neither runs on the event loop."""
        with self._busy_lock:
            self._busy += 1
        try:
            return encode_predictions(model.predict(items), len(items))
        finally:
            with self._busy_lock:
                self._busy -= 1


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
