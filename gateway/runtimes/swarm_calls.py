"""The swarm runtime's blocking Docker API calls (each runs in a thread: ``_off_loop``).

Kept apart from ``swarm.py`` so that each module stays small; nothing here keeps state.
"""

from __future__ import annotations

import math
import time
from typing import Any

import docker
import docker.errors

from gateway.errors import RuntimeFailure
from gateway.runtimes.base import log_tail
from gateway.runtimes.docker_client import SDK_ERRORS, inspect_container
from gateway.runtimes.swarm_attrs import container_id, latest_task


def create(client: docker.DockerClient, body: dict[str, Any]) -> str:
    """Blocking. Create the service; its id."""
    try:
        done = client.api.create_service(body["task_template"], name=body["name"],
                                         labels=body["labels"], mode=body["mode"],
                                         endpoint_spec=body["endpoint_spec"])
    except docker.errors.APIError as exc:
        if exc.status_code == 503:
            raise RuntimeFailure("this Docker daemon is not a swarm manager: run `docker swarm "
                                 "init`, or point gateway.swarm.base_url at a manager") from exc
        raise
    return str(done["ID"])


def tasks(client: docker.DockerClient, service: str) -> list[dict[str, Any]]:
    """Blocking. A service's tasks; [] once it is gone."""
    try:
        found: list[dict[str, Any]] = client.api.tasks(filters={"service": service})
        return found
    except docker.errors.NotFound:
        return []


def remove(client: docker.DockerClient, service: str) -> None:
    """Blocking. Remove a service; already gone is fine."""
    try:
        client.api.remove_service(service)
    except docker.errors.NotFound:
        pass


def stop_and_remove(client: docker.DockerClient, service: str, grace: float) -> int | None:
    """Blocking. Stop the task's container here when it runs on this node (its exit code),
    remove the service, and wait (bounded) until the container is gone."""
    task = latest_task(tasks(client, service))
    cid = container_id(task) if task else None
    code = None
    if cid and inspect_container(client, cid) is not None:
        try:
            client.api.stop(cid, timeout=max(0, math.ceil(grace)))
            code = (inspect_container(client, cid) or {}).get("State", {}).get("ExitCode")
        except docker.errors.NotFound:
            pass
    remove(client, service)
    end = time.monotonic() + 15
    while cid and inspect_container(client, cid) is not None and time.monotonic() < end:
        time.sleep(0.1)
    return code if isinstance(code, int) else None


def logs_tail(client: docker.DockerClient, service: str) -> tuple[str, ...]:
    """Blocking. The service's last log lines, from whichever node ran it; () when Swarm
    cannot give them."""
    try:
        chunks = client.api.service_logs(service, stdout=True, stderr=True, tail=20)
        return log_tail(b"".join(chunks))
    except SDK_ERRORS:
        return ()
