"""Gateways on many nodes: `docker stack deploy -c deploy/stack.yml` on a Swarm of three
docker-in-docker nodes (conftest.py), then one node is lost under load.

What a user relies on: the stack file brings up the controller (on the manager) and a data-plane
gateway on every node; replicas spread over the nodes; when a node vanishes, its replicas are
replaced on the surviving nodes and the surviving gateways keep serving, with no failed requests
beyond those that were in flight on the lost node. All traffic goes to node addresses on the
cluster's own bridge network.
"""

from __future__ import annotations

import asyncio
import os
import subprocess
import time
from dataclasses import dataclass, field
from typing import Any

import aiohttp
import pytest

from gateway.spec import load_spec
from tests.docker.cli import INSTANCE_LABEL
from tests.helpers import REPO_ROOT, wait_until
from tests.swarm_multi.cluster import DOCKERD_PORT, Cluster
from tests.swarm_multi.conftest import GATEWAY_IMAGE

pytestmark = [pytest.mark.docker, pytest.mark.swarm, pytest.mark.slow, pytest.mark.timeout(900)]

STACK_FILE = REPO_ROOT / "deploy" / "stack.yml"
OFFLINE = REPO_ROOT / "tests" / "swarm_multi" / "stack-offline.yml"
TOKEN = "multinode-t0ken"
AUTH = {"Authorization": f"Bearer {TOKEN}"}
STACK = "sgw"
CLIENTS = 4


def stack_deploy(cluster: Cluster) -> None:
    """The documented command, from this machine's CLI against the manager's daemon."""
    env = {**os.environ, "SGW_IMAGE": GATEWAY_IMAGE, "SGW_ADMIN_TOKEN": TOKEN,
           "DOCKER_HOST": f"tcp://{cluster.ips[cluster.manager]}:{DOCKERD_PORT}"}
    done = subprocess.run(["docker", "stack", "deploy", "--resolve-image", "never",
                           "-c", str(STACK_FILE), "-c", str(OFFLINE), STACK],
                          env=env, capture_output=True, text=True, check=False, timeout=120)
    assert done.returncode == 0, done.stdout + done.stderr


@dataclass
class Timeline:
    """Closed-loop load with the start time and outcome of every request."""
    urls: list[str]
    answers: list[tuple[float, float, str, int, str]] = field(default_factory=list)
    stopping: bool = False

    async def client(self, session: aiohttp.ClientSession, i: int) -> None:
        n = i
        while not self.stopping:
            url = self.urls[n % len(self.urls)]
            n += 1
            began = time.monotonic()
            try:
                async with session.post(url, data=b'{"x": 1}') as r:
                    text = await r.text()
                    self.answers.append((began, time.monotonic(), url, r.status, text[:200]))
            except (aiohttp.ClientError, TimeoutError) as exc:
                self.answers.append((began, time.monotonic(), url, 0, repr(exc)))
            await asyncio.sleep(0.01)

    def failures(self) -> list[tuple[float, float, str, int, str]]:
        return [a for a in self.answers if not 200 <= a[3] < 300]


async def status(session: aiohttp.ClientSession, admin: str) -> dict[str, Any]:
    async with session.get(f"{admin}/status", headers=AUTH) as r:
        assert r.status == 200, await r.text()
        doc: dict[str, Any] = await r.json()
        return doc


def ready_nodes(doc: dict[str, Any]) -> list[str]:
    """The node of every ready echo replica, as the controller's /status shows it."""
    version = doc["services"]["echo"]["versions"]["v1"]
    return sorted(r["node"] for r in version["replicas"] if r["state"] == "ready")


_deployed: set[str] = set()


async def get_ok(session: aiohttp.ClientSession, url: str) -> bool:
    try:
        async with session.get(url, timeout=aiohttp.ClientTimeout(total=3)) as r:
            return r.status == 200
    except (aiohttp.ClientError, TimeoutError):
        return False


async def stack_ready(cluster: Cluster, session: aiohttp.ClientSession) -> str:
    """Deploy the stack once per cluster; wait until the controller, one ready replica per node
    and a data plane on every node serve. Returns the controller's admin URL."""
    if cluster.name not in _deployed:
        stack_deploy(cluster)
        _deployed.add(cluster.name)
    admin = f"http://{cluster.ips[cluster.manager]}:8081"
    try:
        await wait_until(lambda: get_ok(session, f"{admin}/healthz"), 240,
                         "the controller's /healthz")
        # spread=node.id: one replica on each of the three nodes, all ready
        async def spread() -> bool:
            return ready_nodes(await status(session, admin)) == sorted(cluster.nodes)
        await wait_until(spread, 240, "3 ready echo replicas, one per node", interval=0.5)
        # a data-plane gateway on every node, healthy, serving through the replicas
        for node in cluster.nodes:
            await wait_until(lambda n=node: get_ok(session, f"http://{cluster.ips[n]}:8082/"),
                             120, f"the data plane on {node} healthy")
    except AssertionError as exc:
        raise AssertionError(f"{exc}\n{await asyncio.to_thread(diagnose, cluster)}") from None
    for node in cluster.nodes:
        async with session.post(f"http://{cluster.ips[node]}:8080/v1/echo", data=b'{"x": 1}') as r:
            assert r.status == 200 and (await r.json()) == {"predictions": [{"x": 1}]}
    doc = await status(session, admin)
    names = {p.get("name") for p in doc.get("dataplanes", [])}
    assert names >= {f"dp-{n}" for n in cluster.nodes}, doc.get("dataplanes")

    # the controller (workers 0) serves nothing: the three nodes share each replica's limits
    async def thirds() -> bool:
        planes = (await status(session, admin)).get("dataplanes", [])
        return sorted(tuple(p["share"]) for p in planes) == [(0, 3), (1, 3), (2, 3)]
    await wait_until(thirds, 15, "each node's data plane keeping a third of each limit")
    return admin


def diagnose(cluster: Cluster) -> str:
    """What the swarm says, for a failure message: nodes, services, the stack's tasks and the
    controller's last log lines."""
    def docker(*args: str) -> str:
        done = cluster.docker(cluster.manager, *args, check=False, timeout=30)
        return (done.stdout + done.stderr).strip()
    ctl = docker("ps", "-aq", "--filter", f"label=com.docker.swarm.service.name={STACK}_controller")
    parts = [docker("node", "ls"), docker("service", "ls"),
             docker("stack", "ps", "--no-trunc", "--format",
                    "{{.Name}} {{.Node}} {{.CurrentState}} {{.Error}}", STACK)]
    if ctl:
        parts.append(docker("logs", "--tail", "30", ctl.split()[0]))
    return "\n".join(parts)


def dataplane_epochs(doc: dict[str, Any]) -> dict[str, str]:
    return {p["name"]: (p.get("snapshot") or [None])[0] for p in doc.get("dataplanes", [])
            if str(p.get("name", "")).startswith("dp-")}


async def test_data_planes_serve_on_while_the_controller_is_killed_and_restarted(
        cluster: Cluster) -> None:
    async with aiohttp.ClientSession(timeout=aiohttp.ClientTimeout(total=60)) as session:
        admin = await stack_ready(cluster, session)
        before = await status(session, admin)
        epoch = before["snapshot"][0]
        replicas = sorted(r["id"] for r in before["services"]["echo"]["versions"]["v1"]["replicas"])
        load = Timeline([f"http://{cluster.ips[n]}:8080/v1/echo" for n in cluster.nodes])
        clients = [asyncio.create_task(load.client(session, i)) for i in range(CLIENTS)]
        try:
            await asyncio.sleep(2)
            # SIGKILL: the controller stops nothing on its way out; Swarm restarts its task
            (ctl,) = cluster.docker(cluster.manager, "ps", "-q", "--filter",
                                    f"label=com.docker.swarm.service.name={STACK}_controller"
                                    ).stdout.split()
            killed_at = time.monotonic()
            await asyncio.to_thread(cluster.docker, cluster.manager, "kill", ctl)
            async def gone() -> bool:
                return not await get_ok(session, f"{admin}/healthz")
            await wait_until(gone, 10, "the controller gone")
            # meanwhile every node still tells its load balancer it serves
            for node in cluster.nodes:
                assert await get_ok(session, f"http://{cluster.ips[node]}:8082/"), node

            # a new controller (a new epoch) adopts the same replicas, and every data plane
            # follows its snapshots again
            async def adopted() -> bool:
                try:
                    doc = await status(session, admin)
                except (aiohttp.ClientError, TimeoutError, AssertionError):
                    return False
                v = doc["services"]["echo"]["versions"]["v1"]
                return (doc["snapshot"][0] != epoch and v["ready"] == 3
                        and sorted(r["id"] for r in v["replicas"]) == replicas
                        and set(dataplane_epochs(doc).values()) == {doc["snapshot"][0]}
                        and len(dataplane_epochs(doc)) == len(cluster.nodes))
            await wait_until(adopted, 120, "a restarted controller adopting the replicas, "
                             "followed by every data plane", interval=0.5)
            back_at = time.monotonic()
            await asyncio.sleep(2)
        finally:
            load.stopping = True
            await asyncio.gather(*clients)
    during = [a for a in load.answers if killed_at < a[0] < back_at]
    print(f"\ncontroller away until adopted and followed: {back_at - killed_at:.1f}s, "
          f"{len(during)} requests meanwhile, "
          f"{len(load.failures())} failed of {len(load.answers)}")
    assert len(during) > 20, len(during)
    assert not load.failures(), load.failures()[:10]


async def test_stack_on_three_nodes_survives_losing_one_under_load(cluster: Cluster) -> None:
    manager, *workers = cluster.nodes
    async with aiohttp.ClientSession(timeout=aiohttp.ClientTimeout(total=60)) as session:
        admin = await stack_ready(cluster, session)

        # load on the gateways of the two nodes that stay, then the third node vanishes
        lost = workers[-1]
        load = Timeline([f"http://{cluster.ips[n]}:8080/v1/echo" for n in cluster.nodes if n != lost])
        clients = [asyncio.create_task(load.client(session, i)) for i in range(CLIENTS)]
        try:
            await asyncio.sleep(3)
            assert not load.failures(), load.failures()
            killed_at = time.monotonic()
            await asyncio.to_thread(cluster.kill, lost)

            # the controller's probes give its replica up, and every data plane stops using it
            async def dropped() -> bool:
                return lost not in ready_nodes(await status(session, admin))
            await wait_until(dropped, 60, f"the replica on {lost} given up", interval=0.2)
            dropped_at = time.monotonic()
            # it is replaced on a surviving node: three ready again, none on `lost`
            async def replaced() -> bool:
                nodes = ready_nodes(await status(session, admin))
                return len(nodes) == 3 and lost not in nodes
            await wait_until(replaced, 240, f"the replica of {lost} replaced elsewhere", interval=0.5)
            replaced_at = time.monotonic()
            # and the surviving gateways serve on, over the new layout
            await asyncio.sleep(5)
        finally:
            load.stopping = True
            await asyncio.gather(*clients)

    served_after = [a for a in load.answers if a[0] > replaced_at]
    failures = load.failures()
    print(f"\n{len(load.answers)} requests, {len(failures)} failed; replica given up "
          f"{dropped_at - killed_at:.1f}s and replaced {replaced_at - killed_at:.1f}s after the "
          f"kill; {len(served_after)} served after; failures began at "
          f"{[round(a[0] - killed_at, 2) for a in failures]}s, statuses {[a[3] for a in failures]}")
    assert len(served_after) > 20, f"too little load after the replacement: {len(served_after)}"
    # Only requests already on their way to the lost node's replica may fail: those sent before
    # the data planes gave it up (a fresh connect to it times out and is retried elsewhere, but a
    # request written on a kept-alive connection to it waits out the request timeout: 504).
    # Nothing before the kill, nothing once the replica is given up, nothing refused by a
    # gateway, and at most a few per client (each has one request at a time).
    assert all(killed_at - 1 < a[0] < dropped_at + 2 for a in failures), failures
    assert all(a[3] in (502, 504) for a in failures), failures
    assert len(failures) <= 2 * CLIENTS, failures


async def _ready(cluster: Cluster) -> None:
    if cluster.name in _deployed:      # as the tests above left it (maybe less a node)
        return
    async with aiohttp.ClientSession(timeout=aiohttp.ClientTimeout(total=60)) as session:
        await stack_ready(cluster, session)


def test_stack_rm_stops_the_replicas_the_controller_started(cluster: Cluster) -> None:
    """`docker stack rm` is the way down: the controller, stopped, stops its replica services
    (they are not stack services), and nothing of the instance is left on the swarm. The overlay
    outlives the first `stack rm` while replicas are still attached to it (Swarm refuses to
    remove a network in use); a second one, once they are gone, removes it (docs/scale-out.md)."""
    asyncio.run(_ready(cluster))
    g = load_spec(REPO_ROOT / "config" / "swarm-stack.yaml").gateway
    assert cluster.docker(cluster.manager, "service", "ls", "-q", "--filter",
                          f"label={INSTANCE_LABEL}={g.instance}").stdout.split()
    env = {**os.environ, "DOCKER_HOST": f"tcp://{cluster.ips[cluster.manager]}:{DOCKERD_PORT}"}

    def stack_rm() -> subprocess.CompletedProcess[str]:
        return subprocess.run(["docker", "stack", "rm", STACK], env=env, capture_output=True,
                              text=True, check=False, timeout=120)
    first = stack_rm()
    assert first.returncode == 0 or "in use by service" in first.stderr + first.stdout, first

    def services() -> list[str]:
        return cluster.docker(cluster.manager, "service", "ls", "--format", "{{.Name}}").stdout.split()
    cluster.wait(lambda: not services(), 90, "no service left on the swarm (stack and replicas)")
    second = stack_rm()
    assert second.returncode == 0, second.stdout + second.stderr

    def networks() -> list[str]:
        return cluster.docker(cluster.manager, "network", "ls", "--format", "{{.Name}}").stdout.split()
    cluster.wait(lambda: g.swarm.network not in networks(), 30, f"network {g.swarm.network} removed")
