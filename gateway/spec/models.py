"""The configuration as validated, frozen models.

Every model forbids unknown keys: a misspelt key is an error that names its line, never a
setting silently ignored. Cross-field rules (a weight naming a missing version, two services on
one route ...) live in ``checks.py`` so that each can point at the exact YAML path.
"""

from __future__ import annotations

import hashlib
import shlex
from typing import Literal

import orjson
from pydantic import BaseModel, ConfigDict, Field, field_validator

from gateway.spec.types import Duration, Listen, Size


class Strict(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


class AdminSpec(Strict):
    listen: Listen = "127.0.0.1:8081"
    token_env: str | None = Field(None, description="environment variable holding the bearer token")
    token_file: str | None = Field(None, description="file holding the bearer token")
    allow_origins: tuple[str, ...] = Field((), description="browser Origins allowed to call the admin API")


class QueueSpec(Strict):
    """Requests that find no ready replica wait here (bounded in size and time)."""

    max_waiting: int = Field(1024, ge=0)
    timeout: Duration = 10.0


class DockerSpec(Strict):
    network: str | None = Field(
        None, description="join replicas to this network and reach them by container address "
                          "(the gateway itself runs in a container); unset: publish on 127.0.0.1")
    base_url: str | None = Field(None, description="Docker daemon URL; default from DOCKER_HOST")
    gpus: list[int] | Literal["auto"] = Field(
        "auto", description="GPU ids replicas may use; auto = detect with nvidia-smi -L")


class GatewaySpec(Strict):
    instance: str = Field("default", description="names this gateway in replica labels; two gateways "
                                                 "sharing a Docker daemon need different names")
    listen: Listen = "127.0.0.1:8080"
    admin: AdminSpec = AdminSpec()
    runtime: Literal["process", "docker"] = "process"
    docker: DockerSpec = DockerSpec()
    state_dir: str = ".serve-gateway"
    max_body_bytes: Size = Field(10 * 1024 * 1024, ge=0)
    queue: QueueSpec = QueueSpec()
    drain_timeout: Duration = Field(30.0, description="how long in-flight requests may finish on shutdown or scale-in")
    stop_grace: Duration = Field(10.0, description="SIGTERM to SIGKILL delay when stopping a replica")


class HealthSpec(Strict):
    path: str = "/ready"
    interval: Duration = Field(0.2, description="readiness probe period while a replica starts")
    liveness_interval: Duration = 5.0
    timeout: Duration = 2.0
    failure_threshold: int = Field(3, ge=1)
    start_timeout: Duration = Field(300.0, description="a replica not ready by then is restarted")


class ResourcesSpec(Strict):
    cpus: float | None = Field(None, gt=0)
    memory: Size | None = None
    shm_size: Size | None = None
    gpus: int | list[int] | Literal["all"] | None = None


class VersionSpec(Strict):
    command: list[str] | None = Field(
        None, description="argv of the worker; {port} is replaced by the replica's port")
    image: str | None = None
    port: int | None = Field(None, ge=1, le=65535, description="the worker's port inside a container")
    env: dict[str, str] = {}
    workdir: str | None = None
    volumes: list[str] = Field([], description="docker only: 'host_path:container_path[:ro]'")
    replicas: int = Field(1, ge=0)
    health: HealthSpec = HealthSpec()
    resources: ResourcesSpec = ResourcesSpec()

    @field_validator("command", mode="before")
    @classmethod
    def _split_command(cls, value: object) -> object:
        return shlex.split(value) if isinstance(value, str) else value

    @field_validator("env", mode="before")
    @classmethod
    def _env_strings(cls, value: object) -> object:
        if isinstance(value, dict):
            return {k: v if isinstance(v, str) else orjson.dumps(v).decode() for k, v in value.items()}
        return value

    def revision(self) -> str:
        """Hash of what defines a replica's process: a change here means new replicas."""
        ident = self.model_dump(include={"command", "image", "port", "env", "workdir", "volumes", "resources"})
        return hashlib.sha256(orjson.dumps(ident, option=orjson.OPT_SORT_KEYS)).hexdigest()[:12]


class TimeoutsSpec(Strict):
    connect: Duration = 2.0
    request: Duration = Field(30.0, description="upstream response deadline; past it the client gets 504")


class TrafficSpec(Strict):
    weights: dict[str, int] = Field({}, description="version -> integer weight (any scale)")

    @field_validator("weights")
    @classmethod
    def _non_negative(cls, value: dict[str, int]) -> dict[str, int]:
        for name, w in value.items():
            if w < 0:
                raise ValueError(f"weight of {name} must be >= 0")
        return value


class ServiceSpec(Strict):
    route: str = Field(description="path prefix, matched on whole segments")
    rewrite: str | None = Field(None, description="replaces the matched prefix upstream")
    versions: dict[str, VersionSpec] = Field(min_length=1)
    traffic: TrafficSpec = TrafficSpec()
    timeouts: TimeoutsSpec = TimeoutsSpec()
    retries: int = Field(1, ge=0, le=3, description="retries on another replica when the worker never saw the request")

    @field_validator("route", "rewrite")
    @classmethod
    def _absolute(cls, value: str | None) -> str | None:
        if value is not None and not value.startswith("/"):
            raise ValueError("must start with '/'")
        return value.rstrip("/") or "/" if value is not None else None


class Spec(Strict):
    gateway: GatewaySpec = GatewaySpec()
    services: dict[str, ServiceSpec] = {}

    def digest(self) -> str:
        return hashlib.sha256(orjson.dumps(self.model_dump(mode="json"),
                                           option=orjson.OPT_SORT_KEYS)).hexdigest()[:16]
