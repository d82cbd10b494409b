"""Open-loop, fixed-rate HTTP load generator (asyncio + uvloop + raw Protocol connections).

Request i is *scheduled* at start + i / rate whatever happened to the earlier ones. It goes out
on an idle keep-alive connection as soon as one is free; if none is, it waits in a FIFO. Its
latency is measured from the scheduled time, not from the actual write, so a slow server cannot
hide its stalls by slowing the generator down (no coordinated omission).

The loop's timers have 1 ms resolution, so the generator wakes at most once a millisecond and
sends everything due. Reported next to the latency: the generator's own lag (when it got round
to a request - its scheduled time; the same for every target at one rate unless the CPU is
contended) and the service time (response - actual write, what a closed-loop tool reports).
Latency - lag - service = time spent waiting for a free connection (the server is behind).

    python bench/fixed_rate.py --url http://127.0.0.1:8080/ --rate 3000 --duration 5
"""

from __future__ import annotations

import argparse
import asyncio
import collections
import json
import time
from dataclasses import dataclass
from urllib.parse import urlsplit

import uvloop
from httpclient import HttpConn, build_request, connect, percentiles_ms

POINTS = (50.0, 90.0, 99.0, 99.9)


@dataclass
class _Tally:
    latency: list[float]
    service: list[float]
    lag: list[float]
    statuses: collections.Counter[int]
    errors: int = 0


class FixedRate:
    """One run: ``rate`` req/s for ``warmup + duration`` seconds over ``conns`` connections."""

    def __init__(self, host: str, port: int, raw: bytes, rate: float, duration: float,
                 warmup: float, conns: int) -> None:
        self.host, self.port, self.raw = host, port, raw
        self.rate, self.duration, self.warmup, self.n_conns = rate, duration, warmup, conns
        self._idle: collections.deque[HttpConn] = collections.deque()
        self._backlog: collections.deque[float] = collections.deque()
        self._outstanding = 0
        self._drained = asyncio.Event()
        self._measure_from = 0.0
        self._tally = _Tally([], [], [], collections.Counter())

    async def run(self) -> dict[str, object]:
        conns = await asyncio.gather(*(connect(self.host, self.port) for _ in range(self.n_conns)))
        self._idle.extend(conns)
        start = time.perf_counter() + 0.01
        self._measure_from = start + self.warmup
        total = int((self.warmup + self.duration) * self.rate)
        interval = 1.0 / self.rate
        i = 0
        try:
            while i < total:
                now = time.perf_counter()
                while i < total and start + i * interval <= now:
                    self._dispatch(start + i * interval)
                    i += 1
                if i < total:
                    # Never below 1 ms: shorter uvloop timers round to 0 and would spin a core.
                    await asyncio.sleep(max(start + i * interval - time.perf_counter(), 0.001))
            if self._outstanding:
                self._drained.clear()
                try:
                    await asyncio.wait_for(self._drained.wait(), timeout=10.0)
                except TimeoutError:
                    self._tally.errors += self._outstanding
        finally:
            for conn in conns:
                conn.close()
        return self._summary(time.perf_counter() - start)

    def _dispatch(self, scheduled: float) -> None:
        self._outstanding += 1
        if scheduled >= self._measure_from:
            self._tally.lag.append(time.perf_counter() - scheduled)
        while self._idle:
            conn = self._idle.popleft()
            if not conn.closed:
                self._send(conn, scheduled)
                return
        self._backlog.append(scheduled)

    def _send(self, conn: HttpConn, scheduled: float) -> None:
        sent = time.perf_counter()
        fut = conn.send(self.raw)
        fut.add_done_callback(lambda f: self._done(conn, f, scheduled, sent))

    def _done(self, conn: HttpConn, fut: asyncio.Future[int], scheduled: float,
              sent: float) -> None:
        now = time.perf_counter()
        self._outstanding -= 1
        tally = self._tally
        exc = fut.exception()
        if exc is None and fut.result() < 400:
            if scheduled >= self._measure_from:
                tally.latency.append(now - scheduled)
                tally.service.append(now - sent)
        elif scheduled >= self._measure_from:
            tally.errors += 1
        if exc is None:
            tally.statuses[fut.result()] += 1
        if conn.closed:
            asyncio.get_running_loop().create_task(self._replace())
        elif self._backlog:
            self._send(conn, self._backlog.popleft())
        else:
            self._idle.append(conn)
        if not self._outstanding:
            self._drained.set()

    async def _replace(self) -> None:
        """The server closed a connection: open a new one so the pool keeps its size."""
        try:
            conn = await connect(self.host, self.port)
        except OSError:
            return
        if self._backlog:
            self._send(conn, self._backlog.popleft())
        else:
            self._idle.append(conn)

    def _summary(self, elapsed: float) -> dict[str, object]:
        t = self._tally
        out: dict[str, object] = {
            "rate": self.rate, "connections": self.n_conns, "duration_s": self.duration,
            "measured": len(t.latency), "errors": t.errors,
            "achieved_rps": round(len(t.latency) / self.duration, 1),
            "elapsed_s": round(elapsed, 2),
            "statuses": dict(t.statuses),
        }
        out.update({f"{k}_ms": v for k, v in percentiles_ms(t.latency, POINTS).items()})
        out.update({f"service_{k}_ms": v for k, v in percentiles_ms(t.service, POINTS).items()})
        out.update({f"lag_{k}_ms": v for k, v in percentiles_ms(t.lag, (50.0, 99.0)).items()})
        return out


async def fixed_rate(url: str, rate: float, duration: float, warmup: float = 1.0,
                     conns: int = 32, headers: tuple[str, ...] = ()) -> dict[str, object]:
    """Run one fixed-rate measurement of GET ``url``; returns the summary dict."""
    parts = urlsplit(url)
    host, port = parts.hostname or "127.0.0.1", parts.port or 80
    raw = build_request("GET", host, port, parts.path or "/", headers)
    return await FixedRate(host, port, raw, rate, duration, warmup, conns).run()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
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
