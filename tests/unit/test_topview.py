"""What ``serve-gateway top`` computes from two scrapes (pure: documents in, rows out)."""

from __future__ import annotations

import math

from gateway.topview import frame, parse, plain, quantile


def _metrics(echo_v1: int, echo_v2: int, errors: int, fast: int, batches: tuple[int, int]) -> str:
    """/metrics text as the gateway writes it: echo v1 answers in <= 5 ms except ``errors``."""
    total = echo_v1
    return f"""# HELP serve_gateway_requests_total Requests answered, by status code
# TYPE serve_gateway_requests_total counter
serve_gateway_requests_total{{code="200",service="echo",version="v1"}} {echo_v1 - errors}
serve_gateway_requests_total{{code="503",service="echo",version="v1"}} {errors}
serve_gateway_requests_total{{code="200",service="echo",version="v2"}} {echo_v2}
# HELP serve_gateway_request_duration_seconds Time from request arrival to response
# TYPE serve_gateway_request_duration_seconds histogram
serve_gateway_request_duration_seconds_bucket{{le="0.005",service="echo",version="v1"}} {fast}
serve_gateway_request_duration_seconds_bucket{{le="0.01",service="echo",version="v1"}} {fast}
serve_gateway_request_duration_seconds_bucket{{le="0.1",service="echo",version="v1"}} {total}
serve_gateway_request_duration_seconds_bucket{{le="+Inf",service="echo",version="v1"}} {total}
serve_gateway_request_duration_seconds_count{{service="echo",version="v1"}} {total}
serve_gateway_request_duration_seconds_sum{{service="echo",version="v1"}} 1.0
# HELP serve_gateway_batch_size Instances per batch sent to a worker
# TYPE serve_gateway_batch_size histogram
serve_gateway_batch_size_sum{{service="echo",version="v2"}} {batches[0]}
serve_gateway_batch_size_count{{service="echo",version="v2"}} {batches[1]}
# HELP serve_gateway_batch_queue_length Requests queued for a batch
# TYPE serve_gateway_batch_queue_length gauge
serve_gateway_batch_queue_length{{service="echo",version="v2"}} 3.0
"""


STATUS = {
    "config": {"path": "gw.yaml", "hash": "abc"}, "runtime": "process",
    "services": {"echo": {
        "route": "/v1/echo", "weights": {"v1": 90, "v2": 10}, "max_batch_size": 8,
        "rollout": {"strategy": "canary", "stable": "v1", "target": "v2", "phase": "progressing",
                    "step": 1, "steps": 3, "weights": {"v1": 90, "v2": 10},
                    "next_step_in": 12.4, "last_verdict": "pass"},
        "versions": {
            "v1": {"ready": 2, "desired": 2, "waiting": 1,
                   "replicas": [{"inflight": 3}, {"inflight": 1}]},
            "v2": {"ready": 0, "desired": 1, "waiting": 0, "replicas": [], "crash_loop": True},
        }}},
}


def test_rates_p99_queue_and_batch_fill_over_the_interval() -> None:
    prev = parse(100.0, STATUS, _metrics(1000, 100, 0, 1000, (40, 10)))
    # 2 s later: v1 answered 200 more (10 of them 503), 2 of them slower than 10 ms;
    # v2 sent 10 batches of 60 instances in all
    cur = parse(102.0, STATUS, _metrics(1200, 140, 10, 1198, (100, 20)))
    f = frame(cur, prev, "http://127.0.0.1:8081")
    v1, v2 = f.rows
    assert (v1.service, v1.version, v1.weight, v1.ready, v1.desired) == ("echo", "v1", 90, 2, 2)
    assert v1.rps == 100.0 and v1.errors_rps == 5.0
    # 99% of 200 = rank 198: the last request of the 5 ms bucket -> 5 ms
    assert v1.p99_ms is not None and math.isclose(v1.p99_ms, 5.0)
    assert v1.queue == 1 and v1.inflight == 4 and v1.batch_mean is None
    assert v2.rps == 20.0 and v2.queue == 3
    assert v2.batch_mean == 6.0 and v2.batch_fill == 0.75
    assert v2.note == "CRASH LOOP"
    assert f.rollouts == [("echo: canary v1 -> v2  progressing step 2/3  [v1 90%, v2 10%], "
                          "next step in 12s, analysis pass")]
    text = plain(f)
    assert "rates over 2.0s" in text.splitlines()[0]
    assert "echo     v1       /v1/echo  90%     2/2       100.0  5.0" in text
    assert "6.0 (75%)" in text and "ROLLOUTS" in text


def test_the_first_frame_has_no_rates_and_a_restart_is_never_negative() -> None:
    first = frame(parse(0.0, STATUS, _metrics(10, 0, 0, 10, (0, 0))), None, "x")
    assert first.rows[0].rps is None and first.rows[0].p99_ms is None
    prev = parse(0.0, STATUS, _metrics(1000, 0, 0, 1000, (0, 0)))
    cur = parse(1.0, STATUS, _metrics(10, 0, 0, 10, (0, 0)))      # the gateway restarted
    assert frame(cur, prev, "x").rows[0].rps == 0.0


def test_quantile_interpolates_like_histogram_quantile() -> None:
    assert quantile(0.5, []) is None and quantile(0.5, [(1.0, 0), (math.inf, 0)]) is None
    buckets = [(0.1, 50.0), (0.2, 100.0), (math.inf, 100.0)]
    assert math.isclose(quantile(0.5, buckets) or 0, 0.1)
    assert math.isclose(quantile(0.75, buckets) or 0, 0.15)
    assert quantile(0.99, [(0.1, 0.0), (math.inf, 10.0)]) == 0.1    # in +Inf: the last bound
