"""The answer head read in one call (``_head.response`` on what llhttp accepted, ``upstream._Conn``)
against httptools' per-header callback (``upstream._FieldsConn``, the path before it and the one
left where the C extension is not built): for worker answers well-formed and mutated (smuggling
shapes, bare CR / LF, obs-fold, NUL, bad tokens, duplicate lengths, heads cut anywhere), the same
verdict (accepted and complete, or an ``UpstreamError``) and, when accepted, the same status,
header list, client header lines and Content-Length. Pure: no sockets, no loop."""

from __future__ import annotations

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from gateway.dataplane.upstream import UpstreamPool, _Conn, _FieldsConn, read_head
from tests.fuzz.headmutate import mutations

pytestmark = pytest.mark.skipif(read_head is None, reason="gateway.dataplane._head not built")

SEEDS = [
    b"HTTP/1.1 200 OK\r\nServer: nginx/1.22.1\r\nDate: Wed, 02 Dec 2026 11:00:00 GMT\r\n"
    b"Content-Type: application/json\r\nContent-Length: 11\r\nConnection: keep-alive\r\n\r\n"
    b'{"ok":true}',
    b"HTTP/1.1 201 Created\r\ncontent-length: 2\r\nX-Request-Id: theirs\r\nX-A:  1 \r\n"
    b"x-a:2\r\nKeep-Alive: timeout=5\r\nSet-Cookie: a=b\r\nX-Empty:\r\n\r\nok",
    b"HTTP/1.1 200 OK\r\nConnection: X-Hop, close\r\nX-Hop: 1\r\nX-Kept: 2\r\n"
    b"Content-Length: 0\r\n\r\n",
    b"HTTP/1.1 500 Internal Server Error\r\nTransfer-Encoding: chunked\r\nTrailer: x\r\n"
    b"Upgrade: h2\r\nProxy-Connection: x\r\nX-Mixed-CASE: v\r\n\r\n2\r\nok\r\n0\r\n\r\n",
    b"HTTP/1.1 100 Continue\r\n\r\nHTTP/1.1 204 No Content\r\nX-B: \t b\t\r\n\r\n",
    b"\r\nHTTP/1.0 200 OK\r\nContent-Length: 3\r\nConnection: close\r\n\r\nabc",
]
TOKENS = [b"\r\n", b"\r", b"\n", b" ", b"\t", b":", b"\x00", b"\x7f", b"\xff", b",", b"\r\n ",
          b"Content-Length: 2\r\n", b"Content-Length: 99999999999999999999\r\n",
          b"Content-Length: -1\r\n", b"Content-Length: 1 2\r\n", b"Transfer-Encoding: chunked\r\n",
          b"Connection: close\r\n", b"Connection: upgrade, x-a\r\n", b"Date: d\r\n", b"X : y\r\n",
          b"HTTP/1.1 100 Continue\r\n\r\n", b"HTTP/1.1 200 OK\r\n"]


def outcome(kind: type[_Conn], pieces: list[bytes]) -> tuple[object, ...]:
    conn = kind(UpstreamPool("127.0.0.1", 9), loop=None)   # type: ignore[arg-type]  # no socket
    for piece in pieces:
        if conn.closed:
            break
        conn.data_received(piece)
    if conn.error is not None:
        return ("rejected", type(conn.error).__name__)
    if not conn.headers_done:
        return ("incomplete",)
    return ("accepted", conn.complete, conn.status, conn.keep_alive, conn.headers, conn.fields,
            conn.length)


def same(data: bytes, cuts: list[int]) -> None:
    at = sorted({min(c, len(data)) for c in cuts})
    pieces = [data[a:b] for a, b in zip([0, *at], [*at, len(data)], strict=True) if b > a]
    assert outcome(_Conn, pieces) == outcome(_FieldsConn, pieces), (data, at)


def test_the_two_ways_differ() -> None:
    """What the comparisons below rest on: llhttp calls Python per header on one of the two
    only, and only the other reads the head in one call."""
    assert _Conn.read_head is not None and not hasattr(_Conn, "on_header")
    assert _FieldsConn.read_head is None and hasattr(_FieldsConn, "on_header")


@pytest.mark.parametrize("seed", SEEDS)
def test_seeds_read_the_same(seed: bytes) -> None:
    assert outcome(_Conn, [seed])[0] == "accepted"
    same(seed, [])
    for cut in range(1, len(seed)):
        same(seed, [cut])


@settings(max_examples=600, deadline=None)
@given(mutations(SEEDS, TOKENS), st.lists(st.integers(0, 400), max_size=3))
def test_mutated_answers_read_the_same(data: bytes, cuts: list[int]) -> None:
    same(data, cuts)
