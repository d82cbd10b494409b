"""Text the CLI prints for admin API answers: ``serve-gateway status``, ``reload`` and
``rollout``. Pure functions of the JSON documents (and the time), import-light like the client.
"""

from __future__ import annotations

import time
from collections.abc import Sequence
from typing import Any


def table(headers: Sequence[str], rows: Sequence[Sequence[Any]]) -> str:
    """Left-aligned columns, two spaces apart; the last column is not padded."""
    cells = [[str(c) for c in headers]] + [[str(c) for c in row] for row in rows]
    widths = [max(len(r[i]) for r in cells) for i in range(len(headers))]
    lines = ("  ".join(c.ljust(w) for c, w in zip(r, widths, strict=True)).rstrip() for r in cells)
    return "\n".join(lines)


def render_reload(doc: dict[str, Any]) -> str:
    """Readable text of a ``POST /reload`` answer."""
    if not doc.get("ok"):
        return f"reload failed; still serving config {doc.get('hash')}\n{doc.get('detail', '')}"
    head = f"reloaded {doc.get('config')}: config {doc.get('previous_hash')} -> {doc.get('hash')}"
    lines = [head]
    lines += [f"  {c}" for c in doc.get("changes") or ["no changes"]]
    lines += [f"  note: {n}" for n in doc.get("notes", [])]
    if doc.get("needs_restart"):
        lines.append("  needs restart: " + ", ".join(doc["needs_restart"]))
    return "\n".join(lines)


def render_status(doc: dict[str, Any], now: float | None = None) -> str:
    """Readable text of ``GET /status``: config, one row per version, one row per replica."""
    now = time.time() if now is None else now
    cfg = doc.get("config") or {}
    loaded = cfg.get("loaded_at") or now
    stamp = time.strftime("%Y-%m-%d %H:%M:%SZ", time.gmtime(loaded))
    out = [(f"config {cfg.get('path')}  hash {cfg.get('hash')}  loaded {stamp} "
            f"({_ago(now - loaded)} ago)  runtime {doc.get('runtime')}")]
    last = cfg.get("last_reload")
    if last:
        state = "ok" if last.get("ok") else "FAILED (old config kept)"
        out.append(f"last reload {_ago(now - last.get('at', now))} ago: {state}")
        if last.get("needs_restart"):
            out.append("needs restart: " + ", ".join(last["needs_restart"]))
    versions, replicas, crashed = [], [], []
    for sname, svc in (doc.get("services") or {}).items():
        weights = svc.get("weights") or {}
        total = sum(weights.values()) or 1
        for vname, v in (svc.get("versions") or {}).items():
            w = weights.get(vname)
            weight = "-" if w is None else f"{w} ({100 * w / total:.0f}%)"
            notes = [n for n, on in (("removed, draining", v.get("removed")),
                                     ("joining when ready", v.get("joining")),
                                     ("CRASH LOOP", v.get("crash_loop"))) if on]
            if v.get("last_exit"):
                notes.append(f"last exit: {v['last_exit']}")
            if v.get("last_log") and (v.get("crash_loop") or v.get("ready", 0) == 0):
                crashed.append((f"{sname}/{vname}", v["last_log"][-5:]))
            members = v.get("replicas") or []
            versions.append((sname, svc.get("route", ""), vname, weight, v.get("ready", 0),
                             v.get("desired", 0), v.get("restarts", 0),
                             sum(r.get("inflight", 0) for r in members), v.get("waiting", 0),
                             "; ".join(notes)))
            replicas += [(r.get("id"), sname, vname, r.get("address"), r.get("state"),
                          r.get("inflight", 0), r.get("revision", ""), r.get("node") or "",
                          _gpus(r.get("gpus"))) for r in members]
    out += ["", table(("SERVICE", "ROUTE", "VERSION", "WEIGHT", "READY", "DESIRED", "RESTARTS",
                       "INFLIGHT", "WAITING", "NOTE"), versions)]
    if replicas:
        head = ("REPLICA", "SERVICE", "VERSION", "ADDRESS", "STATE", "INFLIGHT", "REVISION",
                "NODE", "GPUS")
        # NODE and GPUS only where some replica has one (a runtime spanning hosts, GPUs)
        keep = [i for i in range(len(head))
                if i < 7 or any(row[i] != "" for row in replicas)]
        out += ["", table(tuple(head[i] for i in keep),
                          [tuple(row[i] for i in keep) for row in replicas])]
    planes = doc.get("dataplanes") or []
    if len(planes) > 1 or any(p.get("name") != "main" for p in planes):   # not just itself
        current = doc.get("snapshot")
        out += ["", table(("DATA PLANE", "PID", "SNAPSHOT", "SHARE", "CONNECTIONS", "REQUESTS",
                           "RESTARTS", "NOTE"),
                          [(p.get("name"), p.get("pid"), _applied(p.get("snapshot"), current),
                            _share(p.get("share")), p.get("connections"), p.get("requests"),
                            p.get("restarts"), p.get("error") or "") for p in planes])]
    for name, lines in crashed:    # what a replica that keeps failing said last
        out += ["", f"{name}: last log lines of the replica that exited:"]
        out += [f"  {line}" for line in lines]
    return "\n".join(out)


def _share(part: Any) -> str:
    """A process's share of the per-replica limits, "i/n" (its index counts from 1)."""
    return f"{part[0] + 1}/{part[1]}" if isinstance(part, list) and len(part) == 2 else "-"


def _gpus(gpus: Any) -> str:
    """GPU ids given to a replica ("0,1"), or the count a scheduler reserved ("2")."""
    if isinstance(gpus, list):
        return ",".join(map(str, gpus))
    return "" if gpus is None else str(gpus)


def _applied(snapshot: list[Any] | None, current: list[Any] | None) -> str:
    """A process's applied snapshot version, marked when it is not the controller's."""
    if not snapshot:
        return "none yet"
    version = str(snapshot[1])
    return version if snapshot == current else f"{version} (controller: {(current or ['', '?'])[1]})"


def _ago(seconds: float) -> str:
    s = max(0, int(seconds))
    if s < 120:
        return f"{s}s"
    if s < 7200:
        return f"{s // 60}m"
    return f"{s // 3600}h{s % 3600 // 60:02d}m" if s < 172800 else f"{s // 86400}d"


def render_rollout(doc: dict[str, Any], width: int = 30) -> str:
    """A rollout's status as text, with a progress bar of the target's weight."""
    w = doc.get("weights") or {}
    target_w = w.get(doc["target"], 0)
    filled = round(width * target_w / 100)
    step = f"step {doc['step'] + 1}/{doc['steps']}" if doc.get("steps") else ""
    lines = [f"{doc['service']}: {doc['strategy']} {doc['stable']} -> {doc['target']}  "
             f"{doc['phase'].upper()}  {step}".rstrip(),
             f"  [{'#' * filled}{'.' * (width - filled)}] {doc['target']} {target_w}%   "
             + ", ".join(f"{v}={n}%" for v, n in w.items())]
    replicas = doc.get("replicas") or {}
    if replicas:
        lines.append("  replicas: " + ", ".join(f"{v}={n}" for v, n in replicas.items()))
    if doc.get("mirror"):
        lines.append(f"  mirroring {doc['mirror']['percent']:g}% to {doc['mirror']['to']}")
    for rule in doc.get("rules") or []:
        lines.append(f"  rule: {rule}")
    for check in doc.get("analysis") or []:
        lines.append(f"  analysis: {check}")
    live = doc["phase"] in ("progressing", "paused", "promoting")
    if doc.get("failure_limit") is not None and live:
        lines.append(f"  failed analyses in a row: {doc.get('failures', 0)}/"
                     f"{doc['failure_limit']} (rolls back at {doc['failure_limit']})")
    if doc.get("held"):        # "next step in 0s" would hide that nothing is moving
        lines.append(f"  {doc['held']}")
    elif doc.get("next_step_in") is not None:
        lines.append(f"  next step in {doc['next_step_in']:.0f}s")
    if doc.get("reason"):
        lines.append(f"  {doc['reason']}")
    for entry in (doc.get("log") or [])[-3:]:
        stamp = time.strftime("%H:%M:%S", time.localtime(entry["at"]))
        lines.append(f"  {stamp} {entry['line']}")
    return "\n".join(lines)
