"""Unit tests of the bench's own logic (no sockets, no processes):

    .venv/bin/pytest bench/test_bench.py
"""

from __future__ import annotations

from pathlib import Path

import pytest
from report import write_readme
from scenarios import SPINE, TRAFFIC, Results
from wrkload import Load, WrkResult, parse_wrk

from gateway.loadgen.httpclient import ConnectionClosed, HttpConn, build_request
from gateway.loadgen.report import percentiles_ms

WRK_OUT = """\
Running 2s test @ http://127.0.0.1:8080/
  1 threads and 64 connections
  Thread Stats   Avg      Stdev     Max   +/- Stdev
    Latency     9.93ms    2.07ms  30.11ms   90.00%
    Req/Sec     6.55k   400.00     7.00k    70.00%
  Latency Distribution
     50%  850.00us
     75%    9.95ms
     90%   11.00ms
     99%    1.61s
  13034 requests in 2.00s, 2.10MB read
  Non-2xx or 3xx responses: 3
  Socket errors: connect 0, read 2, write 0, timeout 1
Requests/sec:   6517.00
Transfer/sec:      1.05MB
"""


def test_parse_wrk_units_and_errors() -> None:
    r = parse_wrk(WRK_OUT)
    assert r.rps == 6517.0 and r.requests == 13034
    assert r.p50_ms == pytest.approx(0.85) and r.p90_ms == 11.0 and r.p99_ms == 1610.0
    assert r.errors == 6


def test_parse_wrk_rejects_output_without_latency() -> None:
    with pytest.raises(ValueError, match="--latency"):
        parse_wrk("Requests/sec: 1.0\n  3 requests in 1.00s, 1KB read\n")


def test_load_argv() -> None:
    argv = Load("POST", path="/p", connections=8, script="post.lua",
                headers=("X-A: 1",)).argv("http://h:1/", 3)
    assert argv[:6] == ["wrk", "-t1", "-c8", "-d3s", "--latency", "--timeout"]
    assert argv[-1] == "http://h:1/p" and argv[-3:-1] == ["-H", "X-A: 1"]
    assert argv[argv.index("-s") + 1].endswith("bench/post.lua")


class _Transport:
    def __init__(self) -> None:
        self.sent: list[bytes] = []

    def write(self, data: bytes) -> None:
        self.sent.append(data)

    def close(self) -> None:
        pass


async def _exchange(chunks: list[bytes], close: bool = False) -> int:
    conn = HttpConn()
    conn.connection_made(_Transport())  # type: ignore[arg-type]
    fut = conn.send(build_request("GET", "h", 1, "/"))
    for chunk in chunks:
        conn.data_received(chunk)
    if close:
        conn.connection_lost(None)
    return await fut


async def test_content_length_split_anywhere() -> None:
    raw = b"HTTP/1.1 200 OK\r\nContent-Length: 11\r\n\r\n{\"ok\":true}"
    for cut in range(1, len(raw)):
        assert await _exchange([raw[:cut], raw[cut:]]) == 200


async def test_chunked_with_trailers_byte_by_byte() -> None:
    raw = (b"HTTP/1.1 201 Created\r\nTransfer-Encoding: chunked\r\n\r\n"
           b"5\r\nhello\r\n3;ext=1\r\nabc\r\n0\r\nX-T: 1\r\n\r\n")
    assert await _exchange([raw[i:i + 1] for i in range(len(raw))]) == 201


async def test_responses_back_to_back_on_one_connection() -> None:
    conn = HttpConn()
    conn.connection_made(_Transport())  # type: ignore[arg-type]
    for status in (200, 204, 503):
        fut = conn.send(b"GET / HTTP/1.1\r\n\r\n")
        body = b"" if status == 204 else b"x"
        length = b"" if status == 204 else b"Content-Length: 1\r\n"
        conn.data_received(b"HTTP/1.1 %d X\r\n%s\r\n%s" % (status, length, body))
        assert await fut == status


async def test_the_answer_to_head_has_no_body() -> None:
    conn = HttpConn("x-served-by")
    conn.connection_made(_Transport())  # type: ignore[arg-type]
    fut = conn.send(build_request("HEAD", "h", 1, "/"))
    conn.data_received(b"HTTP/1.1 200 OK\r\nContent-Length: 11\r\nX-Served-By: echo/v2\r\n\r\n")
    assert await fut == 200 and conn.watched == "echo/v2"
    fut = conn.send(build_request("GET", "h", 1, "/"))      # the next answer has its body
    conn.data_received(b"HTTP/1.1 200 OK\r\nContent-Length: 2\r\n\r\n")
    assert not fut.done()
    conn.data_received(b"{}")
    assert await fut == 200 and conn.watched is None


async def test_until_close_and_early_close() -> None:
    assert await _exchange([b"HTTP/1.0 200 OK\r\n\r\nbody"], close=True) == 200
    with pytest.raises(ConnectionClosed):
        await _exchange([b"HTTP/1.1 200 OK\r\nContent-Length: 9\r\n\r\nab"], close=True)


def test_percentiles_nearest_rank() -> None:
    samples = [i / 1000 for i in range(1, 101)]  # 1..100 ms
    p = percentiles_ms(samples, (50.0, 99.0, 100.0))
    assert p == {"p50": pytest.approx(50.0), "p99": pytest.approx(99.0),
                 "p100": pytest.approx(100.0)}


def test_checks_pass_fail_and_unmeasured() -> None:
    r = Results()
    def mk(rps: float) -> WrkResult:
        return WrkResult(rps, 1, 1, 1, 1, 0, "")
    r.closed["GET"] = {"gateway": mk(3000.0), "naive": mk(1000.0), "nginx": mk(20000.0)}
    r.rounds["GET"] = {"gateway": [3000.0], "naive": [1000.0], "nginx": [20000.0]}
    got = {c.name: c.measure(r) for c in SPINE.checks}
    assert got["gateway / naive proxy throughput, GET"] == ("3.00x", True)
    assert got["gateway / nginx proxy_pass throughput, GET"] == ("15%", False)
    assert got["added p99 vs direct, fixed rate"] is None
    r.closed["GET"]["gateway"] = WrkResult(3000.0, 1, 1, 1, 1, 7, "")
    assert SPINE.checks[0].measure(r) == ("3.00x (7 errors)", False)


def test_relative_checks_take_the_median_of_per_round_ratios() -> None:
    """Round by round, not median over median: a host that drifts between rounds moves both
    runs of a round together."""
    r = Results()
    def mk(rps: float) -> WrkResult:
        return WrkResult(rps, 1, 1, 1, 1, 0, "")
    r.closed = {"plain GET": {"gateway": mk(2000.0)}, "policies GET": {"gateway": mk(900.0)}}
    # medians over rounds alone would say 900 / 2000 = 45%
    r.rounds = {"plain GET": {"gateway": [1000.0, 2000.0, 4000.0]},
                "policies GET": {"gateway": [900.0, 2000.0, 800.0]}}
    check = TRAFFIC.checks[0]
    assert check.measure(r) == ("90% (rounds 20%-100%)", True)
    r.rounds["plain GET"]["gateway"].pop()     # rounds that do not pair up measure nothing
    assert check.measure(r) is None


def test_write_readme_replaces_only_its_block(tmp_path: Path) -> None:
    readme = tmp_path / "README.md"
    readme.write_text("intro\n<!-- results:spine -->\nold\n<!-- /results:spine -->\noutro\n")
    write_readme(readme, "spine", "new $1 \\g<0>\n")
    write_readme(readme, "other", "x\n")
    assert readme.read_text() == ("intro\n<!-- results:spine -->\nnew $1 \\g<0>\n"
                                  "<!-- /results:spine -->\noutro\n\n"
                                  "<!-- results:other -->\nx\n<!-- /results:other -->\n")

