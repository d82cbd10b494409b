"""The `docker` CLI for tests: an independent view of what the runtime did through the SDK."""

from __future__ import annotations

import asyncio
import json
import subprocess
from typing import Any

WORKER_IMAGE = "serve-gateway-worker:dev"
INSTANCE_LABEL = "serve-gateway.instance"


def docker_cli(*args: str, check: bool = True, timeout: float = 30) -> str:
    done = subprocess.run(["docker", *args], check=False, capture_output=True, text=True, timeout=timeout)
    if check and done.returncode != 0:
        raise AssertionError(f"docker {' '.join(args)} failed: {done.stderr.strip()}")
    return done.stdout.strip()


async def adocker(*args: str, check: bool = True) -> str:
    """docker_cli off the event loop, for tests that wait on the runtime meanwhile."""
    return await asyncio.to_thread(docker_cli, *args, check=check)


def inspect(ref: str) -> dict[str, Any]:
    doc: list[dict[str, Any]] = json.loads(docker_cli("inspect", ref))
    return doc[0]


def labelled(kind: str, instance: str) -> list[str]:
    """Ids of containers (kind "ps -a") or networks ("network ls") with this instance label."""
    args = ["ps", "-aq"] if kind == "containers" else ["network", "ls", "-q"]
    return docker_cli(*args, "--filter", f"label={INSTANCE_LABEL}={instance}").split()
