"""The Runtime protocol: the only seam through which replicas are started and stopped.

A runtime knows nothing about routing or rollouts; the supervisor tells it what to start and
stop and learns from it what exists and when a replica exits.
"""

from __future__ import annotations

import enum
from dataclasses import dataclass, field
from typing import Protocol

from gateway.spec.models import PlacementSpec, ResourcesSpec, Spec


@dataclass(frozen=True)
class ReplicaSpec:
    """Everything needed to launch one replica of one version at one revision."""

    service: str
    version: str
    revision: str
    command: tuple[str, ...] | None = None
    image: str | None = None
    port: int | None = None               # the worker's own port (inside a container)
    env: tuple[tuple[str, str], ...] = ()
    workdir: str | None = None
    volumes: tuple[str, ...] = ()
    resources: ResourcesSpec = field(default_factory=ResourcesSpec)
    gpu_ids: tuple[int, ...] = ()          # filled by the GPU allocator (either runtime)
    placement: PlacementSpec | None = None  # swarm only; None: the runtime's default


class ExitKind(enum.Enum):
    EXITED = "exited"      # the process ended by itself (code set)
    KILLED = "killed"      # a signal ended it
    OOM = "oom_killed"     # the kernel / Docker killed it for memory
    STOPPED = "stopped"    # we asked it to stop


@dataclass(frozen=True)
class ExitInfo:
    kind: ExitKind
    code: int | None = None
    detail: str = ""
    # the replica's last log lines when it ended on its own (a model that failed to import says
    # why there), for the operator's message and /status
    log_tail: tuple[str, ...] = ()


def log_tail(data: bytes, lines: int = 10) -> tuple[str, ...]:
    """The last ``lines`` non-empty lines of a replica's log (``data``: its end), after the
    last ``=== ... start:`` header the process runtime writes at each launch."""
    text = data.decode("utf-8", "replace")
    kept = [line.rstrip() for line in text.splitlines() if line.strip()]
    for i in range(len(kept) - 1, -1, -1):
        if kept[i].startswith("=== ") and " start: " in kept[i]:
            kept = kept[i + 1:]
            break
    return tuple(line[:500] for line in kept[-lines:])


@dataclass
class Replica:
    """A running (or starting) replica as a runtime reports it."""

    id: str                 # unique and stable for the replica's life (pid-based, container id ...)
    spec: ReplicaSpec
    host: str
    port: int
    started_at: float       # time.time() when launched
    log_path: str | None = None
    pid: int | None = None  # process runtime only: lets operators and tests find the worker
    node: str | None = None  # the host it runs on, where the runtime spans several (swarm)

    @property
    def reserved_gpus(self) -> int | list[int] | None:
        """What /status shows of its GPUs: the ids it was given (process, docker), else the
        count reserved from a scheduler that picks them itself (swarm), else None."""
        if self.spec.gpu_ids:
            return list(self.spec.gpu_ids)
        gpus = self.spec.resources.gpus
        return gpus if isinstance(gpus, int) and gpus else None

    @property
    def address(self) -> str:
        return f"{self.host}:{self.port}"


class Runtime(Protocol):
    """Starts, stops, lists and watches replicas. Every method is safe to call on the event loop:
    blocking work (the Docker SDK) runs in a thread inside the runtime."""

    name: str

    async def start(self, spec: ReplicaSpec) -> Replica:
        """Launch one replica; returns once it exists (not once it is ready)."""

    async def stop(self, replica: Replica, grace: float) -> ExitInfo:
        """Ask it to stop (SIGTERM), kill it after ``grace`` seconds; returns when it is gone."""

    async def wait(self, replica: Replica) -> ExitInfo:
        """Return when the replica ends, for whatever reason (crash, OOM, stop)."""

    async def adopt(self) -> list[Replica]:
        """Replicas left by an earlier gateway instance that this runtime can still reach."""

    async def check(self, spec: Spec) -> None:
        """Raise ConfigError when this runtime cannot run ``spec`` at all (a plan needing more
        GPUs than exist ...). Called before anything starts and before a reload applies."""

    async def close(self) -> None:
        """Release runtime resources (not the replicas)."""
