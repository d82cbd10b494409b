"""``serve-gateway rollout ...`` and ``serve-gateway plan``: the command-line front of the rollout
endpoints (control/rolloutapi.py) and the dry run of a config's rollouts (rollout/timeline.py).
"""

from __future__ import annotations

import argparse
import statistics
import sys
import time
from dataclasses import replace
from typing import Any

import orjson

from gateway.admin import adminclient, render
from gateway.errors import ConfigError

ACTIONS = ("promote", "pause", "resume", "abort", "undo", "retry")


def add_commands(sub: Any) -> None:
    ro = sub.add_parser(
        "rollout", help="show or steer a running gateway's rollouts",
        description="status [SERVICE] [--watch]: phase, step, weights, analysis and time to the "
                    "next step. promote SERVICE [--full]: go to the next step (--full: switch "
                    "now). pause / resume / abort / undo SERVICE. retry SERVICE: start an "
                    "aborted or rolled-back rollout again from its first step. Exit 1 when the "
                    "gateway refused the command (the reason is printed).")
    ro.add_argument("action", choices=("status", *ACTIONS))
    ro.add_argument("service", nargs="?")
    ro.add_argument("--full", action="store_true", help="promote: skip every remaining step")
    ro.add_argument("--watch", action="store_true", help="status: refresh every second")
    ro.add_argument("--json", action="store_true", help="print the raw answer")
    adminclient.add_arguments(ro)
    ro.set_defaults(func=cmd_rollout)

    pl = sub.add_parser(
        "plan", help="dry-run a config's rollouts (changes nothing)",
        description="For each service of CONFIG with a rollout: the versions to start and stop, "
                    "the timeline with the minimum time to full promotion and the time to "
                    "rollback, and warnings. With --admin (or -c pointing at the running "
                    "gateway's config) it compares with the running gateway and uses its "
                    "request rate and cold-start times.")
    pl.add_argument("plan_config", metavar="CONFIG")
    pl.add_argument("--rps", type=float, help="expected requests per second per service")
    pl.add_argument("--start-s", type=float, help="seconds a replica takes to become ready")
    adminclient.add_arguments(pl)
    pl.set_defaults(func=cmd_plan)


# -- rollout ----------------------------------------------------------------------------------
def cmd_rollout(args: argparse.Namespace) -> int:
    try:
        client = adminclient.from_args(args)
        if args.action == "status":
            return _status(client, args)
        if not args.service:
            print(f"serve-gateway rollout {args.action}: give the SERVICE", file=sys.stderr)
            return 2
        path = f"/rollouts/{args.service}/{args.action}" + ("?full=1" if args.full else "")
        status, doc = client.request("POST", path)
    except adminclient.AdminClientError as exc:
        print(f"serve-gateway: {exc}", file=sys.stderr)
        return 1
    if status != 200 or not isinstance(doc, dict):
        print(adminclient.describe_error(status, doc), file=sys.stderr)
        return 1
    if args.json:
        print(orjson.dumps(doc, option=orjson.OPT_INDENT_2).decode())
    else:
        print(render.render_rollout(doc))
    last = (doc.get("log") or [{}])[-1].get("line", "")
    if not doc.get("accepted"):
        print(f"serve-gateway rollout {args.action}: not applied: {last}", file=sys.stderr)
        return 1
    return 0


def _status(client: adminclient.AdminClient, args: argparse.Namespace) -> int:
    path = f"/rollouts/{args.service}" if args.service else "/rollouts"
    while True:
        status, doc = client.request("GET", path)
        if status != 200 or not isinstance(doc, dict):
            print(adminclient.describe_error(status, doc), file=sys.stderr)
            return 1
        docs = [doc] if args.service else list((doc.get("rollouts") or {}).values())
        if args.json:
            text = orjson.dumps(doc, option=orjson.OPT_INDENT_2).decode()
        else:
            text = "\n\n".join(render.render_rollout(d) for d in docs) or "no rollouts"
            if not args.service and doc.get("corrupt_journals"):
                text += "\n\nunreadable journals (moved aside):\n  " + \
                    "\n  ".join(doc["corrupt_journals"])
        if not args.watch:
            print(text)
            return 0
        sys.stdout.write("\x1b[H\x1b[2J" + time.strftime("%H:%M:%S  ") + text + "\n")
        sys.stdout.flush()
        if docs and all(d["phase"] in ("done", "aborted", "degraded") for d in docs):
            return 0
        time.sleep(1.0)


# -- plan -------------------------------------------------------------------------------------
def cmd_plan(args: argparse.Namespace) -> int:
    from gateway.control.rollout.fromspec import stable_of, to_plan
    from gateway.control.rollout.timeline import timeline
    from gateway.spec import load_or_report as load_config

    spec = load_config(args.plan_config)
    if spec is None:
        return 1
    running: dict[str, Any] | None = None
    rollouts: dict[str, Any] = {}
    rates: dict[str, float] = {}
    if getattr(args, "admin", None) or getattr(args, "config", None):
        try:
            client = adminclient.from_args(args)
            running, rollouts, rates = _observe(client)
        except adminclient.AdminClientError as exc:
            print(f"serve-gateway: {exc}", file=sys.stderr)
            return 1
    out: list[str] = []
    out += _swarm_lines(spec, running) if spec.gateway.runtime == "swarm" else _gpu_lines(spec)
    for name, svc in spec.services.items():
        have = (running or {}).get("services", {}).get(name, {}).get("versions", {})
        if running is not None:
            out += _version_changes(name, svc, have)
        if svc.rollout is None:
            continue
        live = rollouts.get(name)
        stable = stable_of(svc)
        if live is not None and live["phase"] in ("promoted", "done"):
            stable = live["target"]
        elif live is not None:
            stable = live["stable"]
        if live is not None and live["target"] == svc.rollout.to \
                and live["strategy"] == svc.rollout.strategy:
            out.append(f"{name}: the running {live['strategy']} rollout to {live['target']} "
                       f"({live['phase']}) goes on; nothing starts")
            continue
        if stable == svc.rollout.to:
            out.append(f"{name}: {stable} already serves; nothing to roll out")
            continue
        plan = replace(to_plan(name, svc, stable), max_replicas=_gpu_capacity(spec, svc))
        rps = args.rps if args.rps is not None else rates.get(name)
        start_s = args.start_s if args.start_s is not None else _cold_start(have) or 0.0
        tl = timeline(plan, rps=rps, start_s=start_s)
        out.append(f"{name}: {tl.strategy} {stable} -> {plan.target}, {plan.replicas} replicas"
                   + (f"; at {rps:g} req/s" if rps is not None else "")
                   + f"; replica start {start_s:g}s")
        for step in tl.steps:
            out.append(f"  +{step.at:6.0f}s  {step.label:<38} "
                       + ", ".join(f"{v}={w}%" for v, w in step.weights.items())
                       + "  replicas " + ", ".join(f"{v}={n}" for v, n in step.replicas.items())
                       + ("  (waits for promote)" if step.manual else ""))
        full = "needs a promote" if tl.to_full is None else f"{tl.to_full:.0f}s at the earliest"
        out.append(f"  to full promotion: {full}; to rollback: {tl.to_rollback:.0f}s; "
                   f"peak replicas {tl.peak_replicas}")
        out += [f"  warning: {w}" for w in (*tl.warnings, *_mirror_warnings(svc))]
    print("\n".join(out) or "no rollouts and no changes")
    return 0


def _observe(client: adminclient.AdminClient) -> tuple[dict[str, Any], dict[str, Any],
                                                       dict[str, float]]:
    """The running gateway's status, its rollouts, and each service's request rate over 1 s."""
    first, began = _answered(client.expect("GET", "/status")), time.monotonic()
    time.sleep(1.0)
    status = client.expect("GET", "/status")
    second, dt = _answered(status), time.monotonic() - began
    rates = {s: max(0.0, (second.get(s, 0) - first.get(s, 0)) / dt) for s in second}
    return status, (client.expect("GET", "/rollouts").get("rollouts") or {}), rates


def _answered(status: dict[str, Any]) -> dict[str, int]:
    return {name: int(svc.get("answered", 0)) for name, svc in status["services"].items()}


def _version_changes(name: str, svc: Any, have: dict[str, Any]) -> list[str]:
    out = [f"{name}/{v}: start {ver.replicas} replicas" for v, ver in svc.versions.items()
           if v not in have]
    out += [f"{name}/{v}: stop (not in the file)" for v in have if v not in svc.versions]
    out += [f"{name}/{v}: new revision {ver.revision()} (running {have[v]['revision']})"
            for v, ver in svc.versions.items()
            if v in have and have[v].get("revision") != ver.revision()]
    return out


def _mirror_warnings(svc: Any) -> list[str]:
    r = svc.rollout
    mirrors = r.strategy == "shadow" or getattr(r, "mirror_percent", 0) > 0
    if not mirrors or svc.mirror_post:
        return []
    return ["only GET and HEAD requests are mirrored: set mirror_post: true on the service if "
            "its POSTs (inference) have no side effects, or the analysis sees no copies"]


def _gpu_lines(spec: Any) -> list[str]:
    """The GPU ids each replica would get (either runtime: they share the allocator), or the
    refusal `up` and reload would give; the rollout lines below still show, so exit 0."""
    from gateway.runtimes.gpus import assignment_lines, resolve_setting, runtime_setting

    try:
        return assignment_lines(spec, resolve_setting(runtime_setting(spec)[1]))
    except ConfigError as exc:
        return [f"GPUs: warning: up and reload refuse this config: {p}" for p in exc.problems]


def _swarm_lines(spec: Any, running: dict[str, Any] | None) -> list[str]:
    """Swarm picks nodes and GPU devices: what each GPU version reserves, and (running gateway)
    which node runs how many replicas with how many reserved GPUs."""
    kind = spec.gateway.swarm.gpu_kind
    out = [f"{name}/{v}: {ver.replicas} replicas x {ver.resources.gpus} {kind} reserved "
           "(Swarm picks the node and devices)"
           for name, svc in spec.services.items() for v, ver in svc.versions.items()
           if isinstance(ver.resources.gpus, int) and ver.resources.gpus]
    nodes: dict[str, dict[str, int]] = {}
    for name, svc in ((running or {}).get("services") or {}).items():
        for v, group in (svc.get("versions") or {}).items():
            for rep in group.get("replicas") or []:
                node = nodes.setdefault(rep.get("node") or "?", {})
                node[f"{name}/{v}"] = node.get(f"{name}/{v}", 0) + 1
                gpus = rep.get("gpus")
                node[kind] = node.get(kind, 0) + (len(gpus) if isinstance(gpus, list)
                                                  else int(gpus or 0))
    for where, counts in sorted(nodes.items()):
        reserved = counts.pop(kind, 0)
        out.append(f"node {where}: " + ", ".join(f"{k} x{n}" for k, n in sorted(counts.items()))
                   + f"; {reserved} {kind} reserved")
    return out


def _gpu_capacity(spec: Any, svc: Any) -> int | None:
    """Replicas of the rollout's target the GPUs can hold (GPU versions only; on Swarm the
    scheduler knows, not the gateway: no cap)."""
    from gateway.runtimes.gpus import demand, resolve_setting, runtime_setting

    if spec.gateway.runtime == "swarm":
        return None
    request = svc.versions[svc.rollout.to or next(iter(svc.versions))].resources.gpus
    if request is None:
        return None
    available = resolve_setting(runtime_setting(spec)[1])
    per_replica = demand(request, len(available))
    return len(available) // per_replica if per_replica else None


def _cold_start(have: dict[str, Any]) -> float | None:
    seen = [r["cold_start_s"] for v in have.values() for r in v.get("replicas", [])
            if r.get("cold_start_s") is not None]
    return statistics.median(seen) if seen else None
