"""`serve-gateway up` in a container on the swarm's overlay, as a real deployment runs it: the
host is not on the overlay, so a gateway on the host could not reach a single task address.

The container is the serve-gateway:dev image running THIS checkout's code (mounted over the
installed package through PYTHONPATH), with the Docker socket mounted and its data and admin
ports published on 127.0.0.1. The test's tmp dir is mounted at the same path, so the config,
the state dir and the admin token are where GatewayProc expects them.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import aiohttp

from tests.docker.cli import INSTANCE_LABEL, adocker, docker_cli
from tests.helpers import _TOKENS, REPO_ROOT, GatewayProc, wait_http_ok, wait_until
from tests.swarm.conftest import GATEWAY_IMAGE

SRC = "/opt/sgw-src"


class GatewayContainer(GatewayProc):
    """GatewayProc's interface (url, admin, status, all_ready, auth, log, rewrite) for a gateway
    running in a container; ``async with`` starts it, waits for readiness, and on exit stops it
    with SIGTERM (``docker stop``) and checks it exited 0."""

    def __init__(self, tmp_path: Path, services: dict[str, Any], instance: str, network: str,
                 ready: bool = True, name: str = "gw", **gateway: Any) -> None:
        swarm = {**gateway.pop("swarm", {}), "network": network}
        # off loopback the admin API wants a token (reads stay open through "public")
        token_file = tmp_path / "admin-token"
        token_file.write_text(f"{instance}-token\n")
        super().__init__(tmp_path, services, ready=ready, runtime="swarm", instance=instance,
                         swarm=swarm, listen="0.0.0.0:8080",
                         admin={"listen": "0.0.0.0:8081", "token_file": str(token_file),
                                "public": ["metrics", "status", "rollouts"]}, **gateway)
        self.tmp_path = tmp_path
        self.name = f"sgw-{instance}-{name}"
        self.instance = instance

    async def __aenter__(self) -> GatewayContainer:
        await adocker(
            "run", "-d", "--name", self.name, "--label", f"{INSTANCE_LABEL}={self.instance}",
            "-v", "/var/run/docker.sock:/var/run/docker.sock",
            "-v", f"{REPO_ROOT / 'gateway'}:{SRC}/gateway:ro", "-e", f"PYTHONPATH={SRC}",
            "-v", f"{self.tmp_path}:{self.tmp_path}",
            "-p", "127.0.0.1::8080", "-p", "127.0.0.1::8081",
            GATEWAY_IMAGE, "up", str(self.config_path), *self.up_args)
        try:
            ports = json.loads(await adocker("inspect", "--format",
                                             "{{json .NetworkSettings.Ports}}", self.name))
            self.port = int(ports["8080/tcp"][0]["HostPort"])
            self.admin_port = int(ports["8081/tcp"][0]["HostPort"])
            await wait_until(self._up, 60, what=f"{self.name} answering /healthz", interval=0.2)
            await self.read_token()
            if self.wait_ready:
                await wait_until(self.all_ready, 90, what="every replica ready", interval=0.2)
            await self.status()
        except BaseException:
            print(self.log())
            self._kill()
            raise
        return self

    async def _up(self) -> bool:
        if not self.running():
            raise AssertionError(f"{self.name} exited:\n{self.log()}")
        try:
            await wait_http_ok(self.admin("/healthz"), 0.5)
            return True
        except AssertionError:
            return False

    async def read_token(self) -> str | None:
        self.token = (self.tmp_path / "admin-token").read_text().strip()
        _TOKENS[self.admin_port] = self.token
        return self.token

    def running(self) -> bool:
        return docker_cli("inspect", "--format", "{{.State.Running}}", self.name,
                          check=False) == "true"

    async def stop(self, sig: int = 15, timeout: float = 60) -> int:
        try:
            await self.status()
        except aiohttp.ClientError:
            pass
        await adocker("stop", "-t", str(int(timeout)), self.name)
        return int(docker_cli("inspect", "--format", "{{.State.ExitCode}}", self.name))

    async def __aexit__(self, *exc: object) -> None:
        try:
            if self.running():
                code = await self.stop()
                if exc[0] is None and self.expect_exit_code is not None:
                    assert code == self.expect_exit_code, f"gateway exited {code}:\n{self.log()}"
        finally:
            self.log_path.write_text(_logs(self.name))
            self._kill()

    def log(self) -> str:
        """Its output (kept in log_path once the container is removed)."""
        if self.log_path.exists():
            return self.log_path.read_text(errors="replace")
        return _logs(self.name)

    def _kill(self) -> None:
        docker_cli("rm", "-f", self.name, check=False)


def _logs(name: str) -> str:
    import subprocess

    done = subprocess.run(["docker", "logs", name], check=False, capture_output=True, text=True,
                          timeout=30)
    return done.stdout + done.stderr
