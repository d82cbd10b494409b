"""Worker SDK: serve a Python model over HTTP so the gateway can route, batch and probe it.

A model is any class (or zero-argument factory) exposing::

    def load(self) -> None: ...                    # optional; called once, in a thread
    def predict(self, items: list) -> list: ...    # one prediction per item, same order

``predict`` may also be ``async def``, or a generator (sync or async) whose items stream to the
client (``Accept: text/event-stream`` or ``application/x-ndjson``), and may annotate its items
(``list[Item]`` with a pydantic model, ``np.ndarray`` for one stacked batch, optionally
``Annotated[np.ndarray, Array(dtype="float32", shape=(512,))]``): each instance is validated
and converted, and ``/openapi.json`` and ``/docs`` describe them.

Run it with ``serve-gateway worker module:Class --port 9000`` (or ``python -m gateway.worker``).
The HTTP contract (KServe v1 style, and KServe v2) is documented in ``gateway.worker.server``.

This module stays import-light on purpose: model code imports ``BadInput`` from here, and the
HTTP stack (aiohttp, uvloop) is only imported when a worker actually runs.
"""

from __future__ import annotations

import argparse
import os
import sys
from dataclasses import dataclass

__all__ = ["Array", "BadInput", "add_arguments", "main", "run"]

DEFAULT_MAX_BODY = 256 * 1024 * 1024   # one batch carries many client bodies, so well above theirs


@dataclass(frozen=True)
class Array:
    """Per-instance numpy dtype and shape for an ``np.ndarray`` hint on ``predict``
    (``None`` in ``shape``: any length), e.g. ``Annotated[np.ndarray, Array("float32", (512,))]``."""

    dtype: str | None = None
    shape: tuple[int | None, ...] | None = None


class BadInput(Exception):
    """Raised by a model's ``predict`` when the input itself is wrong: the caller gets a 400
    ``bad_request`` with this message instead of a 500 ``model_error``."""


def add_arguments(parser: argparse.ArgumentParser) -> None:
    """The worker's options; shared by ``python -m gateway.worker`` and ``serve-gateway worker``."""
    parser.add_argument("target", nargs="?", help="the model: module:Class or module:factory "
                                                  "(the current directory is importable)")
    parser.add_argument("--adapter", choices=("sklearn", "torch", "onnx"),
                        help="serve a saved model file instead of a class (needs --model)")
    parser.add_argument("--model", metavar="PATH", help="the saved model file for --adapter")
    parser.add_argument("--device", choices=("auto", "cpu", "cuda"), default=None,
                        help="where --adapter runs the model; auto: cuda when a GPU is assigned "
                             "(CUDA_VISIBLE_DEVICES) and usable, else cpu (default: auto)")
    parser.add_argument("--host", default="127.0.0.1", help="address to listen on (default: %(default)s)")
    parser.add_argument("--port", type=int, default=None, help="port to listen on (default: $PORT)")
    parser.add_argument("--threads", type=_positive_int, default=1,
                        help="predict() threads; requests beyond this wait their turn (default: %(default)s)")
    parser.add_argument("--drain-timeout", type=float, default=10.0,
                        help="seconds in-flight requests may finish after SIGTERM (default: %(default)s)")
    parser.add_argument("--max-body-bytes", type=_positive_int, default=DEFAULT_MAX_BODY,
                        help="largest request body accepted (default: %(default)s)")
    parser.add_argument("--log-format", choices=["text", "json"],
                        default=os.environ.get("SGW_LOG_FORMAT", "text"),
                        help="json: one object per line with event, status, latency_ms, "
                             "request_id ... (default: $SGW_LOG_FORMAT or text)")
    parser.add_argument("--access-log", action="store_true",
                        help="log every predict call with the gateway's X-Request-Id")
    parser.add_argument("--model-name", default=None,
                        help="the model's name under /v2/models/ (default: the class name, "
                             "lowercased)")
    # multiplexing (a model with load_model): the gateway passes its version's `multiplex`
    # settings in the environment, so the command line need not repeat them
    parser.add_argument("--max-models", type=_positive_int,
                        default=_env_int("SGW_MULTIPLEX_MAX_MODELS", 1),
                        help="models a multiplexed worker (load_model) holds at once, least "
                             "recently used evicted (default: $SGW_MULTIPLEX_MAX_MODELS or 1)")
    parser.add_argument("--model-header",
                        default=os.environ.get("SGW_MULTIPLEX_HEADER") or "x-model-id",
                        help="request header naming the model of a multiplexed worker "
                             "(default: $SGW_MULTIPLEX_HEADER or x-model-id)")


def run(args: argparse.Namespace) -> int:
    """Serve ``args.target`` until SIGTERM / SIGINT; returns the process exit status."""
    from gateway import logs

    logs.setup(getattr(args, "log_format", "text"))
    port = args.port
    if port is None:
        try:
            port = int(os.environ["PORT"])
        except (KeyError, ValueError):
            print("serve-gateway worker: no port: pass --port or set PORT to a number", file=sys.stderr)
            return 2
    problem = _adapter_target(args)
    if problem:
        print(f"serve-gateway worker: {problem}", file=sys.stderr)
        return 2
    module, sep, attr = args.target.partition(":")
    if not (module and sep and attr):
        print(f"serve-gateway worker: target must look like module:Class, got {args.target!r}",
              file=sys.stderr)
        return 2
    # Model code lives next to the user, not inside the gateway's package: make cwd importable.
    cwd = os.getcwd()
    if cwd not in sys.path:
        sys.path.insert(0, cwd)

    from gateway.worker.server import WorkerOptions, run_server

    return run_server(WorkerOptions(target=args.target, host=args.host, port=port,
                                    threads=args.threads, drain_timeout=args.drain_timeout,
                                    max_body_bytes=args.max_body_bytes,
                                    model_name=args.model_name, max_models=args.max_models,
                                    model_header=args.model_header.lower(),
                                    access_log=getattr(args, "access_log", False)))


def _adapter_target(args: argparse.Namespace) -> str | None:
    """With --adapter, point ``args.target`` at the adapter class and hand it --model and
    --device through the environment (its constructor reads them there, so the SDK loads it as
    any other class). Returns what is wrong with the arguments, or None."""
    adapter = getattr(args, "adapter", None)
    if adapter is None:
        if args.model or args.device:
            return "--model and --device go with --adapter sklearn|torch|onnx"
        return None if args.target else "name a model (module:Class) or pass --adapter and --model"
    if args.target:
        return f"pass either a model ({args.target}) or --adapter, not both"
    if not args.model:
        return f"--adapter {adapter} needs --model PATH"
    if not os.path.isfile(args.model):
        return f"--model {args.model}: no such file"
    import importlib.util

    from gateway.worker.adapters import ADAPTERS, DEVICE_ENV, MODEL_ENV

    target, extra, module = ADAPTERS[adapter]
    if importlib.util.find_spec(module) is None:
        return (f"--adapter {adapter} needs {module}: pip install 'serve-gateway[{extra}]'")
    args.target = target
    os.environ[MODEL_ENV] = os.path.abspath(args.model)
    os.environ[DEVICE_ENV] = args.device or "auto"
    return None


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="serve-gateway worker",
                                     description="Serve a Python model class over HTTP.")
    add_arguments(parser)
    return run(parser.parse_args(argv))


def _env_int(name: str, default: int) -> int:
    try:
        return max(1, int(os.environ[name]))
    except (KeyError, ValueError):
        return default


def _positive_int(text: str) -> int:
    value = int(text)
    if value < 1:
        raise argparse.ArgumentTypeError(f"must be >= 1, got {value}")
    return value
