"""GPU allocator rules and nvidia-smi parsing (no GPU, no subprocess)."""

from __future__ import annotations

import subprocess
from typing import Any

import pytest

from gateway.errors import RuntimeFailure
from gateway.runtimes import gpus
from gateway.runtimes.gpus import GpuAllocator, GpuUnavailable, check_plan, parse_nvidia_smi
from gateway.spec.models import Spec

OWNER = "services.llm.versions.v1"

NVIDIA_SMI = """\
GPU 0: NVIDIA H100 80GB HBM3 (UUID: GPU-0b6c1d0e-1111-2222-3333-444455556666)
GPU 1: NVIDIA H100 80GB HBM3 (UUID: GPU-1b6c1d0e-1111-2222-3333-444455556666)
  MIG 3g.40gb     Device  0: (UUID: MIG-aaaa0000-1111-2222-3333-444455556666)
  MIG 3g.40gb     Device  1: (UUID: MIG-bbbb0000-1111-2222-3333-444455556666)
GPU 3: Tesla T4 (UUID: GPU-3b6c1d0e-1111-2222-3333-444455556666)
"""


def test_parse_nvidia_smi_lists_gpu_indices_not_mig_devices() -> None:
    assert parse_nvidia_smi(NVIDIA_SMI) == [0, 1, 3]


@pytest.mark.parametrize("text", ["", "No devices were found\n",
                                  "NVIDIA-SMI has failed because it couldn't communicate\n"])
def test_parse_nvidia_smi_without_gpus(text: str) -> None:
    assert parse_nvidia_smi(text) == []


def test_detect_gpus_uses_nvidia_smi_output(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(gpus.shutil, "which", lambda name: "/usr/bin/nvidia-smi")
    calls: list[list[str]] = []

    def run(argv: list[str], **kw: Any) -> subprocess.CompletedProcess[str]:
        calls.append(argv)
        return subprocess.CompletedProcess(argv, 0, stdout=NVIDIA_SMI, stderr="")

    assert gpus.detect_gpus(run) == [0, 1, 3]
    assert calls == [["nvidia-smi", "-L"]]


def test_detect_gpus_none_when_tool_fails_or_is_missing(monkeypatch: pytest.MonkeyPatch) -> None:
    def failing(argv: list[str], **kw: Any) -> subprocess.CompletedProcess[str]:
        return subprocess.CompletedProcess(argv, 9, stdout="", stderr="driver not loaded")

    def hanging(argv: list[str], **kw: Any) -> subprocess.CompletedProcess[str]:
        raise subprocess.TimeoutExpired(argv, 15)

    monkeypatch.setattr(gpus.shutil, "which", lambda name: "/usr/bin/nvidia-smi")
    assert gpus.detect_gpus(failing) == []
    assert gpus.detect_gpus(hanging) == []
    monkeypatch.setattr(gpus.shutil, "which", lambda name: None)
    assert gpus.detect_gpus(failing) == []


def test_count_requests_get_distinct_ids_and_release_returns_them() -> None:
    alloc = GpuAllocator([0, 1, 2, 3])
    assert alloc.allocate("a", 2, owner=OWNER) == (0, 1)
    assert alloc.allocate("b", 1, owner=OWNER) == (2,)
    assert alloc.free() == [3]
    alloc.release("a")
    assert alloc.allocate("c", 2, owner=OWNER) == (0, 1)
    alloc.release("unknown")          # idempotent
    assert alloc.held("c") == (0, 1)


def test_no_request_needs_no_gpu() -> None:
    alloc = GpuAllocator([])
    assert alloc.allocate("a", None, owner=OWNER) == ()
    assert alloc.allocate("b", 0, owner=OWNER) == ()


def test_too_many_gpus_names_version_needed_and_free() -> None:
    alloc = GpuAllocator([0, 1])
    alloc.allocate("a", 1, owner=OWNER)
    with pytest.raises(GpuUnavailable) as info:
        alloc.allocate("b", 2, owner="services.llm.versions.v2")
    msg = str(info.value)
    assert "services.llm.versions.v2" in msg and "needs 2 GPUs" in msg and "1 of 2 free" in msg
    assert isinstance(info.value, RuntimeFailure)
    assert alloc.held("b") == () and alloc.free() == [1]     # nothing reserved on failure


def test_exact_ids_are_given_or_refused() -> None:
    alloc = GpuAllocator([0, 1, 2])
    assert alloc.allocate("a", [2, 0], owner=OWNER) == (0, 2)
    with pytest.raises(GpuUnavailable, match="GPU 2 is held by another replica"):
        alloc.allocate("b", [2], owner=OWNER)
    with pytest.raises(GpuUnavailable, match="GPU 7 does not exist"):
        alloc.allocate("b", [1, 7], owner=OWNER)
    assert alloc.allocate("b", [1], owner=OWNER) == (1,)


def test_all_takes_every_gpu_exclusively() -> None:
    alloc = GpuAllocator([0, 1])
    assert alloc.allocate("a", "all", owner=OWNER) == (0, 1)
    with pytest.raises(GpuUnavailable):
        alloc.allocate("b", 1, owner=OWNER)
    alloc.release("a")
    alloc.allocate("b", 1, owner=OWNER)
    with pytest.raises(GpuUnavailable, match="needs all GPUs"):
        alloc.allocate("c", "all", owner=OWNER)
    with pytest.raises(GpuUnavailable, match="no GPU on this host"):
        GpuAllocator([]).allocate("d", "all", owner=OWNER)


def test_a_replica_cannot_allocate_twice() -> None:
    alloc = GpuAllocator([0, 1])
    alloc.allocate("a", 1, owner=OWNER)
    with pytest.raises(RuntimeFailure, match="already holds"):
        alloc.allocate("a", 1, owner=OWNER)


def test_reserve_records_adopted_replicas() -> None:
    alloc = GpuAllocator([0, 1, 2])
    alloc.reserve("adopted", [1])
    assert alloc.allocate("new", 2, owner=OWNER) == (0, 2)


def test_check_plan_names_the_first_version_that_does_not_fit() -> None:
    check_plan([("a", "v1", 2, 1), ("b", "v1", 1, [2])], [0, 1, 2])
    with pytest.raises(GpuUnavailable) as info:
        check_plan([("a", "v1", 2, 1), ("b", "v2", 2, 1)], [0, 1, 2])
    msg = str(info.value)
    assert msg.startswith("services.b.versions.v2 needs 2 GPUs")
    assert "1 of 3 free" in msg and "2 replica(s)" in msg


def test_check_plan_from_a_spec() -> None:
    spec = Spec.model_validate({"services": {"llm": {"route": "/llm", "versions": {
        "v1": {"image": "x", "replicas": 3, "resources": {"gpus": 1}}}}}})
    check_plan(gpus.spec_demands(spec), [0, 1, 2])
    with pytest.raises(GpuUnavailable, match=r"services\.llm\.versions\.v1 needs 3 GPUs.*2 of 2 free"):
        check_plan(gpus.spec_demands(spec), [0, 1])


def test_check_plan_returns_each_replicas_ids_in_config_order() -> None:
    rows = [("small", "v1", 1, 1), ("cpu", "v1", 3, None), ("llm", "v1", 2, 2)]
    assert check_plan(rows, [0, 1, 2, 3, 4]) == [
        ("small", "v1", 0, (0,)), ("llm", "v1", 0, (1, 2)), ("llm", "v1", 1, (3, 4))]


def test_process_env_gives_a_replica_exactly_its_ids() -> None:
    assert gpus.process_env((1, 3), host_has_gpus=True) == {
        "CUDA_VISIBLE_DEVICES": "1,3", "CUDA_DEVICE_ORDER": "PCI_BUS_ID"}
    # none asked on a GPU host: none seen (a container would see none either)
    assert gpus.process_env((), host_has_gpus=True) == {"CUDA_VISIBLE_DEVICES": ""}
    assert gpus.process_env((), host_has_gpus=False) == {}


def test_resolve_setting_detects_only_for_auto() -> None:
    assert gpus.resolve_setting([2, 0], detect=lambda: [9]) == [2, 0]
    assert gpus.resolve_setting("auto", detect=lambda: [0, 1]) == [0, 1]
