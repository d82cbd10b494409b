"""Fixtures for tests against a real single-node Docker Swarm.

The host daemon's swarm state is global: the session fixture inits a swarm only when the daemon
is in none (advertising 127.0.0.1, so nothing outside this machine is involved) and leaves it
afterwards only if it made it. Every test works under its own instance name, and afterwards,
pass or fail, every service, container and network labelled with it is removed.
"""

from __future__ import annotations

import subprocess
import time
import uuid
from collections.abc import AsyncIterator, Iterator

import pytest

from gateway.runtimes.swarm import SwarmRuntime
from tests.docker.cli import INSTANCE_LABEL, WORKER_IMAGE, docker_cli

GATEWAY_IMAGE = "serve-gateway:dev"


def _swarm_state() -> str:
    return docker_cli("info", "--format", "{{.Swarm.LocalNodeState}}")


@pytest.fixture(scope="session", autouse=True)
def swarm() -> Iterator[None]:
    if subprocess.run(["docker", "info"], check=False, capture_output=True, timeout=30).returncode != 0:
        pytest.fail("no Docker daemon: run `bash scripts/docker-setup.sh` (installs and starts it)")
    for image in (WORKER_IMAGE, GATEWAY_IMAGE):
        if subprocess.run(["docker", "image", "inspect", image], check=False,
                          capture_output=True, timeout=30).returncode != 0:
            pytest.fail(f"image {image} missing: run `bash scripts/docker-setup.sh`")
    made = False
    if _swarm_state() == "inactive":
        docker_cli("swarm", "init", "--advertise-addr", "127.0.0.1")
        made = True
    try:
        yield
    finally:
        if made:
            docker_cli("swarm", "leave", "--force", check=False)


def labelled_services(instance: str) -> list[str]:
    return docker_cli("service", "ls", "-q", "--filter", f"label={INSTANCE_LABEL}={instance}").split()


def cleanup(instance: str) -> None:
    """Remove every service, config (rollout journals), container and network labelled with ``instance`` (networks last,
    once the tasks attached to them are gone)."""
    services = labelled_services(instance)
    if services:
        docker_cli("service", "rm", *services, check=False)
    configs = docker_cli("config", "ls", "-q", "--filter", f"label={INSTANCE_LABEL}={instance}").split()
    if configs:
        docker_cli("config", "rm", *configs, check=False)
    containers = docker_cli("ps", "-aq", "--filter", f"label={INSTANCE_LABEL}={instance}").split()
    if containers:
        docker_cli("rm", "-f", "-v", *containers, check=False)
    end = time.monotonic() + 30
    while networks := docker_cli("network", "ls", "-q", "--filter",
                                 f"label={INSTANCE_LABEL}={instance}").split():
        docker_cli("network", "rm", *networks, check=False)
        if time.monotonic() > end:
            raise AssertionError(f"networks of {instance} not removable: {networks}")
        time.sleep(0.5)


@pytest.fixture
def instance() -> Iterator[str]:
    name = f"swarmtest-{uuid.uuid4().hex[:8]}"
    try:
        yield name
    finally:
        cleanup(name)


@pytest.fixture
def network(instance: str) -> str:
    """The overlay the runtime creates (labelled with the instance, so cleanup removes it)."""
    return f"sgw-{instance}"


@pytest.fixture
async def runtime(instance: str, network: str) -> AsyncIterator[SwarmRuntime]:
    # poll_interval is long: a test that sees a local exit promptly saw it through the events
    rt = SwarmRuntime(instance=instance, network=network, poll_interval=30.0, stop_grace=3.0,
                      start_timeout=60.0, unschedulable_after=2.0)
    yield rt
    await rt.close()
