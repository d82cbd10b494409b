"""Exception hierarchy.

Data-plane errors carry the HTTP status and a short machine-readable ``kind`` so that the
server turns every one of them into the same JSON body:
``{"error": kind, "service": name, "detail": text}``.
"""

from __future__ import annotations

from dataclasses import dataclass


class GatewayError(Exception):
    """Base of every error raised by serve-gateway itself."""


@dataclass(frozen=True)
class ConfigProblem:
    path: str          # dotted YAML path, e.g. "services.mlp.versions.v1.replicas"
    message: str
    line: int | None = None

    def __str__(self) -> str:
        where = f" (line {self.line})" if self.line else ""
        return f"{self.path or '<root>'}: {self.message}{where}"


class ConfigError(GatewayError):
    """A configuration that cannot be used; lists every problem found, each with path and line."""

    def __init__(self, problems: list[ConfigProblem], source: str = "") -> None:
        self.problems = problems
        self.source = source
        head = f"{source}: " if source else ""
        super().__init__(head + "; ".join(str(p) for p in problems))

    def render(self) -> str:
        head = f"invalid config {self.source}" if self.source else "invalid config"
        return head + "\n" + "\n".join(f"  {p}" for p in self.problems)


class StateDirLocked(ConfigError):
    """Another gateway holds this state_dir and instance (gateway/statelock.py): refused before
    anything was touched, so the running gateway and its replicas are left alone."""

    def __init__(self, message: str, source: str = "") -> None:
        super().__init__([ConfigProblem("gateway.state_dir", message)], source)

    def render(self) -> str:
        return f"serve-gateway: not started: {self.problems[0].message}"


class RuntimeFailure(GatewayError):
    """A runtime could not start, stop or inspect a replica."""


class Unschedulable(RuntimeFailure):
    """No node of a cluster takes a replica (its constraints, resources or GPUs)."""


class BadObservations(GatewayError):
    """A data-plane process's observations the controller cannot read (control/gather.py): the
    whole report is refused, nothing of it is counted (the report route answers 400)."""


class MissingExtra(GatewayError):
    """A feature whose optional dependencies are not installed; says which extra brings them."""

    def __init__(self, feature: str, extra: str, missing: str) -> None:
        super().__init__(f"{feature} needs the Python package {missing!r}, which is not "
                         f"installed: pip install 'serve-gateway[{extra}]'")
        self.extra = extra


class SnapshotError(GatewayError):
    """A routing snapshot from the controller that a data-plane process cannot apply (its last
    good one stays in force; dataplane/snapshot.py)."""


class ProxyError(GatewayError):
    """An error the data plane answers itself (never the worker's own response)."""

    status = 502
    kind = "upstream_error"
    metric = "protocol"   # the serve_gateway_upstream_errors_total{kind} label
    retry_after: int | None = None
    deadline: str | None = None   # the serve_gateway_timeouts_total{kind} a handler counts

    def __init__(self, detail: str = "") -> None:
        super().__init__(detail)
        self.detail = detail


class BadRequest(ProxyError):
    status = 400
    kind = "bad_request"


class HeadTooLarge(ProxyError):
    status = 431
    kind = "head_too_large"


class RequestTimeout(ProxyError):
    """The client was too slow sending its request head or body (a deadline on that wait)."""

    status = 408
    kind = "request_timeout"


class VersionNotSupported(ProxyError):
    status = 505
    kind = "http_version_not_supported"


class NotImplementedCoding(ProxyError):
    """A transfer coding other than chunked (RFC 9112 6.1: 501)."""

    status = 501
    kind = "not_implemented"


class NotFound(ProxyError):
    status = 404
    kind = "no_route"


class BodyTooLarge(ProxyError):
    status = 413
    kind = "body_too_large"


class NoReadyReplica(ProxyError):
    status = 503
    kind = "no_ready_replica"
    retry_after = 1


class ColdStartTimeout(NoReadyReplica):
    """A replica was starting for this request (scale from zero, a restart) and was not ready
    before the request's queue deadline: a gateway timeout, not "nothing can serve" (503)."""

    status = 504
    kind = "cold_start_timeout"


class Overloaded(ProxyError):
    status = 503
    kind = "overloaded"
    retry_after = 1


class UpstreamTimeout(ProxyError):
    status = 504
    kind = "upstream_timeout"
    metric = "timeout"


class UpstreamStalled(UpstreamTimeout):
    """A streamed worker answer sent nothing for ``deadlines.upstream_idle``."""

    kind = "upstream_idle_timeout"
    deadline = "upstream_idle"


class DeadlineExceeded(ProxyError):
    """The request's own deadline (batching ``timeout_ms`` or its timeout header) passed."""

    status = 504
    kind = "deadline_exceeded"


class ShuttingDown(ProxyError):
    status = 503
    kind = "shutting_down"
    retry_after = 1


class ClientGone(ProxyError):
    """The client disconnected before its answer (nginx's 499): nobody reads this one."""

    status = 499
    kind = "client_closed_request"


class InternalError(ProxyError):
    """A bug in the gateway's own handler: answered, logged, never a dropped connection."""

    status = 500
    kind = "internal_error"


class UpstreamError(ProxyError):
    """The request may have reached the worker: it is never replayed."""

    status = 502
    kind = "upstream_error"


class UpstreamConnectError(UpstreamError):
    """The worker provably never saw the request (connect failed, or the pooled connection was
    already closed before anything was written): safe to retry on another replica."""

    kind = "upstream_connect"
    metric = "connect"


class UpstreamReset(UpstreamError):
    """The connection closed after the request was written and before any response byte.

    Retried only for idempotent methods."""

    kind = "upstream_reset"
    metric = "reset"
