"""Counters with known label sets exist at 0 before their first event, so that rate() and
increase() see the first replica exit or error instead of starting the series at it."""

from __future__ import annotations

from gateway.errors import ProxyError
from gateway.metrics import ERROR_KINDS, EXIT_REASONS, UPSTREAM_ERROR_KINDS, Metrics
from gateway.runtimes.base import ExitKind
from tests.helpers import metric_value


def test_series_exist_at_zero_before_any_event() -> None:
    m = Metrics()
    m.version("echo", "v1")                   # what a table build does for each version
    text = m.render().decode()
    echo = {"service": "echo", "version": "v1"}
    for reason in ("exited", "killed", "oom_killed"):
        assert metric_value(text, "serve_gateway_replica_exits_total", reason=reason, **echo) == 0
    for kind in ("connect", "reset", "timeout", "5xx", "protocol"):
        assert metric_value(text, "serve_gateway_upstream_errors_total", kind=kind, **echo) == 0
    for kind in ("no_route", "overloaded", "no_ready_replica", "upstream_connect",
                 "request_timeout", "body_too_large"):
        assert metric_value(text, "serve_gateway_errors_total", kind=kind) == 0
    for kind in ("header_read", "body_idle", "upstream_idle", "client_write"):
        assert metric_value(text, "serve_gateway_timeouts_total", kind=kind) == 0
    assert metric_value(text, "serve_gateway_replica_restarts_total", **echo) == 0
    assert metric_value(text, "serve_gateway_retries_total", **echo) == 0
    assert metric_value(text, "serve_gateway_replica_cold_start_seconds_count", **echo) == 0


def test_the_known_label_sets_follow_the_code() -> None:
    assert set(EXIT_REASONS) == {k.value for k in ExitKind} - {"stopped"}
    kinds = {ProxyError.kind}
    todo = [ProxyError]
    while todo:
        for sub in todo.pop().__subclasses__():
            kinds.add(sub.kind)
            todo.append(sub)
    assert set(ERROR_KINDS) == kinds
    assert {"connect", "reset", "timeout", "5xx", "protocol"} == set(UPSTREAM_ERROR_KINDS)
