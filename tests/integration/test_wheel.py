"""The package as a user gets it: a wheel built from the tracked files, installed in a clean
virtual environment (no checkout on sys.path), running the quickstart.

Slow (a build and a ``pip install`` of the dependencies: a minute or two on two cores), so it
builds once per session and every check shares it.
"""

from __future__ import annotations

import json
import os
import shutil
import signal
import subprocess
import sys
import time
import urllib.request
import zipfile
from pathlib import Path

import pytest
import yaml

from tests.helpers import REPO_ROOT, free_port

pytestmark = pytest.mark.timeout(900)


def _run(*argv: str | Path, cwd: Path | None = None, timeout: float = 600) -> str:
    proc = subprocess.run([str(a) for a in argv], cwd=cwd, capture_output=True, text=True,
                          check=False, timeout=timeout, env=_clean_env())
    assert proc.returncode == 0, f"{argv}: exit {proc.returncode}\n{proc.stdout}\n{proc.stderr}"
    return proc.stdout


def _clean_env() -> dict[str, str]:
    """The environment without the test's venv or checkout in it."""
    env = {k: v for k, v in os.environ.items()
           if k not in ("PYTHONPATH", "VIRTUAL_ENV", "PYTHONHOME")}
    venv_bin = str(Path(sys.executable).parent)
    env["PATH"] = os.pathsep.join(p for p in env.get("PATH", "").split(os.pathsep)
                                  if p != venv_bin)
    return env


@pytest.fixture(scope="module")
def wheel(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A wheel of the tracked files (what a commit holds, not what lies around in the tree)."""
    root = tmp_path_factory.mktemp("wheel")
    src = root / "src"
    files = subprocess.run(["git", "ls-files", "-z"], cwd=REPO_ROOT, capture_output=True,
                           check=True).stdout.decode().split("\0")
    for name in filter(None, files):
        path = REPO_ROOT / name
        if path.is_file():
            (src / name).parent.mkdir(parents=True, exist_ok=True)
            shutil.copy2(path, src / name)
    _run(sys.executable, "-m", "pip", "wheel", "--no-deps", "-q", "-w", root / "dist", src)
    (built,) = (root / "dist").glob("serve_gateway-*.whl")
    return built


@pytest.fixture(scope="module")
def venv(wheel: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A clean venv with the wheel and its [examples] extra (numpy for the MLP), nothing else."""
    env_dir = tmp_path_factory.mktemp("venv") / "venv"
    _run(sys.executable, "-m", "venv", env_dir)
    _run(env_dir / "bin" / "python", "-m", "pip", "install", "-q",
         "--disable-pip-version-check", f"{wheel}[examples]")
    return env_dir


def test_the_wheel_ships_one_namespaced_package_a_license_and_extras(wheel: Path) -> None:
    names = zipfile.ZipFile(wheel).namelist()
    tops = {n.split("/", 1)[0] for n in names}
    info = next(t for t in tops if t.endswith(".dist-info"))
    assert tops == {"gateway", info}, tops                  # no top-level `plugins`, `tests` ...
    assert "gateway/plugins_builtin/comparators.py" in names
    assert f"{info}/licenses/LICENSE" in names
    meta = zipfile.ZipFile(wheel).read(f"{info}/METADATA").decode()
    assert "License-Expression: Apache-2.0" in meta
    requires = [line for line in meta.splitlines() if line.startswith("Requires-Dist:")]
    docker = [r for r in requires if r.startswith("Requires-Dist: docker")]
    assert docker == ['Requires-Dist: docker>=7; extra == "docker"'], docker
    for extra in ("docker", "top", "plot", "examples"):
        assert f"Provides-Extra: {extra}" in meta


def test_a_clean_install_runs_the_quickstart(venv: Path, tmp_path: Path) -> None:
    exe = venv / "bin" / "serve-gateway"
    assert _run(exe, "--version").strip() == "serve-gateway 0.1.0"
    # the process runtime needs no Docker SDK: [docker] is an extra
    probe = subprocess.run([venv / "bin" / "python", "-c", "import docker"], check=False,
                           capture_output=True,
                           env=_clean_env(), cwd=tmp_path)
    assert probe.returncode != 0

    run_dir = tmp_path / "run"
    run_dir.mkdir()
    # the quickstart as shipped: its example models come from the wheel (gateway.examples),
    # nothing from a checkout (run_dir holds only the config)
    config = yaml.safe_load((REPO_ROOT / "config" / "quickstart.yaml").read_text())
    port, admin = free_port(), free_port()
    config["gateway"]["listen"] = f"127.0.0.1:{port}"
    config["gateway"]["admin"]["listen"] = f"127.0.0.1:{admin}"
    (run_dir / "quickstart.yaml").write_text(yaml.safe_dump(config, sort_keys=False))
    log = (tmp_path / "gateway.log").open("wb")
    proc = subprocess.Popen([exe, "up", "quickstart.yaml"], cwd=run_dir, env=_clean_env(),
                            stdout=log, stderr=subprocess.STDOUT, start_new_session=True)
    try:
        _until_ready(admin, proc, tmp_path / "gateway.log")
        echo = _post(port, "/v1/echo", {"x": 1})
        assert echo == {"predictions": [{"x": 1}]}
        mlp = _post(port, "/v1/mlp", {"instances": [[0.1] * 512]})
        assert len(mlp["predictions"]) == 1 and len(mlp["predictions"][0]) == 16
        status = _run(exe, "-c", "quickstart.yaml", "status", cwd=run_dir)
        assert "echo" in status and "mlp" in status
    finally:
        if proc.poll() is None:
            os.killpg(proc.pid, signal.SIGTERM)
        try:
            code = proc.wait(timeout=60)
        except subprocess.TimeoutExpired:
            os.killpg(proc.pid, signal.SIGKILL)
            code = proc.wait()
        log.close()
    assert code == 0, (tmp_path / "gateway.log").read_text()[-3000:]


def test_runtime_docker_without_the_sdk_names_the_extra(venv: Path, tmp_path: Path) -> None:
    config = yaml.safe_load((REPO_ROOT / "config" / "docker-quickstart.yaml").read_text())
    config["gateway"]["listen"] = f"127.0.0.1:{free_port()}"
    config["gateway"]["admin"]["listen"] = f"127.0.0.1:{free_port()}"
    config["gateway"]["state_dir"] = str(tmp_path / "state")
    (tmp_path / "docker.yaml").write_text(yaml.safe_dump(config, sort_keys=False))
    proc = subprocess.run([venv / "bin" / "serve-gateway", "up", "docker.yaml"], cwd=tmp_path,
                          capture_output=True, text=True, timeout=60, env=_clean_env(), check=False)
    assert proc.returncode == 1, proc.stderr
    assert "gateway.runtime: docker needs the Python package 'docker'" in proc.stderr
    assert "pip install 'serve-gateway[docker]'" in proc.stderr
    assert "Traceback" not in proc.stderr


def _post(port: int, path: str, doc: object) -> dict:
    req = urllib.request.Request(f"http://127.0.0.1:{port}{path}", data=json.dumps(doc).encode(),
                                 headers={"Content-Type": "application/json"})
    opener = urllib.request.build_opener(urllib.request.ProxyHandler({}))
    with opener.open(req, timeout=30) as resp:
        answer: dict = json.loads(resp.read())
        return answer


def _until_ready(admin: int, proc: subprocess.Popen[bytes], log: Path) -> None:
    opener = urllib.request.build_opener(urllib.request.ProxyHandler({}))
    deadline = time.monotonic() + 90
    while time.monotonic() < deadline:
        assert proc.poll() is None, log.read_text()[-3000:]
        try:
            with opener.open(f"http://127.0.0.1:{admin}/readyz", timeout=2) as resp:
                doc = json.loads(opener.open(f"http://127.0.0.1:{admin}/status").read())
                if resp.status == 200 and all(
                        v["ready"] >= v["desired"] for s in doc["services"].values()
                        for v in s["versions"].values()):
                    return
        except OSError:
            pass
        time.sleep(0.2)
    raise AssertionError(f"the quickstart was not ready in 90 s\n{log.read_text()[-3000:]}")
