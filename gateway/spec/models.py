"""The configuration as validated, frozen models.

Every model forbids unknown keys: a misspelt key is an error that names its line, never a
setting silently ignored. Cross-field rules (a weight naming a missing version, two services on
one route ...) live in ``checks.py`` so that each can point at the exact YAML path.
"""

from __future__ import annotations

import hashlib
import shlex
from typing import Annotated, Any, Literal

import orjson
from pydantic import BaseModel, ConfigDict, Field, field_validator, model_validator

from gateway.spec.types import Duration, Listen, Size

# Bounds: every duration and count has one, so that a value that validates also behaves (a
# request timeout of 0 would answer every request 504, a liveness interval of 0 would probe in
# a busy loop). Durations are seconds.
MAX_REPLICAS = 100        # per version; more is a fleet, not a box
MAX_COUNT = 1_000_000     # queues, request counts, weights
HOUR, DAY = 3600.0, 86400.0
MIN_PROBE_INTERVAL = 0.05


class Strict(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


class AdminSpec(Strict):
    listen: Listen = "127.0.0.1:8081"
    token_env: str | None = Field(None, description="environment variable holding the bearer token")
    token_file: str | None = Field(None, description="file holding the bearer token")
    allow_origins: tuple[str, ...] = Field((), description="browser Origins allowed to call the admin API")
    # Host names (besides IP literals and the listen address) a request may name: a page that
    # DNS-rebinds its own name to 127.0.0.1 is refused because its Host is that name. "*": any.
    allow_hosts: tuple[str, ...] = Field(
        ("localhost",), max_length=64,
        description="Host header names accepted besides IP literals ('*': any)")
    public: tuple[Literal["metrics", "status", "rollouts"], ...] = Field(
        (), description="GET endpoints served without the token on a non-loopback listener "
                        "(reads are open on loopback; /healthz and /readyz always are)")


class QueueSpec(Strict):
    """Requests that find no ready replica wait here (bounded in size and time)."""

    max_waiting: int = Field(1024, ge=0, le=MAX_COUNT)
    timeout: Duration = Field(10.0, ge=0, le=HOUR)


class DockerSpec(Strict):
    network: str | None = Field(
        None, description="join replicas to this network and reach them by container address "
                          "(the gateway itself runs in a container); unset: publish on 127.0.0.1")
    base_url: str | None = Field(None, description="Docker daemon URL; default from DOCKER_HOST")
    gpus: list[int] | Literal["auto"] = Field(
        "auto", description="GPU ids replicas may use; auto = detect with nvidia-smi -L")


class PlacementSpec(Strict):
    """Where Swarm may run a version's replicas (the swarm runtime only)."""

    constraints: tuple[Annotated[str, Field(min_length=3, max_length=256)], ...] = Field(
        (), max_length=32, description="Swarm constraints, e.g. 'node.labels.gpu==true'")
    preferences: tuple[Annotated[str, Field(pattern=r"^spread=[A-Za-z0-9_.-]{1,200}$")], ...] = \
        Field((), max_length=8, description="spread preferences, e.g. 'spread=node.labels.zone'")


class SwarmSpec(Strict):
    """The swarm runtime (runtimes/swarm.py): one Swarm service per replica on an overlay."""

    base_url: str | None = Field(None, description="Docker daemon URL of a swarm manager; "
                                 "default from DOCKER_HOST")
    network: str = Field("serve-gateway", min_length=1, max_length=128,
                         pattern=r"^[A-Za-z0-9][A-Za-z0-9_.-]*$",
                         description="attachable overlay network replicas join (created when "
                                     "missing; a gateway running in a container joins it)")
    placement: PlacementSpec = Field(PlacementSpec(),
                                     description="placement of every version without its own")
    gpu_kind: str = Field("NVIDIA-GPU", min_length=1, max_length=64,
                          pattern=r"^[A-Za-z0-9][A-Za-z0-9_.-]*$",
                          description="the generic resource that resources.gpus reserves "
                                      "(as the nodes advertise it: dockerd --node-generic-resource)")
    start_timeout: Duration = Field(120.0, gt=0, le=HOUR, description="a replica's task not "
                                    "running by then (image pull, no node fits) fails its start")


class ProcessSpec(Strict):
    gpus: list[Annotated[int, Field(ge=0, le=1024)]] | Literal["auto"] = Field(
        "auto", description="GPU ids process replicas may use, one CUDA_VISIBLE_DEVICES per "
                            "replica from resources.gpus; auto = detect with nvidia-smi -L")


class AccessLogSpec(Strict):
    """Opt-in access log: one line for a random ``sample`` fraction of proxied requests."""

    enabled: bool = False
    sample: float = Field(0.01, ge=0.0, le=1.0, description="fraction of requests logged")


class TracingSpec(Strict):
    """OpenTelemetry export of the gateway's spans (the [otel] extra); off without an endpoint.
    Request ids and ``traceparent`` are passed on either way."""

    otlp_endpoint: str | None = Field(None, max_length=2048, pattern=r"^https?://[^\s]+$",
                                      description="OTLP/HTTP collector, e.g. "
                                      "http://127.0.0.1:4318 (/v1/traces is added)")
    service_name: str = Field("serve-gateway", min_length=1, max_length=256,
                              description="the spans' service.name resource attribute")


class DeadlinesSpec(Strict):
    """A deadline on every wait on a peer of the data plane (dataplane/http1.py, upstream.py)."""

    header_read: Duration = Field(10.0, gt=0, le=3600, description="a request head not complete "
                                  "this long after its first byte: 408 and close")
    body_idle: Duration = Field(30.0, gt=0, le=3600, description="no request body byte for this "
                                "long (while the gateway wants more): 408 and close")
    upstream_idle: Duration = Field(60.0, gt=0, le=3600, description="no byte of a streamed worker "
                                    "answer for this long: the answer is cut, both sides closed")
    client_write: Duration = Field(30.0, gt=0, le=3600, description="a client that reads nothing "
                                   "of our answer for this long is disconnected")


MAX_WORKERS = 64


class GatewaySpec(Strict):
    instance: str = Field("default", description="names this gateway in replica labels; two gateways "
                                                 "sharing a Docker daemon need different names")
    listen: Listen = "127.0.0.1:8080"
    admin: AdminSpec = AdminSpec()
    runtime: Literal["process", "docker", "swarm"] = "process"
    docker: DockerSpec = DockerSpec()
    swarm: SwarmSpec = SwarmSpec()
    process: ProcessSpec = ProcessSpec()
    state_dir: str = ".serve-gateway"
    max_body_bytes: Size = Field(10 * 1024 * 1024, ge=0, le=1 << 40)
    queue: QueueSpec = QueueSpec()
    drain_timeout: Duration = Field(30.0, ge=0, le=HOUR, description="how long in-flight requests may finish on shutdown or scale-in")
    stop_grace: Duration = Field(10.0, ge=0, le=HOUR, description="SIGTERM to SIGKILL delay when stopping a replica")
    access_log: AccessLogSpec = AccessLogSpec()
    tracing: TracingSpec = TracingSpec()
    allow_empty: bool = Field(False, description="accept a config with no services (it serves "
                                                 "nothing); else it is refused at up and reload")
    deadlines: DeadlinesSpec = DeadlinesSpec()
    trusted_hops: int = Field(0, ge=0, le=16, description="proxies in front of the gateway whose "
                              "X-Forwarded-Proto/-Host and Forwarded are kept; 0: the gateway is "
                              "the edge and overwrites them")
    workers: Annotated[int, Field(ge=0, le=MAX_WORKERS)] | Literal["auto"] = Field(
        1, description="data-plane processes sharing the data port (SO_REUSEPORT), fed by the "
                       "controller; 'auto': the usable cores, at most 16; 1: one process serves "
                       "everything; 0: only the controller, no data port (data planes on other "
                       "hosts serve: deploy/stack.yml) (needs a restart to change)")


class HealthSpec(Strict):
    path: str = "/ready"
    interval: Duration = Field(0.2, ge=MIN_PROBE_INTERVAL, le=60.0,
                               description="readiness probe period while a replica starts")
    liveness_interval: Duration = Field(5.0, ge=0.1, le=HOUR)
    timeout: Duration = Field(2.0, gt=0, le=300.0)
    failure_threshold: int = Field(3, ge=1, le=100)
    start_timeout: Duration = Field(300.0, gt=0, le=DAY, description="a replica not ready by then is restarted")


class ResourcesSpec(Strict):
    cpus: float | None = Field(None, gt=0, le=4096)
    memory: Size | None = Field(None, gt=0, le=1 << 50)
    shm_size: Size | None = Field(None, gt=0, le=1 << 50)
    gpus: Annotated[int, Field(ge=0, le=1024)] | list[Annotated[int, Field(ge=0, le=1024)]] \
        | Literal["all"] | None = None


class AutoscaleSpec(Strict):
    """Replicas follow pending requests (control/autoscale.py). On a service, or on a version
    (its keys override the service's); a version's ``replicas`` is then its starting count."""

    enabled: bool = Field(True, description="false on a version turns the service's block off")
    min_replicas: int = Field(1, ge=0, le=MAX_REPLICAS, description="0 allows scale to zero after idle_to_zero")
    max_replicas: int = Field(4, ge=1, le=MAX_REPLICAS)
    target_pending: int | None = Field(
        None, ge=1, le=MAX_COUNT, description="pending requests per replica; default: batching.max_batch_size, else 1")
    scale_out_interval: Duration = Field(10.0, ge=0, le=DAY, description="minimum time between two scale-outs")
    scale_in_interval: Duration = Field(60.0, ge=0, le=DAY, description="low load this long scales in by one")
    idle_to_zero: Duration = Field(300.0, ge=0, le=30 * DAY, description="with min_replicas 0: idle this long -> 0")
    policy: str = Field("default", description="'default', a plugin name or 'module:function'")
    options: dict[str, Any] = Field({}, description="the policy plugin's keyword arguments")


class OutlierSpec(Strict):
    """Outlier ejection (Envoy's consecutive-5xx detection): a replica whose last
    ``consecutive_errors`` answers were all 5xx or gateway errors (connect, reset, timeout)
    gets no new requests for ``base_ejection`` times the number of its ejections, at most
    ``max_ejection``; never more than ``max_ejected_percent`` of a version's replicas at once
    (at least one of two or more)."""

    consecutive_errors: int = Field(5, ge=1, le=1000, description="errors in a row that eject")
    base_ejection: Duration = Field(10.0, ge=0.01, le=3600,
                                    description="first ejection; each repeat adds as much")
    max_ejection: Duration = Field(300.0, ge=0.01, le=86400, description="longest ejection")
    max_ejected_percent: int = Field(50, ge=0, le=100,
                                     description="share of replicas that may be out at once")


class MultiplexSpec(Strict):
    """Many models per replica, chosen per request by ``header`` (worker/multiplex.py): each
    replica keeps the last ``max_models_per_replica`` in an LRU, and the gateway sends a model's
    requests to a replica that holds it (dataplane/affinity.py) unless that one is full or
    ``load_slack`` requests busier than the least loaded replica: then another one loads it."""

    max_models_per_replica: int = Field(4, ge=1, le=1024, description="models each replica "
                                        "holds at once; the least recently used is evicted")
    header: str = Field("x-model-id", pattern=r"^[A-Za-z0-9-]{1,64}$",
                        description="request header naming the model")
    load_slack: int = Field(2, ge=0, le=4096, description="requests in flight a replica holding "
                            "the model may have above the least loaded replica before the model "
                            "is loaded on another one")
    metrics_models: int = Field(20, ge=0, le=1000, description="model ids with their own metric "
                                "label (the first seen); the others count as 'other'")


class VersionSpec(Strict):
    command: list[str] | None = Field(
        None, description="argv of the worker; {port} is replaced by the replica's port")
    image: str | None = None
    port: int | None = Field(None, ge=1, le=65535, description="the worker's port inside a container")
    env: dict[str, str] = {}
    workdir: str | None = None
    volumes: list[str] = Field([], description="docker only: 'host_path:container_path[:ro]'")
    replicas: int = Field(1, ge=0, le=MAX_REPLICAS)
    health: HealthSpec = HealthSpec()
    resources: ResourcesSpec = ResourcesSpec()
    autoscale: AutoscaleSpec | None = None
    max_concurrency: int = Field(
        5, ge=1, le=4096,
        description="requests (or batches) in flight per replica; more wait in the gateway's "
                    "queue (gateway.queue) for the first free slot of any replica")
    outlier: OutlierSpec = Field(OutlierSpec(), description="eject replicas that keep failing")
    multiplex: MultiplexSpec | None = Field(None, description="many models per replica, chosen "
                                            "per request by a header")
    placement: PlacementSpec | None = Field(None, description="swarm only: where its replicas "
                                            "may run; default gateway.swarm.placement")

    @field_validator("command", mode="before")
    @classmethod
    def _split_command(cls, value: object) -> object:
        return shlex.split(value) if isinstance(value, str) else value

    @field_validator("env", mode="before")
    @classmethod
    def _env_strings(cls, value: object) -> object:
        if isinstance(value, dict):
            try:
                return {k: v if isinstance(v, str) else orjson.dumps(v).decode()
                        for k, v in value.items()}
            except orjson.JSONEncodeError as exc:   # a !!binary value ...
                raise ValueError(f"values must be text or JSON: {exc}") from None
        return value

    def revision(self) -> str:
        """Hash of what defines a replica's process: a change here means new replicas."""
        ident = self.model_dump(include={"command", "image", "port", "env", "workdir", "volumes", "resources"})
        if self.multiplex is not None:   # the worker's LRU size and header are set at its start
            ident["env"] = self.worker_env()
        if self.placement is not None:   # only when set: existing revisions keep their hash
            ident["placement"] = self.placement.model_dump(mode="json")
        return hashlib.sha256(orjson.dumps(ident, option=orjson.OPT_SORT_KEYS)).hexdigest()[:12]

    def worker_env(self) -> dict[str, str]:
        """The replica's environment: ``env``, plus the multiplexing settings the worker SDK
        reads (so the command need not repeat them)."""
        m = self.multiplex
        if m is None:
            return dict(self.env)
        return {**self.env, "SGW_MULTIPLEX_MAX_MODELS": str(m.max_models_per_replica),
                "SGW_MULTIPLEX_HEADER": m.header}


class TimeoutsSpec(Strict):
    connect: Duration = Field(2.0, gt=0, le=300.0)
    request: Duration = Field(30.0, gt=0, le=DAY, description="upstream response deadline; past it the client gets 504")


class ValueMatch(Strict):
    """One condition on a header or cookie value: exactly one of ``exact`` or ``regex``."""

    exact: str | None = None
    regex: str | None = Field(None, description="Python regex that must match the whole value")

    @model_validator(mode="after")
    def _one(self) -> ValueMatch:
        if (self.exact is None) == (self.regex is None):
            raise ValueError("give exactly one of 'exact' or 'regex'")
        return self


def _shorthand_schema(schema: dict[str, Any]) -> None:
    """Editors should accept the shorthand ``x-model-version: v2`` as well as ``{regex: ...}``."""
    for key in ("header", "cookie"):
        prop = schema["properties"][key]
        prop["additionalProperties"] = {"anyOf": [{"type": "string"}, {"type": "integer"},
                                                  prop["additionalProperties"]]}


class MatchSpec(Strict):
    """All conditions must hold. A plain string value means an exact match."""

    model_config = ConfigDict(json_schema_extra=_shorthand_schema)

    header: dict[str, ValueMatch] = {}
    cookie: dict[str, ValueMatch] = {}

    @field_validator("header", "cookie", mode="before")
    @classmethod
    def _shorthand(cls, value: object) -> object:
        if isinstance(value, dict):
            # YAML reads `x-version: 2` as an int; the header value is the text "2"
            return {k: {"exact": str(v)} if isinstance(v, (str, int)) and not isinstance(v, bool)
                    else v for k, v in value.items()}
        return value

    @model_validator(mode="after")
    def _not_empty(self) -> MatchSpec:
        if not self.header and not self.cookie:
            raise ValueError("a match needs at least one header or cookie condition")
        return self


class RuleSpec(Strict):
    match: MatchSpec
    to: str = Field(description="the version that gets matching requests")


class StickySpec(Strict):
    """Where the sticky key comes from: a cookie (set by the gateway when absent) or a header."""

    cookie: str | None = None
    header: str | None = None
    max_age: Duration = Field(30 * DAY, ge=0, le=3650 * DAY, description="Max-Age of the cookie the gateway sets")

    @model_validator(mode="after")
    def _one(self) -> StickySpec:
        if (self.cookie is None) == (self.header is None):
            raise ValueError("give exactly one of 'cookie' or 'header'")
        return self


class MirrorSpec(Strict):
    """Shadow traffic: copies of ``percent``% of requests go to version ``to``; its answers are
    compared with the primary's and dropped."""

    to: str
    percent: float = Field(ge=0, le=100)
    comparator: str = Field("exact", description="built-in name or 'module:attr'")
    options: dict[str, Any] = Field({}, description="the comparator's keyword arguments")
    methods: list[Literal["GET", "HEAD", "POST"]] | None = Field(
        None, min_length=1, description="the methods copied and compared (a shadow rollout's "
        "analysis counts only these); default GET and HEAD, plus POST with mirror_post")
    max_body: Size = Field(1 << 20, ge=0, le=1 << 20, description="larger bodies are not mirrored")
    concurrency: int = Field(16, ge=1, le=4096, description="mirror requests in flight at once")
    queue: int = Field(64, ge=0, le=MAX_COUNT, description="copies waiting for a slot; beyond, copies are dropped")
    timeout: Duration = Field(5.0, gt=0, le=300.0, description="a mirror answer later than this counts as an error")


class TrafficSpec(Strict):
    rules: list[RuleSpec] = Field([], description="first match wins, before weights")
    weights: dict[str, int] = Field({}, description="version -> integer weight (any scale)")
    sticky: StickySpec | None = None
    mirror: MirrorSpec | None = None
    served_by_header: bool = Field(True, description="answer with x-served-by: service/version")

    @field_validator("weights")
    @classmethod
    def _non_negative(cls, value: dict[str, int]) -> dict[str, int]:
        for name, w in value.items():
            if not 0 <= w <= MAX_COUNT:
                raise ValueError(f"weight of {name} must be from 0 to {MAX_COUNT}")
        return value


class BatchingSpec(Strict):
    """Dynamic micro-batching of the POSTs to a service's route (dataplane/batcher.py): a batch
    leaves as soon as a replica has a free slot, so an idle service adds no wait."""

    max_batch_size: int = Field(32, ge=1, le=65536, description="instances per batch at most")
    max_wait_ms: float | Literal["adaptive"] = Field(
        5.0, description="how long the oldest request may wait for company, and only when the "
                         "arrival pace could fill the batch; 'adaptive' fits batch time a + c*b "
                         "and waits only while that pays")
    max_queue: int = Field(1024, ge=1, le=MAX_COUNT, description="queued requests; beyond: 503 + Retry-After")
    slots_per_replica: int = Field(1, ge=1, le=64, description="batches in flight per replica")
    timeout_ms: float = Field(10000.0, gt=0, le=DAY * 1000, description="per request, from arrival")
    timeout_header: str = Field("x-request-timeout-ms",
                                description="request header that may shorten timeout_ms")

    @field_validator("max_wait_ms")
    @classmethod
    def _wait(cls, value: float | str) -> float | str:
        if not isinstance(value, str) and not 0 <= value <= 60_000:
            raise ValueError("must be from 0 to 60000 or 'adaptive'")
        return value


class RouteRuleSpec(Strict):
    """Requests whose header (or cookie) ``name`` equals ``value`` (a blue/green preview, an A/B
    arm)."""

    header: str | None = None
    cookie: str | None = None
    value: str

    @field_validator("value", mode="before")
    @classmethod
    def _text(cls, value: object) -> object:
        return str(value) if isinstance(value, int) and not isinstance(value, bool) else value

    @model_validator(mode="after")
    def _one(self) -> RouteRuleSpec:
        if (self.header is None) == (self.cookie is None):
            raise ValueError("give exactly one of 'header' or 'cookie'")
        return self


class AnalysisSpec(Strict):
    """Checked once per ``interval`` over the new version's window of live metrics. Under
    ``min_requests`` samples a check is inconclusive: it holds, never promotes. ``failure_limit``
    failed intervals in a row roll the new version back. A threshold left out is not checked."""

    interval: Duration = Field(30.0, gt=0, le=DAY)
    min_requests: int = Field(50, ge=1, le=MAX_COUNT)
    failure_limit: int = Field(3, ge=1, le=1000)
    max_error_rate: float | None = Field(0.01, ge=0, le=1, description="5xx share of answers")
    max_p99: Duration | None = Field(None, gt=0, le=HOUR, description="p99 latency of the new version")
    max_p99_increase: Duration | None = Field(
        None, ge=0, le=HOUR, description="canary only: its p99 minus the stable version's p99 "
        "over the same window (a slower model fails this whatever its absolute latency)")
    min_agreement: float | None = Field(None, ge=0, le=1,
                                        description="shadow agreement ratio (needs mirroring)")


class ArmComparisonSpec(Strict):
    """A/B analysis: the candidate arm against the baseline arm."""

    interval: Duration = Field(60.0, gt=0, le=DAY)
    min_requests: int = Field(100, ge=1, le=MAX_COUNT)
    failure_limit: int = Field(3, ge=1, le=1000)
    max_error_rate_delta: float | None = Field(0.01, ge=-1, le=1, description="candidate minus baseline")
    max_p99_ratio: float | None = Field(1.2, gt=0, le=1000, description="candidate p99 / baseline p99")
    promote_after_passes: int | None = Field(None, ge=1, le=1000, description="unset: a person promotes")


class CanaryStepSpec(Strict):
    weight: int = Field(ge=0, le=100, description="percent of traffic to the new version")
    pause: Duration | None = Field(60.0, ge=0, le=30 * DAY, description="soak before the next step; null: until promoted")


class RolloutCommon(Strict):
    """What every strategy shares. ``to`` moves the service to that version (``from``: the one
    serving now, default the other version). A change to the serving version's definition
    (command, image, env ...) rolls out by the same strategy, from the old revision to the new;
    without ``to`` that is all the section does (for a service with one version)."""

    model_config = ConfigDict(extra="forbid", frozen=True, populate_by_name=True)

    to: str | None = Field(None, description="the version to move to")
    from_: str | None = Field(None, alias="from", description="the version serving now")
    scale_down_delay: Duration = Field(30.0, ge=0, le=30 * DAY, description="the old set stays warm this long for undo")


class RecreateRollout(RolloutCommon):
    strategy: Literal["recreate"]


class RampedRollout(RolloutCommon):
    strategy: Literal["ramped"]
    max_surge: int = Field(1, ge=0, le=MAX_REPLICAS)
    max_unavailable: int = Field(0, ge=0, le=MAX_REPLICAS)


class BlueGreenRollout(RolloutCommon):
    strategy: Literal["blue_green"]
    preview: RouteRuleSpec | None = Field(None, description="reach the new set before the switch")
    auto_promote_after: Duration | None = Field(
        0.0, ge=0, le=30 * DAY, description="switch this long after every new replica is ready; null: on promote")


class CanaryRollout(RolloutCommon):
    strategy: Literal["canary"]
    steps: list[CanaryStepSpec] = Field(
        [CanaryStepSpec(weight=10), CanaryStepSpec(weight=50)], min_length=1, max_length=100)
    analysis: AnalysisSpec | None = AnalysisSpec()
    canary_replicas: Annotated[int, Field(ge=1, le=MAX_REPLICAS)] | Literal["auto"] = Field(
        "auto", description="replicas of the new version; auto: follow its weight")
    mirror_percent: float = Field(0.0, ge=0, le=100,
                                  description="also mirror stable traffic (agreement check)")


class ABRollout(RolloutCommon):
    strategy: Literal["ab"]
    rule: RouteRuleSpec | None = None
    weight: int = Field(0, ge=0, le=100)
    candidate_replicas: int = Field(1, ge=1, le=MAX_REPLICAS)
    analysis: ArmComparisonSpec | None = None

    @model_validator(mode="after")
    def _arm(self) -> ABRollout:
        if self.rule is None and self.weight == 0:
            raise ValueError("an A/B rollout needs a 'rule', a 'weight' or both")
        return self


class ShadowRollout(RolloutCommon):
    strategy: Literal["shadow"]
    percent: float = Field(10.0, gt=0, le=100)
    duration: Duration = Field(300.0, gt=0, le=30 * DAY)
    analysis: AnalysisSpec = AnalysisSpec()
    auto_promote: bool = True


RolloutSpec = Annotated[RecreateRollout | RampedRollout | BlueGreenRollout | CanaryRollout
                        | ABRollout | ShadowRollout, Field(discriminator="strategy")]
ROLLOUT_STRATEGIES = ("recreate", "ramped", "blue_green", "canary", "ab", "shadow")


class ServiceSpec(Strict):
    route: str = Field(description="path prefix, matched on whole segments")
    rewrite: str | None = Field(None, description="replaces the matched prefix upstream")
    versions: dict[str, VersionSpec] = Field(min_length=1)
    traffic: TrafficSpec = TrafficSpec()
    timeouts: TimeoutsSpec = TimeoutsSpec()
    retries: int = Field(1, ge=0, le=3, description="retries on another replica when the worker never saw the request")
    mirror_post: bool = Field(False, description="POST is safe to mirror (inference without side effects)")
    batching: BatchingSpec | None = Field(None, description="micro-batch POSTs to the route")
    autoscale: AutoscaleSpec | None = Field(None, description="scale every version on its load")
    rollout: RolloutSpec | None = Field(None, description="move to another version by a strategy")

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
