"""``serve-gateway bench --plot FILE.png``: the latency histogram, with matplotlib (the
``[plot]`` extra), imported only here and only when a plot is asked for."""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from typing import Any

from gateway.errors import MissingExtra


def save_histogram(latency_s: Sequence[float], doc: Mapping[str, Any], path: str) -> None:
    """A log-x histogram of the latencies (ms) with p50 / p99 / p99.9 marked, as a PNG.
    Raises MissingExtra when matplotlib is not installed."""
    try:
        import matplotlib
    except ModuleNotFoundError as exc:
        raise MissingExtra("bench --plot", "plot", exc.name or "matplotlib") from None
    matplotlib.use("Agg")       # files only: no display, no GUI toolkit
    import matplotlib.pyplot as plt

    ms = [v * 1e3 for v in latency_s if v > 0]
    fig, ax = plt.subplots(figsize=(9, 4.5), dpi=100)
    try:
        if ms:
            lo, hi = min(ms), max(ms)
            hi = hi if hi > lo else lo * 1.01 + 1e-3
            bins = [lo * (hi / lo) ** (i / 60) for i in range(61)]
            ax.hist(ms, bins=bins, color="#4c72b0")
            ax.set_xscale("log")
        pct = doc.get("latency_ms") or {}
        for key, colour in (("p50", "#55a868"), ("p99", "#dd8452"), ("p99.9", "#c44e52")):
            v = pct.get(key)
            if isinstance(v, (int, float)) and math.isfinite(v) and v > 0:
                ax.axvline(v, color=colour, linestyle="--", label=f"{key} {v:.2f} ms")
        mode = f"open loop {doc['rate']:g} req/s" if doc.get("rate") else "closed loop"
        ax.set_title(f"{doc.get('method')} {doc.get('url')}: {mode}, "
                     f"{doc.get('answered')} answers, {doc.get('throughput_rps')} req/s")
        ax.set_xlabel("latency (ms, log scale)")
        ax.set_ylabel("requests")
        if ax.get_legend_handles_labels()[0]:
            ax.legend()
        fig.tight_layout()
        fig.savefig(path, format="png")
    finally:
        plt.close(fig)
