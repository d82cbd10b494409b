"""Fixtures for tests against the real Docker daemon and the real worker image.

CI installs and starts Docker and builds the images (scripts/docker-setup.sh), so nothing here
skips: a missing daemon or image is a failure that says how to fix it. The tests check Docker
through the `docker` CLI (tests/docker/cli.py), independently of the SDK code under test.
"""

from __future__ import annotations

import subprocess
import uuid
from collections.abc import AsyncIterator, Iterator

import pytest

from gateway.runtimes.docker import DockerRuntime
from tests.docker.cli import INSTANCE_LABEL, WORKER_IMAGE, docker_cli, labelled


@pytest.fixture(scope="session", autouse=True)
def _docker_ready() -> None:
    if subprocess.run(["docker", "info"], check=False, capture_output=True, timeout=30).returncode != 0:
        pytest.fail("no Docker daemon: run `bash scripts/docker-setup.sh` (installs and starts it)")
    if subprocess.run(["docker", "image", "inspect", WORKER_IMAGE], check=False,
                      capture_output=True, timeout=30).returncode != 0:
        pytest.fail(f"image {WORKER_IMAGE} missing: run `bash scripts/docker-setup.sh`")


@pytest.fixture
def instance() -> Iterator[str]:
    """A gateway instance name unique to this test; afterwards, pass or fail, every container
    and network labelled with it is removed."""
    name = f"test-{uuid.uuid4().hex[:10]}"
    yield name
    containers = labelled("containers", name)
    if containers:
        docker_cli("rm", "-f", "-v", *containers, check=False)
    networks = labelled("networks", name)
    if networks:
        docker_cli("network", "rm", *networks, check=False)


@pytest.fixture
def network(instance: str) -> str:
    """A user-defined bridge network, labelled so the instance fixture removes it."""
    name = f"sgw-{instance}"
    docker_cli("network", "create", "--label", f"{INSTANCE_LABEL}={instance}", name)
    return name


@pytest.fixture
async def runtime(instance: str) -> AsyncIterator[DockerRuntime]:
    # poll_interval is long: a test that sees an exit promptly saw it through the events stream.
    rt = DockerRuntime(instance=instance, gpus=[], poll_interval=60.0)
    yield rt
    await rt.close()
