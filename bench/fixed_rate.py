"""Open-loop, fixed-rate HTTP load generator: ``gateway/loadgen`` (the engine of
``serve-gateway bench --rate``) with the JSON summary bench/run.py reads.

Request i is *scheduled* at start + i / rate whatever happened to the earlier ones; its latency
is measured from the scheduled time (no coordinated omission). Reported next to the latency: the
generator's own lag and the service time (response - actual write). See
``gateway/loadgen/engine.py``. Latency percentiles count only answers below 400; the rest, and
socket errors, are ``errors``.

    python bench/fixed_rate.py --url http://127.0.0.1:8080/ --rate 3000 --duration 5
"""

from __future__ import annotations

import argparse
import json
from urllib.parse import urlsplit

import uvloop

from gateway.loadgen.engine import LoadRun, Samples, Target, run_load
from gateway.loadgen.report import percentiles_ms

POINTS = (50.0, 90.0, 99.0, 99.9)


def summary(s: Samples, rate: float, duration: float, conns: int) -> dict[str, object]:
    ok = [i for i, status in enumerate(s.status) if status < 400]
    latency = [s.latency[i] for i in ok]
    out: dict[str, object] = {
        "rate": rate, "connections": conns, "duration_s": duration,
        "measured": len(latency),
        "errors": len(s.status) - len(ok) + sum(s.errors.values()),
        "achieved_rps": round(len(latency) / duration, 1),
        "elapsed_s": round(s.elapsed, 2),
        "statuses": dict(s.statuses),
    }
    out.update({f"{k}_ms": v for k, v in percentiles_ms(latency, POINTS).items()})
    out.update({f"service_{k}_ms": v for k, v in
                percentiles_ms([s.service[i] for i in ok], POINTS).items()})
    out.update({f"lag_{k}_ms": v for k, v in percentiles_ms(s.lag, (50.0, 99.0)).items()})
    return out


async def fixed_rate(url: str, rate: float, duration: float, warmup: float = 1.0,
                     conns: int = 32, headers: tuple[str, ...] = ()) -> dict[str, object]:
    """Run one fixed-rate measurement of GET ``url``; returns the summary dict."""
    parts = urlsplit(url)
    target = Target(parts.hostname or "127.0.0.1", parts.port or 80, parts.path or "/",
                    headers=headers)
    samples = await run_load(LoadRun(target, conns, duration, rate, warmup, timeout=10.0))
    return summary(samples, rate, duration, conns)


def main() -> None:
    parser = argparse.ArgumentParser(description=(__doc__ or "").splitlines()[0])
    parser.add_argument("--url", required=True)
    parser.add_argument("--rate", type=float, required=True, help="requests per second")
    parser.add_argument("--duration", type=float, default=5.0, help="measured seconds")
    parser.add_argument("--warmup", type=float, default=1.0, help="unmeasured seconds first")
    parser.add_argument("--connections", type=int, default=32)
    parser.add_argument("-H", "--header", action="append", default=[])
    args = parser.parse_args()
    result = uvloop.run(fixed_rate(args.url, args.rate, args.duration, args.warmup,
                                   args.connections, tuple(args.header)))
    print(json.dumps(result))


if __name__ == "__main__":
    main()
