"""Runtimes by name. The docker runtime is imported only when a config asks for it."""

from __future__ import annotations

import importlib
from typing import Any

from gateway.runtimes.base import Runtime

_RUNTIMES = {
    "process": "gateway.runtimes.process:ProcessRuntime",
    "docker": "gateway.runtimes.docker:DockerRuntime",
}


def create_runtime(name: str, **options: Any) -> Runtime:
    module, _, attr = _RUNTIMES[name].partition(":")
    factory = getattr(importlib.import_module(module), attr)
    runtime: Runtime = factory(**options)
    return runtime
