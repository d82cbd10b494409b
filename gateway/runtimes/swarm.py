"""Swarm runtime: each replica is its own Docker Swarm service (replicas: 1), on an overlay.

Why one service per replica (and not one per version with replicas: N): on scale-in the gateway
chooses the replica that goes, drains it, and only then removes that replica's service; with
replicas: N Swarm would pick the task to kill, in flight or not. Restart policy is "none": a
task that ends is seen by the gateway (crash, OOM, kill), which replaces it with backoff as for
any runtime, and rollouts stay the gateway's own (each version's replicas are separate
services, so no Swarm rolling update ever runs).

- Services and their containers carry the docker runtime's labels (instance, service, version,
  revision, replica, port): ``adopt()`` rebuilds replicas from them after a controller restart,
  wherever that controller runs.
- Addresses: each task's own IP on ``network`` (an attachable overlay, created when missing;
  endpoint mode dnsrr, no virtual IP), so the gateway balances, limits, batches and probes per
  replica. The gateway must be on that network too: when it runs in a container it joins it.
- Spread: Swarm's ``spread=`` balances one service's tasks, so with one service per replica
  the runtime spreads a version's replicas itself and pins each to its value
  (swarm_spread.py); a pinned replica no node takes is started again where Swarm chooses.
- Task ends are seen two ways: the local daemon's container events (at once, for tasks on the
  gateway's own node) and a poll of the Swarm task list (every ``poll_interval``, any node).
"""

from __future__ import annotations

import asyncio
import logging
import os
import socket
import time
import uuid
from typing import Any

import docker
import docker.errors

from gateway.errors import RuntimeFailure, Unschedulable
from gateway.runtimes import swarm_calls
from gateway.runtimes.base import ExitInfo, ExitKind, Replica, ReplicaSpec
from gateway.runtimes.docker_attrs import DEFAULT_PORT, L_INSTANCE, L_REPLICA, Bounded
from gateway.runtimes.docker_client import (
    SDK_ERRORS,
    STREAM_ERRORS,
    DockerPlumbing,
    inspect_container,
    until_ended,
)
from gateway.runtimes.docker_events import EventWatcher
from gateway.runtimes.gpus import owner_name
from gateway.runtimes.swarm_attrs import (
    container_id,
    is_running,
    is_starting,
    latest_task,
    replica_from,
    service_create,
    service_name,
    task_address,
    task_error,
    task_exit,
    task_node,
    task_started,
    task_state,
)
from gateway.runtimes.swarm_journal import SwarmJournalStore
from gateway.runtimes.swarm_spread import Placed, choose, pin_constraints
from gateway.spec.models import PlacementSpec, Spec
from gateway.tasks import cancel_and_wait, spawn

log = logging.getLogger("gateway.runtimes.swarm")


class SwarmRuntime(DockerPlumbing):
    """Runs replicas as Swarm services (see the module docstring)."""

    name = "swarm"
    _fallback = "gateway.swarm.base_url"

    def __init__(self, state_dir: str = ".serve-gateway", instance: str = "default",
                 network: str = "serve-gateway", base_url: str | None = None,
                 placement: PlacementSpec | None = None, gpu_kind: str = "NVIDIA-GPU",
                 start_timeout: float = 120.0, stop_grace: float = 10.0, *,
                 timeout: float = 30.0, poll_interval: float = 1.0,
                 unschedulable_after: float = 10.0) -> None:
        super().__init__(base_url, timeout)
        self.state_dir = state_dir
        self.instance = instance
        self.network = network
        self.placement = placement or PlacementSpec()
        self.gpu_kind = gpu_kind
        self.start_timeout = start_timeout
        self.stop_grace = stop_grace
        self.poll_interval = poll_interval
        self.unschedulable_after = unschedulable_after
        self._services: dict[str, str] = {}                   # replica id -> service id
        self._placed: dict[str, Placed] = {}                  # replica id -> where, to spread
        self._ended: dict[str, asyncio.Event] = {}            # replica id -> set once it is gone
        self._stopping: Bounded[bool] = Bounded()
        self._exits: Bounded[ExitInfo] = Bounded()
        self._nodes: dict[str, str] = {}                      # node id -> hostname
        self._network_lock = asyncio.Lock()
        self._network_ready = False
        self._watcher: EventWatcher | None = None
        self._poller: asyncio.Task[None] | None = None
        self._closed = False

    async def check(self, spec: Spec) -> None:
        """RuntimeFailure unless the daemon is a swarm manager (the config rules are in
        spec/checks.py: an image per version, GPUs as a count)."""
        client = await self._docker()
        info = await self._off_loop("info", client.info)
        swarm = info.get("Swarm") or {}
        if swarm.get("LocalNodeState") != "active" or not swarm.get("ControlAvailable"):
            raise RuntimeFailure(
                f"the Docker daemon at {self._where()} is not a swarm manager (swarm state: "
                f"{swarm.get('LocalNodeState') or 'unknown'}): run `docker swarm init` there, or "
                "point gateway.swarm.base_url at a manager")

    def journal_store(self) -> SwarmJournalStore:
        """Rollout journals in the swarm (configs), where a controller restarted on another
        manager node finds them (control/rollout/store.py)."""
        return SwarmJournalStore(self._new_client, self.instance)

    # -- network ----------------------------------------------------------------------------

    async def _ensure_network(self, client: docker.DockerClient) -> None:
        async with self._network_lock:
            if not self._network_ready:
                await self._off_loop(f"network {self.network}", self._network, client)
                self._network_ready = True

    def _network(self, client: docker.DockerClient) -> None:
        """Blocking. Create the overlay when missing; join it when this gateway is a container."""
        try:
            net = client.networks.get(self.network)
        except docker.errors.NotFound:
            try:
                net = client.networks.create(self.network, driver="overlay", attachable=True,
                                             scope="swarm", labels={L_INSTANCE: self.instance})
                log.info("created overlay network %s", self.network)
            except docker.errors.APIError as exc:
                if exc.status_code != 409:          # 409: another gateway made it meanwhile
                    raise
                net = client.networks.get(self.network)
        attrs = net.attrs
        # a network just made has no driver in its attrs until the manager allocates it
        if attrs.get("Scope") != "swarm" or attrs.get("Driver") not in ("overlay", "") \
                or not attrs.get("Attachable"):
            raise RuntimeFailure(f"network {self.network} exists but is not an attachable "
                                 "overlay network: remove it, or name another in "
                                 "gateway.swarm.network")
        self._join(client, net)

    def _join(self, client: docker.DockerClient, net: Any) -> None:
        """Blocking. A gateway in a container (its hostname is its container id, Docker's
        default) joins the overlay, or it could not reach a single replica."""
        if not os.path.exists("/.dockerenv"):
            return
        attrs = inspect_container(client, socket.gethostname())
        if attrs is None:
            log.warning("in a container, but not one of this daemon's: not joining %s",
                        self.network)
            return
        joined = (attrs.get("NetworkSettings") or {}).get("Networks") or {}
        if self.network not in joined:
            net.connect(attrs["Id"])
            log.info("joined overlay network %s", self.network)

    # -- start ------------------------------------------------------------------------------

    async def start(self, spec: ReplicaSpec) -> Replica:
        owner = owner_name(spec.service, spec.version)
        if not spec.image:
            raise RuntimeFailure(f"{owner}: the swarm runtime needs an image")
        client = await self._docker()
        await self._ensure_network(client)
        where = spec.placement or self.placement
        nodes = await self._off_loop("list nodes", client.api.nodes) if where.preferences else []
        gpus = spec.resources.gpus if isinstance(spec.resources.gpus, int) else 0
        pins = choose(nodes, list(self._placed.values()), (spec.service, spec.version),
                      where.preferences, where.constraints, gpus, self.gpu_kind)
        try:
            rid, task = await self._launch(client, spec, pins)
        except Unschedulable as exc:
            if not pins:
                raise
            log.warning("%s: no node took it at %s (%s): letting Swarm place it", owner,
                        ", ".join(pin_constraints(pins)), exc)
            rid, task = await self._launch(client, spec, {})
        host = task_address(task, self.network)
        assert host is not None                     # _until_running waited for it
        node = await self._node(client, task)
        port = spec.port or DEFAULT_PORT
        log.info("started %s (%s) on %s at %s:%s", service_name(spec.service, spec.version, rid),
                 spec.image, node, host, port)
        return Replica(id=rid, spec=spec, host=host, port=port, started_at=task_started(task),
                       node=node)

    async def _launch(self, client: docker.DockerClient, spec: ReplicaSpec,
                      pins: dict[str, str]) -> tuple[str, dict[str, Any]]:
        """Create one replica's service (pinned by ``pins``) and wait until its task runs; on
        any failure the service is removed again."""
        rid = uuid.uuid4().hex[:12]
        # counted before the first await, so that starts running at once spread too
        self._placed[rid] = Placed((spec.service, spec.version), None, pins)
        body = service_create(spec, rid, instance=self.instance, network=self.network,
                              default_placement=self.placement, gpu_kind=self.gpu_kind,
                              stop_grace=self.stop_grace, pins=pin_constraints(pins))
        name = body["name"]
        try:
            sid = await self._off_loop(f"create service {name}", swarm_calls.create, client, body)
        except BaseException:
            self._placed.pop(rid, None)
            raise
        self._services[rid] = sid
        try:
            task = await self._until_running(client, sid, name)
        except BaseException:
            self._services.pop(rid, None)
            self._placed.pop(rid, None)
            await asyncio.shield(self._off_loop(f"remove service {name}", swarm_calls.remove, client, sid))
            raise
        self._placed[rid] = Placed((spec.service, spec.version), task_node(task), pins)
        return rid, task

    async def _until_running(self, client: docker.DockerClient, sid: str,
                             name: str) -> dict[str, Any]:
        """The service's task once it runs and has its overlay address. A task that ends first
        (image missing on the node ...) or that no node can take for ``unschedulable_after``
        (constraints, GPUs) fails the start with Swarm's own reason."""
        end = time.monotonic() + self.start_timeout
        unplaced_since: float | None = None
        while True:
            task = latest_task(await self._off_loop(f"tasks of {name}", swarm_calls.tasks, client, sid))
            now = time.monotonic()
            if task is not None:
                if is_running(task) and task_address(task, self.network):
                    return task
                if not is_running(task) and not is_starting(task):
                    raise RuntimeFailure(f"service {name} could not start: task "
                                         f"{task_state(task)}: {task_error(task)}")
                if task_state(task) == "pending" and (task.get("Status") or {}).get("Err"):
                    unplaced_since = unplaced_since or now
                    if now - unplaced_since >= self.unschedulable_after:
                        raise Unschedulable(f"service {name}: no node can run it: "
                                            f"{task_error(task)}")
            if now > end:
                state = task_state(task) if task else "no task"
                raise RuntimeFailure(f"service {name} not running after "
                                     f"{self.start_timeout:.0f}s ({state})")
            await asyncio.sleep(0.2)

    async def _node(self, client: docker.DockerClient, task: dict[str, Any]) -> str | None:
        nid = task_node(task) or ""
        if nid and nid not in self._nodes:
            doc = await self._off_loop(f"node {nid}", client.api.inspect_node, nid)
            self._nodes[nid] = str((doc.get("Description") or {}).get("Hostname") or nid[:12])
        return self._nodes.get(nid)

    # -- stop / wait ------------------------------------------------------------------------

    def _ref(self, replica: Replica) -> str:
        return self._services.get(replica.id) or service_name(
            replica.spec.service, replica.spec.version, replica.id)

    async def stop(self, replica: Replica, grace: float) -> ExitInfo:
        """Stop the task's container (SIGTERM, SIGKILL after ``grace``) when it is on this
        node, then remove the service (elsewhere Swarm stops it with the service's grace)."""
        rid = replica.id
        self._stopping[rid] = True
        client = await self._docker()
        ref = self._ref(replica)
        code = await self._off_loop(f"stop {ref}", swarm_calls.stop_and_remove, client, ref, grace)
        info = self._exits.get(rid) or ExitInfo(ExitKind.STOPPED, code, "stopped by the gateway")
        self._finished(rid, info)
        self._services.pop(rid, None)
        return info

    def _finished(self, rid: str, info: ExitInfo) -> None:
        self._exits[rid] = info
        self._placed.pop(rid, None)
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
                                 lambda: self._closed, min(self.poll_interval, 0.2),
                                 f"swarm runtime closed while waiting for {self._ref(replica)}")
        if rid not in self._exits:
            self._finished(rid, info)
        return info

    async def _exit_state(self, client: docker.DockerClient, replica: Replica) -> ExitInfo | None:
        """None while the task runs; else how it ended (with its last log lines)."""
        ref = self._ref(replica)
        task = latest_task(await self._off_loop(f"tasks of {ref}", swarm_calls.tasks, client, ref))
        stopping = replica.id in self._stopping
        if task is not None and (is_running(task) or is_starting(task)):
            return None
        cid = container_id(task) if task else None
        attrs = await self._off_loop(f"inspect {cid}", inspect_container, client, cid) if cid else None
        oom = bool(((attrs or {}).get("State") or {}).get("OOMKilled"))
        info = self._exits.get(replica.id) or task_exit(task, stopping, oom)
        if info is not None and info.kind != ExitKind.STOPPED and not info.log_tail:
            info = ExitInfo(info.kind, info.code, info.detail,
                            await asyncio.to_thread(swarm_calls.logs_tail, client, ref))
        return info

    def _watch(self) -> None:
        if self._watcher is None:
            self._watcher = EventWatcher(
                self._new_client, {"label": f"{L_INSTANCE}={self.instance}", "type": "container"},
                self._on_end, lambda: None, asyncio.get_running_loop(), STREAM_ERRORS)
            self._watcher.start()
        if self._poller is None or self._poller.done():
            self._poller = spawn(self._poll(), name="swarm-task-poll")

    def _on_end(self, attributes: dict[str, str]) -> None:
        ended = self._ended.get(attributes.get(L_REPLICA, ""))
        if ended is not None:
            ended.set()

    async def _poll(self) -> None:
        """Tasks on other nodes send no local events: one task list per ``poll_interval`` finds
        the awaited replicas whose task is no longer running (or whose service is gone)."""
        while not self._closed:
            await asyncio.sleep(self.poll_interval)
            client = self._client
            if client is None or not self._ended:
                continue
            try:
                tasks = await asyncio.to_thread(
                    client.api.tasks, {"label": f"{L_INSTANCE}={self.instance}"})
            except SDK_ERRORS as exc:
                log.debug("listing tasks: %s", exc)
                continue                            # the manager is away: look again later
            by_service: dict[str, list[dict[str, Any]]] = {}
            for task in tasks:
                by_service.setdefault(str(task.get("ServiceID")), []).append(task)
            for rid, ended in list(self._ended.items()):
                task = latest_task(by_service.get(self._services.get(rid, ""), []))
                if task is None or not (is_running(task) or is_starting(task)):
                    ended.set()

    # -- adopt / close ----------------------------------------------------------------------

    async def adopt(self) -> list[Replica]:
        client = await self._docker()
        await self._ensure_network(client)
        found = await self._off_loop("list services", self._list_and_prune, client)
        replicas = []
        for service, task in found:
            replica = replica_from(service, task, self.network, await self._node(client, task))
            self._services[replica.id] = str(service["ID"])
            self._placed[replica.id] = Placed((replica.spec.service, replica.spec.version),
                                              task_node(task))
            replicas.append(replica)
        return replicas

    def _list_and_prune(self, client: docker.DockerClient
                        ) -> list[tuple[dict[str, Any], dict[str, Any]]]:
        """Blocking. Our services whose task runs, with that task; the others are removed."""
        label = {"label": f"{L_INSTANCE}={self.instance}"}
        tasks: dict[str, list[dict[str, Any]]] = {}
        for task in client.api.tasks(filters=label):
            tasks.setdefault(str(task.get("ServiceID")), []).append(task)
        running = []
        for service in client.api.services(filters=label):
            task = latest_task(tasks.get(str(service["ID"]), []))
            if task is not None and is_running(task) and task_address(task, self.network):
                running.append((service, task))
            else:
                log.info("removing service %s (task %s)", service["Spec"].get("Name"),
                         task_state(task) if task else "none")
                swarm_calls.remove(client, str(service["ID"]))
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
