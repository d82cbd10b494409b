"""Micro-batching benchmark: the numpy MLP (examples/models/mlp.py) behind serve-gateway, same
machine, same run, one gateway serving three services on identical single-replica versions:

- ``plain``: no batching (each request is its own forward pass);
- ``fixed``: ``batching:`` from config/batching.yaml (fixed ``max_wait_ms``);
- ``adaptive``: the same with ``max_wait_ms: adaptive``;

plus the limit: the ``fixed`` service's own replica fed full ``max_batch_size`` batches directly,
``slots_per_replica`` at a time. Closed loop: N clients, each one keep-alive connection posting one
instance after another; throughput, p50 / p99 latency and the mean batch size (from the gateway's
``serve_gateway_batch_size`` histogram over the measured window) per concurrency.

    .venv/bin/python bench/batching.py [--quick] [--write] [--json out.json]

``--write`` puts the table between ``<!-- results:batching -->`` markers in bench/README.md.
Every process it starts is stopped at the end, pass or fail.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import random
import shutil
import signal
import sys
import tempfile
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import orjson
import yaml
from procs import ProcSet, http_status, raised_nofile
from report import machine_info, write_readme
from targets import BENCH_DIR, GATEWAY_BIN, REPO, gateway_config

from gateway.loadgen.httpclient import build_request, connect
from gateway.loadgen.report import percentiles_ms

CONCURRENCY = (1, 4, 16, 64, 256)
MODES = ("plain", "fixed", "adaptive")
CONFIG = REPO / "config" / "batching.yaml"


@dataclass
class Point:
    """One closed-loop measurement."""

    clients: int
    rps: float               # instances per second
    p50_ms: float
    p99_ms: float
    errors: int
    mean_batch: float | None = None


def _log(msg: str) -> None:
    print(f"[batching {time.strftime('%H:%M:%S')}] {msg}", file=sys.stderr, flush=True)


def services(replicas: int) -> tuple[dict[str, Any], dict[str, Any]]:
    """The three services, all built from config/batching.yaml's mlp service."""
    mlp = yaml.safe_load(CONFIG.read_text())["services"]["mlp"]
    mlp["versions"]["v1"]["replicas"] = replicas
    batching = mlp.pop("batching")
    out = {}
    for mode in MODES:
        svc = {**mlp, "route": f"/v1/{mode}"}
        if mode != "plain":
            svc["batching"] = {**batching, **({"max_wait_ms": "adaptive"} if mode == "adaptive" else {})}
        out[mode] = svc
    return out, batching


@dataclass
class Sample:
    """Latencies (s) of the answers that ended inside measured windows, and their length."""

    latencies: list[float] = field(default_factory=list)
    errors: int = 0
    seconds: float = 0.0

    def point(self, clients: int, per_request: int = 1) -> Point:
        pct = percentiles_ms(self.latencies, (50, 99))
        return Point(clients, len(self.latencies) * per_request / self.seconds, pct["p50"],
                     pct["p99"], self.errors)


async def closed_loop(port: int, path: str, body: bytes, clients: int, warmup: float,
                      duration: float, into: Sample | None = None) -> Sample:
    """``clients`` connections, each sending ``body`` after its previous answer; answers that
    end in the ``duration`` after ``warmup`` are measured."""
    raw = build_request("POST", "127.0.0.1", port, path, ("Content-Type: application/json",), body)
    clock = time.perf_counter           # uvloop's loop.time() counts whole milliseconds
    t_begin = clock() + warmup
    t_end = t_begin + duration
    out = into or Sample()
    out.seconds += duration

    async def client() -> None:
        conn = await connect("127.0.0.1", port)
        try:
            while clock() < t_end:
                t0 = clock()
                status = await conn.send(raw)
                t1 = clock()
                if t_begin <= t1 < t_end:
                    if status == 200:
                        out.latencies.append(t1 - t0)
                    else:
                        out.errors += 1
        finally:
            conn.close()

    # the gateway answers within its timeouts; this bound only keeps a wedged run from hanging
    await asyncio.wait_for(asyncio.gather(*(client() for _ in range(clients))),
                           warmup + duration + 60)
    return out


async def batch_histogram(admin: int, service: str) -> tuple[float, float]:
    """(sum, count) of serve_gateway_batch_size for one service."""
    from prometheus_client.parser import text_string_to_metric_families

    reader, writer = await asyncio.open_connection("127.0.0.1", admin)
    writer.write(b"GET /metrics HTTP/1.1\r\nHost: 127.0.0.1\r\nConnection: close\r\n\r\n")
    data = await reader.read()
    writer.close()
    text = data.partition(b"\r\n\r\n")[2].decode()
    total = count = 0.0
    for family in text_string_to_metric_families(text):
        for s in family.samples:
            if s.labels.get("service") == service and s.name == "serve_gateway_batch_size_sum":
                total = s.value
            elif s.labels.get("service") == service and s.name == "serve_gateway_batch_size_count":
                count = s.value
    return total, count


async def measure(port: int, admin: int, mode: str, body: bytes, clients: int, warmup: float,
                  duration: float, into: Sample | None = None) -> tuple[Sample, float, float]:
    """One window; the batch histogram's (sum, count) growth over the measured part."""
    if mode == "plain":
        return await closed_loop(port, f"/v1/{mode}", body, clients, warmup, duration, into), 0, 0

    async def edge() -> tuple[float, float]:
        await asyncio.sleep(warmup)
        return await batch_histogram(admin, mode)
    first = asyncio.ensure_future(edge())
    sample = await closed_loop(port, f"/v1/{mode}", body, clients, warmup, duration, into)
    before, after = await first, await batch_histogram(admin, mode)
    return sample, after[0] - before[0], after[1] - before[1]


async def curve_point(port: int, admin: int, body: bytes, clients: int, warmup: float,
                      duration: float) -> dict[str, Point]:
    """Every mode at one concurrency, one after the other."""
    out = {}
    for mode in MODES:
        sample, total, count = await measure(port, admin, mode, body, clients, warmup, duration)
        p = out[mode] = sample.point(clients)
        p.mean_batch = total / count if count else None
    return out


async def one_client(port: int, admin: int, body: bytes, warmup: float,
                     duration: float) -> dict[str, Point]:
    """One client taking turns over the modes, one request at a time: the ratio of p50s is
    judged within 10 %, and a shared machine's background load drifts more than that between
    windows measured one after another; request by request, it hits every mode alike."""
    clock = time.perf_counter
    conns, raws = {}, {}
    for mode in MODES:
        conns[mode] = await connect("127.0.0.1", port)
        raws[mode] = build_request("POST", "127.0.0.1", port, f"/v1/{mode}",
                                   ("Content-Type: application/json",), body)
    samples = {m: Sample() for m in MODES}
    before = {m: await batch_histogram(admin, m) for m in MODES[1:]}
    t_begin = clock() + warmup
    t_end = t_begin + duration * len(MODES)
    order = list(MODES)
    shuffle = random.Random(0).shuffle       # no mode always follows the same other one
    while clock() < t_end:
        shuffle(order)
        for mode in order:
            t0 = clock()
            status = await conns[mode].send(raws[mode])
            t1 = clock()
            if t0 >= t_begin:
                s = samples[mode]
                s.seconds += t1 - t0
                if status == 200:
                    s.latencies.append(t1 - t0)
                else:
                    s.errors += 1
    out = {}
    for mode in MODES:
        conns[mode].close()
        p = out[mode] = samples[mode].point(1)
        if mode != "plain":
            after = await batch_histogram(admin, mode)
            count = after[1] - before[mode][1]
            p.mean_batch = (after[0] - before[mode][0]) / count if count else None
    return out


def start_gateway(procs: ProcSet, tmp: Path, svcs: dict[str, Any],
                  workers: int = 1) -> tuple[int, int]:
    config, port = gateway_config(tmp, svcs)
    if workers > 1:       # data-plane processes, each batching its own requests
        config["gateway"]["workers"] = workers
    admin = int(config["gateway"]["admin"]["listen"].rpartition(":")[2])
    path = tmp / "gateway.yaml"
    path.write_text(json.dumps(config, indent=2))
    proc = procs.start("gateway", [str(GATEWAY_BIN), "up", str(path)], cwd=REPO, grace=10.0)
    deadline = time.monotonic() + 90
    while http_status(admin, "/readyz") != 200:
        if not proc.alive() or time.monotonic() > deadline:
            raise RuntimeError(f"gateway not ready; log tail:\n{proc.log_tail()}")
        time.sleep(0.2)
    return port, admin


def replica_port(admin: int, service: str) -> int:
    import urllib.request

    opener = urllib.request.build_opener(urllib.request.ProxyHandler({}))
    with opener.open(f"http://127.0.0.1:{admin}/status", timeout=5) as r:
        doc = json.load(r)
    address = doc["services"][service]["versions"]["v1"]["replicas"][0]["address"]
    return int(address.rpartition(":")[2])


async def saturation(port: int, admin: int, direct: int, single: bytes, full: bytes,
                     size: int, slots: int, clients: int, warmup: float, duration: float,
                     rounds: int = 4) -> tuple[Point, Point]:
    """The limit (the ``fixed`` replica fed full batches directly, ``slots`` at a time) and
    batching at ``clients``, in alternating windows: on a shared machine the capacity drifts
    between windows, and alternating spreads the drift over both sides of the ratio."""
    limit, gateway = Sample(), Sample()
    hist = [0.0, 0.0]
    for _ in range(rounds):
        await closed_loop(direct, "/predict", full, slots, warmup / 2, duration / rounds, limit)
        _, total, count = await measure(port, admin, "fixed", single, clients, warmup,
                                        duration / rounds, gateway)
        hist[0] += total
        hist[1] += count
    gw = gateway.point(clients)
    gw.mean_batch = hist[0] / hist[1] if hist[1] else None
    return limit.point(slots, size), gw


async def run_all(port: int, admin: int, direct: int, batching: dict[str, Any],
                  levels: tuple[int, ...], warmup: float, duration: float) -> dict[str, Any]:
    rng = np.random.default_rng(0)
    instance = np.round(rng.standard_normal(512), 6).tolist()
    single = orjson.dumps(instance)
    size = int(batching["max_batch_size"])
    full = orjson.dumps({"instances": [instance] * size})
    slots = int(batching.get("slots_per_replica", 1))
    curve: dict[str, list[Point]] = {m: [] for m in MODES}
    for clients in levels:
        if clients == 1:
            points = await one_client(port, admin, single, warmup, duration)
        else:
            points = await curve_point(port, admin, single, clients, warmup, duration)
        for mode, p in points.items():
            curve[mode].append(p)
            _log(f"{mode:8} c={clients:<4} {p.rps:8,.0f}/s p50 {p.p50_ms:7.2f} ms "
                 f"p99 {p.p99_ms:7.2f} ms batch {p.mean_batch or 0:5.1f} errors {p.errors}")
    top = max(levels)
    limit, gateway = await saturation(port, admin, direct, single, full, size, slots, top,
                                      warmup, 2 * duration)
    _log(f"limit {limit.rps:,.0f} instances/s ({size}-instance batches, {slots} at a time) vs "
         f"batching at {top} clients {gateway.rps:,.0f}/s, alternating windows")
    return {"curve": curve, "limit": limit, "saturated": gateway, "batch": size, "slots": slots}


def render(res: dict[str, Any], info: dict[str, str], settings: str, quick: bool) -> str:
    curve, limit = res["curve"], res["limit"]
    lines = ["### batching: numpy MLP with and without micro-batching (`bench/batching.py`)", ""]
    if quick:
        lines += [("_--quick run on a shared machine (other jobs running): indicative only; "
                   "the full run belongs on a quiet machine._"), ""]
    lines += [(f"Machine: {info['cpus']}; Python {info['python']}; load average at start "
              f"{info['load average at start']}. {settings}"), "",
             ("| clients | no batching /s | p50 | p99 | fixed wait /s | p50 | p99 | mean batch "
              "| adaptive /s | p50 | p99 | mean batch |"),
             "|---|---|---|---|---|---|---|---|---|---|---|---|"]
    for i, clients in enumerate(p.clients for p in curve["plain"]):
        row = [str(clients)]
        for mode in MODES:
            p = curve[mode][i]
            row += [f"{p.rps:,.0f}", f"{p.p50_ms:.2f} ms", f"{p.p99_ms:.2f} ms"]
            if mode != "plain":
                row.append(f"{p.mean_batch:.1f}" if p.mean_batch else "-")
        lines.append("| " + " | ".join(row) + " |")
    errors = sum(p.errors for ps in curve.values() for p in ps)
    sat = res["saturated"]
    lines += ["", (f"Limit: the `fixed` replica fed {res['batch']}-instance batches directly, "
                   f"{res['slots']} at a time, in 4 windows alternating with 4 windows of "
                   f"batching at {sat.clients} clients: **{limit.rps:,.0f} instances/s** direct "
                   f"vs **{sat.rps:,.0f}/s** through the gateway (mean batch "
                   f"{sat.mean_batch or 0:.1f}). Errors: {errors}."), ""]
    by = {m: {p.clients: p for p in curve[m]} for m in MODES}
    checks = []
    if 64 in by["plain"]:
        r = by["fixed"][64].rps / by["plain"][64].rps
        checks.append(("throughput at 64 clients, batching / none", ">= 3x", f"{r:.2f}x", r >= 3))
    r = sat.rps / limit.rps
    checks.append((f"batching at {sat.clients} clients / direct full-batch limit", ">= 85%",
                   f"{r:.0%}", r >= 0.85))
    if 1 in by["plain"]:
        r = by["fixed"][1].p50_ms / by["plain"][1].p50_ms
        checks.append(("p50 at 1 client, batching / none", "<= 1.1x", f"{r:.2f}x", r <= 1.1))
    lines += ["| check | target | measured | |", "|---|---|---|---|"]
    lines += [f"| {n} | {t} | {m} | {'pass' if ok else 'FAIL'} |" for n, t, m, ok in checks]
    lines += ["", ("Reading it: requests per second are instances per second. Through the gateway "
                   "every request also costs gateway and client CPU on the same machine; with "
                   "spare cores that runs beside the replica, but when other load takes them it "
                   "comes out of the replica's share, so the limit ratio measures the machine as "
                   "much as the batcher. `adaptive` waits only while its fitted a + c*b says "
                   "waiting pays: it fills bigger batches at mid concurrency (16 clients), where "
                   "the fixed rule cannot fill a 32-batch and sends what it has.")]
    return "\n".join(lines) + "\n"


def _sigterm(signum: int, frame: object) -> None:
    raise KeyboardInterrupt      # unwinds through the ProcSet that stops what we started


def main() -> int:
    signal.signal(signal.SIGTERM, _sigterm)
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--quick", action="store_true", help="short points (about a minute in all)")
    p.add_argument("--write", action="store_true", help="update bench/README.md")
    p.add_argument("--json", type=Path, help="also write the raw results here")
    p.add_argument("--replicas", type=int, default=1, help="replicas per service (default 1)")
    p.add_argument("--clients", help="comma-separated concurrency levels")
    p.add_argument("--workers", type=int, default=1,
                   help="gateway.workers: data-plane processes (each fills its own batches)")
    args = p.parse_args()
    warmup, duration = (0.5, 2.0) if args.quick else (1.0, 5.0)
    levels = tuple(int(c) for c in args.clients.split(",")) if args.clients else CONCURRENCY
    svcs, batching = services(args.replicas)
    info = machine_info()
    tmp = Path(tempfile.mkdtemp(prefix="serve-gateway-batching-"))
    try:
        with raised_nofile(), ProcSet(tmp) as procs:
            _log("starting the gateway and its MLP replicas")
            port, admin = start_gateway(procs, tmp, svcs, args.workers)
            direct = replica_port(admin, "fixed")
            try:
                import uvloop
                runner: Any = uvloop.run
            except ImportError:
                runner = asyncio.run
            res = runner(run_all(port, admin, direct, batching, levels, warmup, duration))
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
    settings = (f"{args.replicas} replica(s) per service, gateway.workers {args.workers}, "
                f"OMP_NUM_THREADS=1, batching "
                f"{json.dumps(batching)}; closed loop, {duration:g} s per point after "
                f"{warmup:g} s warm-up{' (--quick)' if args.quick else ''}; at 1 client the "
                f"three modes take turns request by request.")
    block = render(res, info, settings, args.quick)
    print(block)
    if args.write:
        write_readme(BENCH_DIR / "README.md", "batching", block)
    if args.json:
        args.json.write_text(json.dumps({"info": info, "settings": settings, "limit": asdict(res["limit"]),
                                         "saturated": asdict(res["saturated"]),
                                         "curve": {m: [asdict(x) for x in ps] for m, ps in res["curve"].items()}},
                                        indent=2))
    return 0


if __name__ == "__main__":
    sys.exit(main())
