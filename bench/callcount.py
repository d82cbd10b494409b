"""Python calls per plain request (cProfile), this build and optionally another, under wrk.

    .venv/bin/python bench/callcount.py [--base /work/main/.venv/bin/serve-gateway]

Each build's gateway runs the spine config (as paired_cpu.py: one service on /, one replica of
the bench's nginx backend, max_concurrency 64) under ``python -m cProfile``; wrk GET and then
POST 1 KB at -c64 load it; at exit the profile is read. A request's calls are those of every
function (Python or built-in) called at least half as many times as requests were served: what
recurs per request, without start-up, shutdown or the timers that tick per second. A count,
not a time: unlike CPU per request it does not move with the load on a shared host.
"""

from __future__ import annotations

import argparse
import pstats
import shutil
import sys
import tempfile
from pathlib import Path

from procs import ProcSet, raised_nofile
from scenarios import GET, POST, one_backend
from targets import GATEWAY_BIN, backend_argv, start_gateway
from wrkload import Load, run_wrk


def profiled_binary(tmp: Path, binary: Path, out: Path) -> Path:
    """A stand-in for ``binary`` (a venv's serve-gateway) that runs it under cProfile."""
    wrapper = tmp / "serve-gateway-profiled"
    # run from tmp: ``python -m`` puts the working directory first on sys.path, which would
    # import the checkout the bench runs in rather than the build of ``binary``
    wrapper.write_text(f'#!/bin/sh\ncd "{tmp}" && exec "{binary.parent / "python"}" -m cProfile '
                       f'-o "{out}" -m gateway.cli "$@"\n')
    wrapper.chmod(0o755)
    return wrapper


def per_request(prof: Path, served: int) -> tuple[float, list[tuple[int, str]]]:
    """(calls per request, the recurring functions with their call counts)."""
    stats = pstats.Stats(str(prof)).stats  # type: ignore[attr-defined]
    rows = []
    for (file, line, name), (_, ncalls, *_rest) in stats.items():
        if ncalls >= served / 2:
            rows.append((ncalls, f"{Path(file).name}:{line} {name}"))
    rows.sort(reverse=True)
    return sum(n for n, _ in rows) / served, rows


def measure(binary: Path, load: Load, seconds: int, top: int) -> float:
    tmp = Path(tempfile.mkdtemp(prefix="serve-gateway-calls-"))
    tmp.chmod(0o755)
    out = tmp / "gateway.prof"
    try:
        with raised_nofile(), ProcSet(tmp, pid_dirs=[tmp]) as procs:
            services = one_backend(backend_argv("{port}"))
            services["bench"]["versions"]["v1"]["max_concurrency"] = 64
            target = start_gateway(procs, tmp, services, binary=profiled_binary(tmp, binary, out))
            served = run_wrk(target.url, load, seconds).requests
        # ProcSet stopped the gateway (SIGTERM): cProfile wrote its profile on the way out
        calls, rows = per_request(out, served)
        print(f"{binary} {load.name}: {served} requests, {calls:.1f} calls per request")
        for n, name in rows[:top]:
            print(f"  {n / served:5.2f}  {name}")
        return calls
    finally:
        shutil.rmtree(tmp, ignore_errors=True)


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--gateway", type=Path, default=GATEWAY_BIN)
    p.add_argument("--base", type=Path, help="another build's serve-gateway, for comparison")
    p.add_argument("--seconds", type=int, default=3)
    p.add_argument("--top", type=int, default=0, help="list this many recurring functions")
    args = p.parse_args()
    for load in (GET, POST):
        for binary in (args.gateway, *([args.base] if args.base else [])):
            measure(binary, load, args.seconds, args.top)
    return 0


if __name__ == "__main__":
    sys.exit(main())
