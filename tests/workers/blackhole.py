"""A worker for bad-mirror tests: ready at once, then answers nothing in time.

``GET /ready`` (and ``/health``) answer 200. Any other request is logged (request line and
``x-shadow`` header, one line each, to the file named by $BLACKHOLE_LOG) and then:
- if its body contains ``huge``: a 200 announcing a 100 MB body, trickled slowly;
- otherwise: no answer at all, the connection held open (a 30 s-slow model).
SIGTERM ends it at once.

    python blackhole.py PORT
"""

import asyncio
import os
import sys

LOG = os.environ.get("BLACKHOLE_LOG")


def record(line: str) -> None:
    if LOG:
        with open(LOG, "a") as f:   # a short local write: fine for a test worker
            f.write(line + "\n")


async def serve(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
    try:
        while True:
            head = await reader.readuntil(b"\r\n\r\n")
            lines = head.decode("latin-1").split("\r\n")
            headers = dict(line.lower().split(": ", 1) for line in lines[1:] if ": " in line)
            body = await reader.readexactly(int(headers.get("content-length", "0")))
            if lines[0].split(" ")[1] in ("/ready", "/health"):
                writer.write(b"HTTP/1.1 200 OK\r\nContent-Length: 2\r\n\r\nok")
                continue
            record(f"{lines[0]} x-shadow={headers.get('x-shadow')}")
            if b"huge" in body:
                writer.write(b"HTTP/1.1 200 OK\r\nContent-Length: 100000000\r\n\r\n")
                for _ in range(100_000):
                    writer.write(b"x" * 1000)
                    await writer.drain()
                    await asyncio.sleep(0.01)
            await asyncio.sleep(30)
    except (asyncio.IncompleteReadError, ConnectionError):
        pass
    finally:
        writer.close()


async def main() -> None:
    server = await asyncio.start_server(serve, "127.0.0.1", int(sys.argv[1]))
    async with server:
        await server.serve_forever()


asyncio.run(main())
