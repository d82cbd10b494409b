"""What a load run measured, as one JSON-able document and as text. Pure: no I/O, no clock."""

from __future__ import annotations

import math
from collections.abc import Iterable, Mapping, Sequence
from typing import Any

from gateway.loadgen.engine import Progress, Samples

POINTS = (50.0, 90.0, 99.0, 99.9)


def percentiles_ms(samples_s: Iterable[float], points: tuple[float, ...]) -> dict[str, float]:
    """Nearest-rank percentiles of second-valued samples, in ms, keyed 'p50', 'p99', 'p99.9'."""
    ordered = sorted(samples_s)
    if not ordered:
        return {f"p{p:g}": float("nan") for p in points}
    n = len(ordered)
    return {f"p{p:g}": ordered[min(n - 1, max(0, int(-(-p * n // 100)) - 1))] * 1e3
            for p in points}


def _shares(counts: Mapping[Any, int]) -> dict[str, dict[str, float]]:
    total = sum(counts.values()) or 1
    return {str(k): {"count": n, "share": round(n / total, 4)}
            for k, n in sorted(counts.items(), key=lambda kv: (-kv[1], str(kv[0])))}


def summarize(samples: Samples, settings: Mapping[str, Any]) -> dict[str, Any]:
    """The run's document: settings, counts, throughput, latency percentiles (ms), status codes
    and ``x-served-by`` shares. ``latency_ms`` is from each request's intended send time in an
    open loop (coordinated-omission-free), from its write in a closed loop."""
    answered = len(samples.latency)
    elapsed = samples.elapsed or 1e-9
    latency = percentiles_ms(samples.latency, POINTS)
    latency["max"] = max(samples.latency) * 1e3 if answered else float("nan")
    latency["mean"] = sum(samples.latency) / answered * 1e3 if answered else float("nan")
    doc: dict[str, Any] = {
        **settings,
        "answered": answered,
        "errors": dict(samples.errors),
        "throughput_rps": round(answered / elapsed, 1),
        "elapsed_s": round(samples.elapsed, 3),
        "latency_ms": {k: round(v, 3) for k, v in latency.items()},
        "service_ms": {k: round(v, 3) for k, v in percentiles_ms(samples.service, POINTS).items()},
        "status": _shares(samples.statuses),
        "served_by": _shares(samples.served_by),
    }
    if samples.lag:
        doc["generator_lag_ms"] = {k: round(v, 3) for k, v in
                                   percentiles_ms(samples.lag, (50.0, 99.0)).items()}
    return doc


def _ms(v: float) -> str:
    if not math.isfinite(v):    # no answer at all
        return "-"
    return f"{v:.2f}" if v < 100 else f"{v:.0f}"


def _row(title: str, values: Mapping[str, float], keys: Sequence[str]) -> str:
    return f"{title:<11}" + "  ".join(f"{k} {_ms(values[k])}" for k in keys if k in values) + " ms"


def _share_row(title: str, shares: Mapping[str, Mapping[str, float]]) -> str:
    cells = [f"{k}: {int(v['count'])} ({100 * v['share']:.1f}%)" for k, v in shares.items()]
    return f"{title:<11}" + ("  ".join(cells) or "-")


def render(doc: Mapping[str, Any]) -> str:
    """The human report of a ``summarize`` document."""
    mode = (f"open loop at {doc['rate']:g} req/s" if doc.get("rate")
            else "closed loop")
    errors = doc.get("errors") or {}
    err = ", ".join(f"{k} {n}" for k, n in errors.items()) or "0"
    lines = [
        f"{doc['method']} {doc['url']}: {mode}, {doc['connections']} connections, "
        f"{doc['duration_s']:g}s" + (f" after {doc['warmup_s']:g}s warm-up"
                                     if doc.get("warmup_s") else ""),
        (f"{'requests':<11}{doc['answered']} answered in {doc['elapsed_s']:g}s, "
         f"{doc['throughput_rps']:g} req/s; errors: {err}"),
        _row("latency", doc["latency_ms"], ("p50", "p90", "p99", "p99.9", "max")),
    ]
    if doc.get("rate"):
        lines[-1] += "  (from each request's intended send time)"
        lines.append(_row("service", doc["service_ms"], ("p50", "p99")) +
                     "  (from the actual write)")
    lines.append(_share_row("status", doc["status"]))
    lines.append(_share_row("served by", doc["served_by"]))
    return "\n".join(lines)


def progress_line(p: Progress) -> str:
    """One line, rewritten in place each second on a terminal."""
    return (f"{min(p.elapsed, p.duration):5.1f}s / {p.duration:g}s  sent {p.sent}  "
            f"answered {p.answered}  {p.recent_rps:,.0f} req/s  errors {p.errors}")
