"""A worker for bad-mirror tests: ready at once, then answers nothing in time.

``GET /ready`` (and ``/health``) answer 200. Any other request is logged (request line and
``x-shadow`` header, one line each, to the file named by $BLACKHOLE_LOG) and then:
- if its body contains ``huge``: a 200 announcing a 100 MB body, trickled slowly;
- otherwise: no answer at all, the connection held open (a 30 s-slow model).
SIGTERM ends it at once.

    python blackhole.py PORT
"""

import asyncio

from rawhttp import OK, read_body, read_head, recorder, run

record = recorder("BLACKHOLE_LOG")


async def serve(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
    try:
        while True:
            method, path, _, headers = await read_head(reader)
            body = await read_body(reader, headers)
            if path in ("/ready", "/health"):
                writer.write(OK)
                continue
            record(f"{method} {path} HTTP/1.1 x-shadow={headers.get('x-shadow')}")
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


run(serve)
