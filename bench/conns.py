"""Memory of a server holding many idle keep-alive client connections.

Opens N connections to the server, does one GET on each, leaves them all open and idle, then
reads VmRSS of the server process from /proc/<pid>/status. Finally it sends a second request on
every connection to check that the server really kept them (``alive_after``).

    python bench/conns.py --url http://127.0.0.1:8080/ --pid 1234 --connections 1000
"""

from __future__ import annotations

import argparse
import asyncio
import json
import time
from urllib.parse import urlsplit

import uvloop
from procs import read_rss_kib

from gateway.loadgen.httpclient import HttpConn, build_request, connect


def rss_kib(pid: int) -> int:
    return read_rss_kib(pid)["VmRSS"]


async def _open_and_request(host: str, port: int, raw: bytes, gate: asyncio.Semaphore
                            ) -> HttpConn | None:
    # A bounded number of handshakes at a time: the point is idle connections, not a SYN flood
    # against a 128-deep listen backlog.
    async with gate:
        try:
            conn = await connect(host, port)
            status = await asyncio.wait_for(conn.send(raw), timeout=10.0)
        except Exception:  # noqa: BLE001 - a failed connection is counted, not fatal
            return None
        return conn if status < 400 else None


async def _still_alive(conn: HttpConn, raw: bytes) -> bool:
    try:
        return (await asyncio.wait_for(conn.send(raw), timeout=10.0)) < 400
    except Exception:  # noqa: BLE001 - a closed connection is the answer, not an error
        return False


async def measure(url: str, pid: int, n: int, settle_s: float = 1.0) -> dict[str, object]:
    """Open ``n`` idle keep-alive connections; report the server's RSS before and with them."""
    parts = urlsplit(url)
    host, port = parts.hostname or "127.0.0.1", parts.port or 80
    raw = build_request("GET", host, port, parts.path or "/")
    before = rss_kib(pid)
    gate = asyncio.Semaphore(64)
    t0 = time.perf_counter()
    opened = await asyncio.gather(*(_open_and_request(host, port, raw, gate) for _ in range(n)))
    conns = [c for c in opened if c is not None]
    open_s = time.perf_counter() - t0
    try:
        await asyncio.sleep(settle_s)  # let the server finish per-connection work and GC
        with_conns = rss_kib(pid)
        alive = await asyncio.gather(*(_still_alive(c, raw) for c in conns))
    finally:
        for conn in conns:
            conn.close()
    return {
        "connections": n, "opened": len(conns), "alive_after": sum(alive),
        "open_s": round(open_s, 2),
        # MB = 10^6 bytes, the unit of the target; /proc reports KiB.
        "rss_before_mb": round(before * 1024 / 1e6, 1), "rss_mb": round(with_conns * 1024 / 1e6, 1),
        "per_conn_kib": round((with_conns - before) / max(1, len(conns)), 1),
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--url", required=True)
    parser.add_argument("--pid", type=int, required=True, help="server process to read RSS of")
    parser.add_argument("--connections", type=int, default=1000)
    args = parser.parse_args()
    print(json.dumps(uvloop.run(measure(args.url, args.pid, args.connections))))


if __name__ == "__main__":
    main()
