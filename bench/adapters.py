"""Adapters benchmark: the saved-model workers (``worker --adapter sklearn|torch|onnx``) with and
without micro-batching, same machine, same run.

1. In process (steady on a shared machine): the adapter's ``predict`` on 64 instances as one
   batch (one array, one model call) vs the same 64 one at a time; microseconds per instance.
2. Through the gateway: one gateway, two services per adapter on single-replica versions of the
   same model file, ``plain`` (no batching) and ``batched`` (the adapter example's ``batching``);
   closed loop, N clients each posting one instance after another; instances/s, p50 / p99 and
   the mean batch size.

    .venv/bin/python bench/adapters.py [--quick] [--write]

``--write`` puts the tables between ``<!-- results:adapters -->`` markers in bench/README.md.
Every process it starts is stopped at the end, pass or fail.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import shutil
import signal
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import orjson
import yaml
from batching import batch_histogram, closed_loop, start_gateway
from procs import ProcSet, raised_nofile
from report import machine_info, write_readme
from targets import BENCH_DIR, REPO

sys.path.insert(0, str(REPO))

from examples.adapters import save_onnx, save_sklearn, save_torch
from gateway.worker.adapters import ADAPTERS

SAVERS = {"sklearn": (save_sklearn.save, "iris.joblib"), "torch": (save_torch.save, "mlp.pt2"),
          "onnx": (save_onnx.save, "linear.onnx")}
CLIENTS = (1, 32)
INSTANCE = [5.1, 3.5, 1.4, 0.2]


def _log(msg: str) -> None:
    print(f"[adapters {time.strftime('%H:%M:%S')}] {msg}", file=sys.stderr, flush=True)


def in_process(models: dict[str, Path], repeat: int) -> dict[str, tuple[float, float]]:
    """adapter -> (us per instance one at a time, us per instance in batches of 64)."""
    import importlib

    out = {}
    batch = [INSTANCE] * 64
    for name, path in models.items():
        module, _, cls = ADAPTERS[name][0].partition(":")
        adapter = getattr(importlib.import_module(module), cls)(str(path), "cpu")
        adapter.load()
        best_one = best_batch = float("inf")
        for _ in range(repeat):
            t0 = time.perf_counter()
            for item in batch:
                adapter.predict([item])
            t1 = time.perf_counter()
            adapter.predict(batch)
            t2 = time.perf_counter()
            best_one, best_batch = min(best_one, t1 - t0), min(best_batch, t2 - t1)
        out[name] = (best_one / 64 * 1e6, best_batch / 64 * 1e6)
    return out


def services(models: dict[str, Path]) -> dict[str, Any]:
    out = {}
    for name, path in models.items():
        example = yaml.safe_load((REPO / "config" / f"adapter-{name}.yaml").read_text())
        ((_, svc),) = example["services"].items()
        version = svc["versions"]["v1"]
        version.update(replicas=1, command=f"{sys.executable} -m gateway.worker --adapter {name} "
                                           f"--model {path} --port {{port}}")
        version["env"] = {"OMP_NUM_THREADS": "1"}
        batching = svc.pop("batching")
        out[f"{name}-plain"] = {**svc, "route": f"/{name}-plain"}
        out[f"{name}-batched"] = {**svc, "route": f"/{name}-batched", "batching": batching}
    return out


async def through_gateway(port: int, admin: int, names: list[str], warmup: float,
                          duration: float) -> dict[str, dict[int, dict[str, float]]]:
    body = orjson.dumps(INSTANCE)
    out: dict[str, dict[int, dict[str, float]]] = {}
    for svc in names:
        out[svc] = {}
        for clients in CLIENTS:
            before = await batch_histogram(admin, svc)
            sample = await closed_loop(port, f"/{svc}", body, clients, warmup, duration)
            after = await batch_histogram(admin, svc)
            point = sample.point(clients)
            count = after[1] - before[1]
            out[svc][clients] = {"rps": point.rps, "p50": point.p50_ms, "p99": point.p99_ms,
                                 "errors": point.errors,
                                 "batch": (after[0] - before[0]) / count if count else 1.0}
            _log(f"{svc} at {clients}: {point.rps:,.0f}/s")
    return out


def render(info: dict[str, str], micro: dict[str, tuple[float, float]],
           gw: dict[str, dict[int, dict[str, float]]], settings: str) -> str:
    lines = ["### adapters: saved models with and without batching (`bench/adapters.py`)", "",
             (f"Machine: {info['cpus']}; Python {info['python']}; load average at start "
             f"{info['load average at start']}. {settings}"), "",
             "In process, `predict` on 64 instances (best of the repeats):", "",
             "| adapter | one at a time, us/instance | one batch of 64, us/instance | ratio |",
             "|---|---|---|---|"]
    for name, (one, batch) in micro.items():
        lines.append(f"| {name} | {one:,.1f} | {batch:,.2f} | {one / batch:,.0f}x |")
    lines += ["", "Through the gateway, one replica per service, closed loop:", "",
              ("| adapter | clients | no batching /s | p50 ms | p99 ms | batching /s | p50 ms | "
              "p99 ms | mean batch | errors |"), "|---|---|---|---|---|---|---|---|---|---|"]
    for name in micro:
        for clients in CLIENTS:
            a, b = gw[f"{name}-plain"][clients], gw[f"{name}-batched"][clients]
            lines.append(f"| {name} | {clients} | {a['rps']:,.0f} | {a['p50']:.2f} | "
                         f"{a['p99']:.2f} | {b['rps']:,.0f} | {b['p50']:.2f} | {b['p99']:.2f} | "
                         f"{b['batch']:.1f} | {int(a['errors'] + b['errors'])} |")
    return "\n".join(lines) + "\n"


def _sigterm(signum: int, frame: object) -> None:
    raise KeyboardInterrupt      # unwinds through the ProcSet that stops what we started


def main() -> int:
    signal.signal(signal.SIGTERM, _sigterm)
    p = argparse.ArgumentParser(description=(__doc__ or "").splitlines()[0])
    p.add_argument("--quick", action="store_true", help="short points")
    p.add_argument("--write", action="store_true", help="update bench/README.md")
    p.add_argument("--only", help="comma list of sklearn,torch,onnx")
    args = p.parse_args()
    warmup, duration = (0.5, 2.0) if args.quick else (1.0, 5.0)
    names = args.only.split(",") if args.only else list(SAVERS)
    info = machine_info()
    tmp = Path(tempfile.mkdtemp(prefix="serve-gateway-adapters-"))
    try:
        models = {n: SAVERS[n][0](tmp / SAVERS[n][1]) for n in names}
        micro = in_process(models, repeat=3 if args.quick else 10)
        with raised_nofile(), ProcSet(tmp) as procs:
            _log("starting the gateway and its adapter replicas")
            port, admin = start_gateway(procs, tmp, services(models))
            try:
                import uvloop
                runner: Any = uvloop.run
            except ImportError:
                runner = asyncio.run
            svcs = [f"{n}-{m}" for n in names for m in ("plain", "batched")]
            gw = runner(through_gateway(port, admin, svcs, warmup, duration))
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
    settings = (f"OMP_NUM_THREADS=1; batching as in config/adapter-*.yaml; {duration:g} s per "
                f"point after {warmup:g} s warm-up{' (--quick)' if args.quick else ''}; "
                f"instance {json.dumps(INSTANCE)}.")
    block = render(info, micro, gw, settings)
    print(block)
    if args.write:
        write_readme(BENCH_DIR / "README.md", "adapters", block)
    return 0


if __name__ == "__main__":
    sys.exit(main())
