"""DockerRuntime against the real daemon and the real serve-gateway-worker:dev image."""

from __future__ import annotations

import asyncio
import dataclasses
import re
import shutil
import subprocess
import time
from pathlib import Path
from typing import Any

import aiohttp
import pytest

from gateway.errors import RuntimeFailure
from gateway.runtimes.base import ExitKind, Replica, ReplicaSpec
from gateway.runtimes.docker import DockerRuntime
from gateway.runtimes.gpus import GpuUnavailable
from gateway.spec.models import ResourcesSpec
from tests.docker.cli import WORKER_IMAGE, adocker, docker_cli, inspect, labelled

pytestmark = pytest.mark.docker


def spec(version: str = "v1", *, command: list[str] | None = None, **resources: Any) -> ReplicaSpec:
    return ReplicaSpec(service="echo", version=version, revision="rev1", image=WORKER_IMAGE,
                       port=8000, env=(("MODEL_FLAVOUR", "plain"),),
                       command=tuple(command) if command else None,
                       resources=ResourcesSpec.model_validate(resources))


def python_cmd(code: str) -> list[str]:
    return ["python", "-c", code]


async def wait_ready(replica: Replica, deadline_s: float = 20.0) -> None:
    url = f"http://{replica.address}/ready"
    deadline = time.monotonic() + deadline_s
    async with aiohttp.ClientSession(timeout=aiohttp.ClientTimeout(total=2)) as http:
        while True:
            try:
                async with http.get(url) as resp:
                    if resp.status == 200:
                        return
            except (TimeoutError, aiohttp.ClientError):
                pass
            assert time.monotonic() < deadline, f"{url} not ready after {deadline_s}s"
            await asyncio.sleep(0.1)


async def test_start_serves_ready_then_stop_removes(runtime: DockerRuntime, instance: str,
                                                    tmp_path: Path) -> None:
    with_volume = dataclasses.replace(spec(cpus=0.5, memory="256MiB", shm_size="64MiB"),
                                      volumes=(f"{tmp_path}:/data:ro",))
    replica = await runtime.start(with_volume)
    assert replica.host == "127.0.0.1" and replica.port not in (0, 8000)
    await wait_ready(replica)
    async with aiohttp.ClientSession() as http, \
            http.post(f"http://{replica.address}/predict", json={"instances": [1, "a"]}) as resp:
        assert resp.status == 200
        assert (await resp.json())["predictions"] == [1, "a"]

    (cid,) = labelled("containers", instance)
    attrs = inspect(cid)
    assert attrs["Name"] == f"/sgw-echo-v1-{replica.id}"
    labels = attrs["Config"]["Labels"]
    assert labels["serve-gateway.instance"] == instance
    assert (labels["serve-gateway.service"], labels["serve-gateway.version"]) == ("echo", "v1")
    assert (labels["serve-gateway.revision"], labels["serve-gateway.replica"]) == ("rev1", replica.id)
    env = set(attrs["Config"]["Env"])
    assert {"MODEL_FLAVOUR=plain", "SGW_SERVICE=echo", "SGW_VERSION=v1",
            f"SGW_REPLICA_ID={replica.id}", "PORT=8000"} <= env
    host = attrs["HostConfig"]
    assert host["NanoCpus"] == 500_000_000
    assert host["Memory"] == 256 * 1024**2 and host["ShmSize"] == 64 * 1024**2
    assert host["PortBindings"]["8000/tcp"] == [{"HostIp": "127.0.0.1", "HostPort": ""}]
    assert host["Binds"] == [f"{tmp_path}:/data:ro"]

    info = await runtime.stop(replica, grace=5)
    assert info.kind is ExitKind.STOPPED
    assert labelled("containers", instance) == []
    assert (await runtime.stop(replica, grace=5)).kind is ExitKind.STOPPED   # idempotent
    assert (await runtime.wait(replica)).kind is ExitKind.STOPPED


async def test_docker_kill_is_seen_by_wait_through_events(runtime: DockerRuntime) -> None:
    replica = await runtime.start(spec())
    waiter = asyncio.ensure_future(runtime.wait(replica))
    await asyncio.sleep(0.2)
    assert not waiter.done()
    killed_at = time.monotonic()
    await adocker("kill", f"sgw-echo-v1-{replica.id}")
    info = await asyncio.wait_for(waiter, 5)
    # the runtime polls every 60 s: only the events stream can have been this quick
    assert time.monotonic() - killed_at < 3
    assert info.kind is ExitKind.KILLED and info.code == 137
    await runtime.stop(replica, grace=1)


async def test_memory_limit_exceeded_is_reported_as_oom(runtime: DockerRuntime) -> None:
    hog = "import time; time.sleep(1); x = bytearray(200 * 1024 * 1024); time.sleep(30)"
    replica = await runtime.start(spec(command=python_cmd(hog), memory="64MiB"))
    info = await asyncio.wait_for(runtime.wait(replica), 15)
    assert info.kind is ExitKind.OOM, info
    await runtime.stop(replica, grace=1)


async def test_adopt_lists_running_replicas_and_removes_ended_ones(runtime: DockerRuntime,
                                                                   instance: str) -> None:
    running = await runtime.start(spec("v1"))
    ended = await runtime.start(spec("v2", command=python_cmd("import time; time.sleep(0.5)")))
    assert (await asyncio.wait_for(runtime.wait(ended), 10)).kind is ExitKind.EXITED
    assert len(labelled("containers", instance)) == 2

    successor = DockerRuntime(instance=instance, gpus=[])
    try:
        (adopted,) = await successor.adopt()
        assert adopted.id == running.id and adopted.address == running.address
        assert (adopted.spec.service, adopted.spec.version, adopted.spec.revision) == ("echo", "v1", "rev1")
        assert adopted.spec.image == WORKER_IMAGE and adopted.spec.port == 8000
        assert abs(adopted.started_at - running.started_at) < 1
        assert len(labelled("containers", instance)) == 1        # the ended one was removed
        await wait_ready(adopted)
        assert (await successor.stop(adopted, grace=5)).kind is ExitKind.STOPPED
        assert labelled("containers", instance) == []
    finally:
        await successor.close()


async def test_other_instances_are_left_alone(runtime: DockerRuntime, instance: str) -> None:
    await runtime.start(spec())
    other = DockerRuntime(instance=f"{instance}-other", gpus=[])
    try:
        assert await other.adopt() == []
    finally:
        await other.close()
    assert len(labelled("containers", instance)) == 1


async def test_network_mode_reaches_replica_by_container_address(instance: str, network: str) -> None:
    rt = DockerRuntime(instance=instance, network=network, gpus=[])
    try:
        replica = await rt.start(spec())
        ip = inspect(f"sgw-echo-v1-{replica.id}")["NetworkSettings"]["Networks"][network]["IPAddress"]
        assert (replica.host, replica.port) == (ip, 8000)
        await wait_ready(replica)
        (adopted,) = await rt.adopt()
        assert adopted.address == f"{ip}:8000"
        await rt.stop(replica, grace=5)
    finally:
        await rt.close()


async def test_gpu_request_reaches_the_api_on_a_fake_gpu_list(instance: str,
                                                              monkeypatch: pytest.MonkeyPatch) -> None:
    """No GPU here: the container is created with the DeviceRequest but cannot start without the
    nvidia runtime. What reached the daemon is read back before the runtime cleans up."""
    rt = DockerRuntime(instance=instance, gpus=[0, 1])
    seen: list[dict[str, Any]] = []
    discard = rt._discard

    def inspect_then_discard(container: Any) -> None:
        seen.append(inspect(container.id))
        discard(container)

    monkeypatch.setattr(rt, "_discard", inspect_then_discard)
    gpu_host = _nvidia_smi_works()
    try:
        try:
            replica: Replica | None = await rt.start(spec(gpus=[0]))
        except RuntimeFailure as exc:
            assert not gpu_host
            assert "could not start" in str(exc) and "nvidia" in str(exc), exc
            replica = None
        if replica is not None:                 # a real GPU host: the request simply works
            seen.append(inspect(f"sgw-echo-v1-{replica.id}"))
        (request,) = seen[0]["HostConfig"]["DeviceRequests"]
        assert request["Driver"] == "nvidia" and request["DeviceIDs"] == ["0"]
        assert request["Capabilities"] == [["gpu"]]
        (sent,) = rt.device_requests.values()
        assert sent["DeviceIDs"] == ["0"]
        if replica is None:
            assert labelled("containers", instance) == []        # cleaned up
            with pytest.raises(RuntimeFailure, match="could not start"):
                await rt.start(spec(gpus=[0]))                    # GPU 0 was released
        with pytest.raises(GpuUnavailable, match=r"services\.echo\.versions\.v1 needs 3 GPUs"):
            await rt.start(spec(gpus=3))
        assert len(labelled("containers", instance)) == (0 if replica is None else 1)
    finally:
        await rt.close()


def _nvidia_smi_works() -> bool:
    if shutil.which("nvidia-smi") is None:
        return False
    return subprocess.run(["nvidia-smi", "-L"], check=False, capture_output=True,
                          timeout=30).returncode == 0


@pytest.mark.skipif(not _nvidia_smi_works(), reason="needs a GPU host (nvidia-smi -L fails here)")
async def test_real_gpu_container_sees_its_gpu(instance: str) -> None:
    rt = DockerRuntime(instance=instance)            # gpus auto-detected
    try:
        replica = await rt.start(spec(command=["sh", "-c", "nvidia-smi -L; sleep 30"], gpus=1))
        assert replica.spec.gpu_ids == (0,)
        deadline = time.monotonic() + 20
        while "GPU 0" not in docker_cli("logs", f"sgw-echo-v1-{replica.id}"):
            assert time.monotonic() < deadline, "nvidia-smi inside the container saw no GPU"
            await asyncio.sleep(0.2)
        await rt.stop(replica, grace=1)
    finally:
        await rt.close()


async def test_close_fails_pending_waits_and_leaves_replicas_running(instance: str) -> None:
    rt = DockerRuntime(instance=instance, gpus=[])
    replica = await rt.start(spec())
    waiter = asyncio.ensure_future(rt.wait(replica))
    await asyncio.sleep(0.2)
    await rt.close()
    with pytest.raises(RuntimeFailure, match="closed"):
        await asyncio.wait_for(waiter, 5)
    assert inspect(f"sgw-echo-v1-{replica.id}")["State"]["Running"]


async def test_missing_image_is_a_clear_error(runtime: DockerRuntime, instance: str) -> None:
    missing = ReplicaSpec(service="echo", version="v1", revision="r", image="sgw-no-such-image:0")
    with pytest.raises(RuntimeFailure, match="sgw-no-such-image:0 is not on the Docker host"):
        await runtime.start(missing)
    assert labelled("containers", instance) == []


async def test_worker_that_exits_by_itself(runtime: DockerRuntime, instance: str) -> None:
    """A crash right at start is reported by start() (exit code and log tail, nothing left
    behind) when it comes before start() looks, else by wait(): both are valid, racing."""
    crash = python_cmd("import sys; print('boom'); sys.exit(3)")
    try:
        replica = await runtime.start(spec(command=crash))
    except RuntimeFailure as exc:
        assert re.search(r"exited at once \(exit code 3.*boom", str(exc)), exc
        assert labelled("containers", instance) == []
        return
    info = await asyncio.wait_for(runtime.wait(replica), 10)
    assert (info.kind, info.code) == (ExitKind.EXITED, 3)
    await runtime.stop(replica, grace=1)
    assert labelled("containers", instance) == []


async def test_broken_events_stream_falls_back_to_polling(instance: str) -> None:
    rt = DockerRuntime(instance=instance, gpus=[], poll_interval=0.2)
    try:
        replica = await rt.start(spec())
        waiter = asyncio.ensure_future(rt.wait(replica))
        deadline = time.monotonic() + 10
        while rt._watcher is None or not rt._watcher.healthy:
            assert time.monotonic() < deadline
            await asyncio.sleep(0.05)

        def no_daemon() -> Any:
            raise RuntimeFailure("events unavailable (test)")

        rt._new_client = no_daemon            # type: ignore[method-assign]  # reconnects fail
        rt._watcher._make_client = no_daemon  # the stream breaks and stays down
        rt._watcher._errors = (*rt._watcher._errors, RuntimeFailure)
        rt._watcher._stream.close()
        while rt._watcher.healthy:
            assert time.monotonic() < deadline
            await asyncio.sleep(0.05)
        await adocker("kill", f"sgw-echo-v1-{replica.id}")
        info = await asyncio.wait_for(waiter, 5)
        assert info.kind is ExitKind.KILLED
    finally:
        await rt.close()


async def test_daemon_down_is_a_clear_error(tmp_path: Any) -> None:
    rt = DockerRuntime(base_url=f"unix://{tmp_path}/no-docker.sock", gpus=[])
    try:
        with pytest.raises(RuntimeFailure, match="cannot reach the Docker daemon"):
            await rt.start(spec())
        with pytest.raises(RuntimeFailure, match="cannot reach the Docker daemon"):
            await rt.adopt()
    finally:
        await rt.close()


async def test_slow_daemon_times_out_without_freezing_the_loop(tmp_path: Any) -> None:
    sock = f"{tmp_path}/slow.sock"
    held: list[asyncio.StreamWriter] = []

    async def never_answer(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        held.append(writer)

    server = await asyncio.start_unix_server(never_answer, sock)
    ticks = 0

    async def ticker() -> None:
        nonlocal ticks
        while True:
            await asyncio.sleep(0.01)
            ticks += 1

    tick_task = asyncio.ensure_future(ticker())
    rt = DockerRuntime(base_url=f"unix://{sock}", gpus=[], timeout=0.5)
    try:
        started = time.monotonic()
        with pytest.raises(RuntimeFailure, match="cannot reach the Docker daemon.*timed out"):
            await rt.start(spec())
        assert time.monotonic() - started < 5
        assert ticks >= 20                    # the loop kept running while the SDK waited
    finally:
        tick_task.cancel()
        for w in held:
            w.close()
        server.close()
        await server.wait_closed()
        await rt.close()
