"""Request and response header rewriting for the upstream hop (pure functions on bytes)."""

from __future__ import annotations

from collections.abc import AsyncIterable, AsyncIterator, Iterable

# RFC 9110 7.6.1 connection-specific headers, plus the proxy-era ones still seen in the wild.
HOP_BY_HOP = frozenset({
    b"connection", b"keep-alive", b"proxy-authenticate", b"proxy-authorization", b"proxy-connection",
    b"te", b"trailer", b"trailers", b"transfer-encoding", b"upgrade",
})
# recomputed by us on each hop
_REQUEST_DROP = HOP_BY_HOP | {b"content-length", b"expect", b"x-forwarded-for"}
_RESPONSE_DROP = HOP_BY_HOP | {b"content-length", b"date"}
_PLAIN_CONNECTION = frozenset({b"keep-alive", b"close"})   # name no other header: nothing to strip


def _connection_tokens(headers: Iterable[tuple[bytes, bytes]]) -> frozenset[bytes]:
    """Header names listed in Connection are hop-by-hop too (RFC 9110 7.6.1)."""
    tokens: set[bytes] = set()
    for name, value in headers:
        if name.lower() == b"connection":
            tokens.update(t.strip().lower() for t in value.split(b","))
    return frozenset(tokens)


def request_head(method: bytes, target: bytes, headers: tuple[tuple[bytes, bytes], ...],
                 peer: bytes, proto: bytes, body_length: int | None, default_host: bytes) -> bytes:
    """The upstream request head. ``body_length`` None means a chunked body follows. The
    client's Host is kept (as Envoy does); ``default_host`` fills in for HTTP/1.0 clients."""
    drop = _REQUEST_DROP
    has_connection = False
    has_host = False
    xff = b""
    has_xfp = False
    parts = [method, b" ", target, b" HTTP/1.1\r\n"]
    for name, value in headers:
        lname = name.lower()
        if lname in drop:
            if lname == b"x-forwarded-for":
                xff = value
            elif lname == b"connection":
                has_connection = True
            continue
        if lname == b"host":
            has_host = True
        elif lname == b"x-forwarded-proto":
            has_xfp = True
        parts += (name, b": ", value, b"\r\n")
    if has_connection:
        tokens = _connection_tokens(headers)
        if tokens:
            parts = _without(parts, tokens)
    if not has_host:
        parts += (b"Host: ", default_host, b"\r\n")
    parts += (b"X-Forwarded-For: ", xff + b", " + peer if xff else peer, b"\r\n")
    if not has_xfp:
        parts += (b"X-Forwarded-Proto: ", proto, b"\r\n")
    if body_length is None:
        parts.append(b"Transfer-Encoding: chunked\r\n\r\n")
    elif body_length or method not in (b"GET", b"HEAD", b"DELETE", b"OPTIONS"):
        parts += (b"Content-Length: ", str(body_length).encode(), b"\r\n\r\n")
    else:
        parts.append(b"\r\n")
    return b"".join(parts)


def _without(parts: list[bytes], tokens: frozenset[bytes]) -> list[bytes]:
    """Drop header lines (name, ': ', value, CRLF quadruples after the request line)."""
    out = parts[:4]
    for i in range(4, len(parts), 4):
        if parts[i].lower() not in tokens:
            out += parts[i:i + 4]
    return out


def relayed_headers(headers: list[tuple[bytes, bytes]]) -> list[tuple[bytes, bytes]]:
    """The worker's headers minus hop-by-hop ones, Content-Length and Date (ours replace them)."""
    tokens: frozenset[bytes] | None = None
    out = []
    for name, value in headers:
        lname = name.lower()
        if lname in _RESPONSE_DROP:
            if lname == b"connection" and value.lower() not in _PLAIN_CONNECTION:
                tokens = _connection_tokens(headers)
            continue
        out.append((name, value))
    if tokens:
        out = [(n, v) for n, v in out if n.lower() not in tokens]
    return out


def response_fields(headers: list[tuple[bytes, bytes]]) -> bytes:
    """``relayed_headers`` as header lines, ready for the client's answer head."""
    return b"".join([b"%s: %s\r\n" % field for field in relayed_headers(headers)])


def response_headers(headers: list[tuple[bytes, bytes]]) -> list[tuple[str, str]]:
    """``relayed_headers`` as text pairs."""
    return [(n.decode("latin-1"), v.decode("latin-1")) for n, v in relayed_headers(headers)]


async def chunked(body: AsyncIterable[bytes]) -> AsyncIterator[bytes]:
    """HTTP/1.1 chunked framing for a body of unknown length."""
    async for chunk in body:
        if chunk:
            yield b"%x\r\n%s\r\n" % (len(chunk), chunk)
    yield b"0\r\n\r\n"
