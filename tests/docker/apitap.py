"""A Docker API tap: a unix socket relaying byte for byte to the real daemon, keeping a copy of
what the client sent. A gateway pointed at it (``gateway.docker.base_url``) works as usual, and
a test reads back the exact requests that reached the Docker API (a GPU device request on a
host without GPUs, where the container itself cannot start)."""

from __future__ import annotations

import asyncio
import contextlib
import json
from typing import Any, Self

DAEMON = "/var/run/docker.sock"


class DockerApiTap:
    """``async with DockerApiTap(path) as tap``: serves ``unix://path`` until the block ends."""

    def __init__(self, path: str, daemon: str = DAEMON) -> None:
        self.path = path
        self.daemon = daemon
        self._server: asyncio.AbstractServer | None = None
        self._sent: list[bytearray] = []          # per connection: client -> daemon bytes
        self._pumps: set[asyncio.Task[None]] = set()
        self._writers: list[asyncio.StreamWriter] = []

    @property
    def base_url(self) -> str:
        return f"unix://{self.path}"

    async def __aenter__(self) -> Self:
        self._server = await asyncio.start_unix_server(self._relay, self.path)
        return self

    async def __aexit__(self, *exc: object) -> None:
        if self._server is not None:
            self._server.close()
        for task in list(self._pumps):
            task.cancel()
        await asyncio.gather(*self._pumps, return_exceptions=True)
        for writer in self._writers:
            writer.close()

    async def _relay(self, client_r: asyncio.StreamReader, client_w: asyncio.StreamWriter) -> None:
        daemon_r, daemon_w = await asyncio.open_unix_connection(self.daemon)
        self._writers += [client_w, daemon_w]
        sent = bytearray()
        self._sent.append(sent)
        for task in (asyncio.ensure_future(_pump(client_r, daemon_w, sent)),
                     asyncio.ensure_future(_pump(daemon_r, client_w, None))):
            self._pumps.add(task)
            task.add_done_callback(self._pumps.discard)

    def requests(self) -> list[tuple[str, str, bytes]]:
        """(method, path, body) of every complete request sent so far, in order per connection."""
        out: list[tuple[str, str, bytes]] = []
        for data in self._sent:
            out += _parse(bytes(data))
        return out

    def container_creates(self) -> list[dict[str, Any]]:
        """The JSON bodies of ``POST /containers/create``."""
        return [json.loads(body) for method, path, body in self.requests()
                if method == "POST" and path.split("?")[0].endswith("/containers/create")]


async def _pump(reader: asyncio.StreamReader, writer: asyncio.StreamWriter,
                copy: bytearray | None) -> None:
    with contextlib.suppress(ConnectionError, OSError):
        while chunk := await reader.read(65536):
            if copy is not None:
                copy += chunk
            writer.write(chunk)
            await writer.drain()
    with contextlib.suppress(ConnectionError, OSError, RuntimeError):
        writer.write_eof()


def _parse(data: bytes) -> list[tuple[str, str, bytes]]:
    """HTTP/1.1 requests in a byte stream (Content-Length or chunked bodies)."""
    out = []
    pos = 0
    while (end := data.find(b"\r\n\r\n", pos)) >= 0:
        head = data[pos:end].decode("latin-1").split("\r\n")
        method, path = head[0].split(" ")[:2]
        headers = {k.strip().lower(): v.strip() for k, _, v in (h.partition(":") for h in head[1:])}
        pos = end + 4
        if headers.get("transfer-encoding", "").lower() == "chunked":
            body = bytearray()
            while (eol := data.find(b"\r\n", pos)) >= 0:
                size = int(data[pos:eol].split(b";")[0], 16)
                body += data[eol + 2:eol + 2 + size]
                pos = eol + 2 + size + 2
                if size == 0:
                    break
            out.append((method, path, bytes(body)))
            continue
        length = int(headers.get("content-length", "0"))
        if pos + length > len(data):
            break                                 # not all of it has arrived yet
        out.append((method, path, data[pos:pos + length]))
        pos += length
    return out
