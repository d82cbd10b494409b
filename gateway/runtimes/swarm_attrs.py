"""Pure helpers of the swarm runtime: the service definition sent to the Swarm API, and reading
tasks back (address, node, how a task ended).

Nothing here imports the Docker SDK or does I/O: unit tests assert the exact JSON a replica's
service is created with (resources, GPU reservations, placement) without a swarm, or a GPU.

Layout: ONE SWARM SERVICE PER REPLICA (replicas: 1, restart condition none). The gateway then
decides which replica goes away on scale-in (it drains that one, then removes its service) and
restarts crashed replicas itself, exactly as with containers; one service per version with
replicas: N would let Swarm pick the task to kill on scale-in, with no drain.
"""

from __future__ import annotations

import re
from typing import Any

from gateway.runtimes.base import ExitInfo, ExitKind, Replica, ReplicaSpec
from gateway.runtimes.docker_attrs import (
    DEFAULT_PORT,
    L_PORT,
    L_REPLICA,
    L_REVISION,
    L_SERVICE,
    L_VERSION,
    labels_for,
    started_at,
)
from gateway.spec.models import PlacementSpec, ResourcesSpec

# A Swarm service name is a DNS label: letters, digits and '-', at most 63 characters.
_NOT_DNS = re.compile(r"[^A-Za-z0-9-]+")
# Task states before the container runs (docker/api/types/swarm/task.go) and while it runs.
_BEFORE = frozenset({"new", "allocated", "pending", "assigned", "accepted", "preparing", "ready",
                     "starting"})
RUNNING = "running"


def service_name(service: str, version: str, replica_id: str) -> str:
    """sgw-<service>-<version>-<replica id> as a DNS label (the id is kept whole: it makes the
    name unique, so a long service name is cut, not the id)."""
    head = _NOT_DNS.sub("-", f"sgw-{service}-{version}").strip("-")[:63 - 1 - len(replica_id)]
    return f"{head.rstrip('-')}-{replica_id}"


def _mount(volume: str) -> dict[str, Any]:
    """'source:target[:ro]' as a Swarm mount: a path is a bind mount (on the node that runs the
    task), a bare name a named volume."""
    source, _, rest = volume.partition(":")
    target, _, mode = rest.partition(":")
    kind = "bind" if source.startswith(("/", ".")) else "volume"
    return {"Type": kind, "Source": source, "Target": target or source, "ReadOnly": mode == "ro"}


def placement(spec: PlacementSpec, pins: tuple[str, ...] = ()) -> dict[str, Any]:
    """Swarm's placement; ``pins`` are the constraints that spread a version's replicas
    (swarm_spread.py: Swarm's own spread sees one task per service)."""
    return {"Constraints": [*spec.constraints, *pins],
            "Preferences": [{"Spread": {"SpreadDescriptor": p.partition("=")[2]}}
                            for p in spec.preferences]}


def service_create(spec: ReplicaSpec, replica_id: str, *, instance: str, network: str,
                   default_placement: PlacementSpec, gpu_kind: str,
                   stop_grace: float, pins: tuple[str, ...] = ()) -> dict[str, Any]:
    """The body of ``POST /services/create`` for one replica (keys as the Swarm API spells them).

    - cpus and memory are both limits and reservations: the scheduler places a replica only
      where its share is free, and the replica cannot take more.
    - ``resources.gpus: N`` reserves N units of the generic resource ``gpu_kind`` (what nodes
      advertise with ``dockerd --node-generic-resource NVIDIA-GPU=<uuid>``); Swarm picks the
      devices and tells the container through DOCKER_RESOURCE_<KIND>.
    - endpoint mode dnsrr: no virtual IP; the gateway reaches each task at its own address.
    """
    cport = spec.port or DEFAULT_PORT
    env = dict(spec.env)
    env.update(PORT=str(cport), SGW_SERVICE=spec.service, SGW_VERSION=spec.version,
               SGW_REPLICA_ID=replica_id, SGW_GATEWAY_INSTANCE=instance)
    labels = labels_for(instance, spec, replica_id, cport)
    container: dict[str, Any] = {
        "Image": spec.image, "Env": [f"{k}={v}" for k, v in env.items()], "Labels": labels,
        # docker-init as PID 1 forwards SIGTERM to the worker and reaps its children
        "Init": True, "StopGracePeriod": int(stop_grace * 1e9),
        "Mounts": [_mount(v) for v in spec.volumes]}
    if spec.command:
        container["Args"] = [a.replace("{port}", str(cport)) for a in spec.command]
    if spec.workdir:
        container["Dir"] = spec.workdir
    res = spec.resources
    if res.shm_size is not None:
        container["Mounts"].append({"Type": "tmpfs", "Target": "/dev/shm",
                                    "TmpfsOptions": {"SizeBytes": int(res.shm_size)}})
    sized: dict[str, Any] = {}
    if res.cpus is not None:
        sized["NanoCPUs"] = int(res.cpus * 1e9)
    if res.memory is not None:
        sized["MemoryBytes"] = int(res.memory)
    reservations: dict[str, Any] = dict(sized)
    if isinstance(res.gpus, int) and res.gpus:
        reservations["GenericResources"] = [
            {"DiscreteResourceSpec": {"Kind": gpu_kind, "Value": res.gpus}}]
    task: dict[str, Any] = {
        "ContainerSpec": container,
        "Resources": {"Limits": sized, "Reservations": reservations},
        # the gateway restarts a replica that ended (with backoff, and it sees why); Swarm
        # restarting it behind the gateway's back would hide crash loops
        "RestartPolicy": {"Condition": "none"},
        "Placement": placement(spec.placement or default_placement, pins),
        "Networks": [{"Target": network}],
    }
    return {"name": service_name(spec.service, spec.version, replica_id), "labels": labels,
            "task_template": task, "mode": {"Replicated": {"Replicas": 1}},
            "endpoint_spec": {"Mode": "dnsrr"}}


def latest_task(tasks: list[dict[str, Any]]) -> dict[str, Any] | None:
    """The newest of a service's tasks (with restart condition none there is one, but a node
    that went away can leave an older one behind)."""
    return max(tasks, key=lambda t: (t.get("Version") or {}).get("Index", 0), default=None)


def task_state(task: dict[str, Any]) -> str:
    return str((task.get("Status") or {}).get("State") or "")


def _wanted(task: dict[str, Any]) -> bool:
    """Swarm still wants the task to run. When its node is lost, Swarm sets the desired state
    to shutdown while the last reported state stays "running" (the agent cannot say more)."""
    desired = str(task.get("DesiredState") or RUNNING)
    return desired == RUNNING or desired in _BEFORE


def is_running(task: dict[str, Any]) -> bool:
    return task_state(task) == RUNNING and _wanted(task)


def is_starting(task: dict[str, Any]) -> bool:
    return task_state(task) in _BEFORE and _wanted(task)


def task_error(task: dict[str, Any]) -> str:
    status = task.get("Status") or {}
    return str(status.get("Err") or status.get("Message") or task_state(task))


def task_node(task: dict[str, Any]) -> str | None:
    """The id of the node Swarm gave the task (None before it is placed)."""
    return str(task.get("NodeID") or "") or None


def container_id(task: dict[str, Any]) -> str | None:
    cid = ((task.get("Status") or {}).get("ContainerStatus") or {}).get("ContainerID")
    return str(cid) if cid else None


def task_address(task: dict[str, Any], network: str) -> str | None:
    """The task's IP on ``network`` (its name or id), else None."""
    for att in task.get("NetworksAttachments") or []:
        net = att.get("Network") or {}
        if network in (net.get("ID"), (net.get("Spec") or {}).get("Name")):
            for cidr in att.get("Addresses") or []:
                return str(cidr).partition("/")[0]
    return None


def task_exit(task: dict[str, Any] | None, stopping: bool,
              oom_killed: bool = False) -> ExitInfo | None:
    """How a replica's task ended (None while it starts or runs; ``task`` None: its service is
    gone). ``oom_killed`` comes from the container when it is on this node."""
    if task is None:
        return ExitInfo(ExitKind.STOPPED if stopping else ExitKind.EXITED, None, "service removed")
    state = task_state(task)
    if is_running(task) or is_starting(task):
        return None
    code = ((task.get("Status") or {}).get("ContainerStatus") or {}).get("ExitCode")
    if stopping:
        return ExitInfo(ExitKind.STOPPED, code, "stopped by the gateway")
    if state in _BEFORE or state == RUNNING:
        return ExitInfo(ExitKind.EXITED, None, f"Swarm shut its task down while {state} (its "
                        f"node {str(task.get('NodeID') or '?')[:12]} is unavailable?)")
    if oom_killed:
        return ExitInfo(ExitKind.OOM, code, "killed for exceeding its memory limit")
    if isinstance(code, int) and 128 < code <= 128 + 64:
        # docker-init (PID 1) exits 128+N when the worker died of signal N
        return ExitInfo(ExitKind.KILLED, code, f"signal {code - 128}")
    if state in ("rejected", "orphaned", "remove") or code is None:
        return ExitInfo(ExitKind.EXITED, code, f"task {state}: {task_error(task)}")
    return ExitInfo(ExitKind.EXITED, code, f"exit code {code}")


def task_started(task: dict[str, Any]) -> float:
    """When the task last changed state (it is running: when it started)."""
    return started_at({"State": {"StartedAt": (task.get("Status") or {}).get("Timestamp", "")}})


def replica_from(service: dict[str, Any], task: dict[str, Any], network: str,
                 node: str | None) -> Replica:
    """Rebuild a replica from its service's labels and running task (adopt)."""
    labels = (service.get("Spec") or {}).get("Labels") or {}
    port = int(labels.get(L_PORT) or DEFAULT_PORT)
    template = service["Spec"].get("TaskTemplate") or {}
    image = (template.get("ContainerSpec") or {}).get("Image")
    reserved = ((template.get("Resources") or {}).get("Reservations") or {})
    gpus = sum(int((g.get("DiscreteResourceSpec") or {}).get("Value") or 0)
               for g in reserved.get("GenericResources") or [])
    spec = ReplicaSpec(service=labels[L_SERVICE], version=labels[L_VERSION],
                       revision=labels.get(L_REVISION, ""), image=image, port=port,
                       resources=ResourcesSpec(gpus=gpus or None))
    host = task_address(task, network)
    if host is None:
        raise ValueError(f"task of {service['Spec'].get('Name')} has no address on {network}")
    rid = labels.get(L_REPLICA) or str(service["ID"])[:12]
    return Replica(id=rid, spec=spec, host=host, port=port, started_at=task_started(task),
                   node=node)
