"""Streaming benchmark: time to first byte and per-item gaps of SSE streams, straight to a
worker vs through serve-gateway, at a few concurrency levels.

The model is the shipped ``gateway.examples.tokens:Tokens`` (one item every
``--delay`` seconds; ``--tokens`` items per stream), a sync generator served with enough predict
threads for every concurrent stream. The gateway runs one replica of it; the direct target is a
second identical worker. What the gateway adds per stream is TTFB(gateway) - TTFB(direct); a
proxy that buffered the answer would show TTFB ~ the whole stream's time.

    .venv/bin/python bench/streaming.py [--quick] [--write]
"""

from __future__ import annotations

import argparse
import asyncio
import os
import statistics
import sys
import tempfile
import time
from pathlib import Path

import aiohttp
import yaml
from procs import ProcSet, free_port, http_status
from report import machine_info, write_readme
from targets import BENCH_DIR, GATEWAY_BIN


async def one_stream(http: aiohttp.ClientSession, url: str, prompt: str) -> tuple[float, float]:
    """(TTFB, whole stream) of one SSE stream, in seconds."""
    start = time.perf_counter()
    stamps = []
    async with http.post(url, json={"prompt": prompt},
                         headers={"Accept": "text/event-stream"}) as resp:
        if resp.status != 200:
            raise RuntimeError(f"{url}: {resp.status} {await resp.text()}")
        async for _ in resp.content.iter_any():
            stamps.append(time.perf_counter() - start)
    return stamps[0], stamps[-1]


async def measure(url: str, concurrency: int, rounds: int, tokens: int) -> dict[str, float]:
    prompt = " ".join(f"w{i}" for i in range(tokens))
    ttfb: list[float] = []
    total: list[float] = []
    async with aiohttp.ClientSession(connector=aiohttp.TCPConnector(limit=0)) as http:
        await one_stream(http, url, prompt)           # warm the connections and the model
        for _ in range(rounds):
            results = await asyncio.gather(*(one_stream(http, url, prompt)
                                             for _ in range(concurrency)))
            ttfb += [r[0] for r in results]
            total += [r[1] for r in results]
    q = statistics.quantiles(ttfb, n=100) if len(ttfb) > 1 else ttfb * 99
    return {"ttfb_p50_ms": 1000 * statistics.median(ttfb), "ttfb_p99_ms": 1000 * q[98],
            "total_p50_ms": 1000 * statistics.median(total), "streams": len(ttfb)}


def wait_ready(port: int, path: str, deadline: float = 30.0) -> None:
    end = time.monotonic() + deadline
    while http_status(port, path) != 200:
        if time.monotonic() > end:
            raise RuntimeError(f"nothing ready on :{port}{path}")
        time.sleep(0.1)


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--quick", action="store_true", help="fewer rounds")
    p.add_argument("--write", action="store_true", help="update bench/README.md")
    p.add_argument("--delay", type=float, default=0.02, help="seconds per item (default 0.02)")
    p.add_argument("--tokens", type=int, default=20, help="items per stream (default 20)")
    p.add_argument("--concurrency", default="1,16,64")
    args = p.parse_args()
    levels = [int(c) for c in args.concurrency.split(",")]
    rounds = 2 if args.quick else 5
    env_delay = {"TOKENS_DELAY_SECONDS": str(args.delay)}
    threads = max(levels)
    command = f"{GATEWAY_BIN} worker gateway.examples.tokens:Tokens --threads {threads}"
    with tempfile.TemporaryDirectory(prefix="sgw-bench-stream-") as tmp_name, \
            ProcSet(Path(tmp_name)) as procs:
        tmp = Path(tmp_name)
        direct_port, gw_port, admin_port = free_port(), free_port(), free_port()
        env = {**os.environ, **env_delay}
        procs.start("direct", [*command.split(), "--port", str(direct_port)], env=env)
        config = {"gateway": {"listen": f"127.0.0.1:{gw_port}",
                              "admin": {"listen": f"127.0.0.1:{admin_port}"},
                              "state_dir": str(tmp / "state")},
                  "services": {"tokens": {"route": "/v1/tokens", "rewrite": "/predict", "versions": {"v1": {
                      "command": command + " --port {port}", "replicas": 1, "env": env_delay}}}}}
        (tmp / "gw.yaml").write_text(yaml.safe_dump(config))
        procs.start("gateway", [str(GATEWAY_BIN), "up", str(tmp / "gw.yaml")])
        wait_ready(direct_port, "/ready")
        wait_ready(admin_port, "/readyz")
        rows = []
        for c in levels:
            d = asyncio.run(measure(f"http://127.0.0.1:{direct_port}/predict", c, rounds,
                                    args.tokens))
            g = asyncio.run(measure(f"http://127.0.0.1:{gw_port}/v1/tokens", c, rounds, args.tokens))
            rows.append((c, d, g))
            print(f"c={c}: direct {d}  gateway {g}", file=sys.stderr)
    info = machine_info()
    head = (f"Streams of {args.tokens} items, one per {args.delay * 1000:.0f} ms "
            f"(`gateway.examples.tokens`, SSE), {rounds} rounds per level; "
            f"{info['cpus']}, load average at start {info['load average at start']}.")
    columns = ("| concurrent streams | TTFB p50 direct | TTFB p50 gateway | TTFB p99 direct | "
               "TTFB p99 gateway | whole stream p50 direct | whole stream p50 gateway |")
    lines = [head, "", columns, "|---|---|---|---|---|---|---|"]
    for c, d, g in rows:
        lines.append(f"| {c} | {d['ttfb_p50_ms']:.1f} ms | {g['ttfb_p50_ms']:.1f} ms | "
                     f"{d['ttfb_p99_ms']:.1f} ms | {g['ttfb_p99_ms']:.1f} ms | "
                     f"{d['total_p50_ms']:.0f} ms | {g['total_p50_ms']:.0f} ms |")
    block = "\n".join(lines) + "\n"
    print(block)
    if args.write:
        write_readme(BENCH_DIR / "README.md", "streaming", block)
    return 0




if __name__ == "__main__":
    sys.exit(main())
