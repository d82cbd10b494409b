"""Overload benchmark: 10x more requests than the replicas can serve, open loop, on loopback.

Three replicas of ``bench/slowmodel.py`` (one call at a time each, about 10 calls/s) behind
the gateway, offered 300 requests/s (about 10x what they serve one by one) for 15 s after a
3 s warm-up, in four set-ups, one gateway each, one after another:

- ``no limit (main)``: the build given by ``--base`` (default /work/main's), which has no
  admission control: every request goes straight to a replica's socket;
- ``limit``: this build with its defaults (``max_concurrency`` 5 per replica, the gateway's
  queue of 1024 for 10 s);
- ``limit, queue 32``: the same with ``gateway.queue.max_waiting: 32`` (a queue a client waits
  about a second in at most);
- ``batching``: this build with ``batching: {max_batch_size: 8}`` (its own queue and
  shedding), for comparison; ``batching, queue 32`` with ``max_queue: 32`` too.

Every request is scheduled at start + i/rate whatever happened to the others (open loop, a
new connection when none is idle, as independent clients do); latency counts from that time.
Reported: goodput (2xx/s), p50/p99 of the 2xx, refusals (503) and how fast they came (p99),
timeouts (504) and other failures, and the most upstream connections the gateway held.

    .venv/bin/python bench/overload.py [--quick] [--write] [--base PATH] [--only NAME ...]
"""

from __future__ import annotations

import argparse
import asyncio
import collections
import json
import sys
import tempfile
import time
import urllib.request
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import uvloop
from procs import ProcSet, raised_nofile
from report import machine_info, write_readme
from targets import BENCH_DIR, GATEWAY_BIN, REPO, bench_env, gateway_config

from gateway.loadgen.httpclient import HttpConn, build_request, connect
from gateway.loadgen.report import percentiles_ms

MAIN_BIN = Path("/work/main/.venv/bin/serve-gateway")
RATE = 300.0
REPLICAS = 3
MODEL = "slowmodel:Slow"


@dataclass
class Mode:
    name: str
    base: bool = False                        # run the --base build
    version: dict[str, Any] = field(default_factory=dict)
    service: dict[str, Any] = field(default_factory=dict)
    gateway: dict[str, Any] = field(default_factory=dict)


MODES = (
    Mode("no limit (main)", base=True),
    Mode("limit"),
    Mode("limit, queue 32", gateway={"queue": {"max_waiting": 32}}),
    Mode("batching", service={"batching": {"max_batch_size": 8}}),
    Mode("batching, queue 32", service={"batching": {"max_batch_size": 8, "max_queue": 32}}),
)


@dataclass
class Outcome:
    mode: str
    offered_rps: float
    goodput_rps: float = 0.0
    ok_p50_ms: float = 0.0
    ok_p99_ms: float = 0.0
    refused: int = 0
    refused_p50_ms: float = 0.0
    refused_p99_ms: float = 0.0
    timed_out: int = 0
    other: dict[str, int] = field(default_factory=dict)
    max_upstream_conns: int = 0
    max_client_conns: int = 0


def _log(msg: str) -> None:
    print(f"[overload {time.strftime('%H:%M:%S')}] {msg}", file=sys.stderr, flush=True)


def services(mode: Mode) -> dict[str, Any]:
    version = {"command": f"serve-gateway worker {MODEL} --port {{port}}",
               "env": {"PYTHONPATH": str(BENCH_DIR)}, "replicas": REPLICAS,
               "health": {"path": "/ready"}, **mode.version}
    return {"m": {"route": "/m", "rewrite": "/predict", "versions": {"v1": version},
                  "timeouts": {"request": "30s"}, **mode.service}}


def _admin_json(port: int, path: str) -> Any:
    with urllib.request.urlopen(f"http://127.0.0.1:{port}{path}", timeout=2) as r:
        return json.loads(r.read())


def start(procs: ProcSet, tmp: Path, mode: Mode, binary: Path) -> tuple[int, int, set[int]]:
    """The gateway for ``mode``; (data port, admin port, worker ports) once all are ready."""
    config, port = gateway_config(tmp, services(mode))
    config["gateway"].update(mode.gateway)
    admin = int(config["gateway"]["admin"]["listen"].rsplit(":", 1)[1])
    path = tmp / "gateway.yaml"
    path.write_text(json.dumps(config, indent=2))
    proc = procs.start(f"gateway-{mode.name.split()[0]}", [str(binary), "up", str(path)],
                       env=bench_env(tmp), cwd=REPO, grace=10.0)
    deadline = time.monotonic() + 60
    while time.monotonic() < deadline:
        if not proc.alive:
            raise RuntimeError(f"gateway exited:\n{proc.log_tail()}")
        try:
            v = _admin_json(admin, "/status")["services"]["m"]["versions"]["v1"]
            if v["ready"] >= REPLICAS:
                return port, admin, {int(r["address"].rsplit(":", 1)[1])
                                     for r in v["replicas"]}
        except OSError:
            pass
        time.sleep(0.2)
    raise RuntimeError(f"replicas not ready in 60 s:\n{proc.log_tail()}")


def upstream_conns(worker_ports: set[int]) -> int:
    """Established TCP connections to a worker port (the gateway's side of each)."""
    n = 0
    for table in ("/proc/net/tcp", "/proc/net/tcp6"):
        try:
            lines = Path(table).read_text().splitlines()[1:]
        except OSError:
            continue
        for line in lines:
            f = line.split()
            if f[3] == "01" and int(f[2].rsplit(":", 1)[1], 16) in worker_ports:
                n += 1
    return n


class OpenLoop:
    """Request i at start + i/rate on an idle connection, or a new one: clients that do not
    wait for each other."""

    def __init__(self, port: int, raw: bytes, rate: float, warmup: float, duration: float,
                 worker_ports: set[int]) -> None:
        self.port, self.raw, self.rate = port, raw, rate
        self.warmup, self.duration = warmup, duration
        self.worker_ports = worker_ports
        self.idle: collections.deque[HttpConn] = collections.deque()
        self.conns = 0
        self.max_conns = 0
        self.outstanding = 0
        self.results: list[tuple[int, float]] = []    # (status or -1, seconds) measured ones
        self.max_upstream = 0
        self.tasks: set[asyncio.Task[None]] = set()

    async def run(self) -> None:
        start = time.perf_counter() + 0.01
        measure_from = start + self.warmup
        total = int((self.warmup + self.duration) * self.rate)
        next_sample = 0.0
        for i in range(total):
            at = start + i / self.rate
            now = time.perf_counter()
            if at > now:
                await asyncio.sleep(max(at - now, 0.001))
            if now >= next_sample:
                self.max_upstream = max(self.max_upstream, upstream_conns(self.worker_ports))
                next_sample = now + 0.25
            task = asyncio.get_running_loop().create_task(self.one(at, at >= measure_from))
            self.tasks.add(task)
            task.add_done_callback(self.tasks.discard)
        end = time.perf_counter() + 35          # the longest wait any set-up allows, and more
        while self.tasks and time.perf_counter() < end:
            self.max_upstream = max(self.max_upstream, upstream_conns(self.worker_ports))
            await asyncio.sleep(0.25)
        for task in list(self.tasks):
            task.cancel()
        while self.idle:
            self.idle.popleft().close()

    async def one(self, scheduled: float, measured: bool) -> None:
        conn = None
        while self.idle and conn is None:
            c = self.idle.popleft()
            conn = None if c.closed else c
        try:
            if conn is None:
                conn = await connect("127.0.0.1", self.port)
                self.conns += 1
                self.max_conns = max(self.max_conns, self.conns)
            status = await conn.send(self.raw)
        except (OSError, ConnectionError, asyncio.CancelledError, Exception):  # noqa: BLE001
            status = -1
        if measured:
            self.results.append((status, time.perf_counter() - scheduled))
        if conn is not None:
            if conn.closed or status == -1:
                conn.close()
                self.conns -= 1
            else:
                self.idle.append(conn)


def summarise(mode: Mode, run: OpenLoop) -> Outcome:
    ok = [s for st, s in run.results if 200 <= st < 300]
    refused = [s for st, s in run.results if st == 503]
    out = Outcome(mode.name, RATE, goodput_rps=round(len(ok) / run.duration, 1),
                  refused=len(refused), timed_out=sum(1 for st, _ in run.results if st == 504),
                  max_upstream_conns=run.max_upstream, max_client_conns=run.max_conns)
    pct = percentiles_ms(ok, (50.0, 99.0)) if ok else {}
    out.ok_p50_ms, out.ok_p99_ms = pct.get("p50", 0.0), pct.get("p99", 0.0)
    if refused:
        rp = percentiles_ms(refused, (50.0, 99.0))
        out.refused_p50_ms, out.refused_p99_ms = rp["p50"], rp["p99"]
    other = collections.Counter(str(st) for st, _ in run.results
                                if not (200 <= st < 300) and st not in (503, 504))
    out.other = dict(other)
    return out


def measure(mode: Mode, binary: Path, warmup: float, duration: float) -> Outcome:
    with tempfile.TemporaryDirectory(prefix="sgw-overload-") as d, ProcSet(Path(d)) as procs:
        tmp = Path(d)
        _log(f"{mode.name}: starting {binary}")
        port, _, workers = start(procs, tmp, mode, binary)
        raw = build_request("POST", "127.0.0.1", port, "/m",
                            ("Content-Type: application/json",), b'{"x": 1}')
        run = OpenLoop(port, raw, RATE, warmup, duration, workers)
        _log(f"{mode.name}: {RATE:g} req/s for {warmup:g}+{duration:g} s")
        uvloop.run(run.run())
        out = summarise(mode, run)
        _log(f"{mode.name}: {asdict(out)}")
        return out


def render(outcomes: list[Outcome], info: dict[str, str], warmup: float, duration: float) -> str:
    rows = [("| set-up | goodput (2xx/s) | 2xx p50 | 2xx p99 | 503s | 503 p50 / p99 | 504s "
             "| other | max upstream conns | max client conns |"),
            "|---|---|---|---|---|---|---|---|---|---|"]
    for o in outcomes:
        other = ", ".join(f"{k}: {v}" for k, v in sorted(o.other.items())) or "0"
        rows.append(f"| {o.mode} | {o.goodput_rps:.1f} | {o.ok_p50_ms:.0f} ms | "
                    f"{o.ok_p99_ms:.0f} ms | {o.refused} | {o.refused_p50_ms:.0f} / "
                    f"{o.refused_p99_ms:.0f} ms | "
                    f"{o.timed_out} | {other} | {o.max_upstream_conns} | {o.max_client_conns} |")
    head = (f"{RATE:g} req/s offered for {duration:g} s after a {warmup:g} s warm-up to "
            f"{REPLICAS} replicas of `bench/slowmodel.py` (about 10 calls/s each); "
            f"machine: {info.get('cpus', '?')}, load average at start "
            f"{info.get('load average at start', '?')}. \"other\": -1 is a request with no "
            "answer (connection error, or none within 35 s of the end).\n\n")
    return head + "\n".join(rows) + "\n"


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--quick", action="store_true", help="5 s measured instead of 15")
    p.add_argument("--write", action="store_true", help="update bench/README.md's block")
    p.add_argument("--base", type=Path, default=MAIN_BIN, help="the build without a limit")
    p.add_argument("--gateway", type=Path, default=GATEWAY_BIN)
    p.add_argument("--only", action="append", help="a set-up's name (repeat for several)")
    p.add_argument("--json", type=Path)
    args = p.parse_args()
    warmup, duration = (2.0, 5.0) if args.quick else (3.0, 15.0)
    info = machine_info()
    wanted = set(args.only) if args.only else None
    outcomes = []
    with raised_nofile():
        for mode in MODES:
            if wanted and mode.name not in wanted:
                continue
            binary = args.base if mode.base else args.gateway
            if not binary.exists():
                _log(f"{mode.name}: {binary} does not exist, skipped")
                continue
            outcomes.append(measure(mode, binary, warmup, duration))
    block = render(outcomes, info, warmup, duration)
    print(block)
    if args.write:
        write_readme(BENCH_DIR / "README.md", "overload", block)
    if args.json:
        args.json.write_text(json.dumps([asdict(o) for o in outcomes], indent=2))
    return 0


if __name__ == "__main__":
    sys.exit(main())
