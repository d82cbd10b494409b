"""Closed-loop load with wrk: one ``Load`` -> one wrk command -> a parsed ``WrkResult``."""

from __future__ import annotations

import re
import subprocess
from dataclasses import dataclass
from pathlib import Path

BENCH_DIR = Path(__file__).resolve().parent


@dataclass(frozen=True)
class Load:
    """One closed-loop traffic shape: wrk with a fixed number of connections.

    ``script`` is a wrk Lua file in bench/ (e.g. post.lua for the 1 KB JSON POST); ``headers``
    are extra ``Name: value`` lines (a scenario's header rules key on them).
    """

    name: str
    path: str = "/"
    connections: int = 64
    threads: int = 1
    script: str | None = None
    headers: tuple[str, ...] = ()

    def argv(self, url: str, duration_s: int) -> list[str]:
        cmd = ["wrk", f"-t{self.threads}", f"-c{self.connections}", f"-d{duration_s}s",
               "--latency", "--timeout", "5s"]
        if self.script:
            cmd += ["-s", str(BENCH_DIR / self.script)]
        for header in self.headers:
            cmd += ["-H", header]
        return cmd + [url.rstrip("/") + self.path]


@dataclass(frozen=True)
class WrkResult:
    """What one wrk run measured; latencies in milliseconds."""

    rps: float
    p50_ms: float
    p90_ms: float
    p99_ms: float
    requests: int
    errors: int  # non-2xx/3xx responses + socket errors (connect, read, write, timeout)
    raw: str

    def to_json(self) -> dict[str, float | int]:
        return {"rps": self.rps, "p50_ms": self.p50_ms, "p90_ms": self.p90_ms,
                "p99_ms": self.p99_ms, "requests": self.requests, "errors": self.errors}


_UNITS_MS = {"us": 1e-3, "ms": 1.0, "s": 1e3, "m": 60e3, "h": 3600e3}
_PCT = re.compile(r"^\s*(\d+(?:\.\d+)?)%\s+([\d.]+)(us|ms|s|m|h)\s*$", re.MULTILINE)
_RPS = re.compile(r"^Requests/sec:\s+([\d.]+)", re.MULTILINE)
_TOTAL = re.compile(r"^\s*(\d+) requests in ", re.MULTILINE)
_NON2XX = re.compile(r"Non-2xx or 3xx responses:\s+(\d+)")
_SOCKERR = re.compile(r"Socket errors: connect (\d+), read (\d+), write (\d+), timeout (\d+)")


def parse_wrk(text: str) -> WrkResult:
    """Parse ``wrk --latency`` output; raise ValueError naming what is missing."""
    pct = {float(m[1]): float(m[2]) * _UNITS_MS[m[3]] for m in _PCT.finditer(text)}
    rps = _RPS.search(text)
    total = _TOTAL.search(text)
    if rps is None or total is None or not {50.0, 90.0, 99.0} <= pct.keys():
        raise ValueError(f"unrecognised wrk output (was --latency given?):\n{text}")
    errors = sum(int(n) for n in (_NON2XX.findall(text)))
    sock = _SOCKERR.search(text)
    if sock:
        errors += sum(int(g) for g in sock.groups())
    return WrkResult(rps=float(rps[1]), p50_ms=pct[50.0], p90_ms=pct[90.0], p99_ms=pct[99.0],
                     requests=int(total[1]), errors=errors, raw=text)


def run_wrk(url: str, load: Load, duration_s: int) -> WrkResult:
    """Run wrk to completion (bounded: duration + a margin) and parse it."""
    argv = load.argv(url, duration_s)
    done = subprocess.run(argv, capture_output=True, text=True, timeout=duration_s + 30,
                          check=False)
    if done.returncode != 0:
        raise RuntimeError(f"{' '.join(argv)} failed ({done.returncode}): {done.stderr.strip()}")
    return parse_wrk(done.stdout)
