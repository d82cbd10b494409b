"""A raw-socket worker for admission and ejection tests: slow on purpose, failing on demand.

    python slow.py PORT [DELAY_S]

``GET /ready`` and ``/health`` answer 200 at once. ``GET /stats`` answers
``{"port": P, "served": N, "peak": K}``: requests answered and the most ever in progress at
once (what the gateway's ``max_concurrency`` must bound). Any other request is answered after
DELAY_S seconds (default 0.3) with ``{"port": P}``: 200, or 500 while the file
``$SLOW_FLAGS/fail-PORT`` exists. While ``$SLOW_FLAGS/refuse-PORT`` exists the listener is
closed: connections are refused, the process stays up and ``/ready`` is not asked again
before the liveness interval. SIGTERM ends it at once.
"""

import asyncio
import json
import os
import sys

from rawhttp import read_body, read_head

PORT = int(sys.argv[1])
DELAY = float(sys.argv[2]) if len(sys.argv) > 2 else 0.3
FLAGS = os.environ.get("SLOW_FLAGS", "")
state = {"served": 0, "now": 0, "peak": 0}
conns: set[asyncio.StreamWriter] = set()


def flag(name: str) -> bool:
    return bool(FLAGS) and os.path.exists(os.path.join(FLAGS, f"{name}-{PORT}"))


def answer(status: int, body: dict) -> bytes:
    data = json.dumps(body).encode()
    reason = b"OK" if status == 200 else b"Internal Server Error"
    return (b"HTTP/1.1 %d %s\r\nContent-Type: application/json\r\nContent-Length: %d\r\n\r\n"
            % (status, reason, len(data)) + data)


async def serve(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
    conns.add(writer)
    try:
        while True:
            _method, path, _, headers = await read_head(reader)
            await read_body(reader, headers)
            if path in ("/ready", "/health"):
                writer.write(answer(200, {"ok": True}))
            elif path == "/stats":
                writer.write(answer(200, {"port": PORT, "served": state["served"],
                                          "peak": state["peak"]}))
            else:
                state["now"] += 1
                state["peak"] = max(state["peak"], state["now"])
                try:
                    await asyncio.sleep(DELAY)
                finally:
                    state["now"] -= 1
                state["served"] += 1
                writer.write(answer(500 if flag("fail") else 200, {"port": PORT}))
            await writer.drain()
    except (asyncio.IncompleteReadError, ConnectionError):
        pass
    finally:
        conns.discard(writer)
        writer.close()


async def main() -> None:
    server: asyncio.AbstractServer | None = await asyncio.start_server(serve, "127.0.0.1", PORT)
    while True:
        await asyncio.sleep(0.05)
        if flag("refuse") and server is not None:
            server.close()
            server = None
            for w in list(conns):     # pooled keep-alive connections too
                w.close()
        elif not flag("refuse") and server is None:
            server = await asyncio.start_server(serve, "127.0.0.1", PORT)


asyncio.run(main())
