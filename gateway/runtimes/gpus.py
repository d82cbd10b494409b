"""GPU allocation for replicas, containers and local processes alike: which device ids each
replica gets (the docker runtime turns them into a DeviceRequest, the process runtime into
``CUDA_VISIBLE_DEVICES``, see ``process_env``).

Pure bookkeeping (no Docker, no subprocess in the allocator itself) so that unit tests cover every
rule; ``detect_gpus`` is the one function that runs ``nvidia-smi``.

Rules for ``resources.gpus``:

- ``N`` (int): N distinct ids that no other live replica holds, lowest first;
- ``[0, 2]``: exactly those ids; an id that does not exist or that another replica holds is an
  error (two replicas pinned to one GPU would fight over its memory);
- ``"all"``: every GPU, exclusively: it fails while any GPU is held by another replica.

A replica's ids are released when it stops.
"""

from __future__ import annotations

import re
import shutil
import subprocess
from collections.abc import Callable, Iterable, Iterator, Sequence
from typing import Literal

from gateway.errors import ConfigError, ConfigProblem, RuntimeFailure
from gateway.spec.models import Spec

GpuRequest = int | Sequence[int] | Literal["all"] | None
GpuSetting = Sequence[int] | Literal["auto"]      # gateway.docker.gpus / gateway.process.gpus
Assignment = tuple[str, str, int, tuple[int, ...]]  # (service, version, replica number, ids)

# "GPU 0: NVIDIA H100 80GB HBM3 (UUID: GPU-...)"; MIG lines are indented and start with "MIG".
_GPU_LINE = re.compile(r"^GPU (\d+):")


class GpuUnavailable(RuntimeFailure):
    """A replica asked for GPUs that do not exist or are held by other replicas."""

    def __init__(self, owner: str, needed: int | str, free: Sequence[int], total: int,
                 detail: str = "") -> None:
        self.owner = owner
        self.needed = needed
        self.free = tuple(free)
        self.total = total
        self.detail = detail
        what = f"needs {needed} GPU{'s' if needed != 1 else ''}"
        free_ids = ", ".join(map(str, self.free)) or "none"
        extra = f": {detail}" if detail else ""
        super().__init__(f"{owner} {what}{extra}; {len(self.free)} of {total} free (ids: {free_ids})")


def parse_nvidia_smi(output: str) -> list[int]:
    """GPU indices from ``nvidia-smi -L`` output (MIG sub-devices are not separate GPUs)."""
    ids: list[int] = []
    for line in output.splitlines():
        m = _GPU_LINE.match(line)
        if m:
            ids.append(int(m.group(1)))
    return sorted(set(ids))


def detect_gpus(run: Callable[..., subprocess.CompletedProcess[str]] = subprocess.run) -> list[int]:
    """GPUs on this host per ``nvidia-smi -L``; none when the tool is missing or fails.

    Blocking (a subprocess): call it through ``asyncio.to_thread`` from the event loop."""
    if shutil.which("nvidia-smi") is None:
        return []
    try:
        done = run(["nvidia-smi", "-L"], capture_output=True, text=True, timeout=15, check=False)
    except (OSError, subprocess.SubprocessError):
        return []
    return parse_nvidia_smi(done.stdout) if done.returncode == 0 else []


def resolve_setting(setting: GpuSetting,
                    detect: Callable[[], list[int]] = detect_gpus) -> list[int]:
    """The GPU ids a runtime may hand out: the configured list, or what ``nvidia-smi -L``
    shows for "auto". Blocking when it detects."""
    return detect() if setting == "auto" else list(setting)


def process_env(ids: Sequence[int], host_has_gpus: bool) -> dict[str, str]:
    """The environment that gives a local process exactly ``ids``, as a container's device
    request would. PCI_BUS_ID makes CUDA number devices the way nvidia-smi (and so the
    allocator) does; CUDA's default order (fastest first) may differ on mixed hosts. A replica
    given none sees none, on a host with GPUs: otherwise it would see, and could fill, the GPUs
    held by others."""
    if ids:
        return {"CUDA_VISIBLE_DEVICES": ",".join(map(str, ids)), "CUDA_DEVICE_ORDER": "PCI_BUS_ID"}
    return {"CUDA_VISIBLE_DEVICES": ""} if host_has_gpus else {}


def owner_name(service: str, version: str) -> str:
    """How errors name a version: its YAML path."""
    return f"services.{service}.versions.{version}"


class GpuAllocator:
    """Hands out GPU ids to replicas (keyed by replica id) and takes them back."""

    def __init__(self, available: Iterable[int]) -> None:
        self.available: tuple[int, ...] = tuple(sorted(set(available)))
        self._held: dict[str, tuple[int, ...]] = {}     # replica id -> ids

    def _taken(self) -> set[int]:
        return {i for ids in self._held.values() for i in ids}

    def free(self) -> list[int]:
        taken = self._taken()
        return [i for i in self.available if i not in taken]

    def held(self, replica_id: str) -> tuple[int, ...]:
        return self._held.get(replica_id, ())

    def allocate(self, replica_id: str, request: GpuRequest, *, owner: str) -> tuple[int, ...]:
        """Reserve ids for one replica; ``owner`` names the version in errors.

        Raises GpuUnavailable and reserves nothing when the request cannot be met."""
        if replica_id in self._held:
            raise RuntimeFailure(f"replica {replica_id} already holds GPUs {self._held[replica_id]}")
        ids = self._choose(request, owner)
        if ids:
            self._held[replica_id] = ids
        return ids

    def _choose(self, request: GpuRequest, owner: str) -> tuple[int, ...]:
        free = self.free()
        total = len(self.available)
        if request is None or request == 0:
            return ()
        if request == "all":
            if not self.available or len(free) < total:
                raise GpuUnavailable(owner, "all", free, total,
                                     "" if self.available else "no GPU on this host")
            return self.available
        if isinstance(request, int):
            if request < 0:
                raise RuntimeFailure(f"{owner}: gpus must be >= 0, got {request}")
            if request > len(free):
                raise GpuUnavailable(owner, request, free, total)
            return tuple(free[:request])
        wanted = tuple(sorted(set(request)))
        missing = [i for i in wanted if i not in self.available]
        if missing:
            raise GpuUnavailable(owner, len(wanted), free, total,
                                 f"GPU {', '.join(map(str, missing))} does not exist")
        busy = [i for i in wanted if i not in free]
        if busy:
            raise GpuUnavailable(owner, len(wanted), free, total,
                                 f"GPU {', '.join(map(str, busy))} is held by another replica")
        return wanted

    def reserve(self, replica_id: str, ids: Iterable[int]) -> None:
        """Record ids an existing (adopted) replica already uses, without any check: the
        container runs whether or not the books agree, so the books must follow it."""
        ids = tuple(sorted(set(ids)))
        if ids:
            self._held[replica_id] = ids

    def release(self, replica_id: str) -> None:
        """Give a stopped replica's ids back; unknown ids are ignored (stop is idempotent)."""
        self._held.pop(replica_id, None)


def demand(request: GpuRequest, available: int) -> int:
    """How many GPUs one replica with this request occupies."""
    if request is None:
        return 0
    if request == "all":
        return max(available, 1)
    if isinstance(request, int):
        return request
    return len(set(request))


def check_plan(versions: Iterable[tuple[str, str, int, GpuRequest]],
               available: Sequence[int]) -> list[Assignment]:
    """Fail before starting anything when the plan cannot fit: ``versions`` yields
    (service, version, replicas, gpus). Raises GpuUnavailable naming the first version that
    does not fit, counting the GPUs that the versions before it take. Returns the ids each
    GPU replica gets when they start in config order (what ``serve-gateway plan`` shows)."""
    alloc = GpuAllocator(available)
    total = len(alloc.available)
    assigned: list[Assignment] = []
    for service, version, replicas, request in versions:
        owner = owner_name(service, version)
        free_before = alloc.free()
        try:
            for n in range(replicas):
                ids = alloc.allocate(f"{service}/{version}/{n}", request, owner=owner)
                if ids:
                    assigned.append((service, version, n, ids))
        except GpuUnavailable as exc:
            detail = f"{replicas} replica(s) with gpus={request!r}"
            if exc.detail:
                detail += f"; {exc.detail}"
            raise GpuUnavailable(owner, demand(request, total) * replicas, free_before, total,
                                 detail) from None
    return assigned


def spec_demands(spec: Spec) -> Iterator[tuple[str, str, int, GpuRequest]]:
    """The (service, version, replicas, gpus) rows of a config, in config order, for check_plan."""
    for service_name, service in spec.services.items():
        for version_name, version in service.versions.items():
            yield service_name, version_name, version.replicas, version.resources.gpus


def check_spec(spec: Spec, available: Sequence[int],
               setting: str = "gateway.docker.gpus") -> list[Assignment]:
    """Refuse a config whose plan needs more GPUs than ``available`` holds, before anything
    starts: a ConfigError at the first version that does not fit, naming it and the counts.

    Pure; each runtime's ``check(spec)`` calls it with its GPU list (gateway start-up and
    config reload); ``setting`` names where that list comes from."""
    try:
        return check_plan(spec_demands(spec), available)
    except GpuUnavailable as exc:
        _, service, _, version = exc.owner.split(".", 3)     # owner_name()'s YAML path
        plural = "s" if exc.needed != 1 else ""
        message = f"{service}/{version} needs {exc.needed} GPU{plural} ({exc.detail})"
        if not exc.total:
            message += (f", but this gateway has no GPU ({setting} is empty, or "
                        "nvidia-smi -L finds none)")
        else:
            ids = ", ".join(map(str, sorted(set(available))))
            taken = exc.total - len(exc.free)
            message += f", but this gateway has {exc.total} (ids {ids})"
            if taken:
                message += f", {taken} of them taken by the versions above it"
        raise ConfigError([ConfigProblem(f"{exc.owner}.resources.gpus", message)]) from None


def runtime_setting(spec: Spec) -> tuple[str, GpuSetting]:
    """(YAML path, value) of the GPU list the config's runtime hands out."""
    g = spec.gateway
    if g.runtime == "docker":
        return "gateway.docker.gpus", g.docker.gpus
    return "gateway.process.gpus", g.process.gpus


def assignment_lines(spec: Spec, available: Sequence[int]) -> list[str]:
    """What ``serve-gateway plan`` shows: the ids each GPU replica gets when the config starts
    (in config order, as the runtime's allocator hands them out); [] when no version asks for
    GPUs. ConfigError as ``check_spec`` when the plan does not fit."""
    if not any(row[3] for row in spec_demands(spec)):
        return []
    name, setting = runtime_setting(spec)
    rows = check_spec(spec, available, setting=name)
    ids = ", ".join(map(str, sorted(set(available))))
    source = "nvidia-smi -L" if setting == "auto" else name
    lines = [f"GPUs ({spec.gateway.runtime} runtime; {ids} from {source}):"]
    env = "CUDA_VISIBLE_DEVICES" if spec.gateway.runtime == "process" else "device_ids"
    lines += [f"  {service}/{version} replica {n}: {env}={','.join(map(str, got))}"
              for service, version, n, got in rows]
    taken = {i for *_, got in rows for i in got}
    idle = [i for i in sorted(set(available)) if i not in taken]
    lines.append(f"  unassigned: {', '.join(map(str, idle)) or 'none'}")
    return lines
