"""Runtimes by name. The docker runtime is imported only when a config asks for it, so that a
process-runtime install needs no Docker SDK (it is the ``[docker]`` extra)."""

from __future__ import annotations

import importlib
from typing import Any

from gateway.errors import MissingExtra
from gateway.runtimes.base import Runtime

_RUNTIMES = {
    "process": "gateway.runtimes.process:ProcessRuntime",
    "docker": "gateway.runtimes.docker:DockerRuntime",
    "swarm": "gateway.runtimes.swarm:SwarmRuntime",
}
# the distributions a runtime's extra installs (their import names)
_EXTRAS = {name: ("docker", {"docker", "requests", "urllib3"}) for name in ("docker", "swarm")}


def create_runtime(name: str, **options: Any) -> Runtime:
    module, _, attr = _RUNTIMES[name].partition(":")
    try:
        factory = getattr(importlib.import_module(module), attr)
    except ModuleNotFoundError as exc:
        extra, provides = _EXTRAS.get(name, ("", set()))
        top = (exc.name or "").partition(".")[0]
        if top not in provides:
            raise
        raise MissingExtra(f"gateway.runtime: {name}", extra, top) from None
    runtime: Runtime = factory(**options)
    return runtime
