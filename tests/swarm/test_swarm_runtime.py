"""SwarmRuntime against a real single-node swarm and the real serve-gateway-worker:dev image.
Swarm is checked through the `docker` CLI, independently of the SDK code under test; replicas
are reached from a container on the overlay (the host is not on it)."""

from __future__ import annotations

import json
import time
from pathlib import Path
from typing import Any

import pytest

from gateway.errors import RuntimeFailure
from gateway.runtimes.base import ExitKind, Replica, ReplicaSpec
from gateway.runtimes.swarm import SwarmRuntime
from gateway.spec.models import PlacementSpec, ResourcesSpec
from tests.docker.apitap import DockerApiTap
from tests.docker.cli import INSTANCE_LABEL, WORKER_IMAGE, adocker, docker_cli
from tests.swarm.conftest import labelled_services

pytestmark = [pytest.mark.swarm, pytest.mark.slow, pytest.mark.timeout(180)]


def spec(version: str = "v1", **resources: Any) -> ReplicaSpec:
    return ReplicaSpec(service="echo", version=version, revision="rev1", image=WORKER_IMAGE,
                       port=8000, env=(("ECHO_TAG", "swarm"),),
                       resources=ResourcesSpec.model_validate(resources))


def service(ref: str) -> dict[str, Any]:
    doc: list[dict[str, Any]] = json.loads(docker_cli("service", "inspect", ref))
    return doc[0]


async def from_overlay(network: str, instance: str, url: str) -> str:
    """GET ``url`` from a throwaway container on the overlay, as a gateway there would."""
    code = ("import urllib.request, sys; "
            f"print(urllib.request.urlopen({url!r}, timeout=5).read().decode())")
    return await adocker("run", "--rm", "--network", network, "--label",
                         f"{INSTANCE_LABEL}={instance}", WORKER_IMAGE, "python", "-c", code)


async def ready_from_overlay(network: str, instance: str, replica: Replica) -> None:
    end = time.monotonic() + 30
    while True:
        try:
            await from_overlay(network, instance, f"http://{replica.address}/ready")
            return
        except AssertionError:
            assert time.monotonic() < end, f"{replica.address} not ready on the overlay"


async def test_replica_is_its_own_service_reached_by_task_address(
        runtime: SwarmRuntime, instance: str, network: str) -> None:
    replica = await runtime.start(spec(cpus=0.5, memory="128MiB"))
    (sid,) = labelled_services(instance)
    doc = service(sid)
    s = doc["Spec"]
    assert s["Name"] == f"sgw-echo-v1-{replica.id}"
    assert s["Labels"][f"{INSTANCE_LABEL}"] == instance
    assert (s["Labels"]["serve-gateway.replica"], s["Labels"]["serve-gateway.revision"]) == \
        (replica.id, "rev1")
    assert s["Mode"] == {"Replicated": {"Replicas": 1}}
    assert s["EndpointSpec"]["Mode"] == "dnsrr"           # no VIP: the gateway balances
    assert s["TaskTemplate"]["RestartPolicy"]["Condition"] == "none"
    res = s["TaskTemplate"]["Resources"]
    assert res["Limits"] == res["Reservations"] == {"NanoCPUs": 500_000_000,
                                                     "MemoryBytes": 128 << 20}
    net = json.loads(docker_cli("network", "inspect", network))[0]
    assert net["Driver"] == "overlay" and net["Attachable"]
    # the replica's address is its task's IP on the overlay, and the node is this host
    (task,) = json.loads(docker_cli("inspect", docker_cli("service", "ps", "-q", sid)))
    ip = task["NetworksAttachments"][0]["Addresses"][0].split("/")[0]
    assert (replica.host, replica.port) == (ip, 8000)
    assert replica.node == docker_cli("info", "--format", "{{.Name}}")
    await ready_from_overlay(network, instance, replica)
    out = await from_overlay(network, instance, f"http://{replica.address}/ready")
    assert out is not None
    info = await runtime.stop(replica, grace=3)
    assert info.kind == ExitKind.STOPPED
    assert labelled_services(instance) == []


async def test_killed_task_is_seen_at_once_and_adopt_rebuilds_survivors(
        runtime: SwarmRuntime, instance: str, network: str) -> None:
    a = await runtime.start(spec())
    b = await runtime.start(spec())
    # a new runtime (a restarted controller) adopts both, same ids, addresses and node
    other = SwarmRuntime(instance=instance, network=network, poll_interval=30.0)
    try:
        adopted = {r.id: r for r in await other.adopt()}
        assert set(adopted) == {a.id, b.id}
        assert (adopted[a.id].address, adopted[a.id].node) == (a.address, a.node)
        assert adopted[a.id].spec.revision == "rev1"
    finally:
        await other.close()
    (task,) = json.loads(docker_cli("inspect", docker_cli(
        "service", "ps", "-q", f"sgw-echo-v1-{a.id}")))
    cid = task["Status"]["ContainerStatus"]["ContainerID"]
    waiting = time.monotonic()
    import asyncio
    waiter = asyncio.ensure_future(runtime.wait(a))
    await adocker("kill", cid)
    info = await asyncio.wait_for(waiter, 10)
    # seen through the container's events, not the (30 s) task poll
    assert time.monotonic() - waiting < 8
    assert info.kind == ExitKind.KILLED and info.code == 137
    await runtime.stop(a, grace=1)
    await runtime.stop(b, grace=1)
    assert labelled_services(instance) == []


async def test_gpus_and_placement_reach_the_swarm_api(tmp_path: Path, instance: str,
                                                      network: str) -> None:
    """``gpus: 1`` is a generic-resource reservation and placement goes to the task template;
    no node here advertises a GPU, so the start fails with Swarm's own reason and nothing is
    left behind."""
    async with DockerApiTap(str(tmp_path / "docker.sock")) as tap:
        rt = SwarmRuntime(instance=instance, network=network, base_url=tap.base_url,
                          gpu_kind="NVIDIA-GPU", unschedulable_after=2.0,
                          placement=PlacementSpec(preferences=("spread=node.labels.zone",)))
        try:
            pinned = spec(gpus=1, memory="64MiB")
            pinned = ReplicaSpec(**{**pinned.__dict__, "placement": PlacementSpec(
                constraints=("node.role==manager",))})
            with pytest.raises(RuntimeFailure, match="no node can run it: .*insufficient"):
                await rt.start(pinned)
        finally:
            await rt.close()
        (create,) = [json.loads(body) for method, path, body in tap.requests()
                     if method == "POST" and path.split("?")[0].endswith("/services/create")]
    task = create["TaskTemplate"]
    assert task["Resources"]["Reservations"]["GenericResources"] == [
        {"DiscreteResourceSpec": {"Kind": "NVIDIA-GPU", "Value": 1}}]
    assert task["Resources"]["Reservations"]["MemoryBytes"] == 64 << 20
    # the version's own placement replaces the runtime's default
    assert task["Placement"] == {"Constraints": ["node.role==manager"], "Preferences": []}
    assert labelled_services(instance) == []


async def test_up_against_a_daemon_in_no_swarm_says_what_to_do(tmp_path: Path) -> None:
    """A stand-in daemon (the host's own is in a swarm during these tests) that answers
    /version and /info as a daemon in no swarm does: `up` stops before anything starts."""
    import asyncio

    import yaml

    from tests.helpers import free_port, run_cli

    answers = {"/version": {"ApiVersion": "1.41", "Version": "20.10.24"},
               "/info": {"Name": "lonely", "Swarm": {"LocalNodeState": "inactive",
                                                    "ControlAvailable": False}}}

    async def daemon(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        while (head := await reader.readuntil(b"\r\n\r\n")):
            path = head.split(b" ")[1].decode().split("?")[0]
            key = "/" + path.rstrip("/").rsplit("/", 1)[-1]
            body = json.dumps(answers.get(key, {"message": "no"})).encode()
            status = b"200 OK" if key in answers else b"404 Not Found"
            writer.write(b"HTTP/1.1 " + status + b"\r\nContent-Type: application/json\r\n"
                         b"Content-Length: " + str(len(body)).encode() + b"\r\n\r\n" + body)
            await writer.drain()

    sock = str(tmp_path / "docker.sock")
    server = await asyncio.start_unix_server(daemon, sock)
    config = {"gateway": {"runtime": "swarm", "swarm": {"base_url": f"unix://{sock}"},
                          "listen": f"127.0.0.1:{free_port()}",
                          "admin": {"listen": f"127.0.0.1:{free_port()}"},
                          "state_dir": str(tmp_path / "state")},
              "services": {"echo": {"route": "/v1/echo",
                                    "versions": {"v1": {"image": WORKER_IMAGE}}}}}
    path = tmp_path / "swarm.yaml"
    path.write_text(yaml.safe_dump(config))
    try:
        code, _, err = await run_cli("up", path, timeout=60)
    finally:
        server.close()
    assert code == 1, err
    assert f"the Docker daemon at unix://{sock} is not a swarm manager (swarm state: " \
           "inactive): run `docker swarm init` there" in err
    assert "Traceback" not in err
