"""Pure helpers of the Docker runtime: exit classification, addresses, adoption from labels."""

from __future__ import annotations

import os
from typing import Any

import pytest

from gateway.errors import RuntimeFailure
from gateway.runtimes.base import ExitKind, ReplicaSpec
from gateway.runtimes.docker_attrs import (
    Bounded,
    address,
    container_name,
    exit_info,
    labels_for,
    replica_from,
    started_at,
    volume,
)


def attrs(*, running: bool = True, code: int = 0, oom: bool = False, ports: Any = None,
          networks: Any = None, labels: Any = None) -> dict[str, Any]:
    return {"Id": "f" * 64, "Name": "/sgw-x",
            "State": {"Running": running, "ExitCode": code, "OOMKilled": oom, "Error": "",
                      "StartedAt": "2024-05-01T10:00:00.123456789Z"},
            "Config": {"Image": "img:1", "Labels": labels or {}},
            "NetworkSettings": {"Ports": ports or {}, "Networks": networks or {}}}


@pytest.mark.parametrize(("doc", "stopping", "kind", "code"), [
    (attrs(running=False, code=0), False, ExitKind.EXITED, 0),
    (attrs(running=False, code=3), False, ExitKind.EXITED, 3),
    (attrs(running=False, code=137), False, ExitKind.KILLED, 137),
    (attrs(running=False, code=137, oom=True), False, ExitKind.OOM, 137),
    (attrs(running=False, code=143), True, ExitKind.STOPPED, 143),
    (None, True, ExitKind.STOPPED, None),
    (None, False, ExitKind.EXITED, None),
])
def test_exit_info(doc: Any, stopping: bool, kind: ExitKind, code: int | None) -> None:
    info = exit_info(doc, stopping)
    assert info is not None and (info.kind, info.code) == (kind, code)


def test_running_container_has_no_exit() -> None:
    assert exit_info(attrs(), stopping=True) is None


def test_address_prefers_network_then_published_port() -> None:
    ports = {"8000/tcp": [{"HostIp": "127.0.0.1", "HostPort": "49153"}]}
    nets = {"sgw": {"IPAddress": "172.20.0.5"}, "bridge": {"IPAddress": "172.17.0.2"}}
    assert address(attrs(ports=ports, networks=nets), "sgw", 8000) == ("172.20.0.5", 8000)
    assert address(attrs(ports=ports, networks=nets), None, 8000) == ("127.0.0.1", 49153)
    assert address(attrs(networks=nets), "other", 9000) == ("172.20.0.5", 9000)
    with pytest.raises(RuntimeFailure, match="no reachable address"):
        address(attrs(), None, 8000)


def test_replica_rebuilt_from_labels() -> None:
    spec = ReplicaSpec(service="svc", version="v2", revision="abc", gpu_ids=(0, 2))
    labels = labels_for("prod", spec, "r123", 9000)
    doc = attrs(labels=labels, ports={"9000/tcp": [{"HostIp": "127.0.0.1", "HostPort": "40000"}]})
    replica = replica_from(doc, None)
    assert replica.id == "r123" and replica.address == "127.0.0.1:40000"
    assert (replica.spec.service, replica.spec.version, replica.spec.revision) == ("svc", "v2", "abc")
    assert replica.spec.gpu_ids == (0, 2) and replica.spec.port == 9000
    assert replica.spec.image == "img:1"
    assert replica.started_at == pytest.approx(1714557600.123456)


def test_started_at_falls_back_to_now_for_unstarted_containers() -> None:
    doc = attrs()
    doc["State"]["StartedAt"] = "0001-01-01T00:00:00Z"
    assert started_at(doc) > 1.7e9


def test_names_and_volumes() -> None:
    assert container_name("my svc", "v/1", "abc") == "sgw-my-svc-v-1-abc"
    assert volume("./models:/models:ro") == f"{os.path.abspath('./models')}:/models:ro"
    assert volume("/abs:/data") == "/abs:/data"
    assert volume("named-volume:/data") == "named-volume:/data"


def test_bounded_forgets_oldest(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr("gateway.runtimes.docker_attrs._REMEMBERED", 2)
    b: Bounded[int] = Bounded()
    for i in range(3):
        b[str(i)] = i
    assert list(b) == ["1", "2"]
