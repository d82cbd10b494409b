"""Fixtures for the multi-node tests: a Docker Swarm of three docker-in-docker nodes
(tests/swarm_multi/cluster.py), built once per module and removed afterwards, pass or fail.

Whether such nodes can run here, and whether overlay networking works inside them, depends on the
kernel and on what the host's dockerd may grant: when they cannot, the tests skip and say exactly
what failed (the single-node swarm tests in tests/swarm still run). A missing image or a failed
image build is a failure, as for every Docker test.
"""

from __future__ import annotations

import subprocess
from collections.abc import Iterator

import pytest

from tests.swarm_multi.cluster import (
    Cluster,
    ClusterError,
    build_gateway_image,
    ensure_node_image,
    prune_stale,
)

WORKER_IMAGE = "serve-gateway-worker:dev"
# This tree's gateway image under a tag of its own (see cluster.build_gateway_image).
GATEWAY_IMAGE = "serve-gateway:multinode"


@pytest.fixture(scope="module")
def cluster() -> Iterator[Cluster]:
    if subprocess.run(["docker", "info"], check=False, capture_output=True, timeout=30).returncode != 0:
        pytest.fail("no Docker daemon: run `bash scripts/docker-setup.sh` (installs and starts it)")
    if subprocess.run(["docker", "image", "inspect", WORKER_IMAGE], check=False,
                      capture_output=True, timeout=30).returncode != 0:
        pytest.fail(f"image {WORKER_IMAGE} missing: run `bash scripts/docker-setup.sh`")
    prune_stale()
    # image builds fail the test (as for every Docker test); only running the nodes may skip
    ensure_node_image()
    build_gateway_image(GATEWAY_IMAGE)
    c = Cluster(nodes=3)
    try:
        try:
            c.up()
        except ClusterError as exc:
            pytest.skip(f"docker-in-docker swarm nodes cannot run here: {exc}")
        c.load(GATEWAY_IMAGE, WORKER_IMAGE)
        problem = c.overlay_problem(WORKER_IMAGE)
        if problem:
            pytest.skip(f"overlay networking between docker-in-docker nodes does not work here: "
                        f"{problem}")
        yield c
    finally:
        c.down()
