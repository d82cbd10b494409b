"""Paired rounds: CPU per request of this build's gateway against another build's (main), on
the bare proxy path (one service, one version, one replica of the nginx backend).

Both gateways run at once, each with its own backend, each pinned to the same CPU (the last),
wrk and the backends on the others. Each round measures both, one after the other, in
alternating order (ABBA), each after a 1 s warm-up; the result is the median of the per-round
ratios this / base of CPU per request (the gateway process's user + system time from /proc
over the run, divided by its requests), which cancels most of a shared machine's drift.

Two concurrencies: below this build's default ``max_concurrency`` (5): the admission fast path,
no request ever waits; and wrk's usual 64: 59 of them wait in the gateway's queue (this build)
instead of on the replica's socket (base).

    .venv/bin/python bench/cpu_paired.py [--base PATH] [--rounds 8] [--connections 4,64] [--write]
"""

from __future__ import annotations

import argparse
import sys
import tempfile
import time
from pathlib import Path
from statistics import median

from overload import MAIN_BIN
from procs import ProcSet, pin, raised_nofile
from report import machine_info, write_readme
from run import split_cpus
from scenarios import one_backend
from targets import BENCH_DIR, GATEWAY_BIN, Target, backend_argv, start_gateway
from wrkload import Load, run_wrk


def _log(msg: str) -> None:
    print(f"[cpu_paired {time.strftime('%H:%M:%S')}] {msg}", file=sys.stderr, flush=True)


def measure(target: Target, load: Load, seconds: int) -> tuple[float, float, int]:
    """(µs of gateway CPU per request, req/s, errors) over one wrk run after a warm-up."""
    run_wrk(target.url, load, 1)
    cpu0 = target.cpu_seconds()
    res = run_wrk(target.url, load, seconds)
    cpu = target.cpu_seconds() - cpu0
    return 1e6 * cpu / max(1, res.requests), res.rps, res.errors


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--base", type=Path, default=MAIN_BIN)
    p.add_argument("--gateway", type=Path, default=GATEWAY_BIN)
    p.add_argument("--rounds", type=int, default=8)
    p.add_argument("--seconds", type=int, default=4)
    p.add_argument("--connections", default="4,64")
    p.add_argument("--max-concurrency", type=int,
                   help="set this build's max_concurrency (default: its default, 5)")
    p.add_argument("--write", action="store_true")
    args = p.parse_args()
    info = machine_info()
    proxy_cpu = split_cpus(False)
    rows = []
    with raised_nofile(), tempfile.TemporaryDirectory(prefix="sgw-paired-") as d:
        tmp = Path(d)
        with ProcSet(tmp, pid_dirs=[tmp]) as procs:
            targets = {}
            for key, binary in (("this", args.gateway), ("base", args.base)):
                sub = tmp / key
                sub.mkdir()
                _log(f"starting {key}: {binary}")
                services = one_backend(backend_argv("{port}"))
                if key == "this" and args.max_concurrency:
                    services["bench"]["versions"]["v1"]["max_concurrency"] = args.max_concurrency
                targets[key] = start_gateway(procs, sub, services, binary)
                if proxy_cpu:
                    pin(targets[key].pids(), proxy_cpu)
            for conns in (int(c) for c in args.connections.split(",")):
                load = Load(f"GET -c{conns}", connections=conns)
                got: dict[str, list[tuple[float, float, int]]] = {"this": [], "base": []}
                for r in range(args.rounds):
                    order = ("this", "base") if r % 2 == 0 else ("base", "this")
                    for key in order:
                        got[key].append(measure(targets[key], load, args.seconds))
                    _log(f"-c{conns} round {r + 1}: this {got['this'][-1][0]:.1f} µs/req, "
                         f"base {got['base'][-1][0]:.1f} µs/req")
                ratios = [t[0] / b[0] for t, b in zip(got["this"], got["base"], strict=True)]
                rows.append((conns, median(x[0] for x in got["this"]),
                             median(x[0] for x in got["base"]), median(ratios), min(ratios),
                             max(ratios), median(x[1] for x in got["this"]),
                             median(x[1] for x in got["base"]),
                             sum(x[2] for v in got.values() for x in v)))
    limit = args.max_concurrency or "5 (default)"
    intro = (f"`bench/cpu_paired.py`: this build (max_concurrency {limit}) against "
             f"`{args.base}`; {args.rounds} ABBA rounds of wrk -t1 GET / for {args.seconds} s "
             f"each after 1 s warm-up; gateways pinned to CPU "
             f"{min(proxy_cpu) if proxy_cpu else '-'}; machine: {info['cpus']}, "
             f"load average at start {info['load average at start']}.")
    header = ("| wrk -c | CPU/req this | CPU/req base | this / base (median, range) | "
              "req/s this | req/s base | errors |")
    lines = [intro, "", header, "|---|---|---|---|---|---|---|"]
    for c, t, b, ratio, lo, hi, rt, rb, errors in rows:
        lines.append(f"| {c} | {t:.1f} µs | {b:.1f} µs | {ratio:.3f} ({lo:.3f}-{hi:.3f}) | "
                     f"{rt:.0f} | {rb:.0f} | {errors} |")
    block = "\n".join(lines) + "\n"
    print(block)
    if args.write:
        write_readme(BENCH_DIR / "README.md", "cpu_paired", block)
    return 0


if __name__ == "__main__":
    sys.exit(main())
