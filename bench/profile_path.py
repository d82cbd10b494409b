"""Where the plain GET pass-through's CPU goes: py-spy samples of the gateway process under wrk.

    .venv/bin/pip install py-spy
    .venv/bin/python bench/profile_path.py [--gateway BIN] [--seconds 10] [--out prof.txt]

Starts the spine config (one service on /, one replica of the bench's nginx backend), loads it
with wrk (GET, -c64 as paired_cpu.py, max_concurrency 64 so that no request queues), records the gateway's own process with py-spy (native
frames off, idle off) and prints the top of the flat profile by self time and by total time.
"""

from __future__ import annotations

import argparse
import collections
import shutil
import subprocess
import sys
import tempfile
import threading
from pathlib import Path

from procs import _TICK, ProcSet, _stat_fields, raised_nofile
from scenarios import GET, one_backend
from targets import GATEWAY_BIN, backend_argv, start_gateway
from wrkload import run_wrk


def summarise(raw: Path, top: int) -> str:
    """Flat profile from py-spy's collapsed stacks: self and inclusive share per function."""
    own: collections.Counter[str] = collections.Counter()
    incl: collections.Counter[str] = collections.Counter()
    total = 0
    for line in raw.read_text().splitlines():
        stack, _, n = line.rpartition(" ")
        count = int(n)
        total += count
        frames = [f.split(" (")[0] + " (" + f.split(" (")[1].split(":")[0].rsplit("/", 1)[-1]
                  if " (" in f else f for f in stack.split(";")]
        own[frames[-1]] += count
        for f in set(frames):
            incl[f] += count
    out = [f"{total} samples", "", "self %  function"]
    out += [f"{100 * n / total:5.1f}  {f}" for f, n in own.most_common(top)]
    out += ["", "total %  function"]
    out += [f"{100 * n / total:5.1f}  {f}" for f, n in incl.most_common(top)]
    return "\n".join(out)


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--gateway", type=Path, default=GATEWAY_BIN)
    p.add_argument("--seconds", type=int, default=10)
    p.add_argument("--top", type=int, default=40)
    p.add_argument("--out", type=Path)
    p.add_argument("--max-concurrency", type=int, default=64,
                   help="the version's max_concurrency (64: every wrk connection has a slot, "
                        "the plain path; 0: the config default, most requests queue)")
    args = p.parse_args()
    spy = shutil.which("py-spy") or str(Path(sys.executable).parent / "py-spy")
    tmp = Path(tempfile.mkdtemp(prefix="serve-gateway-prof-"))
    tmp.chmod(0o755)
    with raised_nofile(), ProcSet(tmp, pid_dirs=[tmp]) as procs:
        services = one_backend(backend_argv("{port}"))
        if args.max_concurrency:
            services["bench"]["versions"]["v1"]["max_concurrency"] = args.max_concurrency
        target = start_gateway(procs, tmp, services, binary=args.gateway)
        run_wrk(target.url, GET, 1)
        pid = target.proc.pid
        u0, s0 = (int(x) for x in _stat_fields(pid)[11:13])
        res = run_wrk(target.url, GET, 5)       # unsampled: py-spy costs the process nothing
        u1, s1 = (int(x) for x in _stat_fields(pid)[11:13])
        n = max(1, res.requests)
        split = (f"unsampled: {res.rps:,.0f} req/s, CPU per request "
                 f"{1e6 * (u1 - u0) / _TICK / n:.1f} us user + {1e6 * (s1 - s0) / _TICK / n:.1f} us "
                 "system")
        raw = tmp / "collapsed.txt"
        rec = subprocess.Popen([spy, "record", "-p", str(target.proc.pid), "-d",
                                str(args.seconds), "-r", "250", "-f", "raw", "-o", str(raw)],
                               stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        box: list[object] = []
        t = threading.Thread(target=lambda: box.append(run_wrk(target.url, GET,
                                                               args.seconds + 1)))
        t.start()
        rec.wait(timeout=args.seconds + 60)
        t.join()
        print(box[0] if box else "wrk gave nothing")
        text = summarise(raw, args.top)
    print(split)
    print(text)
    if args.out:
        args.out.write_text(split + "\n" + text + "\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
