"""Control-plane figures a user feels, measured on a real gateway with real echo workers.

    .venv/bin/python bench/control_plane.py [--runs 3] [--clients 4] [--only revision|sigkill|zero]

- ``revision``: a revision rollout (the serving version's env edited, then a reload) under
  closed-loop load, ramped and canary: latency percentiles and the worst request from the reload
  to ``done``, and every non-2xx. A rollout that routes to the new revision before it has a
  ready replica shows up as a max of about one model load (a cold start), or as 503s.
- ``sigkill``: a gateway whose workers run through a shell (``sh -c "...; true"``) is SIGKILLed;
  the time until no process of any worker group is left (the reaper's work).

- ``zero``: config/autoscale.yaml as shipped (ports and state moved): once at zero, one request,
  then 75 s of silence; the replica launches in that time (1: the request's own cold start).

Uses the test harness (tests/helpers.py: ``GatewayProc``, loopback ports, temp state).
"""

from __future__ import annotations

import argparse
import asyncio
import copy
import signal
import sys
import tempfile
import time
from collections import Counter
from pathlib import Path
from typing import Any

import aiohttp
import yaml

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from tests.helpers import ECHO, REPO_ROOT, GatewayProc, group_members, run_cli, wait_until

SHELL = ["sh", "-c", "serve-gateway worker examples.models.echo:Echo --port {port}; true"]
STRATEGIES: dict[str, dict[str, Any]] = {
    "ramped": {"strategy": "ramped"},
    "canary": {"strategy": "canary", "steps": [{"weight": 50, "pause": "1s"}], "analysis": None,
               "scale_down_delay": "0s"},
}


async def revision(tmp: Path, strategy: str, clients: int) -> dict[str, Any]:
    services = {"echo": {"route": "/v1/echo", "rewrite": "/predict",
                         "versions": {"v1": {"command": ECHO, "env": {"ECHO_TAG": "old"},
                                             "replicas": 2}},
                         "rollout": STRATEGIES[strategy]}}
    latencies: list[float] = []
    codes: Counter[int] = Counter()
    async with GatewayProc(tmp, services) as gw, aiohttp.ClientSession() as s:
        stop = asyncio.Event()

        async def client() -> None:
            while not stop.is_set():
                t0 = time.monotonic()
                async with s.post(gw.url("/v1/echo"), data=b'{"x": 1}') as r:
                    await r.read()
                    codes[r.status] += 1
                latencies.append(time.monotonic() - t0)

        tasks = [asyncio.create_task(client()) for _ in range(clients)]
        await asyncio.sleep(1.0)
        start = len(latencies)
        config = copy.deepcopy(gw.config)
        config["services"]["echo"]["versions"]["v1"]["env"]["ECHO_TAG"] = "new"
        gw.rewrite(config)
        await run_cli("reload", "--admin", gw.admin(""))

        async def done() -> bool:
            async with s.get(gw.admin("/rollouts/echo")) as r:
                return bool((await r.json())["phase"] == "done")
        await wait_until(done, 60, what="the rollout done", interval=0.1)
        stop.set()
        await asyncio.gather(*tasks)
    window = sorted(latencies[start:])
    return {"requests": len(window), "non_2xx": sum(n for c, n in codes.items() if c >= 300),
            "p50_ms": 1000 * window[len(window) // 2], "p99_ms": 1000 * window[int(len(window) * 0.99)],
            "max_ms": 1000 * window[-1]}


async def sigkill(tmp: Path) -> float:
    services = {"echo": {"route": "/e", "versions": {"v1": {"command": SHELL, "replicas": 2}}}}
    gw = GatewayProc(tmp, services)
    async with gw:
        assert gw.proc is not None
        groups = [r["pid"] for r in (await gw.status())["services"]["echo"]["versions"]["v1"]["replicas"]]
        gw.expect_exit_code = None
        gw.worker_pids.clear()
        t0 = time.monotonic()
        gw.proc.send_signal(signal.SIGKILL)
        await wait_until(lambda: not any(group_members(g) for g in groups), 30,
                         what="every worker group gone", interval=0.002)
        return time.monotonic() - t0


async def zero(tmp: Path, silence: float = 75.0) -> int:
    doc = yaml.safe_load((REPO_ROOT / "config" / "autoscale.yaml").read_text())
    async with GatewayProc(tmp, doc["services"], queue=doc["gateway"]["queue"]) as gw, \
            aiohttp.ClientSession() as s:
        async def at_zero() -> bool:
            v = (await gw.status())["services"]["echo"]["versions"]["v1"]
            return bool(v["desired"] == 0 and not v["replicas"])
        await wait_until(at_zero, 90, what="scaled to zero", interval=0.5)
        before = gw.log().count("started echo/v1 replica")
        async with s.post(gw.url("/v1/echo"), json={"x": 1}) as r:
            assert r.status == 200, await r.text()
        await asyncio.sleep(silence)
        return gw.log().count("started echo/v1 replica") - before


async def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--runs", type=int, default=3)
    parser.add_argument("--clients", type=int, default=4)
    parser.add_argument("--only", choices=("revision", "sigkill", "zero"))
    args = parser.parse_args()
    with tempfile.TemporaryDirectory(prefix="sgw-bench-") as root:
        for strategy in STRATEGIES if args.only in (None, "revision") else ():
            for i in range(args.runs):
                tmp = Path(root) / f"{strategy}{i}"
                tmp.mkdir()
                r = await revision(tmp, strategy, args.clients)
                print(f"revision {strategy:6s} run {i}: {r['requests']} requests, "
                      f"{r['non_2xx']} non-2xx, p50 {r['p50_ms']:.1f} ms, p99 {r['p99_ms']:.1f} ms, "
                      f"max {r['max_ms']:.1f} ms")
        for i in range(args.runs if args.only in (None, "sigkill") else 0):
            tmp = Path(root) / f"kill{i}"
            tmp.mkdir()
            print(f"sigkill run {i}: every shell-started worker gone after "
                  f"{1000 * await sigkill(tmp):.1f} ms")
        if args.only in (None, "zero"):
            tmp = Path(root) / "zero"
            tmp.mkdir()
            print(f"zero: {await zero(tmp)} replica launch(es) in the 75 s after one request "
                  "at zero")


if __name__ == "__main__":
    asyncio.run(main())
