"""What ``serve-gateway top`` shows, computed from two scrapes of the admin API. Pure: the
scrapes are given (``/status`` document, ``/metrics`` text, when taken); no I/O, no clock.

Rates and p99 are over the time between the two scrapes: the counters' and histogram buckets'
deltas, p99 interpolated inside its bucket the way Prometheus' ``histogram_quantile`` does.
"""

from __future__ import annotations

import math
from collections import defaultdict
from dataclasses import dataclass, field
from typing import Any

Key = tuple[str, str]   # (service, version)


@dataclass
class Scrape:
    """One look at the gateway: ``/status`` and the counters ``top`` needs from ``/metrics``."""

    at: float
    status: dict[str, Any]
    requests: dict[Key, float] = field(default_factory=dict)
    errors: dict[Key, float] = field(default_factory=dict)          # 5xx answers
    buckets: dict[Key, list[tuple[float, float]]] = field(default_factory=dict)   # (le, count)
    batch: dict[Key, tuple[float, float]] = field(default_factory=dict)           # (sum, count)
    batch_queue: dict[Key, float] = field(default_factory=dict)


def parse(at: float, status: dict[str, Any], metrics_text: str) -> Scrape:
    # imported here: every CLI command imports this module's command, and should start fast
    from prometheus_client.parser import text_string_to_metric_families

    s = Scrape(at, status)
    buckets: dict[Key, list[tuple[float, float]]] = defaultdict(list)
    batch: dict[Key, list[float]] = defaultdict(lambda: [0.0, 0.0])
    for family in text_string_to_metric_families(metrics_text):
        for sample in family.samples:
            labels = sample.labels
            key = (labels.get("service", ""), labels.get("version", ""))
            name = sample.name
            if name == "serve_gateway_requests_total":
                s.requests[key] = s.requests.get(key, 0.0) + sample.value
                if labels.get("code", "").startswith("5"):
                    s.errors[key] = s.errors.get(key, 0.0) + sample.value
            elif name == "serve_gateway_request_duration_seconds_bucket":
                buckets[key].append((float(labels["le"]), sample.value))
            elif name == "serve_gateway_batch_size_sum":
                batch[key][0] = sample.value
            elif name == "serve_gateway_batch_size_count":
                batch[key][1] = sample.value
            elif name == "serve_gateway_batch_queue_length":
                s.batch_queue[key] = sample.value
    s.buckets = {k: sorted(v) for k, v in buckets.items()}
    s.batch = {k: (v[0], v[1]) for k, v in batch.items()}
    return s


def quantile(q: float, buckets: list[tuple[float, float]]) -> float | None:
    """``histogram_quantile(q, ...)`` of cumulative (le, count) buckets; None without data."""
    if not buckets or buckets[-1][1] <= 0:
        return None
    rank = q * buckets[-1][1]
    prev_le, prev_count = 0.0, 0.0
    for le, count in buckets:
        if count >= rank:
            if math.isinf(le):         # in the +Inf bucket: the highest finite bound
                return prev_le
            width = count - prev_count
            return prev_le + (le - prev_le) * ((rank - prev_count) / width if width else 1.0)
        prev_le, prev_count = le, count
    return prev_le


@dataclass(frozen=True)
class Row:
    service: str
    version: str
    route: str
    weight: float | None          # percent of the service's traffic
    ready: int
    desired: int
    rps: float | None
    errors_rps: float | None
    p99_ms: float | None
    queue: int                    # waiting for a replica + queued for a batch
    inflight: int
    batch_mean: float | None      # instances per batch over the interval
    batch_fill: float | None      # batch_mean / max_batch_size
    note: str


@dataclass(frozen=True)
class Frame:
    header: str
    rows: list[Row]
    rollouts: list[str]
    error: str | None = None


def _delta(cur: dict[Key, float], prev: dict[Key, float] | None, key: Key) -> float | None:
    if prev is None or key not in cur:
        return None
    return max(0.0, cur[key] - prev.get(key, 0.0))   # a restarted gateway: never negative


def _buckets_delta(cur: Scrape, prev: Scrape, key: Key) -> list[tuple[float, float]]:
    before = dict(prev.buckets.get(key, []))
    return [(le, max(0.0, n - before.get(le, 0.0))) for le, n in cur.buckets.get(key, [])]


def _rollout_line(name: str, r: dict[str, Any]) -> str:
    steps = f" step {r['step'] + 1}/{r['steps']}" if r.get("steps") else ""
    weights = ", ".join(f"{v} {w:g}%" for v, w in (r.get("weights") or {}).items())
    nxt = r.get("next_step_in")
    when = f", next step in {nxt:.0f}s" if isinstance(nxt, (int, float)) else ""
    verdict = f", analysis {r['last_verdict']}" if r.get("last_verdict") else ""
    return (f"{name}: {r.get('strategy')} {r.get('stable')} -> {r.get('target')}  "
            f"{r.get('phase')}{steps}  [{weights}]{when}{verdict}")


def frame(cur: Scrape, prev: Scrape | None, source: str) -> Frame:
    """The table for ``cur``; rates and p99 need ``prev`` (the scrape before)."""
    doc = cur.status
    seconds = cur.at - prev.at if prev is not None and cur.at > prev.at else None
    rows: list[Row] = []
    rollouts: list[str] = []
    for sname, svc in (doc.get("services") or {}).items():
        weights = svc.get("weights") or {}
        total = sum(weights.values())
        max_batch = svc.get("max_batch_size")
        if svc.get("rollout") and svc["rollout"].get("phase") not in ("done", None):
            rollouts.append(_rollout_line(sname, svc["rollout"]))
        for vname, v in (svc.get("versions") or {}).items():
            key = (sname, vname)
            rps = err = p99 = mean = fill = None
            if seconds and prev is not None:
                n = _delta(cur.requests, prev.requests, key)
                rps = None if n is None else n / seconds
                e = _delta(cur.errors, prev.errors, key)
                err = (e or 0.0) / seconds if n is not None else None
                q = quantile(0.99, _buckets_delta(cur, prev, key))
                p99 = None if q is None else q * 1e3
                if key in cur.batch:
                    s0, c0 = prev.batch.get(key, (0.0, 0.0))
                    s1, c1 = cur.batch[key]
                    if c1 > c0:
                        mean = (s1 - s0) / (c1 - c0)
                        fill = mean / max_batch if max_batch else None
            notes = [n for n, on in (("CRASH LOOP", v.get("crash_loop")),
                                     ("draining", v.get("removed")),
                                     ("joining", v.get("joining"))) if on]
            w = weights.get(vname)
            rows.append(Row(
                sname, vname, svc.get("route", ""),
                None if w is None or not total else 100.0 * w / total,
                int(v.get("ready", 0)), int(v.get("desired", 0)), rps, err, p99,
                int(v.get("waiting", 0)) + int(cur.batch_queue.get(key, 0)),
                sum(int(r.get("inflight", 0)) for r in v.get("replicas") or []),
                mean, fill, "; ".join(notes)))
    cfg = doc.get("config") or {}
    header = (f"serve-gateway top  {source}  config {cfg.get('path')} ({cfg.get('hash')})  "
              f"runtime {doc.get('runtime')}")
    if seconds:
        header += f"  rates over {seconds:.1f}s"
    return Frame(header, rows, rollouts)


COLUMNS = ("SERVICE", "VERSION", "ROUTE", "WEIGHT", "REPLICAS", "RPS", "5XX/S", "P99 MS",
           "QUEUE", "INFLIGHT", "BATCH", "NOTE")


def _num(v: float | None, fmt: str = "{:.1f}") -> str:
    return "-" if v is None else fmt.format(v)


def cells(row: Row) -> tuple[str, ...]:
    """The row's cells, as text, in ``COLUMNS`` order."""
    batch = "-" if row.batch_mean is None else (
        f"{row.batch_mean:.1f}" + (f" ({100 * row.batch_fill:.0f}%)"
                                   if row.batch_fill is not None else ""))
    return (row.service, row.version, row.route, _num(row.weight, "{:.0f}%"),
            f"{row.ready}/{row.desired}", _num(row.rps), _num(row.errors_rps),
            _num(row.p99_ms), str(row.queue), str(row.inflight), batch, row.note)


def plain(f: Frame) -> str:
    """The frame as plain text (stdout is not a terminal, or rich is not installed)."""
    from gateway.admin.render import table

    out = [f.header]
    if f.error:
        out.append(f"error: {f.error}")
    out += ["", table(COLUMNS, [cells(r) for r in f.rows])]
    if f.rollouts:
        out += ["", "ROLLOUTS", *(f"  {line}" for line in f.rollouts)]
    return "\n".join(out)
