"""Pure helpers of the Docker runtime: labels, names, and reading container attrs.

``attrs`` is what ``docker inspect`` returns. Nothing here imports the Docker SDK or does I/O,
so unit tests cover how exits are classified and how adopted replicas are rebuilt.
"""

from __future__ import annotations

import os
import re
import time
from collections import OrderedDict
from datetime import datetime
from typing import Any, TypeVar

from gateway.errors import RuntimeFailure
from gateway.runtimes.base import ExitInfo, ExitKind, Replica, ReplicaSpec

T = TypeVar("T")

LABEL = "serve-gateway"
L_INSTANCE = f"{LABEL}.instance"
L_SERVICE = f"{LABEL}.service"
L_VERSION = f"{LABEL}.version"
L_REVISION = f"{LABEL}.revision"
L_REPLICA = f"{LABEL}.replica"
L_PORT = f"{LABEL}.port"            # the worker's port inside the container
L_GPUS = f"{LABEL}.gpus"            # "0,2": re-reserved by adopt()
DEFAULT_PORT = 8000
LOCALHOST = "127.0.0.1"
_UNSAFE_NAME = re.compile(r"[^A-Za-z0-9_.-]+")
_REMEMBERED = 4096


class Bounded(OrderedDict[str, T]):
    """A dict that forgets its oldest entries: per-replica records must not grow forever."""

    def __setitem__(self, key: str, value: T) -> None:
        super().__setitem__(key, value)
        while len(self) > _REMEMBERED:
            self.popitem(last=False)


def container_name(service: str, version: str, replica_id: str) -> str:
    """sgw-<service>-<version>-<replica id>, with characters Docker refuses replaced."""
    return _UNSAFE_NAME.sub("-", f"sgw-{service}-{version}-{replica_id}")


def labels_for(instance: str, spec: ReplicaSpec, replica_id: str, port: int) -> dict[str, str]:
    return {L_INSTANCE: instance, L_SERVICE: spec.service, L_VERSION: spec.version,
            L_REVISION: spec.revision, L_REPLICA: replica_id, L_PORT: str(port),
            L_GPUS: ",".join(map(str, spec.gpu_ids))}


def volume(spec: str) -> str:
    """'host:container[:mode]' with a relative host path made absolute (Docker needs absolute
    paths; a bare name is a named volume and stays as it is)."""
    source, sep, rest = spec.partition(":")
    if sep and (source.startswith(".") or "/" in source) and not os.path.isabs(source):
        source = os.path.abspath(source)
    return f"{source}{sep}{rest}"


def started_at(attrs: dict[str, Any]) -> float:
    """State.StartedAt ("2024-05-01T10:00:00.123456789Z") as a Unix time; now if unreadable."""
    raw = str((attrs.get("State") or {}).get("StartedAt", ""))
    m = re.match(r"(\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d)(\.\d+)?", raw)
    if not m or raw.startswith("0001-"):
        return time.time()
    frac = (m.group(2) or ".0")[:7]         # Python parses microseconds, Docker writes nanos
    return datetime.fromisoformat(f"{m.group(1)}{frac}+00:00").timestamp()


def address(attrs: dict[str, Any], network: str | None, port: int) -> tuple[str, int]:
    """Where the gateway reaches a container: its IP on ``network``, else the port published on
    127.0.0.1, else (adopted from a run with another setting) its IP on any network."""
    settings = attrs.get("NetworkSettings") or {}
    networks = settings.get("Networks") or {}
    if network and (networks.get(network) or {}).get("IPAddress"):
        return networks[network]["IPAddress"], port
    for binding in (settings.get("Ports") or {}).get(f"{port}/tcp") or []:
        if binding.get("HostIp") in (LOCALHOST, "0.0.0.0", "") and binding.get("HostPort"):
            return LOCALHOST, int(binding["HostPort"])
    for net in networks.values():
        if net.get("IPAddress"):
            return net["IPAddress"], port
    raise RuntimeFailure(f"container {attrs.get('Name', '?')} has no reachable address")


def exit_info(attrs: dict[str, Any] | None, stopping: bool) -> ExitInfo | None:
    """How a container ended (None while it runs; ``attrs`` None: it no longer exists)."""
    if attrs is None:
        return ExitInfo(ExitKind.STOPPED if stopping else ExitKind.EXITED, None, "container removed")
    state = attrs.get("State") or {}
    if state.get("Running"):
        return None
    code = state.get("ExitCode")
    if stopping:
        return ExitInfo(ExitKind.STOPPED, code, "stopped by the gateway")
    if state.get("OOMKilled"):
        return ExitInfo(ExitKind.OOM, code, "killed for exceeding its memory limit")
    if isinstance(code, int) and 128 < code <= 128 + 64:
        # docker-init (PID 1) exits 128+N when the worker died of signal N
        return ExitInfo(ExitKind.KILLED, code, f"signal {code - 128}")
    return ExitInfo(ExitKind.EXITED, code, state.get("Error") or f"exit code {code}")


def replica_from(attrs: dict[str, Any], network: str | None) -> Replica:
    """Rebuild a replica from a running container: identity from its labels, address from attrs.

    The spec holds what the labels and attrs tell (service, version, revision, image, port,
    GPUs); the supervisor compares the revision and stops replicas of an outdated one."""
    labels = (attrs.get("Config") or {}).get("Labels") or {}
    port = int(labels.get(L_PORT) or DEFAULT_PORT)
    gpu_ids = tuple(int(i) for i in labels.get(L_GPUS, "").split(",") if i)
    spec = ReplicaSpec(service=labels[L_SERVICE], version=labels[L_VERSION],
                       revision=labels.get(L_REVISION, ""), image=attrs["Config"].get("Image"),
                       port=port, gpu_ids=gpu_ids)
    host, host_port = address(attrs, network, port)
    rid = labels.get(L_REPLICA) or str(attrs["Id"])[:12]
    return Replica(id=rid, spec=spec, host=host, port=host_port, started_at=started_at(attrs))
