"""The answer's header lines the upstream protocol builds as llhttp parses (the fast path's)
are exactly ``proxy.response_fields``' (the handler's): same drops, same order."""

from __future__ import annotations

import pytest

from gateway.dataplane.proxy import response_fields
from gateway.dataplane.upstream import UpstreamPool, _Conn

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


@pytest.mark.parametrize("head", HEADS)
def test_lines_built_while_parsing_are_response_fields(head: bytes) -> None:
    conn = _Conn(UpstreamPool("127.0.0.1", 9), loop=None)   # type: ignore[arg-type]  # never used: no socket
    conn.data_received(head)
    assert conn.complete and conn.error is None
    expected = response_fields(conn.headers)
    got = b"".join(conn.lines) if conn.lines is not None else response_fields(conn.headers)
    assert got == expected
    if b"X-Hop" in head:
        assert conn.lines is None and b"X-Hop" not in got and b"X-Kept: 2\r\n" in got


def test_the_first_content_length_is_the_answers() -> None:
    conn = _Conn(UpstreamPool("127.0.0.1", 9), loop=None)   # type: ignore[arg-type]  # never used: no socket
    conn.data_received(b"HTTP/1.1 200 OK\r\nContent-Length: 2\r\nServer: s\r\n\r\nok")
    assert conn.length == 2 and b"".join(conn.lines or []) == b"Server: s\r\n"
