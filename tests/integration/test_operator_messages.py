"""What an operator reads when something is wrong: a replica whose model fails to import says
why (its last log lines in the log message, /status and `serve-gateway status`), Docker
unreachable at `up` is one line saying what to do, and the CLI takes -c / --admin anywhere,
--version, and ends cleanly on Ctrl-C or a closed pipe."""

from __future__ import annotations

import asyncio
import os
import signal
import sys
from pathlib import Path

import yaml

from tests.helpers import REPO_ROOT, GatewayProc, echo_service, free_port, run_cli, wait_until

BROKEN = "serve-gateway worker no_such_model_module:Model --port {port}"


async def test_model_import_error_is_shown_with_its_log_lines(tmp_path: Path) -> None:
    services = {"broken": {"route": "/v1/broken",
                           "versions": {"v1": {"command": BROKEN, "replicas": 1}}}}
    async with GatewayProc(tmp_path, services, ready=False) as gw:
        async def failed() -> bool:
            v = (await gw.status())["services"]["broken"]["versions"]["v1"]
            return bool(v["last_exit"])
        await wait_until(failed, 30, what="the broken replica to exit", interval=0.1)
        v = (await gw.status())["services"]["broken"]["versions"]["v1"]
        cause = "ModuleNotFoundError: No module named 'no_such_model_module'"
        assert v["last_exit"].startswith("exited with code 1: " + cause), v["last_exit"]
        assert "full log: " in v["last_exit"]
        assert v["last_log"][-1] == cause and len(v["last_log"]) > 1
        assert cause in gw.log()                  # the gateway's own log line says it too
        rc, out, err = await run_cli("status", "-c", gw.config_path)
        assert rc == 0, err
        assert "broken/v1: last log lines of the replica that exited:" in out
        assert f"  {cause}" in out.splitlines()


async def test_docker_unreachable_at_up_is_one_clear_line(tmp_path: Path) -> None:
    config = {"gateway": {"listen": f"127.0.0.1:{free_port()}",
                          "admin": {"listen": f"127.0.0.1:{free_port()}"},
                          "runtime": "docker", "state_dir": str(tmp_path / "state")},
              "services": {"echo": {"route": "/v1/echo", "versions": {
                  "v1": {"image": "serve-gateway-worker:dev", "port": 8000}}}}}
    path = tmp_path / "config.yaml"
    path.write_text(yaml.safe_dump(config))
    sock = tmp_path / "no-docker.sock"
    rc, out, err = await run_cli("up", path, env={"DOCKER_HOST": f"unix://{sock}"}, timeout=60)
    assert rc == 1
    assert "Traceback" not in err + out
    (line,) = [x for x in err.splitlines() if x.startswith("serve-gateway:")]
    assert line == (f"serve-gateway: cannot reach the Docker daemon at unix://{sock} (No such "
                    "file or directory): start dockerd, or point DOCKER_HOST or "
                    "gateway.docker.base_url at it, or use gateway.runtime: process")
    assert len(err.splitlines()) <= 5, err   # a few lifecycle lines at most, then the cause


async def test_cli_flags_anywhere_and_version(tmp_path: Path) -> None:
    rc, out, _ = await run_cli("--version")
    assert rc == 0 and out.startswith("serve-gateway ")
    async with GatewayProc(tmp_path, {"echo": echo_service(replicas=1)}) as gw:
        for argv in (("-c", gw.config_path, "status"), ("status", "-c", gw.config_path),
                     ("--admin", gw.admin(""), "status"), ("-c", gw.config_path, "reload")):
            rc, out, err = await run_cli(*argv)
            assert rc == 0, (argv, err)
        rc, out, err = await run_cli("validate", "-c", gw.config_path)
        assert rc == 0 and ": ok (" in out, err


async def _spawn_cli(*args: str | Path, stdout: int | None = None) -> asyncio.subprocess.Process:
    exe = str(Path(sys.executable).with_name("serve-gateway"))
    return await asyncio.create_subprocess_exec(
        exe, *map(str, args), cwd=REPO_ROOT, stdout=stdout or asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.PIPE)


async def test_ctrl_c_and_closed_pipe_end_without_traceback(tmp_path: Path) -> None:
    async with GatewayProc(tmp_path, {"echo": echo_service(replicas=1)}, ready=False) as gw:
        # Ctrl-C on a command that waits (status --watch refreshes until the rollouts end)
        proc = await _spawn_cli("rollout", "status", "--watch", "-c", gw.config_path)
        assert proc.stdout is not None
        await asyncio.wait_for(proc.stdout.read(1), 15)        # it is running
        proc.send_signal(signal.SIGINT)
        _, err = await asyncio.wait_for(proc.communicate(), 15)
        assert proc.returncode == 130 and b"Traceback" not in err, err.decode()

        # `... --watch | head -c 1`: the reader goes away, the writer ends quietly
        read, write = os.pipe()
        proc = await _spawn_cli("rollout", "status", "--watch", "-c", gw.config_path,
                                stdout=write)
        os.close(write)
        os.read(read, 1)
        os.close(read)
        _, err = await asyncio.wait_for(proc.communicate(), 15)
        assert proc.returncode == 141 and b"Traceback" not in err, err.decode()
        assert b"Exception ignored" not in err


async def test_output_into_a_closed_pipe_is_quiet() -> None:
    # long output fails while printing, short output only at the final flush
    for argv in (("schema",), ("validate", REPO_ROOT / "config" / "quickstart.yaml")):
        read, write = os.pipe()
        os.close(read)                       # `serve-gateway ... | true`
        proc = await _spawn_cli(*argv, stdout=write)
        os.close(write)
        _, err = await asyncio.wait_for(proc.communicate(), 30)
        assert proc.returncode == 141 and err == b"", (argv, err.decode())
