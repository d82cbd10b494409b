"""The start-up / reload GPU plan check: a config needing more GPUs than exist is refused with a
ConfigError naming the version's YAML path and the counts (no daemon, no GPU needed)."""

from __future__ import annotations

import pytest

from gateway.errors import ConfigError
from gateway.runtimes.docker import DockerRuntime
from gateway.runtimes.gpus import check_spec
from gateway.runtimes.process import ProcessRuntime
from gateway.spec import Spec, parse_spec

CONFIG = """
gateway: {runtime: docker}
services:
  small: {route: /s, versions: {v1: {image: w, replicas: 1, resources: {gpus: 1}}}}
  llm:
    route: /l
    versions: {v1: {image: w, replicas: REPLICAS, resources: {gpus: GPUS}}}
"""


def spec(gpus: str = "2", replicas: int = 2) -> Spec:
    return parse_spec(CONFIG.replace("GPUS", gpus).replace("REPLICAS", str(replicas)))


def refusal(config: Spec, available: list[int]) -> str:
    with pytest.raises(ConfigError) as info:
        check_spec(config, available)
    (problem,) = info.value.problems
    assert problem.path == "services.llm.versions.v1.resources.gpus"
    return problem.message


def test_a_plan_that_fits_passes() -> None:
    check_spec(spec("2"), [0, 1, 2, 3, 4])
    check_spec(spec("[3]", replicas=1), [0, 3])     # small/v1 takes GPU 0, llm/v1 pins GPU 3


def test_too_many_gpus_names_the_version_and_the_counts() -> None:
    assert refusal(spec("2"), [0, 1, 2]) == (
        "llm/v1 needs 4 GPUs (2 replica(s) with gpus=2), but this gateway has 3 (ids 0, 1, 2), "
        "1 of them taken by the versions above it")


def test_no_gpu_at_all() -> None:
    with pytest.raises(ConfigError, match=r"small/v1 needs 1 GPU .*this gateway has no GPU"):
        check_spec(spec(), [])


def test_pinned_ids_and_all() -> None:
    assert "GPU 7 does not exist" in refusal(spec("[7]", replicas=1), [0, 1])
    assert "GPU 3 is held by another replica" in refusal(spec("[3]"), [0, 3])   # two on one GPU
    assert refusal(spec("all"), [0, 1]).startswith(
        "llm/v1 needs 4 GPUs (2 replica(s) with gpus='all')")


async def test_runtime_check_uses_the_configured_gpu_list() -> None:
    await DockerRuntime(gpus=[0, 1, 2, 3, 4]).check(spec())   # no daemon call: the list is given
    with pytest.raises(ConfigError, match="needs 4 GPUs"):
        await DockerRuntime(gpus=[0, 1]).check(spec())
    await ProcessRuntime(gpus=[0, 1, 2, 3, 4]).check(spec())  # processes: the same books
    with pytest.raises(ConfigError, match=r"needs 4 GPUs"):
        await ProcessRuntime(gpus=[0, 1]).check(spec())
    with pytest.raises(ConfigError, match=r"no GPU \(gateway.process.gpus is empty"):
        await ProcessRuntime(gpus=[]).check(spec())


def test_process_replica_env_precedence(tmp_path: object) -> None:
    """The allocator's ids beat a version's own CUDA_VISIBLE_DEVICES (they are what the books
    say); a version that asked for none may still choose what it sees."""
    from gateway.runtimes.base import ReplicaSpec

    runtime = ProcessRuntime(state_dir=str(tmp_path), gpus=[0, 1])
    mine = (("CUDA_VISIBLE_DEVICES", "1"),)
    given = ReplicaSpec("s", "v", "r", ("w",), env=mine, gpu_ids=(0,))
    assert runtime._env(given, "id", 1, host_has_gpus=True)["CUDA_VISIBLE_DEVICES"] == "0"
    none = ReplicaSpec("s", "v", "r", ("w",))
    assert runtime._env(none, "id", 1, host_has_gpus=True)["CUDA_VISIBLE_DEVICES"] == ""
    chosen = ReplicaSpec("s", "v", "r", ("w",), env=mine)
    assert runtime._env(chosen, "id", 1, host_has_gpus=True)["CUDA_VISIBLE_DEVICES"] == "1"
