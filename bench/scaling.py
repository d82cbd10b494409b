"""The data plane's scaling table: one gateway per ``gateway.workers`` count (1..N), all started
at once and measured in interleaved rounds (ABBA), so each ratio to 1 process compares runs
minutes apart at most on a drifting shared host.

    .venv/bin/python bench/run.py --scaling [--scaling-max N] [--rounds R] [--quick]

Per count: req/s under the scenario's first load (median round, and its ratio to 1 process
round by round), CPU microseconds per request of the gateway's processes (controller and data
planes, not the replicas), and p50 at 1 connection (the added latency at low load), measured
with one keep-alive connection per gateway taking turns request by request, so that the host's
drift hits every count alike (back-to-back wrk -c1 runs differed by more than the 10 % the
target allows). Nothing is
pinned: the load generator, the backends and every gateway process share the machine's cores,
as they do on a host running all of them, so on 2 cores the ideal is below 2x.
"""

from __future__ import annotations

import asyncio
import dataclasses
import os
import random
import shutil
import tempfile
import time
from pathlib import Path
from statistics import median
from typing import Any

from procs import ProcSet, host_busy_seconds, raised_nofile
from scenarios import Scenario
from targets import Target, backend_argv, start_gateway
from wrkload import Load, run_wrk

from gateway.loadgen.httpclient import build_request, connect


def counts(limit: int | None) -> list[int]:
    """1..cores (at most ``limit``, and 16: gateway.workers' own cap for auto)."""
    cores = len(os.sched_getaffinity(0))
    return list(range(1, min(cores, limit or cores, 16) + 1))


def measure(sc: Scenario, workers: list[int], rounds: int, wrk_s: int, warmup_s: int,
            conns: int | None, gateway_bin: Path, log: Any) -> list[dict[str, Any]]:
    load = sc.loads[0] if not conns else dataclasses.replace(sc.loads[0], connections=conns)
    one = dataclasses.replace(load, name=f"{load.name} c1", connections=1)
    tmp = Path(tempfile.mkdtemp(prefix="serve-gateway-scaling-"))
    rps: dict[int, list[float]] = {n: [] for n in workers}
    cpu: dict[int, list[float]] = {n: [] for n in workers}
    host: dict[int, list[float]] = {n: [] for n in workers}   # every process on the machine
    p50: dict[int, float] = {}
    errors: dict[int, int] = dict.fromkeys(workers, 0)
    try:
        with raised_nofile(), ProcSet(tmp, pid_dirs=[tmp]) as procs:
            services = sc.services(backend_argv("{port}"))
            targets: dict[int, Target] = {}
            for n in workers:
                log(f"starting the gateway with workers: {n}")
                (tmp / f"w{n}").mkdir()
                targets[n] = start_gateway(procs, tmp / f"w{n}", services, gateway_bin,
                                           workers=n, name=f"gateway-w{n}")
            for r in range(rounds):
                for n in workers if r % 2 == 0 else workers[::-1]:
                    t = targets[n]
                    log(f"wrk {load.name} -> workers {n} (-c{load.connections}, round "
                        f"{r + 1}/{rounds})")
                    run_wrk(t.url, load, warmup_s)
                    cpu0, host0 = t.cpu_seconds(), host_busy_seconds()
                    res = run_wrk(t.url, load, wrk_s)
                    cpu[n].append(1e6 * (t.cpu_seconds() - cpu0) / max(1, res.requests))
                    host[n].append(1e6 * (host_busy_seconds() - host0) / max(1, res.requests))
                    rps[n].append(res.rps)
                    errors[n] += res.errors
            log(f"p50 at 1 connection, the gateways taking turns ({rounds * wrk_s} s)")
            p50 = asyncio.run(alternating(targets, one.path, rounds * wrk_s))
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
    base = rps[workers[0]]
    return [{"workers": n, "rps": median(rps[n]),
             "x_of_1": median(a / b for a, b in zip(rps[n], base, strict=True) if b),
             "us_per_req": median(cpu[n]), "host_us_per_req": median(host[n]),
             # what the host's cores allow at this count's cost per request (gateway, wrk,
             # backend, kernel), as a multiple of 1 process's req/s: the ratio's ceiling here
             "ceiling_x_of_1": len(os.sched_getaffinity(0)) * 1e6 / median(host[n]) / median(base)
             if host[n] and median(host[n]) else 0.0,
             "p50_c1_ms": p50[n],
             "p50_c1_x_of_1": p50[n] / p50[workers[0]] if p50[workers[0]] else 0.0,
             "errors": errors[n]} for n in workers]


async def alternating(targets: dict[int, Target], path: str, seconds: float) -> dict[int, float]:
    """p50 (ms) of GET ``path`` on one keep-alive connection per gateway, the gateways taking
    turns in a shuffled order each time round."""
    conns = {n: await connect("127.0.0.1", t.port) for n, t in targets.items()}
    raws = {n: build_request("GET", "127.0.0.1", t.port, path) for n, t in targets.items()}
    times: dict[int, list[float]] = {n: [] for n in targets}
    order = list(targets)
    shuffle = random.Random(0).shuffle
    clock = time.perf_counter
    warm_until, end = clock() + 1.0, clock() + 1.0 + seconds
    while clock() < end:
        shuffle(order)
        for n in order:
            t0 = clock()
            status = await conns[n].send(raws[n])
            if t0 >= warm_until and status == 200:
                times[n].append(clock() - t0)
    for c in conns.values():
        c.close()
    return {n: 1000 * median(v) if v else 0.0 for n, v in times.items()}


def render(rows: list[dict[str, Any]], load: Load, rounds: int, wrk_s: int) -> str:
    lines = [f"Scaling ({load.name}, wrk -t{load.threads} -c{load.connections}, {wrk_s} s per run, "
             f"median of {rounds} interleaved rounds; nothing pinned, {os.cpu_count()} CPUs)", "",
             "| workers | req/s | x of 1 process | CPU us/req | host CPU us/req | host allows "
             "| p50 at 1 conn | x of 1 process | errors |", "|---|---|---|---|---|---|---|---|---|"]
    for r in rows:
        lines.append(f"| {r['workers']} | {r['rps']:,.0f} | {r['x_of_1']:.2f}x | "
                     f"{r['us_per_req']:.0f} | {r['host_us_per_req']:.0f} | "
                     f"{r['ceiling_x_of_1']:.2f}x | {r['p50_c1_ms']:.3f} ms | "
                     f"{r['p50_c1_x_of_1']:.2f}x | {r['errors']} |")
    return "\n".join(lines) + "\n"
