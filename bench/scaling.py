"""The data plane's scaling table: one gateway per ``gateway.workers`` count (1..N), all started
at once and measured in interleaved rounds (ABBA), so each ratio to 1 process compares runs
minutes apart at most on a drifting shared host.

    .venv/bin/python bench/run.py --scaling [--scaling-max N] [--rounds R] [--quick]

Per count: req/s under the scenario's first load (median round, and its ratio to 1 process
round by round), CPU microseconds per request of the gateway's processes (controller and data
planes, not the replicas), and p50 at 1 connection (the added latency at low load). Nothing is
pinned: the load generator, the backends and every gateway process share the machine's cores,
as they do on a host running all of them, so on 2 cores the ideal is below 2x.
"""

from __future__ import annotations

import dataclasses
import os
import shutil
import tempfile
from pathlib import Path
from statistics import median
from typing import Any

from procs import ProcSet, raised_nofile
from scenarios import Scenario
from targets import Target, backend_argv, start_gateway
from wrkload import Load, run_wrk


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
    p50: dict[int, list[float]] = {n: [] for n in workers}
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
                    cpu0 = t.cpu_seconds()
                    res = run_wrk(t.url, load, wrk_s)
                    cpu[n].append(1e6 * (t.cpu_seconds() - cpu0) / max(1, res.requests))
                    rps[n].append(res.rps)
                    errors[n] += res.errors
                    low = run_wrk(t.url, one, max(1, wrk_s // 2))
                    p50[n].append(low.p50_ms)
                    errors[n] += low.errors
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
    base = rps[workers[0]]
    return [{"workers": n, "rps": median(rps[n]),
             "x_of_1": median(a / b for a, b in zip(rps[n], base, strict=True) if b),
             "us_per_req": median(cpu[n]), "p50_c1_ms": median(p50[n]),
             "p50_c1_x_of_1": median(a / b for a, b in zip(p50[n], p50[workers[0]], strict=True)
                                     if b),
             "errors": errors[n]} for n in workers]


def render(rows: list[dict[str, Any]], load: Load, rounds: int, wrk_s: int) -> str:
    lines = [f"Scaling ({load.name}, wrk -t{load.threads} -c{load.connections}, {wrk_s} s per run, "
             f"median of {rounds} interleaved rounds; nothing pinned, {os.cpu_count()} CPUs)", "",
             "| workers | req/s | x of 1 process | CPU us/req | p50 at 1 conn | x of 1 process "
             "| errors |", "|---|---|---|---|---|---|---|"]
    for r in rows:
        lines.append(f"| {r['workers']} | {r['rps']:,.0f} | {r['x_of_1']:.2f}x | "
                     f"{r['us_per_req']:.0f} | {r['p50_c1_ms']:.3f} ms | "
                     f"{r['p50_c1_x_of_1']:.2f}x | {r['errors']} |")
    return "\n".join(lines) + "\n"
