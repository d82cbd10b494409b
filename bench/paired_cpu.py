"""CPU per request of the plain proxy path, this build against another, in paired rounds.

    .venv/bin/python bench/paired_cpu.py --base /work/main/.venv/bin/serve-gateway [--write]

Both gateways run the spine config (one service on /, one replica of the bench's nginx
backend), each its own process and backend, both pinned to the same CPU (load generator and
backends on the others). Each round measures every load on both, one after the other, the
order swapped every other round (ABBA); a round's ratio is this build's CPU per request over the
base's, so each ratio sees one state of a drifting host, and the check takes their median.
CPU per request is what the proxy spent (user + system, /proc) over wrk's request count: far
steadier on a shared machine than req/s.
"""

from __future__ import annotations

import argparse
import dataclasses
import shutil
import statistics
import sys
import tempfile
from pathlib import Path

from procs import ProcSet, cpu_split, pin, raised_nofile
from report import machine_info, write_readme
from run import split_cpus
from scenarios import GET, POST, one_backend
from targets import BENCH_DIR, GATEWAY_BIN, Target, backend_argv, start_gateway
from wrkload import Load, run_wrk

NAME = "paired-cpu"


def measure(target: Target, load: Load, seconds: int) -> tuple[float, float, int]:
    """(us of user CPU per request, us of system CPU per request, errors) of one wrk run after
    a 1 s warm-up."""
    run_wrk(target.url, load, 1)
    u0, s0 = cpu_split(target.pids())
    res = run_wrk(target.url, load, seconds)
    u1, s1 = cpu_split(target.pids())
    n = max(1, res.requests)
    return 1e6 * (u1 - u0) / n, 1e6 * (s1 - s0) / n, res.errors


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--base", type=Path, required=True, help="the other serve-gateway executable")
    p.add_argument("--gateway", type=Path, default=GATEWAY_BIN, help="this build's executable")
    p.add_argument("--rounds", type=int, default=8)
    p.add_argument("--seconds", type=int, default=3, help="per measured run")
    p.add_argument("--max-ratio", type=float, default=1.05,
                   help="the check: median per-round ratio at most this")
    p.add_argument("--connections", type=int, help="wrk -c (default 64); under this build's "
                   "max_concurrency (default 5) no request waits in its queue")
    p.add_argument("--max-concurrency", type=int,
                   help="set max_concurrency in this build's config (a base without the key "
                        "gets none)")
    p.add_argument("--base-max-concurrency", type=int,
                   help="set max_concurrency in the base's config too (a base that has the key: "
                        "compare like with like)")
    p.add_argument("--name", default=NAME, help="the README block to write")
    p.add_argument("--write", action="store_true", help="update bench/README.md's block")
    args = p.parse_args()
    info = machine_info()
    proxy_cpu = split_cpus(False)
    tmp = Path(tempfile.mkdtemp(prefix="serve-gateway-paired-"))
    tmp.chmod(0o755)
    loads = (GET, POST) if not args.connections else tuple(
        dataclasses.replace(ld, connections=args.connections) for ld in (GET, POST))
    cpu: dict[tuple[str, str], list[float]] = {}
    split: dict[tuple[str, str], list[tuple[float, float]]] = {}   # (user, system) per run
    errors = 0
    try:
        with raised_nofile(), ProcSet(tmp, pid_dirs=[tmp]) as procs:
            targets: dict[str, Target] = {}
            for key, binary in (("this", args.gateway), ("base", args.base)):
                d = tmp / key
                d.mkdir()
                d.chmod(0o755)
                services = one_backend(backend_argv("{port}"))
                limit = args.max_concurrency if key == "this" else args.base_max_concurrency
                if limit:
                    services["bench"]["versions"]["v1"]["max_concurrency"] = limit
                targets[key] = start_gateway(procs, d, services, binary=binary)
                if proxy_cpu:
                    pin(targets[key].pids(), proxy_cpu)
            for r in range(args.rounds):
                order = ("this", "base") if r % 2 == 0 else ("base", "this")
                for load in loads:
                    for key in order:
                        user, system, err = measure(targets[key], load, args.seconds)
                        us = user + system
                        errors += err
                        cpu.setdefault((load.name, key), []).append(us)
                        split.setdefault((load.name, key), []).append((user, system))
                        print(f"round {r + 1}/{args.rounds} {load.name} {key}: {us:.1f} us/req "
                              f"({user:.1f} user + {system:.1f} system)", file=sys.stderr)
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
    rows, ok = [], errors == 0
    for load in loads:
        this, base = cpu[(load.name, "this")], cpu[(load.name, "base")]
        ratios = [a / b for a, b in zip(this, base, strict=True)]
        med = statistics.median(ratios)
        ok = ok and med <= args.max_ratio
        verdict = "PASS" if med <= args.max_ratio else "FAIL"
        rows.append(f"| {load.name} | {statistics.median(this):.1f} us "
                    f"({_split(split[(load.name, 'this')])}) | "
                    f"{statistics.median(base):.1f} us ({_split(split[(load.name, 'base')])}) "
                    f"| {med:.3f} ({min(ratios):.2f}-{max(ratios):.2f}) | {verdict} |")
    pinned = f" ({min(proxy_cpu)})" if proxy_cpu else ""
    head = ("| load | this build CPU/req (median; user + system) | base CPU/req (idem) "
            f"| median per-round ratio (range) | check: <= {args.max_ratio:g} |")
    block = "\n".join([
        f"### {args.name}: CPU per request, this build vs `{args.base}`",
        "",
        (f"Machine: {info.get('cpus', '?')}; load average at start "
        f"{info.get('load average at start', '?')}. {args.rounds} ABBA rounds of "
        f"{args.seconds} s per run (after 1 s warm-up), wrk -t1 -c{loads[0].connections}, "
        f"both gateways on one CPU{pinned}; this build's max_concurrency: "
        f"{args.max_concurrency or 'default (5)'}, the base's: "
        f"{args.base_max_concurrency or 'default'}; errors: {errors}."),
        "",
        head,
        "|---|---|---|---|---|",
        *rows, "",
    ])
    print(block)
    if args.write:
        write_readme(BENCH_DIR / "README.md", args.name, block)
    return 0 if ok else 1


def _split(runs: list[tuple[float, float]]) -> str:
    """The medians of user and of system CPU per request over the rounds."""
    return (f"{statistics.median(u for u, _ in runs):.1f} + "
            f"{statistics.median(s for _, s in runs):.1f}")


if __name__ == "__main__":
    sys.exit(main())
