"""``serve-gateway bench`` against a real gateway and real echo workers on loopback."""

from __future__ import annotations

import asyncio
import json
import os
import pty
import subprocess
import sys
import time
from pathlib import Path

from tests.helpers import ECHO, GatewayProc, free_port, run_cli


def _two_versions(**v2_env: str) -> dict:
    return {"echo": {"route": "/v1/echo", "rewrite": "/predict",
                     "traffic": {"weights": {"v1": 75, "v2": 25}},
                     "versions": {"v1": {"command": ECHO, "replicas": 1},
                                  "v2": {"command": ECHO, "replicas": 1, "env": v2_env}}}}


async def test_open_loop_reports_percentiles_codes_and_version_shares(tmp_path: Path) -> None:
    body = tmp_path / "body.json"
    body.write_text('{"x": 1}')
    async with GatewayProc(tmp_path, _two_versions()) as gw:
        code, out, err = await run_cli("bench", gw.url("/v1/echo"), "--body-file", body,
                                       "--rate", "200", "--duration", "2s", "--connections", "8",
                                       "--json")
        assert code == 0, err
        doc = json.loads(out)
        assert doc["method"] == "POST" and doc["rate"] == 200 and doc["body_bytes"] == 8
        assert 360 <= doc["answered"] <= 400, doc          # 200 req/s for 2 s, all answered
        assert doc["errors"] == {}
        assert doc["status"] == {"200": {"count": doc["answered"], "share": 1.0}}
        # the 75/25 split is smooth weighted round-robin: exact up to the window's edges
        shares = doc["served_by"]
        assert set(shares) == {"echo/v1", "echo/v2"}
        assert abs(shares["echo/v1"]["share"] - 0.75) < 0.02, shares
        assert 150 <= doc["throughput_rps"] <= 210
        lat = doc["latency_ms"]
        assert 0 < lat["p50"] <= lat["p90"] <= lat["p99"] <= lat["p99.9"] <= lat["max"]
        assert "generator_lag_ms" in doc and "service_ms" in doc

        # the same through the route of the config (-c), closed loop, as text
        code, out, err = await run_cli("-c", gw.config_path, "bench", "/v1/echo",
                                       "-d", '{"x": 2}', "--connections", "4", "--duration", "1")
        assert code == 0, err
        assert f"POST http://127.0.0.1:{gw.port}/v1/echo: closed loop, 4 connections" in out
        assert "status     200: " in out and "(100.0%)" in out
        assert "served by  echo/v1: " in out and "echo/v2: " in out
        assert "latency    p50 " in out


async def test_open_loop_latency_counts_the_wait_of_a_stalled_server(tmp_path: Path) -> None:
    """Coordinated omission: a worker answering 10 req/s offered 40 req/s. A closed-loop tool
    reports the service time (~2 x 100 ms); the open loop charges every request the time since
    it was due, so the last ones show the seconds they waited."""
    services = {"slow": {"route": "/slow", "rewrite": "/predict",
                         "versions": {"v1": {"command": ECHO, "replicas": 1,
                                             "env": {"ECHO_DELAY_SECONDS": "0.1"}}}}}
    async with GatewayProc(tmp_path, services) as gw:
        code, out, err = await run_cli("bench", gw.url("/slow"), "-d", "{}", "--rate", "40",
                                       "--duration", "1", "--connections", "2", "--json",
                                       timeout=60)
        assert code == 0, err
        doc = json.loads(out)
        assert doc["answered"] == 40 and doc["errors"] == {}
        assert doc["service_ms"]["p99"] < 1000, doc
        assert doc["latency_ms"]["max"] > 2000, doc       # ~3 s behind schedule at the end
        assert doc["latency_ms"]["p99"] > 3 * doc["service_ms"]["p99"], doc


async def test_requests_past_the_timeout_are_errors_and_the_run_still_ends(tmp_path: Path) -> None:
    services = {"stuck": {"route": "/stuck", "rewrite": "/predict",
                          "versions": {"v1": {"command": ECHO, "replicas": 1,
                                              "env": {"ECHO_DELAY_SECONDS": "20"}}}}}
    async with GatewayProc(tmp_path, services) as gw:
        started = time.monotonic()
        code, out, err = await run_cli("bench", gw.url("/stuck"), "-d", "{}", "--rate", "4",
                                       "--duration", "1", "--connections", "2", "--timeout",
                                       "1s", "--json", timeout=60)
        assert code == 0, err
        doc = json.loads(out)
        assert doc["answered"] == 0 and doc["errors"]["timeout"] == 4, doc
        assert doc["latency_ms"]["p50"] is None                    # no answer: null, not NaN
        assert time.monotonic() - started < 15       # 1 s of load, then at most ~1.25 s more


async def test_plot_progress_line_and_errors(tmp_path: Path) -> None:
    services = {"echo": {"route": "/v1/echo", "rewrite": "/predict",
                         "versions": {"v1": {"command": ECHO, "replicas": 1}}}}
    async with GatewayProc(tmp_path, services) as gw:
        png = tmp_path / "latency.png"
        code, out, err = await run_cli("bench", gw.url("/v1/echo"), "-d", "{}", "--rate", "100",
                                       "--duration", "1", "--plot", png)
        assert code == 0, err
        assert png.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n" and png.stat().st_size > 5000
        assert f"plot       {png}" in out

        # without matplotlib: the numbers, and a message naming the extra
        shadow = tmp_path / "no-matplotlib"
        shadow.mkdir()
        (shadow / "matplotlib.py").write_text(
            "raise ModuleNotFoundError(\"No module named 'matplotlib'\", name='matplotlib')\n")
        code, out, err = await run_cli("bench", gw.url("/v1/echo"), "-d", "{}", "--duration",
                                       "0.5", "--plot", tmp_path / "none.png",
                                       env={"PYTHONPATH": str(shadow)})
        assert code == 0, err
        assert "pip install 'serve-gateway[plot]'" in err and "latency    p50" in out
        assert not (tmp_path / "none.png").exists()

        # on a terminal, a progress line rewritten in place once a second
        screen = await asyncio.to_thread(_on_a_tty, [
            "bench", gw.url("/v1/echo"), "-d", "{}", "--rate", "50", "--duration", "2.5"])
        assert screen.count("\r") >= 2 and "req/s  errors 0" in screen, screen
        assert "answered" in screen

    # nothing listening: exit 1 and why; a bad URL: exit 2
    port = free_port()
    code, out, err = await run_cli("bench", f"http://127.0.0.1:{port}/x", "--duration", "1")
    assert code == 1 and f"cannot connect to 127.0.0.1:{port}" in err
    code, out, err = await run_cli("bench", "https://example.invalid/x")
    assert code == 2 and "plain HTTP/1.1 only" in err
    code, out, err = await run_cli("bench", f"http://127.0.0.1:{port}/", "-H", "no-colon")
    assert code == 2 and "not 'Name: value'" in err


def _on_a_tty(args: list[str]) -> str:
    """Run the CLI with stderr on a pseudo-terminal; what the terminal got."""
    exe = str(Path(sys.executable).with_name("serve-gateway"))
    master, slave = pty.openpty()
    proc = subprocess.Popen([exe, *args], stdout=subprocess.DEVNULL, stderr=slave,
                            stdin=subprocess.DEVNULL, env=os.environ)
    os.close(slave)
    got = b""
    deadline = time.monotonic() + 30
    try:
        while time.monotonic() < deadline:
            try:
                chunk = os.read(master, 4096)
            except OSError:      # EIO: the child closed its end
                break
            if not chunk:
                break
            got += chunk
        proc.wait(timeout=10)
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
        os.close(master)
    return got.decode(errors="replace")
