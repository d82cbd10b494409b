"""The swarm runtime's pure parts: the exact service definition a replica is created with
(resources, GPUs as a generic resource, placement, no VIP, no Swarm restarts), names Swarm
accepts, how a task's end is read, and the config rules of the swarm runtime."""

from __future__ import annotations

from typing import Any

import pytest

from gateway.errors import ConfigError
from gateway.runtimes.base import ExitKind, ReplicaSpec
from gateway.runtimes.swarm_attrs import (
    replica_from,
    service_create,
    service_name,
    task_address,
    task_exit,
)
from gateway.spec import parse_spec
from gateway.spec.models import PlacementSpec, ResourcesSpec, VersionSpec

DEFAULT = PlacementSpec(constraints=("node.role==worker",))


def body(**kw: Any) -> dict[str, Any]:
    spec = ReplicaSpec(service="mlp", version="v1", revision="r1", image="img:1", port=9000,
                       env=(("A", "1"),), command=("serve", "--port", "{port}"),
                       volumes=("/models:/m:ro", "cache:/cache"), **kw)
    return service_create(spec, "abc123", instance="prod", network="sgw-net",
                          default_placement=DEFAULT, gpu_kind="NVIDIA-GPU", stop_grace=7.5)


def test_a_replica_is_one_service_with_one_task_reached_without_a_vip() -> None:
    b = body()
    assert b["name"] == "sgw-mlp-v1-abc123"
    assert b["mode"] == {"Replicated": {"Replicas": 1}}
    assert b["endpoint_spec"] == {"Mode": "dnsrr"}
    labels = b["labels"]
    assert (labels["serve-gateway.instance"], labels["serve-gateway.service"],
            labels["serve-gateway.version"], labels["serve-gateway.revision"],
            labels["serve-gateway.replica"], labels["serve-gateway.port"]) == \
        ("prod", "mlp", "v1", "r1", "abc123", "9000")
    task = b["task_template"]
    assert task["RestartPolicy"] == {"Condition": "none"}     # the gateway restarts replicas
    assert task["Networks"] == [{"Target": "sgw-net"}]
    c = task["ContainerSpec"]
    assert c["Args"] == ["serve", "--port", "9000"] and c["Init"] is True
    assert c["Labels"] == labels                 # container events carry the replica id
    assert c["StopGracePeriod"] == 7_500_000_000
    assert {"A=1", "PORT=9000", "SGW_REPLICA_ID=abc123", "SGW_GATEWAY_INSTANCE=prod"} <= \
        set(c["Env"])
    assert c["Mounts"] == [
        {"Type": "bind", "Source": "/models", "Target": "/m", "ReadOnly": True},
        {"Type": "volume", "Source": "cache", "Target": "/cache", "ReadOnly": False}]
    assert task["Placement"] == {"Constraints": ["node.role==worker"], "Preferences": []}


def test_resources_are_limits_and_reservations_and_gpus_a_generic_resource() -> None:
    b = body(resources=ResourcesSpec(cpus=1.5, memory="2GiB", shm_size="1GiB", gpus=2),
             placement=PlacementSpec(constraints=("node.labels.gpu==a100",),
                                     preferences=("spread=node.labels.zone",)))
    task = b["task_template"]
    assert task["Resources"]["Limits"] == {"NanoCPUs": 1_500_000_000, "MemoryBytes": 2 << 30}
    assert task["Resources"]["Reservations"] == {
        "NanoCPUs": 1_500_000_000, "MemoryBytes": 2 << 30,
        "GenericResources": [{"DiscreteResourceSpec": {"Kind": "NVIDIA-GPU", "Value": 2}}]}
    assert {"Type": "tmpfs", "Target": "/dev/shm", "TmpfsOptions": {"SizeBytes": 1 << 30}} in \
        task["ContainerSpec"]["Mounts"]
    # the version's placement replaces the runtime's default
    assert task["Placement"] == {"Constraints": ["node.labels.gpu==a100"],
                                 "Preferences": [{"Spread": {"SpreadDescriptor":
                                                             "node.labels.zone"}}]}


def test_service_names_are_dns_labels_that_keep_the_replica_id() -> None:
    name = service_name("my_svc.x" * 10, "v1.abcdef", "0123456789ab")
    assert len(name) <= 63 and name.endswith("-0123456789ab")
    assert all(ch.isalnum() or ch == "-" for ch in name) and not name.startswith("-")


def task(state: str, code: int | None = None, err: str = "") -> dict[str, Any]:
    status: dict[str, Any] = {"State": state, "Err": err,
                              "Timestamp": "2026-01-02T03:04:05.123456789Z"}
    if code is not None:
        status["ContainerStatus"] = {"ContainerID": "c1", "ExitCode": code}
    return {"Status": status, "Version": {"Index": 3}, "NodeID": "n1",
            "NetworksAttachments": [{"Network": {"ID": "net1", "Spec": {"Name": "sgw-net"}},
                                     "Addresses": ["10.0.1.7/24"]}]}


@pytest.mark.parametrize(("t", "stopping", "oom", "kind", "code"), [
    (task("running"), False, False, None, None),
    (task("preparing"), False, False, None, None),
    (task("failed", 137), False, False, ExitKind.KILLED, 137),
    (task("failed", 137), False, True, ExitKind.OOM, 137),
    (task("failed", 1), False, False, ExitKind.EXITED, 1),
    (task("complete", 0), True, False, ExitKind.STOPPED, 0),
    (task("rejected", err="No such image: x"), False, False, ExitKind.EXITED, None),
    # its node was lost: Swarm wants it shut down, the last state reported stays "running"
    ({**task("running"), "DesiredState": "shutdown"}, False, False, ExitKind.EXITED, None),
    (None, False, False, ExitKind.EXITED, None),        # its service was removed
    (None, True, False, ExitKind.STOPPED, None),
])
def test_how_a_task_ended(t: dict[str, Any] | None, stopping: bool, oom: bool,
                          kind: ExitKind | None, code: int | None) -> None:
    info = task_exit(t, stopping, oom)
    if kind is None:
        assert info is None
    else:
        assert info is not None and (info.kind, info.code) == (kind, code)
    if t is not None and t["Status"]["State"] == "rejected":
        assert info is not None and "No such image" in info.detail


def test_address_and_adoption_from_task_and_labels() -> None:
    t = task("running")
    assert task_address(t, "sgw-net") == task_address(t, "net1") == "10.0.1.7"
    assert task_address(t, "other") is None
    b = body(resources=ResourcesSpec(gpus=1))
    service = {"ID": "s1", "Spec": {"Name": b["name"], "Labels": b["labels"],
                                    "TaskTemplate": b["task_template"]}}
    replica = replica_from(service, t, "sgw-net", "node-a")
    assert (replica.id, replica.address, replica.node) == ("abc123", "10.0.1.7:9000", "node-a")
    assert (replica.spec.service, replica.spec.revision, replica.reserved_gpus) == \
        ("mlp", "r1", 1)


SWARM = """\
gateway: {{runtime: swarm}}
services:
  echo:
    route: /v1/echo
    versions:
      v1:
{version}
"""


def problems(version: str) -> list[str]:
    with pytest.raises(ConfigError) as info:
        parse_spec(SWARM.format(version=version), "gw.yaml")
    return [str(p) for p in info.value.problems]


def test_swarm_config_rules_name_the_field() -> None:
    assert problems("        command: serve --port {port}") == [
        "services.echo.versions.v1: the swarm runtime needs an 'image' (line 6)"]
    (gpus,) = problems("        image: x\n        resources: {gpus: [0, 1]}")
    assert gpus.startswith("services.echo.versions.v1.resources.gpus: the swarm runtime "
                           "reserves a count")
    (pref,) = problems("        image: x\n        placement: {preferences: [binpack]}")
    assert pref.startswith("services.echo.versions.v1.placement.preferences.0")
    spec = parse_spec(SWARM.format(version="        image: x\n        resources: {gpus: 2}"),
                      "gw.yaml")
    assert spec.gateway.swarm.network == "serve-gateway"
    with pytest.raises(ConfigError, match="placement applies to the swarm runtime only"):
        parse_spec(SWARM.replace("runtime: swarm", "runtime: docker").format(
            version="        image: x\n        placement: {constraints: [node.role==worker]}"),
            "gw.yaml")


def test_placement_changes_the_revision_only_when_set() -> None:
    plain = VersionSpec(image="x")
    assert plain.revision() == VersionSpec(image="x", placement=None).revision()
    placed = VersionSpec(image="x", placement={"constraints": ["node.labels.a==b"]})
    assert placed.revision() != plain.revision()


def test_plan_shows_gpu_reservations_and_replicas_per_node() -> None:
    from gateway.rolloutcli import _swarm_lines

    spec = parse_spec(SWARM.format(version="        image: x\n        replicas: 2\n"
                                           "        resources: {gpus: 1}"), "gw.yaml")
    running = {"services": {"echo": {"versions": {"v1": {"replicas": [
        {"node": "gpu-a", "gpus": 1}, {"node": "gpu-b", "gpus": 1}, {"node": "gpu-a", "gpus": 1}]}}}}}
    assert _swarm_lines(spec, running) == [
        "echo/v1: 2 replicas x 1 NVIDIA-GPU reserved (Swarm picks the node and devices)",
        "node gpu-a: echo/v1 x2; 2 NVIDIA-GPU reserved",
        "node gpu-b: echo/v1 x1; 1 NVIDIA-GPU reserved"]


def test_reload_holds_gateway_swarm_until_a_restart_and_replaces_on_a_placement_change() -> None:
    from gateway.spec.diff import diff_specs

    old = parse_spec(SWARM.format(version="        image: x"), "gw.yaml")
    moved = SWARM.replace("runtime: swarm", "runtime: swarm, swarm: {{network: other}}")
    d = diff_specs(old, parse_spec(moved.format(version="        image: x"), "gw.yaml"))
    assert d.needs_restart == ("gateway.swarm",) and not d.gateway_changed
    placed = "        image: x\n        placement: {constraints: [node.labels.a==b]}"
    d = diff_specs(old, parse_spec(SWARM.format(version=placed), "gw.yaml"))
    assert d.versions_replaced == (("echo", "v1"),) and d.versions_changed == {}
