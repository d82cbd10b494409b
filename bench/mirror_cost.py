"""CPU cost of one mirror copy against a bare pooled upstream exchange, in one process.

    .venv/bin/python bench/mirror_cost.py [--copies 20000] [--concurrency 16]

Starts the bench's nginx backend, then alternates two measurements twice: ``--copies`` plain
exchanges over the data plane's ``UpstreamPool`` (``--concurrency`` at a time), and as many
copies through ``Mirror.submit`` (the same head, the exact comparator, the shadow metrics). Prints
the CPU time of this process (user + system) per exchange and per copy. A copy costs what the
exchange costs plus its task, admission, comparison and metrics; the traffic scenario's
policies-vs-plain gap is the live gateway's figure to hold against it (bench/README.md).
"""

from __future__ import annotations

import argparse
import asyncio
import shutil
import sys
import tempfile
import time
from pathlib import Path

import uvloop

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from procs import ProcSet, free_port, wait_http_ok  # noqa: E402
from targets import backend_argv, bench_env  # noqa: E402

from gateway import plugins  # noqa: E402
from gateway.dataplane.balance import Endpoint, ReplicaSet  # noqa: E402
from gateway.dataplane.mirror import Mirror, Primary, mirror_methods  # noqa: E402
from gateway.dataplane.proxy import request_head  # noqa: E402
from gateway.metrics import Metrics  # noqa: E402

HEADERS = ((b"Host", b"bench"),)


async def measure(port: int, copies: int, concurrency: int) -> None:
    rs = ReplicaSet("bench", "shadow")
    ep = Endpoint("shadow", "127.0.0.1", port)
    rs.publish([ep])
    metrics = Metrics().shadow("bench", "shadow")
    mirror = Mirror("bench", "shadow", rs, percent=100, methods=mirror_methods(False),
                    max_body=1 << 20, concurrency=concurrency, queue=0, timeout=5.0,
                    compare=plugins.create("comparator", "exact", {}), metrics=metrics)
    head = request_head(b"GET", b"/x", HEADERS, b"127.0.0.1", b"http", 0, b"bench")
    primary = Primary(200, b'{"ok":true}', 0.001)

    async def exchanges(n: int) -> None:
        for _ in range(n):
            await ep.pool.request(head, None, 5.0, False)

    async def mirrored() -> None:
        sent = 0
        while sent < copies:
            if mirror.gate.admitted < concurrency:
                mirror.submit("GET", "/x", HEADERS, b"127.0.0.1", None, primary, head)
                sent += 1
            else:
                await asyncio.sleep(0.0002)   # not sleep(0): spinning would be counted as cost
        while mirror.gate.admitted:
            await asyncio.sleep(0.001)

    for label in ("exchange", "mirror copy") * 2:
        cpu, wall = time.process_time(), time.perf_counter()
        if label == "exchange":
            await asyncio.gather(*(exchanges(copies // concurrency) for _ in range(concurrency)))
        else:
            await mirrored()
        cpu, wall = time.process_time() - cpu, time.perf_counter() - wall
        print(f"{label:12} {1e6 * cpu / copies:6.1f} us CPU each, {copies / wall:8.0f}/s")
    answered, failed, agreed, compared = metrics.totals()
    print(f"copies answered {answered}, failed {failed}, agreed {agreed}/{compared}")


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--copies", type=int, default=20_000)
    p.add_argument("--concurrency", type=int, default=16)
    args = p.parse_args()
    tmp = Path(tempfile.mkdtemp(prefix="serve-gateway-mirror-"))
    tmp.chmod(0o755)
    port = free_port()
    try:
        with ProcSet(tmp, pid_dirs=[tmp]) as procs:
            backend = procs.start("backend", backend_argv(port), env=bench_env(tmp))
            wait_http_ok(backend, port, "/ready", timeout=10)
            uvloop.run(measure(port, args.copies, args.concurrency))
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
