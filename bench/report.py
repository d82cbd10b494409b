"""Markdown report: machine info, result tables with ratios, pass/fail checks, README update."""

from __future__ import annotations

import math
import os
import platform
import re
import subprocess
import sys
from importlib import metadata
from pathlib import Path
from statistics import median
from typing import Any

from scenarios import FIXED_RATE_TARGETS, TARGETS, Results, Scenario


def _cmd_version(argv: list[str]) -> str:
    try:
        done = subprocess.run(argv, capture_output=True, text=True, timeout=5, check=False)
    except (OSError, subprocess.TimeoutExpired):
        return "not found"
    text = (done.stdout + done.stderr).strip().splitlines()
    return text[0] if text else "?"


def _pkg(name: str) -> str:
    try:
        return metadata.version(name)
    except metadata.PackageNotFoundError:
        return "-"


def _cpu_model() -> str:
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or "?"


def machine_info() -> dict[str, str]:
    """What the numbers depend on; printed with every run."""
    load = Path("/proc/loadavg").read_text().split()[:3] if Path("/proc/loadavg").exists() else []
    return {
        "cpus": f"{len(os.sched_getaffinity(0))} (nproc) x {_cpu_model()}",
        "kernel": platform.release(),
        "python": sys.version.split()[0],
        "aiohttp / uvloop / orjson": f"{_pkg('aiohttp')} / {_pkg('uvloop')} / {_pkg('orjson')}",
        "serve-gateway": _pkg("serve-gateway"),
        "nginx": _cmd_version(["nginx", "-v"]).replace("nginx version: ", ""),
        "wrk": _cmd_version(["wrk", "-v"]).split(" Copyright")[0],
        "cpu idle": _cpuidle(),
        "load average at start": " ".join(load),
    }


def _cpuidle() -> str:
    """How an idle CPU waits: on a VM whose idle vCPUs halt at once, every wake-up of a worker
    is an IPI and a VM exit, paid by the process that wrote to it (often the proxy)."""
    base = Path("/sys/devices/system/cpu/cpuidle")
    try:
        out = (base / "current_driver").read_text().strip()
    except OSError:
        return "-"
    poll = Path("/sys/module/haltpoll/parameters/guest_halt_poll_ns")
    if poll.exists():
        out += f", guest_halt_poll_ns={poll.read_text().strip()}"
    return out


def _ms(v: Any) -> str:
    if v is None or (isinstance(v, float) and math.isnan(v)):
        return "-"
    return f"{float(v):.2f} ms"


def _table(header: list[str], rows: list[list[str]]) -> list[str]:
    lines = ["| " + " | ".join(header) + " |", "|" + "|".join("---" for _ in header) + "|"]
    return lines + ["| " + " | ".join(row) + " |" for row in rows]


def _closed_table(sc: Scenario, r: Results, settings: str) -> list[str]:
    header = ["target"]
    for load in sc.loads:
        header += [f"{load.name} req/s", "p50", "p99", "CPU/req"]
    header += ["vs gateway", "errors"]
    rows = []
    first = sc.loads[0].name
    gw_rps = r.rps(first, "gateway")
    for key, label in TARGETS.items():
        per_load = [r.closed.get(load.name, {}).get(key) for load in sc.loads]
        if not any(per_load):
            continue
        row = [label]
        for load, res in zip(sc.loads, per_load):
            cpu = r.cpu.get(load.name, {}).get(key)
            row += [f"{res.rps:,.0f}", _ms(res.p50_ms), _ms(res.p99_ms)] if res else ["-"] * 3
            row.append(f"{cpu['us_per_req']:.0f} us" if cpu else "-")
        rps = r.rps(first, key)
        row.append(f"{gw_rps / rps:.2f}x" if gw_rps and rps and key != "gateway" else "")
        row.append(str(sum(res.errors for res in per_load if res)))
        rows.append(row)
    return [(f"Closed loop ({settings}). CPU/req = CPU time of the target's own processes per "
            f"request (not wrk's, not the backend's behind a proxy); 'vs gateway' = gateway "
            f"{first} req/s / this row's:"), "",
            *_table(header, rows)]


def _paired_table(sc: Scenario, r: Results) -> list[str]:
    rows = []
    for load, base in sc.paired:
        ratios = r.paired((load, "gateway"), (base, "gateway"))
        if ratios:
            rows.append([f"{load} / {base}", f"{median(ratios):.0%}",
                         f"{min(ratios):.0%}-{max(ratios):.0%}"])
    return ["Gateway req/s of one load over another's, round by round:", "",
            *_table(["loads", "median", "range over rounds"], rows)]


def _fixed_table(r: Results, settings: str) -> list[str]:
    header = ["target", "p50", "p90", "p99", "p99.9", "added p99 vs direct", "service p99",
              "generator lag p99", "errors"]
    rows = []
    for key in FIXED_RATE_TARGETS:
        s = r.fixed.get(key)
        if not s:
            continue
        added = r.added_p99_ms(key) if key != "direct" else None
        rows.append([TARGETS[key], _ms(s["p50_ms"]), _ms(s["p90_ms"]), _ms(s["p99_ms"]),
                     _ms(s["p99.9_ms"]), "" if added is None else f"{added:+.2f} ms",
                     _ms(s["service_p99_ms"]), _ms(s["lag_p99_ms"]), str(s["errors"])])
    return [(f"Fixed rate, open loop: {r.fixed_rate:,.0f} req/s GET ({r.fixed_basis}; {settings}); "
            "latency from the scheduled send time:"), "", *_table(header, rows)]


def _rss_lines(r: Results) -> list[str]:
    s = r.rss
    assert s is not None
    return [(f"Gateway memory: {s['opened']}/{s['connections']} keep-alive connections opened "
            f"({s['open_s']} s), one request each, held idle: VmRSS {s['rss_before_mb']} MB -> "
            f"{s['rss_mb']} MB ({s['per_conn_kib']} KiB per connection); "
            f"{s['alive_after']} still served a second request.")]


def render(sc: Scenario, r: Results, info: dict[str, str], settings: dict[str, str]) -> str:
    """The scenario's results as markdown (the block that goes between the README markers)."""
    out = [f"### {sc.name}: {sc.title}", ""]
    out += [f"- {k}: {v}" for k, v in info.items()] + [""]
    if r.closed:
        out += _closed_table(sc, r, settings["closed"]) + [""]
    if r.fixed:
        out += _fixed_table(r, settings["fixed"]) + [""]
    if r.rss:
        out += _rss_lines(r) + [""]
    if sc.paired:
        out += _paired_table(sc, r) + [""]
    if sc.checks:
        rows = []
        for check in sc.checks:
            got = check.measure(r)
            rows.append([check.name, got[0] if got else "not measured", check.target,
                         ("PASS" if got[1] else "FAIL") if got else "-"])
        out += _table(["check", "measured", "target", "result"], rows) + [""]
    if r.orphans:
        out += [(f"WARNING: left running by the gateway and killed by the bench: "
                f"{', '.join(r.orphans)}"), ""]
    return "\n".join(out).rstrip() + "\n"


def write_readme(readme: Path, name: str, block: str) -> None:
    """Replace what is between this scenario's markers (appending them if absent)."""
    start, end = f"<!-- results:{name} -->", f"<!-- /results:{name} -->"
    text = readme.read_text() if readme.exists() else ""
    new = f"{start}\n{block}{end}"
    pattern = re.compile(re.escape(start) + r".*?" + re.escape(end), re.DOTALL)
    if pattern.search(text):
        text = pattern.sub(lambda _: new, text)
    else:
        text = text.rstrip("\n") + ("\n\n" if text else "") + new + "\n"
    readme.write_text(text)
