"""Fuzzing the data listener's HTTP/1.1 parsing and framing (issue #13 item 8).

A seed corpus of requests, well-formed and not (tests/fuzz/http1/*.http), is fed to one real
connection protocol (``http1._Conn``) through an in-memory transport: no sockets, no sleeps,
only the loop turning. Properties, for every seed and for mutations of them (hypothesis):

- nothing escapes the protocol: no exception from its callbacks, never a 500 from the handler;
- what it writes is a sequence of well-formed HTTP/1.1 answers, each with a status we expect;
- it never hangs: once the client has sent everything and half-closed, every request read has
  its answer and the connection is closed;
- framing does not depend on packet boundaries: the same bytes cut anywhere give the same
  answers (ignoring ``100 Continue``, which depends on timing by design).

Every seed's answers are also pinned in ``expected.json`` (status, and the echoed body's length). A crash, hang or desync found later
goes into the corpus as a new ``.http`` file with its expected answers.
"""

from __future__ import annotations

import asyncio
import json
from itertools import pairwise
from pathlib import Path
from typing import Any

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from gateway.dataplane import http1
from gateway.dataplane.http1msg import Request, error_parts
from gateway.errors import ProxyError

CORPUS = Path(__file__).resolve().parent.parent / "fuzz" / "http1"
SEEDS = {p.stem: p.read_bytes() for p in sorted(CORPUS.glob("*.http"))}
EXPECTED: dict[str, list[list[int]]] = json.loads((CORPUS / "expected.json").read_text())
ALLOWED = {200, 400, 408, 413, 431, 499, 501, 505}
TOKENS = [b"\r\n", b"\r\n\r\n", b"\n", b" ", b":", b",", b"#", b"%2e%2e/", b"\x00", b"\xff",
          b"Host: x\r\n", b"Content-Length: 5\r\n", b"Content-Length: -1\r\n",
          b"Transfer-Encoding: chunked\r\n", b"Transfer-Encoding: identity\r\n",
          b"Connection: close\r\n", b"Connection: upgrade\r\nUpgrade: h2c\r\n",
          b"Expect: 100-continue\r\n", b"0\r\n\r\n", b"5\r\nhello\r\n", b"ffffffffffffffff\r\n",
          b" HTTP/1.0", b" HTTP/1.1", b"GET / HTTP/1.1\r\nHost: a\r\n\r\n"]
Answer = tuple[int, tuple[tuple[str, str], ...], bytes]


async def echo(req: Request) -> None:
    """Reads the whole body, then answers it back with the method and target."""
    try:
        body = await req.read()
    except ProxyError as exc:
        req.respond(exc.status, *error_parts(exc, None))
        return
    req.respond(200, b"X-Method: %s\r\nX-Target: %s\r\n" % (req.method.encode("latin-1"),
                                                            req.target.encode("latin-1")), body)


class MemoryTransport(asyncio.Transport):
    """Collects what the protocol writes; holds back data while reading is paused."""

    def __init__(self, loop: asyncio.AbstractEventLoop) -> None:
        super().__init__()
        self.loop = loop
        self.conn: http1._Conn | None = None
        self.out = bytearray()
        self.closed = False
        self.paused = False
        self.held: list[bytes | None] = []    # None: the client's EOF

    def get_extra_info(self, name: str, default: Any = None) -> Any:
        return ("127.0.0.1", 40000) if name == "peername" else default

    def write(self, data: bytes | bytearray | memoryview) -> None:
        if not self.closed:
            self.out += data

    def writelines(self, parts: Any) -> None:
        for part in parts:
            self.write(part)

    def is_closing(self) -> bool:
        return self.closed

    def close(self) -> None:
        if not self.closed and self.conn is not None:
            self.closed = True
            self.loop.call_soon(self.conn.connection_lost, None)

    abort = close

    def can_write_eof(self) -> bool:
        return True

    def write_eof(self) -> None:
        pass

    def pause_reading(self) -> None:
        self.paused = True

    def resume_reading(self) -> None:
        self.paused = False
        self.loop.call_soon(self._deliver)

    def send(self, data: bytes | None) -> None:
        self.held.append(data)
        self._deliver()

    def _deliver(self) -> None:
        conn = self.conn
        assert conn is not None
        while self.held and not self.paused and not self.closed:
            data = self.held.pop(0)
            if data is None:
                if not conn.eof_received():
                    self.close()
            else:
                conn.data_received(data)


async def turn(n: int = 60) -> None:
    for _ in range(n):
        await asyncio.sleep(0)     # lets handler tasks and call_soon callbacks run; no waiting


async def exchange(pieces: list[bytes]) -> tuple[list[Answer], bool]:
    server = http1.Server(echo)
    transport = MemoryTransport(asyncio.get_running_loop())
    conn = http1._Conn(server)
    transport.conn = conn
    conn.connection_made(transport)
    try:
        for piece in pieces:
            transport.send(piece)
            await turn()
        transport.send(None)
        await turn(200)
        closed = transport.closed
    finally:
        if not transport.closed:
            transport.close()
        await turn(5)
        await http1.tasks.cancel_and_wait(conn.task)
    return answers(bytes(transport.out)), closed


def answers(out: bytes) -> list[Answer]:
    """Split the written bytes into answers; fails on anything that is not one."""
    found: list[Answer] = []
    while out:
        head, sep, out = out.partition(b"\r\n\r\n")
        assert sep, f"an answer without the end of its head: {head[:200]!r}"
        lines = head.decode("latin-1").split("\r\n")
        version, status, _ = lines[0].split(" ", 2)
        assert version == "HTTP/1.1", lines[0]
        headers = tuple(sorted((n.lower(), v) for n, v in (line.split(": ", 1) for line in lines[1:])
                               if n.lower() != "date"))
        length = int(dict(headers).get("content-length", "0"))
        body, out = out[:length], out[length:]
        assert len(body) == length, "an answer shorter than its Content-Length"
        if int(status) != 100:
            found.append((int(status), headers, body))
    return found


def run(pieces: list[bytes]) -> tuple[list[Answer], bool]:
    loop = asyncio.new_event_loop()
    try:
        return loop.run_until_complete(exchange(pieces))
    finally:
        loop.close()


def check(data: bytes, cuts: list[int]) -> list[Answer]:
    whole, closed = run([data])
    assert closed, "the connection did not end after the client's EOF (a hang)"
    for status, _, _ in whole:
        assert status in ALLOWED, (status, data)
    if cuts:
        bounds = [0, *cuts, len(data)]
        pieces = [data[a:b] for a, b in pairwise(bounds) if b > a]
        cut, closed = run(pieces)
        assert closed, "the connection did not end after the client's EOF (a hang)"
        assert cut == whole, f"answers depend on packet boundaries at {cuts} for {data!r}"
    return whole


@pytest.mark.parametrize("name", sorted(SEEDS))
def test_seed_corpus_answers_are_pinned(name: str) -> None:
    data = SEEDS[name]
    got = [[status, len(body)] if status == 200 else [status]     # an echo's length: no body lost
           for status, _, body in check(data, list(range(1, len(data), 7)))]
    assert got == EXPECTED[name], (name, got)


@st.composite
def mutants(draw: st.DrawFn) -> tuple[bytes, list[int]]:
    data = bytearray(SEEDS[draw(st.sampled_from(sorted(SEEDS)))])
    for _ in range(draw(st.integers(0, 4))):
        at = draw(st.integers(0, len(data)))
        op = draw(st.sampled_from(("flip", "insert", "delete", "repeat", "splice")))
        if op == "flip" and at < len(data):
            data[at] ^= 1 << draw(st.integers(0, 7))
        elif op == "insert":
            data[at:at] = draw(st.sampled_from(TOKENS))
        elif op == "delete":
            del data[at:at + draw(st.integers(1, 8))]
        elif op == "repeat":
            data[at:at] = data[at:at + draw(st.integers(1, 40))]
        elif op == "splice":
            other = SEEDS[draw(st.sampled_from(sorted(SEEDS)))]
            data[at:] = other[draw(st.integers(0, len(other))):]
    cuts = draw(st.lists(st.integers(1, max(1, len(data) - 1)), max_size=5, unique=True))
    return bytes(data), sorted(c for c in cuts if 0 < c < len(data))


@settings(max_examples=300, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(mutants())
def test_mutated_requests_never_crash_hang_or_desync(case: tuple[bytes, list[int]]) -> None:
    check(*case)
