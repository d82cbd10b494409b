"""The gateway's memory under abuse: does it come back? This build, and another for comparison.

    .venv/bin/python bench/abuse_rss.py [--base /work/main/.venv/bin/serve-gateway] [--write]

One gateway per build, with the default 10 MiB body limit, gets two abuses one after the other:

1. **cut uploads**: ``--uploads`` connections, one after another, each announcing a 1 MiB body
   (Content-Length), sending all but the last 1 KB, then closing;
2. **cut mirror answers**: ``--copies`` GETs, each copied (100% mirrored, 8 in flight) to a
   shadow version that answers 2 MiB chunked, which the gateway cuts at its 1 MiB mirror limit.

VmRSS of the ``serve-gateway up`` process (``/proc/<pid>/status``) before each abuse, its peak
(sampled after every upload / request), right after, and 2 s later. The check: growth (2 s
after minus before) under 2x the body limit. Everything runs on loopback; every process started
is stopped at the end.
"""

from __future__ import annotations

import argparse
import http.client
import json
import shutil
import socket
import sys
import tempfile
import time
import urllib.request
from pathlib import Path

from procs import ProcSet, raised_nofile, read_rss_kib
from report import machine_info, write_readme
from scenarios import one_version
from targets import BENCH_DIR, GATEWAY_BIN, REPO, Target, backend_argv, start_gateway

NAME = "abuse-rss"
BODY_LIMIT = 10 << 20          # the gateway's default max_body_bytes
MiB = 1 << 20
RAW_WORKER = [sys.executable, str(REPO / "tests" / "workers" / "rawworker.py"), "{port}"]


def services() -> dict[str, object]:
    raw = {"command": RAW_WORKER, "replicas": 1, "health": {"path": "/ready"}}
    return {
        "up": {"route": "/", "versions": {"v1": one_version(backend_argv("{port}"))}},
        "mirror": {"route": "/mirror", "versions": {"v1": raw, "v2": raw},
                   "traffic": {"weights": {"v1": 100, "v2": 0},
                               "mirror": {"to": "v2", "percent": 100, "concurrency": 8,
                                          "queue": 64}}},
    }


def rss(pid: int) -> int:
    return read_rss_kib(pid)["VmRSS"] * 1024


def cut_upload(port: int) -> None:
    with socket.create_connection(("127.0.0.1", port)) as s:
        s.sendall(b"POST /upload HTTP/1.1\r\nHost: bench\r\nContent-Length: %d\r\n\r\n" % MiB
                  + b"u" * (MiB - 1024))


def abuse(name: str, pid: int, count: int, one: object) -> dict[str, float]:
    assert callable(one)
    before = peak = rss(pid)
    t0 = time.monotonic()
    for _ in range(count):
        one()
        peak = max(peak, rss(pid))
    elapsed = time.monotonic() - t0
    after = rss(pid)
    time.sleep(2)
    later = rss(pid)
    print(f"{name}: {count} in {elapsed:.1f}s, RSS {before / MiB:.0f} -> peak {peak / MiB:.0f} "
          f"-> {after / MiB:.0f} -> {later / MiB:.0f} MiB", file=sys.stderr)
    return {"count": count, "seconds": elapsed, "before": before, "peak": peak, "after": after,
            "later": later}


def shadow_errors(admin: str) -> float:
    with urllib.request.urlopen(f"http://{admin}/metrics", timeout=5) as r:
        text = r.read().decode()
    for line in text.splitlines():
        if line.startswith("serve_gateway_shadow_requests_total{") and 'result="error"' in line:
            return float(line.rsplit(" ", 1)[1])
    return 0.0


def measure(binary: Path, uploads: int, copies: int) -> dict[str, dict[str, float]]:
    tmp = Path(tempfile.mkdtemp(prefix="serve-gateway-abuse-"))
    tmp.chmod(0o755)
    try:
        with raised_nofile(), ProcSet(tmp, pid_dirs=[tmp]) as procs:
            gw: Target = start_gateway(procs, tmp, services(), binary=binary)
            admin = json.loads((tmp / "gateway.yaml").read_text())["gateway"]["admin"]["listen"]
            pid = gw.proc.pid
            for _ in range(20):                 # warm up: pools, buffers, code paths
                cut_upload(gw.port)
            out = {"cut uploads": abuse("cut uploads", pid, uploads, lambda: cut_upload(gw.port))}
            conn = http.client.HTTPConnection("127.0.0.1", gw.port, timeout=10)

            def get() -> None:
                conn.request("GET", "/mirror/shadow-big")
                conn.getresponse().read()

            for _ in range(20):
                get()
            out["cut mirror answers"] = abuse("cut mirror answers", pid, copies, get)
            conn.close()
            time.sleep(1)
            out["cut mirror answers"]["shadow_errors"] = shadow_errors(admin)
            return out
    finally:
        shutil.rmtree(tmp, ignore_errors=True)


def render(runs: dict[str, dict[str, dict[str, float]]], info: dict[str, str]) -> str:
    rows, ok = [], True
    for build, by_abuse in runs.items():
        for what, m in by_abuse.items():
            grown = m["later"] - m["before"]
            passed = grown < 2 * BODY_LIMIT
            ok = ok and (passed or build != "this build")
            extra = f" ({m['shadow_errors']:.0f} copies cut)" if "shadow_errors" in m else ""
            rows.append(f"| {build} | {what}{extra} | {m['count']:.0f} | "
                        f"{m['before'] / MiB:.0f} | {m['peak'] / MiB:.0f} | "
                        f"{m['after'] / MiB:.0f} | {m['later'] / MiB:.0f} | "
                        f"{grown / MiB:+.0f} MiB | {'PASS' if passed else 'FAIL'} |")
    return "\n".join([
        f"### {NAME}: gateway RSS under abuse (`bench/abuse_rss.py`)",
        "",
        (f"Machine: {info.get('cpus', '?')}; load average at start "
        f"{info.get('load average at start', '?')}. Body limit 10 MiB (the default); RSS in "
        "MiB of `serve-gateway up` alone (its workers are other processes)."),
        "",
        ("| build | abuse | count | RSS before | peak | right after | 2 s later | growth "
        "| check: growth < 2x body limit (20 MiB) |"),
        "|---|---|---|---|---|---|---|---|---|",
        *rows, "",
    ]) + ("" if ok else "\nFAIL\n")


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--gateway", type=Path, default=GATEWAY_BIN, help="this build's executable")
    p.add_argument("--base", type=Path, help="another serve-gateway executable, for comparison")
    p.add_argument("--uploads", type=int, default=1000)
    p.add_argument("--copies", type=int, default=800)
    p.add_argument("--write", action="store_true", help="update bench/README.md's block")
    args = p.parse_args()
    info = machine_info()
    runs = {"this build": measure(args.gateway, args.uploads, args.copies)}
    if args.base:
        runs[f"base `{args.base}`"] = measure(args.base, args.uploads, args.copies)
    block = render(runs, info)
    print(block)
    if args.write:
        write_readme(BENCH_DIR / "README.md", NAME, block)
    return 0 if "\nFAIL" not in block else 1


if __name__ == "__main__":
    sys.exit(main())
