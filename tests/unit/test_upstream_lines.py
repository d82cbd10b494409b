"""The answer's header lines the upstream protocol builds from the head llhttp accepted (the fast
path's) are exactly ``proxy.response_fields``' (the handler's): same drops, same order; both ways
of building them (``_head.response`` in one call, or ``_FieldsConn``'s per-header callback where
the C extension was not built)."""

from __future__ import annotations

import pytest

from gateway.dataplane.proxy import response_fields
from gateway.dataplane.upstream import UpstreamPool, _Conn, _FieldsConn, read_head

# ``_Conn`` needs the C reader; ``_FieldsConn`` is the path without it
CONNS = [_FieldsConn, *([_Conn] if read_head is not None else [])]

HEADS = [
    b"HTTP/1.1 200 OK\r\nServer: nginx\r\nDate: x\r\nContent-Type: application/json\r\n"
    b"Content-Length: 2\r\nConnection: keep-alive\r\nETag: \"e\"\r\n\r\nok",
    b"HTTP/1.1 201 Created\r\ncontent-length: 2\r\nX-Request-Id: theirs\r\nX-A: 1\r\n"
    b"x-a: 2\r\nKeep-Alive: timeout=5\r\nSet-Cookie: a=b\r\n\r\nok",
    # a Connection header naming another header: that one goes too (response_fields' long way)
    b"HTTP/1.1 200 OK\r\nConnection: X-Hop, close\r\nX-Hop: 1\r\nX-Kept: 2\r\n"
    b"Content-Length: 0\r\n\r\n",
    b"HTTP/1.1 500 Internal Server Error\r\nTransfer-Encoding: chunked\r\nTrailer: x\r\n"
    b"Upgrade: h2\r\nProxy-Connection: x\r\nX-Mixed-CASE: v\r\n\r\n2\r\nok\r\n0\r\n\r\n",
]


@pytest.mark.parametrize("kind", CONNS)
@pytest.mark.parametrize("head", HEADS)
def test_lines_built_while_parsing_are_response_fields(head: bytes, kind: type[_Conn]) -> None:
    conn = kind(UpstreamPool("127.0.0.1", 9), loop=None)   # type: ignore[arg-type]  # never used: no socket
    conn.data_received(head)
    assert conn.complete and conn.error is None
    expected = response_fields(conn.headers)
    got = conn.fields if conn.fields is not None else response_fields(conn.headers)
    assert got == expected
    if b"X-Hop" in head:
        assert conn.fields is None and b"X-Hop" not in got and b"X-Kept: 2\r\n" in got


@pytest.mark.parametrize("kind", CONNS)
def test_the_first_content_length_is_the_answers(kind: type[_Conn]) -> None:
    conn = kind(UpstreamPool("127.0.0.1", 9), loop=None)   # type: ignore[arg-type]  # never used: no socket
    conn.data_received(b"HTTP/1.1 200 OK\r\nContent-Length: 2\r\nServer: s\r\n\r\nok")
    assert conn.length == 2 and conn.fields == b"Server: s\r\n"


@pytest.mark.parametrize("kind", CONNS)
def test_a_head_in_pieces_and_after_an_interim_answer(kind: type[_Conn]) -> None:
    """The head is read from every byte received until it is complete, past a 1xx answer."""
    conn = kind(UpstreamPool("127.0.0.1", 9), loop=None)   # type: ignore[arg-type]  # never used: no socket
    for piece in (b"HTTP/1.1 100 Continue\r\n\r\nHTTP/1.1 200 OK\r\nX-A:", b" 1\r\nContent-",
                  b"Length: 2\r\n\r\nok"):
        conn.data_received(piece)
    assert conn.complete and conn.error is None and conn.status == 200
    assert conn.length == 2 and conn.fields == b"X-A: 1\r\n"
