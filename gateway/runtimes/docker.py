"""Docker runtime: each replica is a container started through the Docker SDK.

The only module that imports ``docker``. Every SDK call is blocking, so each runs in a thread
(``asyncio.to_thread``) with the client's HTTP timeout: a daemon that is down or slow becomes a
RuntimeFailure, never a frozen loop.

- Containers carry labels (``serve-gateway.instance``, ``.service``, ``.version``,
  ``.revision``, ``.replica``, ``.port``, ``.gpus``): ``adopt()`` rebuilds replicas from them after
  a gateway restart, and two gateways sharing a daemon never touch each other's containers.
- Addresses: with no ``network`` the container port is published on 127.0.0.1 with an ephemeral
  host port; with a ``network`` (the gateway itself runs in a container on it) replicas are
  reached by their container address on that network.
- Exits are seen from one events stream (``docker_events.EventWatcher``), with polling while
  that stream is broken.
- Only images named in the config run, and only if the Docker host already has them: a pull from
  inside ``start()`` could take minutes, so it is the operator's step (``docker pull`` or
  ``scripts/docker-setup.sh``).
"""

from __future__ import annotations

import asyncio
import dataclasses
import logging
import math
import uuid
from collections.abc import Sequence
from typing import Any, Literal

import docker
import docker.errors
import docker.types

from gateway.errors import RuntimeFailure
from gateway.runtimes.base import ExitInfo, ExitKind, Replica, ReplicaSpec, log_tail
from gateway.runtimes.docker_attrs import (
    DEFAULT_PORT,
    L_INSTANCE,
    L_REPLICA,
    LOCALHOST,
    Bounded,
    address,
    container_name,
    exit_info,
    labels_for,
    replica_from,
    started_at,
    volume,
)
from gateway.runtimes.docker_client import (
    SDK_ERRORS,
    STREAM_ERRORS,
    DockerPlumbing,
    explain,
    inspect_container,
    until_ended,
)
from gateway.runtimes.docker_events import EventWatcher
from gateway.runtimes.gpus import GpuAllocator, check_spec, detect_gpus, owner_name
from gateway.spec.models import Spec
from gateway.tasks import cancel_and_wait, spawn

log = logging.getLogger("gateway.runtimes.docker")

_SDK_ERRORS = SDK_ERRORS
_STREAM_ERRORS = STREAM_ERRORS


class DockerRuntime(DockerPlumbing):
    """Runs replicas as Docker containers (see the module docstring).

    ``gpus`` is the list of GPU ids replicas may use, or "auto" to ask ``nvidia-smi -L``.
    ``state_dir`` is accepted for parity with the process runtime; Docker itself keeps each
    replica's state (labels) and logs (``docker logs``)."""

    name = "docker"

    def __init__(self, state_dir: str = ".serve-gateway", instance: str = "default",
                 network: str | None = None, base_url: str | None = None,
                 gpus: Sequence[int] | Literal["auto"] = "auto", *, timeout: float = 30.0,
                 poll_interval: float = 2.0) -> None:
        super().__init__(base_url, timeout)
        self.state_dir = state_dir
        self.instance = instance
        self.network = network
        self.poll_interval = poll_interval
        self._gpu_setting = gpus
        self._alloc: GpuAllocator | None = None
        self._containers: dict[str, str] = {}                 # replica id -> container id
        self._ended: dict[str, asyncio.Event] = {}            # replica id -> set once it is gone
        self._stopping: Bounded[bool] = Bounded()
        self._exits: Bounded[ExitInfo] = Bounded()
        # replica id -> the DeviceRequest sent to Docker (what tests and operators check)
        self.device_requests: Bounded[docker.types.DeviceRequest] = Bounded()
        self._watcher: EventWatcher | None = None
        self._poller: asyncio.Task[None] | None = None
        self._closed = False

    # -- plumbing ---------------------------------------------------------------------------

    async def _allocator(self) -> GpuAllocator:
        if self._alloc is None:
            setting = self._gpu_setting
            ids = await asyncio.to_thread(detect_gpus) if setting == "auto" else list(setting)
            self._alloc = self._alloc or GpuAllocator(ids)
        return self._alloc

    async def check(self, spec: Spec) -> None:
        """ConfigError when the plan needs more GPUs than this runtime has (``gpus``)."""
        check_spec(spec, (await self._allocator()).available)

    # -- start ------------------------------------------------------------------------------

    async def start(self, spec: ReplicaSpec) -> Replica:
        owner = owner_name(spec.service, spec.version)
        if not spec.image:
            raise RuntimeFailure(f"{owner}: the docker runtime needs an image")
        client = await self._docker()
        alloc = await self._allocator()
        rid = uuid.uuid4().hex[:12]
        request = list(spec.gpu_ids) if spec.gpu_ids else spec.resources.gpus
        gpu_ids = alloc.allocate(rid, request, owner=owner)
        spec = dataclasses.replace(spec, gpu_ids=gpu_ids)
        try:
            kwargs = self._create_args(spec, rid)
            attrs, (host, port) = await self._off_loop(
                f"start {owner}", self._create_and_start, client, kwargs, spec.port or DEFAULT_PORT)
        except BaseException:
            alloc.release(rid)
            raise
        self._containers[rid] = attrs["Id"]
        log.info("started %s (%s) at %s:%s", kwargs["name"], spec.image, host, port)
        return Replica(id=rid, spec=spec, host=host, port=port, started_at=started_at(attrs))

    def _create_args(self, spec: ReplicaSpec, rid: str) -> dict[str, Any]:
        cport = spec.port or DEFAULT_PORT
        env = dict(spec.env)
        env.update(PORT=str(cport), SGW_SERVICE=spec.service, SGW_VERSION=spec.version,
                   SGW_REPLICA_ID=rid, SGW_GATEWAY_INSTANCE=self.instance)
        args: dict[str, Any] = {
            "image": spec.image, "name": container_name(spec.service, spec.version, rid),
            "labels": labels_for(self.instance, spec, rid, cport), "environment": env,
            "detach": True, "volumes": [volume(v) for v in spec.volumes],
            # docker-init as PID 1 forwards SIGTERM to the worker and reaps its children.
            "init": True}
        if spec.command:
            args["command"] = [a.replace("{port}", str(cport)) for a in spec.command]
        if spec.workdir:
            args["working_dir"] = spec.workdir
        res = spec.resources
        if res.cpus is not None:
            args["nano_cpus"] = int(res.cpus * 1e9)
        if res.memory is not None:
            # memswap == memory: past its limit a replica is OOM-killed, not slowed by swapping.
            args["mem_limit"] = args["memswap_limit"] = int(res.memory)
        if res.shm_size is not None:
            args["shm_size"] = int(res.shm_size)
        if spec.gpu_ids:
            request = docker.types.DeviceRequest(
                driver="nvidia", device_ids=[str(i) for i in spec.gpu_ids], capabilities=[["gpu"]])
            self.device_requests[rid] = request
            args["device_requests"] = [request]
        if self.network:
            args["network"] = self.network
        else:
            args["ports"] = {f"{cport}/tcp": (LOCALHOST, None)}
        return args

    def _create_and_start(self, client: docker.DockerClient, kwargs: dict[str, Any],
                          cport: int) -> tuple[dict[str, Any], tuple[str, int]]:
        """Blocking. The started container's attrs and address; leaves nothing behind on failure."""
        name = kwargs["name"]
        try:
            container = client.containers.create(**kwargs)
        except docker.errors.ImageNotFound as exc:
            raise RuntimeFailure(f"image {kwargs['image']} is not on the Docker host: build or pull "
                                 "it first (scripts/docker-setup.sh builds the examples)") from exc
        try:
            container.start()
            container.reload()
            state = container.attrs["State"]
            if not state.get("Running"):
                logs = container.logs(tail=20).decode(errors="replace").strip()
                raise RuntimeFailure(f"container {name} exited at once (exit code "
                                     f"{state.get('ExitCode')}, oom={state.get('OOMKilled')}): {logs}")
            where = address(container.attrs, self.network, cport)
        except BaseException as exc:
            self._discard(container)
            if isinstance(exc, docker.errors.APIError):
                raise RuntimeFailure(f"container {name} could not start: {explain(exc)}") from exc
            raise
        attrs: dict[str, Any] = container.attrs
        return attrs, where

    def _discard(self, container: Any) -> None:
        """Blocking. Remove a container that failed to start (best effort)."""
        try:
            container.remove(force=True)
        except _SDK_ERRORS as exc:
            log.warning("could not remove failed container %s: %s", container.name, exc)

    # -- stop / wait ------------------------------------------------------------------------

    def _ref(self, replica: Replica) -> str:
        return self._containers.get(replica.id) or container_name(
            replica.spec.service, replica.spec.version, replica.id)

    async def stop(self, replica: Replica, grace: float) -> ExitInfo:
        """Stop and remove the container (also one that already ended by itself: the
        supervisor stops crashed replicas to clean them up). Returns how it ended."""
        rid = replica.id
        self._stopping[rid] = True
        client = await self._docker()
        ref = self._ref(replica)
        code = await self._off_loop(f"stop {ref}", self._stop_and_remove, client, ref, grace)
        info = self._exits.get(rid) or ExitInfo(ExitKind.STOPPED, code, "stopped by the gateway")
        self._finished(rid, info)
        self._containers.pop(rid, None)
        return info

    @staticmethod
    def _stop_and_remove(client: docker.DockerClient, ref: str, grace: float) -> int | None:
        """Blocking. SIGTERM, SIGKILL after ``grace`` (docker stop), then remove. Idempotent."""
        try:
            container = client.containers.get(ref)
        except docker.errors.NotFound:
            return None
        code = None
        try:
            if container.status == "exited":     # it ended by itself: its log goes with it
                tail = container.logs(tail=20).decode(errors="replace").rstrip()
                log.warning("removing ended container %s; its last log lines:\n%s",
                            container.name, tail or "(none)")
            container.stop(timeout=max(0, math.ceil(grace)))
            container.reload()
            code = container.attrs["State"].get("ExitCode")
            container.remove(force=True)
        except docker.errors.NotFound:
            pass
        except docker.errors.APIError as exc:
            if exc.status_code != 409:      # 409: a removal is already in progress
                raise
        return code

    def _finished(self, rid: str, info: ExitInfo) -> None:
        self._exits[rid] = info
        self.device_requests.pop(rid, None)
        if self._alloc is not None:
            self._alloc.release(rid)
        ended = self._ended.pop(rid, None)
        if ended is not None:
            ended.set()

    async def wait(self, replica: Replica) -> ExitInfo:
        rid = replica.id
        if rid in self._exits:
            return self._exits[rid]
        ended = self._ended.setdefault(rid, asyncio.Event())
        client = await self._docker()
        self._watch()
        info = await until_ended(lambda: self._exit_state(client, replica), ended,
                                 lambda: self._closed, self.poll_interval,
                                 f"docker runtime closed while waiting for {self._ref(replica)}")
        if rid not in self._exits:
            if info.kind != ExitKind.STOPPED and not info.log_tail:
                info = dataclasses.replace(info, log_tail=await asyncio.to_thread(
                    _logs_tail, client, self._ref(replica)))
            self._finished(rid, info)
        return info

    async def _exit_state(self, client: docker.DockerClient, replica: Replica) -> ExitInfo | None:
        """None while the container runs; else how it ended."""
        ref = self._ref(replica)
        attrs = await self._off_loop(f"inspect {ref}", inspect_container, client, ref)
        return self._exits.get(replica.id) or exit_info(attrs, replica.id in self._stopping)

    def _watch(self) -> None:
        if self._watcher is None:
            self._watcher = EventWatcher(
                self._new_client, {"label": f"{L_INSTANCE}={self.instance}", "type": "container"},
                self._on_end, self._on_broken, asyncio.get_running_loop(), _STREAM_ERRORS)
            self._watcher.start()

    def _on_end(self, attributes: dict[str, str]) -> None:
        ended = self._ended.get(attributes.get(L_REPLICA, ""))
        if ended is not None:
            ended.set()

    def _on_broken(self) -> None:
        if self._poller is None or self._poller.done():
            self._poller = spawn(self._poll(), name="docker-exit-poll")

    async def _poll(self) -> None:
        """While the events stream is down, look at each awaited container now and then."""
        while self._watcher is not None and not self._watcher.healthy:
            await asyncio.sleep(self.poll_interval)
            client = self._client
            if client is None:
                return
            for rid, ended in list(self._ended.items()):
                ref = self._containers.get(rid)
                if ref is None or ended.is_set():
                    continue
                try:
                    attrs = await asyncio.to_thread(inspect_container, client, ref)
                except _SDK_ERRORS:
                    continue                    # the daemon is down too: try again later
                if attrs is None or not (attrs.get("State") or {}).get("Running"):
                    ended.set()

    # -- adopt / close ----------------------------------------------------------------------

    async def adopt(self) -> list[Replica]:
        client = await self._docker()
        alloc = await self._allocator()
        found = await self._off_loop("list containers", self._list_and_prune, client)
        replicas = []
        for attrs in found:
            replica = replica_from(attrs, self.network)
            self._containers[replica.id] = attrs["Id"]
            alloc.reserve(replica.id, replica.spec.gpu_ids)
            replicas.append(replica)
        return replicas

    def _list_and_prune(self, client: docker.DockerClient) -> list[dict[str, Any]]:
        """Blocking. Attrs of our running containers; exited ones are removed."""
        running = []
        for container in client.containers.list(
                all=True, filters={"label": f"{L_INSTANCE}={self.instance}"}):
            if container.status == "running":
                running.append(container.attrs)
            else:
                log.info("removing ended container %s (%s)", container.name, container.status)
                self._discard(container)
        return running

    async def close(self) -> None:
        """Stop watching (pending wait() calls fail) and close the client; replicas keep running."""
        self._closed = True
        for ended in self._ended.values():
            ended.set()
        watcher, self._watcher = self._watcher, None
        await cancel_and_wait(self._poller)
        if watcher is not None:
            await asyncio.to_thread(watcher.close)
        await self._close_client()


def _logs_tail(client: docker.DockerClient, ref: str) -> tuple[str, ...]:
    """Blocking. An ended container's last log lines (why a model failed to load); () when
    Docker cannot give them."""
    try:
        return log_tail(client.api.logs(ref, tail=20))
    except _SDK_ERRORS:
        return ()
