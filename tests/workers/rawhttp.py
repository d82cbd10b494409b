"""What the raw-socket test workers (rawworker.py, blackhole.py, slow.py) share: reading a
request head and body off a StreamReader, a log-line recorder, and serving on argv's port.

They speak HTTP/1.1 by hand on purpose (to misbehave in ways a framework would not let them);
they import this module as a sibling (``python tests/workers/X.py PORT`` puts this folder on
sys.path).
"""

import asyncio
import os
import sys
from collections.abc import Awaitable, Callable

OK = b"HTTP/1.1 200 OK\r\nContent-Length: 2\r\n\r\nok"   # a readiness probe's answer

Handler = Callable[[asyncio.StreamReader, asyncio.StreamWriter], Awaitable[None]]


def recorder(env: str) -> Callable[[str], None]:
    """Append a line to the file named by $``env`` (nothing when unset)."""
    path = os.environ.get(env)

    def record(line: str) -> None:
        if path:
            with open(path, "a") as f:   # a short local write: fine for a test worker
                f.write(line + "\n")
    return record


async def read_head(reader: asyncio.StreamReader) -> tuple[str, str, list[list[str]], dict[str, str]]:
    """The next request's method, target, header pairs as sent, and headers by lowercase name."""
    head = await reader.readuntil(b"\r\n\r\n")
    lines = head.decode("latin-1").split("\r\n")
    method, path = lines[0].split(" ")[:2]
    pairs = [line.split(": ", 1) for line in lines[1:] if ": " in line]
    return method, path, pairs, {k.lower(): v for k, v in pairs}


async def read_body(reader: asyncio.StreamReader, headers: dict[str, str]) -> bytes:
    """The request's body: chunked, or Content-Length bytes (none without either)."""
    if headers.get("transfer-encoding", "").lower() == "chunked":
        out = b""
        while True:
            size = int((await reader.readuntil(b"\r\n"))[:-2], 16)
            out += (await reader.readexactly(size + 2))[:-2]
            if size == 0:
                return out
    return await reader.readexactly(int(headers.get("content-length", "0")))


def run(handler: Handler) -> None:
    """Serve ``handler`` on 127.0.0.1:argv[1] until killed."""
    async def main() -> None:
        server = await asyncio.start_server(handler, "127.0.0.1", int(sys.argv[1]))
        async with server:
            await server.serve_forever()
    asyncio.run(main())
