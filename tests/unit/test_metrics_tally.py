"""Per-request counts are plain tallies until ``Metrics.flush()``: what /metrics, a rollout's
analysis and a data-plane process's report read after it must equal what prometheus_client
would have counted itself (bucket bounds inclusive, sums, codes), and nothing twice."""

from __future__ import annotations

from gateway.metrics import LATENCY_BUCKETS, Metrics


def sample(m: Metrics, name: str, **labels: str) -> float:
    v = m.registry.get_sample_value(name, labels)
    return 0.0 if v is None else v


def test_flush_folds_codes_latency_and_upstream_tallies_exactly_once() -> None:
    m = Metrics()
    vm = m.version("svc", "v1")
    for seconds in (0.0004, 0.0005, 0.0051, 7.0, 31.0):   # 0.0005 is a bound: le, inclusive
        vm.observe(200, seconds)
    vm.observe(503, 0.002)
    vm.upstream(0.001)
    lab = {"service": "svc", "version": "v1"}
    # not in the children yet: the hot path never touched prometheus_client
    assert sample(m, "serve_gateway_requests_total", code="200", **lab) == 0
    m.flush()
    assert sample(m, "serve_gateway_requests_total", code="200", **lab) == 5
    assert sample(m, "serve_gateway_requests_total", code="503", **lab) == 1
    h = "serve_gateway_request_duration_seconds"
    assert sample(m, h + "_bucket", le="0.0005", **lab) == 2
    assert sample(m, h + "_bucket", le="0.0025", **lab) == 3
    assert sample(m, h + "_bucket", le="0.01", **lab) == 4
    assert sample(m, h + "_bucket", le="10.0", **lab) == 5
    assert sample(m, h + "_bucket", le="+Inf", **lab) == 6
    assert abs(sample(m, h + "_sum", **lab) - 38.0080) < 1e-9
    assert sample(m, "serve_gateway_upstream_duration_seconds_count", **lab) == 1
    m.flush()                                       # nothing new: nothing added
    assert sample(m, "serve_gateway_requests_total", code="200", **lab) == 5
    assert sample(m, h + "_count", **lab) == 6
    assert (vm.answered, vm.failed) == (6, 1)


def test_buckets_include_what_is_not_flushed_yet() -> None:
    m = Metrics()
    vm = m.version("svc", "v1")
    vm.observe(200, 0.003)
    b = vm.buckets()                 # a rollout's analysis reads these between scrapes
    assert len(b) == len(LATENCY_BUCKETS) + 1
    assert b[LATENCY_BUCKETS.index(0.005)] == 1 and b[LATENCY_BUCKETS.index(0.0025)] == 0
    assert b[-1] == 1
