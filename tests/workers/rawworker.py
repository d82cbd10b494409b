"""A raw-socket worker that misbehaves on demand, chosen by the last path segment.

- ``ready`` / ``health``: 200;
- ``headers``: 200 with the request's header lines and body length as JSON;
- ``stall-chunked``: a chunked 200, one chunk, then silence;
- ``stall-length``: a 200 announcing 10 MB, 1000 bytes, then silence;
- ``flood``: a chunked 200 of up to 256 MiB, as fast as the reader takes it;
- ``big-chunked``: a chunked 200 of 2 MiB, at once;
- ``silent``: reads the request and never answers;
- ``slow``: ``{"n": 0}`` after 0.3 s;
- ``shadow-big``: the same for a mirror copy (``x-shadow`` set), else a small JSON 200;
- anything else: reads the body (Content-Length or chunked) and answers ``{"n": length}``.

Every request line is logged to $RAW_LOG as ``req METHOD PATH``; a connection the gateway
closed while this worker waited on it (stalled, flooding, or reading a body) is logged as
``closed PATH``. SIGTERM ends it at once.

    python rawworker.py PORT
"""

import asyncio

import orjson
from rawhttp import OK, read_body, read_head, recorder, run

record = recorder("RAW_LOG")


async def wait_closed(reader: asyncio.StreamReader, path: str) -> None:
    """Silence until the gateway closes the connection."""
    try:
        while await reader.read(65536):
            pass
    except ConnectionError:
        pass
    record(f"closed {path}")


async def serve(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
    path = ""
    try:
        while True:
            method, path, pairs, headers = await read_head(reader)
            what = path.rsplit("/", 1)[-1].partition("?")[0]
            if what in ("ready", "health"):
                await read_body(reader, headers)
                writer.write(OK)
                continue
            record(f"req {method} {path}")
            try:
                body = await read_body(reader, headers)
            except (asyncio.IncompleteReadError, ConnectionError):
                record(f"closed {path}")
                return
            if what == "headers":
                out = orjson.dumps({"headers": pairs, "body": len(body)})
                writer.write(b"HTTP/1.1 200 OK\r\nContent-Type: application/json\r\n"
                             b"Content-Length: %d\r\n\r\n%s" % (len(out), out))
            elif what == "stall-chunked":
                writer.write(b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n"
                             b"5\r\nhello\r\n")
                await wait_closed(reader, path)
                return
            elif what == "slow":
                await asyncio.sleep(0.3)
                writer.write(b"HTTP/1.1 200 OK\r\nContent-Type: application/json\r\n"
                             b"Content-Length: 7\r\n\r\n{\"n\":0}")
            elif what == "silent":
                await wait_closed(reader, path)
                return
            elif what == "stall-length":
                writer.write(b"HTTP/1.1 200 OK\r\nContent-Length: 10000000\r\n\r\n" + b"s" * 1000)
                await wait_closed(reader, path)
                return
            elif what == "flood":
                writer.write(b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n")
                piece = b"10000\r\n" + b"f" * 65536 + b"\r\n"
                try:
                    for _ in range(4096):
                        writer.write(piece)
                        await writer.drain()
                    writer.write(b"0\r\n\r\n")
                except ConnectionError:
                    record(f"closed {path}")
                    return
            elif what == "big-chunked" or (what == "shadow-big" and "x-shadow" in headers):
                writer.write(b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n")
                piece = b"10000\r\n" + b"b" * 65536 + b"\r\n"
                for _ in range(32):
                    writer.write(piece)
                writer.write(b"0\r\n\r\n")
            else:
                out = orjson.dumps({"n": len(body)})
                writer.write(b"HTTP/1.1 200 OK\r\nContent-Type: application/json\r\n"
                             b"Content-Length: %d\r\n\r\n%s" % (len(out), out))
            await writer.drain()
    except (asyncio.IncompleteReadError, ConnectionError):
        pass
    finally:
        writer.close()


run(serve)
