"""The cost of the observations a data-plane process sends its controller every 100 ms
(gateway/dataplane/observe.py, gateway/control/gather.py), with many versions routed.

    .venv/bin/python bench/observe_cost.py [--versions 20] [--rounds 2000] [--write]

One process's metrics, table and replica sets (2 replicas per version, a mirror on every
service, as a busy config has) are built in this process. Per round: traffic on every version
(``--per-round`` answers each, with latencies, upstream times and queue waits: what 100 ms of
a busy process moves), then the child's side (``Observer.report()`` + ``json.dumps`` +
``acked``) and the controller's side (``json.loads`` + ``Gather.absorb``), each timed alone
with ``time.process_time_ns``-free wall time on one thread (nothing else runs here). Also a
quiet round (nothing moved since the last report). Prints the medians and the share of one
core they take at 10 reports a second; ``--write`` puts them in bench/README.md.
"""

from __future__ import annotations

import argparse
import json
import random
import statistics
import sys
import time
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from gateway.control.gather import Gather  # noqa: E402
from gateway.dataplane.balance import Endpoint, ReplicaSet  # noqa: E402
from gateway.dataplane.observe import Observer  # noqa: E402
from gateway.dataplane.table import TableHolder, build_table  # noqa: E402
from gateway.metrics import Metrics  # noqa: E402
from gateway.spec import parse_spec  # noqa: E402

MARK = "### observe-cost: a data-plane process's report to its controller (`bench/observe_cost.py`)"


def config(versions: int) -> str:
    """``versions`` versions, two per service, the second a mirror target."""
    lines = ["gateway: {state_dir: /nonexistent}", "services:"]
    for i in range(versions // 2):
        lines += [f"  s{i}:", f"    route: /s{i}",
                  "    traffic: {weights: {a: 1, b: 0}, mirror: {to: b, percent: 10}}",
                  "    versions:",
                  '      a: {command: "w --port {port}", replicas: 2}',
                  '      b: {command: "w --port {port}", replicas: 2}']
    return "\n".join(lines) + "\n"


def traffic(m: Metrics, keys: list[tuple[str, str]], per: int, rng: random.Random) -> None:
    for s, v in keys:
        vm = m.version(s, v)
        for _ in range(per):
            t = rng.expovariate(100)
            vm.observe(200 if rng.random() > 0.01 else 503, t)
            vm.upstream_latency.observe(t * 0.9)
            m.queue_wait.labels(s, v).observe(t * 0.01)
        if v == "b":
            sm = m.shadow(s, v)
            sm.sent.inc(per // 10)
            sm.compared_one(True)


def run(versions: int, rounds: int, per: int) -> dict[str, Any]:
    spec = parse_spec(config(versions))
    m = Metrics()
    sets = {}
    n = 0
    for sname, svc in spec.services.items():
        for vname in svc.versions:
            rs = sets[(sname, vname)] = ReplicaSet(sname, vname)
            rs.publish([Endpoint(f"r{n + i}", "127.0.0.1", 1 + n + i) for i in range(2)])
            n += 2
    holder = TableHolder(build_table(spec, sets, m))
    observer = Observer(m, holder)
    ctrl = Metrics()
    gather = Gather(ctrl)
    keys = list(sets)
    rng = random.Random(1)
    busy_child, busy_ctrl, quiet_child, sizes = [], [], [], []
    for i in range(rounds):
        traffic(m, keys, per, rng)
        t0 = time.perf_counter_ns()
        report = observer.report()
        body = json.dumps(report)
        observer.acked(report)
        t1 = time.perf_counter_ns()
        gather.absorb("dp-0", "life", json.loads(body), ("e", i))
        t2 = time.perf_counter_ns()
        report = observer.report()
        json.dumps(report)
        observer.acked(report)
        t3 = time.perf_counter_ns()
        if i >= rounds // 10:                      # the first rounds warm up
            busy_child.append(t1 - t0)
            busy_ctrl.append(t2 - t1)
            quiet_child.append(t3 - t2)
            sizes.append(len(body))
    assert ctrl.version(*keys[0]).answered == m.version(*keys[0]).answered
    us = 1e-3
    return {"versions": len(keys), "per_round": per,
            "child_busy_us": statistics.median(busy_child) * us,
            "ctrl_busy_us": statistics.median(busy_ctrl) * us,
            "child_quiet_us": statistics.median(quiet_child) * us,
            "bytes": int(statistics.median(sizes))}


def table(rows: list[dict[str, Any]]) -> str:
    out = ["| versions | report + json + ack (child), busy | absorb (controller), busy | "
           "report, quiet | JSON bytes | child's core share at 10/s |",
           "|---:|---:|---:|---:|---:|---:|"]
    for r in rows:
        out.append(f"| {r['versions']} | {r['child_busy_us']:.0f} us | {r['ctrl_busy_us']:.0f} us"
                   f" | {r['child_quiet_us']:.0f} us | {r['bytes']} | "
                   f"{r['child_busy_us'] * 10 / 1e6:.2%} |")
    return "\n".join(out)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--versions", type=int, nargs="+", default=[2, 20, 100])
    ap.add_argument("--rounds", type=int, default=1000)
    ap.add_argument("--per-round", type=int, default=20, help="answers per version per round")
    ap.add_argument("--write", action="store_true")
    args = ap.parse_args()
    rows = [run(v, args.rounds, args.per_round) for v in args.versions]
    text = table(rows)
    print(text)
    if args.write:
        readme = ROOT / "bench" / "README.md"
        doc = readme.read_text()
        block = (f"{MARK}\n\nMedians over {args.rounds} rounds, {args.per_round} answers per "
                 "version between two reports (every series moved: the worst case; a version "
                 "with no traffic costs only its gauges row). Busy: every version moved; quiet: "
                 "nothing moved since the last acknowledged report.\n\n" + text + "\n")
        if MARK in doc:
            head, rest = doc.split(MARK, 1)
            nxt = rest.find("\n## ")
            nxt3 = rest.find("\n### ")
            cut = min(x for x in (nxt, nxt3, len(rest)) if x >= 0)
            doc = head + block + rest[cut:]
        else:
            doc = doc.rstrip("\n") + "\n\n" + block
        readme.write_text(doc)


if __name__ == "__main__":
    main()
