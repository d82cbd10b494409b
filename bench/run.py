"""Side-by-side benchmark of serve-gateway against a direct backend, nginx proxy_pass and a
naive aiohttp proxy, on loopback, in one run.

    .venv/bin/python bench/run.py [--quick] [--write] [--only direct,nginx,naive] [--scenario spine]

Phases: closed-loop throughput and latency with wrk (one run per Load and target), open-loop
latency at a fixed rate (half the gateway's saturation rate) with bench/fixed_rate.py, and the
gateway's RSS holding 1,000 idle keep-alive connections with bench/conns.py. Every process it
starts is stopped at the end, pass or fail. See bench/README.md.
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import os
import shutil
import signal
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import scaling
from procs import ProcSet, pin, raised_nofile
from report import machine_info, render, write_readme
from scenarios import FIXED_RATE_TARGETS, SCENARIOS, TARGETS, Results, Scenario
from targets import (
    BENCH_DIR,
    GATEWAY_BIN,
    Target,
    backend_argv,
    start_direct,
    start_gateway,
    start_naive,
    start_nginx_proxy,
)
from wrkload import WrkResult, run_wrk

PHASES = ("closed", "fixed", "rss")


@dataclass(frozen=True)
class Timing:
    """How long each measurement runs; --quick trades precision for a short run."""

    wrk_s: int
    wrk_warmup_s: int
    fixed_s: float
    fixed_warmup_s: float
    fixed_conns: int = 32
    rounds: int = 1

    @classmethod
    def pick(cls, quick: bool, rounds: int) -> Timing:
        return cls(2, 1, 3.0, 0.5) if quick else cls(5, 1, 8.0, 1.0, rounds=rounds)


def _log(msg: str) -> None:
    print(f"[bench {time.strftime('%H:%M:%S')}] {msg}", file=sys.stderr, flush=True)


def _start_targets(sc: Scenario, wanted: set[str], procs: ProcSet, tmp: Path, gateway_bin: Path,
                   failed: dict[str, str], max_concurrency: int | None = None,
                   workers: int = 1) -> dict[str, Target]:
    """Start what was asked for; a target that fails to start is reported, not fatal."""
    started: dict[str, Target] = {}

    def attempt(key: str, fn: Callable[[], Target]) -> None:
        _log(f"starting {key}")
        try:
            started[key] = fn()
        except Exception as exc:  # noqa: BLE001 - the other targets still get measured
            failed[key] = str(exc)
            _log(f"{key} failed to start: {exc}")

    needs_backend = wanted & {"direct", "nginx", "naive"}
    if needs_backend:
        attempt("direct", lambda: start_direct(procs, tmp))
    up = started.get("direct")
    if up:
        if "nginx" in wanted:
            attempt("nginx", lambda: start_nginx_proxy(procs, tmp, up.port))
        if "naive" in wanted:
            attempt("naive", lambda: start_naive(procs, up.port))
    if "gateway" in wanted:
        services = sc.services(backend_argv("{port}"))
        if max_concurrency:      # a build before admission control has no such key: opt-in
            for svc in services.values():
                for version in svc["versions"].values():
                    version["max_concurrency"] = max_concurrency
        attempt("gateway", lambda: start_gateway(procs, tmp, services, gateway_bin,
                                                 workers=workers))
    if "direct" not in wanted:
        started.pop("direct", None)
    return started


def _closed(sc: Scenario, targets: dict[str, Target], timing: Timing, conns: int | None,
            results: Results) -> None:
    """``timing.rounds`` rounds, each running every load against every target in turn; each
    (load, target) reports its median round by req/s in the table, and checks take the median
    of per-round ratios (``Results.paired``). On a shared VM a target's speed drifts by
    up to 2x from one run to the next: interleaving spreads the drift over every row, and the
    median drops a run that a noisy neighbour happened to hit."""
    runs: dict[tuple[str, str], list[tuple[WrkResult, dict[str, float]]]] = {}
    for round_no in range(timing.rounds):
        # every other round runs the loads in reverse (ABBA): a steady drift of the host then
        # favours no load in the paired ratios
        for load in sc.loads if round_no % 2 == 0 else sc.loads[::-1]:
            if conns:
                load = dataclasses.replace(load, connections=conns)
            for key in TARGETS:
                target = targets.get(key)
                if target is None:
                    continue
                _log(f"wrk {load.name} -> {key} ({timing.wrk_s}s, -c{load.connections}, "
                     f"round {round_no + 1}/{timing.rounds})")
                run_wrk(target.url, load, timing.wrk_warmup_s)  # warm pools, caches, allocators
                cpu0, t0 = target.cpu_seconds(), time.monotonic()
                res = run_wrk(target.url, load, timing.wrk_s)
                cpu, elapsed = target.cpu_seconds() - cpu0, time.monotonic() - t0
                # CPU per request is far steadier than req/s on a shared machine.
                runs.setdefault((load.name, key), []).append(
                    (res, {"us_per_req": 1e6 * cpu / max(1, res.requests),
                           "cores": cpu / elapsed}))
    for (load_name, key), measured in runs.items():
        results.rounds.setdefault(load_name, {})[key] = [m[0].rps for m in measured]
        res, usage = sorted(measured, key=lambda m: m[0].rps)[len(measured) // 2]
        results.closed.setdefault(load_name, {})[key] = res
        results.cpu.setdefault(load_name, {})[key] = usage


def _py_tool(script: str, args: list[str], timeout: float) -> dict[str, Any]:
    """Run one of the bench's asyncio tools in its own process; it prints one JSON object."""
    argv = [sys.executable, str(BENCH_DIR / script), *args]
    done = subprocess.run(argv, capture_output=True, text=True, timeout=timeout, check=False)
    if done.returncode != 0:
        raise RuntimeError(f"{script} failed ({done.returncode}): {done.stderr.strip()[-2000:]}")
    return dict(json.loads(done.stdout.strip().splitlines()[-1]))


def _fixed_rate(sc: Scenario, targets: dict[str, Target], timing: Timing, rate: float | None,
                results: Results) -> None:
    first = sc.loads[0].name
    if rate:
        results.fixed_basis = "--rate"
    elif results.rps(first, "gateway"):
        rate = 0.5 * (results.rps(first, "gateway") or 0)
        results.fixed_basis = f"50% of the gateway's {first} saturation rate"
    else:
        proxies = [(results.rps(first, k) or 0, k) for k in ("nginx", "naive")
                   if results.rps(first, k)]
        if not proxies:
            _log("fixed rate skipped: no saturation rate measured and no --rate")
            return
        base, key = min(proxies)
        rate = 0.5 * base
        results.fixed_basis = f"50% of {TARGETS[key]}'s {first} rate (gateway not measured)"
    results.fixed_rate = rate
    for key in FIXED_RATE_TARGETS:
        target = targets.get(key)
        if target is None:
            continue
        _log(f"fixed rate {rate:,.0f} req/s -> {key}")
        results.fixed[key] = _py_tool("fixed_rate.py", [
            "--url", target.url, "--rate", f"{rate:.1f}", "--duration", str(timing.fixed_s),
            "--warmup", str(timing.fixed_warmup_s), "--connections", str(timing.fixed_conns),
        ], timeout=timing.fixed_s + timing.fixed_warmup_s + 30)


def _rss(sc: Scenario, targets: dict[str, Target], results: Results) -> None:
    gateway = targets.get("gateway")
    if gateway is None or not sc.idle_conns:
        return
    _log(f"gateway RSS with {sc.idle_conns} idle keep-alive connections")
    results.rss = _py_tool("conns.py", ["--url", gateway.url, "--pid", str(gateway.proc.pid),
                                        "--connections", str(sc.idle_conns)], timeout=60)


def split_cpus(no_pin: bool, proxy_cpus: int = 1) -> set[int] | None:
    """The CPUs each proxy gets to itself (the last ``proxy_cpus``: one, or the gateway's
    ``--workers``), having moved this process (and so everything it will start: load
    generators, backends, the gateway's workers) to the others; None when no CPU would be left
    for them or pinning is off. On a shared machine a proxy preempted by its own load
    generator measures the machine; alone on a core it measures itself (nginx proxy_pass has one
    worker, the gateway one event loop: one core each, in turn)."""
    cpus = sorted(os.sched_getaffinity(0))
    if no_pin or len(cpus) <= proxy_cpus:
        return None
    os.sched_setaffinity(0, set(cpus[:-proxy_cpus]))
    return set(cpus[-proxy_cpus:])


def _pin(targets: dict[str, Target], proxy_cpu: set[int]) -> None:
    for key, target in targets.items():
        if key != "direct":
            pin(target.pids(), proxy_cpu)


def run(sc: Scenario, wanted: set[str], phases: set[str], timing: Timing, conns: int | None,
        rate: float | None, keep: bool, gateway_bin: Path,
        proxy_cpu: set[int] | None = None,
        max_concurrency: int | None = None, workers: int = 1) -> tuple[Results, dict[str, str]]:
    """Start the targets, run the phases, stop everything; returns results and start failures."""
    results, failed = Results(), dict[str, str]()
    tmp = Path(tempfile.mkdtemp(prefix="serve-gateway-bench-"))
    tmp.chmod(0o755)  # nginx workers (unprivileged) must reach their dirs inside
    procs = ProcSet(tmp, pid_dirs=[tmp])
    try:
        with raised_nofile(), procs:
            targets = _start_targets(sc, wanted, procs, tmp, gateway_bin, failed,
                                     max_concurrency, workers)
            if proxy_cpu:
                _pin(targets, proxy_cpu)
            if "closed" in phases:
                _closed(sc, targets, timing, conns, results)
            if "fixed" in phases and sc.fixed_rate:
                _fixed_rate(sc, targets, timing, rate, results)
            if "rss" in phases:
                _rss(sc, targets, results)
            for key, target in targets.items():
                if not target.proc.alive():
                    failed[key] = f"exited with {target.proc.popen.returncode} during the run"
            _log("stopping everything")
    finally:
        results.orphans = procs.orphans
        if keep:
            _log(f"kept {tmp}")
        else:
            shutil.rmtree(tmp, ignore_errors=True)
    return results, failed


def _parse_args() -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--quick", action="store_true", help="short runs (about a minute in all)")
    p.add_argument("--write", action="store_true", help="update bench/README.md's results block")
    p.add_argument("--scenario", default="spine", choices=sorted(SCENARIOS))
    p.add_argument("--only", help=f"comma-separated targets among {','.join(TARGETS)}")
    p.add_argument("--phases", default=",".join(PHASES), help=f"among {','.join(PHASES)}")
    p.add_argument("--connections", type=int, help="override every Load's wrk -c")
    p.add_argument("--rate", type=float, help="fixed-rate req/s instead of half the saturation")
    p.add_argument("--fixed-connections", type=int, default=32,
                   help="connections of the fixed-rate generator")
    p.add_argument("--rounds", type=int, help="closed-loop rounds, median reported (default: the "
                   "scenario's, 3 or more; --quick: 1)")
    p.add_argument("--json", type=Path, help="also write the raw results here")
    p.add_argument("--keep", action="store_true", help="keep the temp dir (configs, logs)")
    p.add_argument("--no-pin", action="store_true",
                   help="let every process run on any CPU (default: each proxy alone on the "
                        "last CPU, load generators and backends on the others)")
    p.add_argument("--gateway", type=Path, default=GATEWAY_BIN,
                   help="the serve-gateway executable (e.g. another checkout's, to compare)")
    p.add_argument("--max-concurrency", type=int,
                   help="set max_concurrency on every version (default: the build's own, 5; "
                        "the nginx backend takes any number, a model server about 5)")
    p.add_argument("--workers", type=int, default=1,
                   help="gateway.workers: data-plane processes of the gateway (pinned, with "
                        "pinning, to the last N CPUs)")
    p.add_argument("--scaling", action="store_true",
                   help="instead: the gateway alone with workers 1..cores, interleaved rounds, "
                        "and the scaling table (bench/scaling.py)")
    p.add_argument("--scaling-max", type=int, help="the largest workers count in --scaling")
    return p.parse_args()


def _sigterm(signum: int, frame: object) -> None:
    raise KeyboardInterrupt  # unwinds through the finally blocks that stop our processes


def main() -> int:
    args = _parse_args()
    signal.signal(signal.SIGTERM, _sigterm)
    sc = SCENARIOS[args.scenario]
    wanted = set(args.only.split(",")) if args.only else {"gateway", *sc.baselines}
    phases = set(args.phases.split(","))
    if not wanted <= TARGETS.keys() or not phases <= set(PHASES):
        print(f"unknown target or phase: {sorted(wanted - TARGETS.keys())} "
              f"{sorted(phases - set(PHASES))}", file=sys.stderr)
        return 2
    timing = dataclasses.replace(Timing.pick(args.quick, sc.rounds),
                                 fixed_conns=args.fixed_connections)
    if args.rounds:
        timing = dataclasses.replace(timing, rounds=args.rounds)
    if args.scaling:
        rows = scaling.measure(sc, scaling.counts(args.scaling_max), timing.rounds, timing.wrk_s,
                               timing.wrk_warmup_s, args.connections, args.gateway, _log)
        print(scaling.render(rows, sc.loads[0] if not args.connections else dataclasses.replace(
            sc.loads[0], connections=args.connections), timing.rounds, timing.wrk_s))
        if args.json:
            args.json.write_text(json.dumps({"scenario": sc.name, "machine": machine_info(),
                                             "scaling": rows}, indent=2))
        return 1 if any(r["errors"] for r in rows) else 0
    info = machine_info()
    proxy_cpu = split_cpus(args.no_pin, args.workers)
    results, failed = run(sc, wanted, phases, timing, args.connections, args.rate, args.keep,
                          args.gateway, proxy_cpu, args.max_concurrency, args.workers)
    c = args.connections or sc.loads[0].connections
    where = f"; each proxy alone on CPU {min(proxy_cpu)}, load and backends on the others" \
        if proxy_cpu else "; every process on every CPU"
    settings = {
        "closed": f"wrk -t1 -c{c}, {timing.wrk_s} s per run after a {timing.wrk_warmup_s} s "
                  f"warm-up; the median of {timing.rounds} interleaved rounds{where}",
        "fixed": f"{timing.fixed_conns} connections, {timing.fixed_s:g} s after "
                 f"{timing.fixed_warmup_s:g} s warm-up{where}",
    }
    block = render(sc, results, info, settings)
    if args.quick:
        block = ("_--quick run: a smoke test of the harness, not a measurement._\n\n"
                 + block)
    if failed:
        block += "\n" + "\n".join(f"NOT MEASURED: {k}: {v.splitlines()[0]}"
                                  for k, v in failed.items()) + "\n"
    print(block)
    for key, why in failed.items():
        print(f"--- {key} ---\n{why}", file=sys.stderr)
    if args.write:
        write_readme(BENCH_DIR / "README.md", sc.name, block)
    if args.json:
        args.json.write_text(json.dumps({
            "scenario": sc.name, "machine": info, "settings": settings, "failed": failed,
            "closed": {ld: {k: v.to_json() for k, v in by.items()}
                       for ld, by in results.closed.items()},
            "cpu": results.cpu, "rounds": results.rounds,
            "fixed_rate": results.fixed_rate, "fixed": results.fixed, "rss": results.rss,
            "orphans": results.orphans,
        }, indent=2))
    return 1 if failed else 0


if __name__ == "__main__":
    try:
        sys.exit(main())
    except KeyboardInterrupt:
        print("interrupted: every process the bench started has been stopped", file=sys.stderr)
        sys.exit(130)
