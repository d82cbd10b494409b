"""The load generator's own cost: this tree's open-loop engine (``gateway/loadgen``, behind
``bench/fixed_rate.py`` and ``serve-gateway bench --rate``) against another checkout's
``bench/fixed_rate.py``, and ``serve-gateway bench``'s closed loop against wrk.

    .venv/bin/python bench/loadgen_cost.py --base /work/main [--rate 2000] [--rounds 6]

One 1-worker nginx backend (``backend.sh``) answers both. Each round runs both generators at the
same rate, one after the other, the order swapped every other round (ABBA); per run: the
generator's CPU per request (user + system of its process, less what a run of 1 request costs:
interpreter start and imports), its lag p99 (how late
it got round to a request) and the service p99. Then one closed-loop run of each of
``serve-gateway bench --connections 16`` and ``wrk -c16``: the requests per second a generator
can drive on this machine (the backend is nginx, so the generator is the bottleneck).
"""

from __future__ import annotations

import argparse
import json
import os
import re
import statistics
import subprocess
import sys
import tempfile
from pathlib import Path

from procs import ProcSet, free_port, raised_nofile, wait_http_ok
from targets import BENCH_DIR, GATEWAY_BIN

HERE_PY = sys.executable


def _fixed_rate(python: str, script: Path, url: str, rate: float, seconds: float,
                startup: float = 0.0, warmup: float = 0.5) -> dict:
    """One run of a fixed_rate.py; its summary plus the CPU it used per request (us), less
    ``startup`` (the CPU seconds of a run that sends almost nothing: interpreter and imports)."""
    proc = subprocess.Popen([python, str(script), "--url", url, "--rate", str(rate), "--duration",
                             str(seconds), "--warmup", str(warmup), "--connections", "32"],
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                            cwd=script.parent)
    out, err = proc.communicate(timeout=seconds + 60)
    if proc.returncode:
        raise RuntimeError(f"{script}: exit {proc.returncode}: {err.decode()[-2000:]}")
    doc: dict = json.loads(out)
    # the generator was reaped by communicate(): its CPU is in this process's children times
    cpu = _children_cpu_delta()
    doc["cpu_s"] = cpu
    doc["cpu_us_per_req"] = 1e6 * (cpu - startup) / max(1, doc["measured"] + doc["errors"])
    return doc


_last_children = [0.0]


def _children_cpu_delta() -> float:
    """CPU of the children reaped since the last call (Popen.communicate reaps them)."""
    t = os.times()
    total = t.children_user + t.children_system
    delta, _last_children[0] = total - _last_children[0], total
    return delta


def main() -> int:
    p = argparse.ArgumentParser(description=(__doc__ or "").split("\n\n")[0])
    p.add_argument("--base", type=Path, required=True, help="another checkout (with .venv)")
    p.add_argument("--rate", type=float, default=2000.0)
    p.add_argument("--seconds", type=float, default=3.0)
    p.add_argument("--rounds", type=int, default=6)
    args = p.parse_args()
    base_py = str(args.base / ".venv" / "bin" / "python")
    gens = {"this tree": (HERE_PY, BENCH_DIR / "fixed_rate.py"),
            "base": (base_py, args.base / "bench" / "fixed_rate.py")}
    tmp = Path(tempfile.mkdtemp(prefix="serve-gateway-loadgen-"))
    tmp.chmod(0o755)
    runs: dict[str, list[dict]] = {k: [] for k in gens}
    with raised_nofile(), ProcSet(tmp, pid_dirs=[tmp]) as procs:
        port = free_port()
        backend = procs.start("backend", [str(BENCH_DIR / "backend.sh"), str(port)],
                              env={**os.environ, "BENCH_TMPDIR": str(tmp)})
        wait_http_ok(backend, port)
        url = f"http://127.0.0.1:{port}/"
        _children_cpu_delta()
        startup = {name: statistics.median(_fixed_rate(*gen, url, 10, 0.1, warmup=0)["cpu_s"]
                                           for _ in range(3)) for name, gen in gens.items()}
        for r in range(args.rounds):
            order = list(gens) if r % 2 == 0 else list(reversed(gens))
            for name in order:
                runs[name].append(_fixed_rate(*gens[name], url, args.rate, args.seconds,
                                              startup[name]))
        bench = subprocess.run([str(GATEWAY_BIN), "bench", url, "--connections", "16",
                                "--duration", "5", "--json"], capture_output=True, text=True,
                               check=True)
        closed = json.loads(bench.stdout)
        wrk = subprocess.run(["wrk", "-t1", "-c16", "-d5s", url], capture_output=True, text=True,
                             check=True).stdout
        wrk_rps = float(re.search(r"Requests/sec:\s+([\d.]+)", wrk).group(1))  # type: ignore[union-attr]
    print("start-up CPU (s): " + ", ".join(f"{k} {v:.2f}" for k, v in startup.items()))
    print(f"open loop {args.rate:g} req/s, 32 connections, {args.seconds:g}s x {args.rounds} "
          "rounds (ABBA), medians:")
    print("| generator | CPU/req (us) | lag p99 (ms) | service p99 (ms) | latency p99 (ms) | errors |")
    print("|---|---|---|---|---|---|")
    for name, docs in runs.items():
        med = {k: statistics.median(d[k] for d in docs)
               for k in ("cpu_us_per_req", "lag_p99_ms", "service_p99_ms", "p99_ms")}
        print(f"| {name} | {med['cpu_us_per_req']:.1f} | {med['lag_p99_ms']:.2f} | "
              f"{med['service_p99_ms']:.2f} | {med['p99_ms']:.2f} | "
              f"{sum(d['errors'] for d in docs)} |")
    ratios = [a["cpu_us_per_req"] / b["cpu_us_per_req"]
              for a, b in zip(runs["this tree"], runs["base"], strict=True)]
    print(f"CPU/req ratio this/base, median of rounds: {statistics.median(ratios):.3f}")
    print(f"closed loop, 16 connections, 5 s: serve-gateway bench {closed['throughput_rps']:,.0f} "
          f"req/s (p99 {closed['latency_ms']['p99']:.2f} ms), wrk -t1 -c16 {wrk_rps:,.0f} req/s")
    return 0


if __name__ == "__main__":
    sys.exit(main())
