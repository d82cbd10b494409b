"""GPUs without Docker: the process runtime hands each replica its own GPU ids as
CUDA_VISIBLE_DEVICES, from the allocator the docker runtime uses, and refuses a plan that
overcommits. A fake ``nvidia-smi`` on PATH stands in for the GPUs; the last test uses the real
one where this host has it."""

from __future__ import annotations

import os
import shutil
import signal
from pathlib import Path
from typing import Any

import pytest
import yaml

from tests.helpers import ECHO, GatewayProc, run_cli, wait_until

FAKE_SMI = """#!/bin/sh
# what nvidia-smi -L prints on a host with three GPUs, one of them split by MIG
echo "GPU 0: NVIDIA H100 80GB HBM3 (UUID: GPU-00000000-0000-0000-0000-000000000000)"
echo "GPU 1: NVIDIA H100 80GB HBM3 (UUID: GPU-11111111-1111-1111-1111-111111111111)"
echo "  MIG 3g.40gb     Device  0: (UUID: MIG-aaaaaaaa-1111-2222-3333-444455556666)"
echo "GPU 2: NVIDIA H100 80GB HBM3 (UUID: GPU-22222222-2222-2222-2222-222222222222)"
"""


@pytest.fixture
def fake_gpus(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    bindir = tmp_path / "fakebin"
    bindir.mkdir()
    smi = bindir / "nvidia-smi"
    smi.write_text(FAKE_SMI)
    smi.chmod(0o755)
    monkeypatch.setenv("PATH", f"{bindir}{os.pathsep}{os.environ['PATH']}")
    return smi


def services(gpu_replicas: int, gpus: Any = 1) -> dict[str, Any]:
    return {
        "llm": {"route": "/v1/llm", "rewrite": "/predict", "versions": {"v1": {
            "command": ECHO, "replicas": gpu_replicas, "resources": {"gpus": gpus}}}},
        "cpu": {"route": "/v1/cpu", "rewrite": "/predict", "versions": {"v1": {
            "command": ECHO, "replicas": 1}}},
    }


def environ(pid: int) -> dict[str, str] | None:
    """The environment a live process started with; None once it is gone."""
    try:
        raw = Path(f"/proc/{pid}/environ").read_bytes()
    except OSError:
        return None
    return dict(e.split("=", 1) for e in raw.decode(errors="replace").split("\0") if "=" in e)


async def gpu_env(gw: GatewayProc, service: str) -> dict[int, str | None]:
    """pid -> CUDA_VISIBLE_DEVICES of each live, ready replica of ``service``."""
    doc = await gw.status()
    reps = doc["services"][service]["versions"]["v1"]["replicas"]
    envs = {r["pid"]: environ(r["pid"]) for r in reps if r.get("pid") and r.get("state") == "ready"}
    return {pid: env.get("CUDA_VISIBLE_DEVICES") for pid, env in envs.items() if env is not None}


async def test_each_replica_gets_its_own_gpu_and_gets_it_back_after_a_crash(
        tmp_path: Path, fake_gpus: Path) -> None:
    async with GatewayProc(tmp_path, services(gpu_replicas=2)) as gw:
        llm = await gpu_env(gw, "llm")
        assert sorted(llm.values()) == ["0", "1"], llm       # lowest ids first, one each
        assert {(environ(pid) or {}).get("CUDA_DEVICE_ORDER") for pid in llm} == {"PCI_BUS_ID"}
        cpu = await gpu_env(gw, "cpu")
        assert list(cpu.values()) == [""], cpu            # asked for none: sees none
        # the replica on GPU 0 dies: its replacement gets GPU 0 back, not GPU 2
        victim = next(pid for pid, ids in llm.items() if ids == "0")
        os.killpg(victim, signal.SIGKILL)

        async def replaced() -> bool:
            now = await gpu_env(gw, "llm")
            return len(now) == 2 and victim not in now
        await wait_until(replaced, 30, what="the killed replica replaced")
        assert sorted((await gpu_env(gw, "llm")).values()) == ["0", "1"]


async def test_a_plan_that_overcommits_is_refused_before_anything_starts(
        tmp_path: Path, fake_gpus: Path) -> None:
    gw = GatewayProc(tmp_path, services(gpu_replicas=2, gpus=2))
    code, out, err = await run_cli("up", gw.config_path, timeout=60)
    assert code == 1, (out, err)
    assert "services.llm.versions.v1.resources.gpus" in err, err
    assert "llm/v1 needs 4 GPUs (2 replica(s) with gpus=2), but this gateway has 3 (ids 0, 1, 2)" \
        in err, err
    logs = gw.state_dir / "logs"
    assert not logs.exists() or not any(logs.iterdir()), "no replica was started"


async def test_a_reload_that_overcommits_changes_nothing(tmp_path: Path, fake_gpus: Path) -> None:
    async with GatewayProc(tmp_path, services(gpu_replicas=2)) as gw:
        before = await gpu_env(gw, "llm")
        running = (await gw.status())["config"]["hash"]
        config = dict(gw.config)
        config["services"] = services(gpu_replicas=4)        # 4 GPUs wanted, 3 exist
        gw.rewrite(config)
        code, out, err = await run_cli("reload", "-c", gw.config_path)
        assert code == 1, out + err
        assert "llm/v1 needs 4 GPUs" in err and f"still serving config {running}" in err, err
        status = await gw.status()
        assert status["config"]["hash"] == running
        assert status["services"]["llm"]["versions"]["v1"]["desired"] == 2
        assert await gpu_env(gw, "llm") == before          # the same replicas, the same GPUs


async def test_plan_shows_the_assignment(tmp_path: Path, fake_gpus: Path) -> None:
    config = tmp_path / "gpu.yaml"
    config.write_text(yaml.safe_dump({"services": {
        **services(gpu_replicas=1, gpus=2),
        "pinned": {"route": "/v1/p", "versions": {"v1": {"command": ECHO, "resources": {
            "gpus": [2]}}}}}}))
    code, out, err = await run_cli("plan", config)
    assert code == 0, err
    assert out.splitlines()[:4] == [
        "GPUs (process runtime; 0, 1, 2 from nvidia-smi -L):",
        "  llm/v1 replica 0: CUDA_VISIBLE_DEVICES=0,1",
        "  pinned/v1 replica 0: CUDA_VISIBLE_DEVICES=2",
        "  unassigned: none"], out
    # the configured list instead of nvidia-smi, and a plan that cannot fit
    config.write_text(yaml.safe_dump({"gateway": {"process": {"gpus": [0]}},
                                      "services": services(gpu_replicas=1, gpus=2)}))
    code, out, err = await run_cli("plan", config)
    assert code == 0, err
    assert out.startswith("GPUs: warning: up and reload refuse this config: "
                          "services.llm.versions.v1.resources.gpus: llm/v1 needs 2 GPUs"), out
    assert "this gateway has 1 (ids 0)" in out, out


@pytest.mark.skipif(shutil.which("nvidia-smi") is None, reason="nvidia-smi is absent")
async def test_real_gpus_are_assigned_per_replica(tmp_path: Path) -> None:
    from gateway.runtimes.gpus import detect_gpus
    ids = detect_gpus()
    assert ids, "nvidia-smi is installed but lists no GPU"
    gw = GatewayProc(tmp_path, services(gpu_replicas=len(ids)))
    async with gw:
        got = await gpu_env(gw, "llm")
        assert sorted(got.values(), key=int) == [str(i) for i in ids], got
    over = GatewayProc(tmp_path / "over", services(gpu_replicas=len(ids) + 1))
    code, _, err = await run_cli("up", over.config_path, timeout=60)
    assert code == 1 and f"needs {len(ids) + 1} GPUs" in err, err


