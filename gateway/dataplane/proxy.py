"""Request and response header rewriting for the upstream hop (pure functions on bytes)."""

from __future__ import annotations

from collections.abc import AsyncIterable, AsyncIterator, Iterable

# RFC 9110 7.6.1 connection-specific headers, plus the proxy-era ones still seen in the wild.
HOP_BY_HOP = frozenset({
    b"connection", b"keep-alive", b"proxy-authenticate", b"proxy-authorization", b"proxy-connection",
    b"te", b"trailer", b"trailers", b"transfer-encoding", b"upgrade",
})
# recomputed by us on each hop; X-Shadow is ours (the mirror tags its copies): a client's never
# passes, so a worker can trust it; X-Request-Id and traceparent come checked (gateway.tracing)
_REQUEST_DROP = HOP_BY_HOP | {b"content-length", b"expect", b"x-forwarded-for", b"x-shadow",
                              b"x-request-id", b"traceparent"}
# what the gateway says about the hop it received: overwritten unless proxies we trust set it
_FORWARDING = frozenset({b"x-forwarded-proto", b"x-forwarded-host", b"forwarded"})
_SPECIAL = _REQUEST_DROP | _FORWARDING | {b"host"}     # one set lookup per header decides
# X-Request-Id: the gateway writes the request's own (a worker echoing it would double it).
# upstream's answer-head reading applies these two rules (response_fields' fast twin)
RESPONSE_DROP = HOP_BY_HOP | {b"content-length", b"date", b"x-request-id"}
PLAIN_CONNECTION = frozenset({b"keep-alive", b"close"})   # name no other header: nothing to strip


def _connection_tokens(headers: Iterable[tuple[bytes, bytes]]) -> frozenset[bytes]:
    """Header names listed in Connection are hop-by-hop too (RFC 9110 7.6.1)."""
    tokens: set[bytes] = set()
    for name, value in headers:
        if name.lower() == b"connection":
            tokens.update(t.strip().lower() for t in value.split(b","))
    return frozenset(tokens)


def request_head(method: bytes, target: bytes, headers: tuple[tuple[bytes, bytes], ...],
                 peer: bytes, proto: bytes, body_length: int | None, default_host: bytes,
                 trusted: bool = False, trace: bytes = b"") -> bytes:
    """The upstream request head. ``body_length`` None means a chunked body follows. The
    client's Host is kept (as Envoy does); ``default_host`` fills in for HTTP/1.0 clients.

    Forwarding headers: every ``X-Forwarded-For`` value is kept (repeated headers joined in
    order) and the peer appended. ``X-Forwarded-Proto``, ``X-Forwarded-Host`` and ``Forwarded``
    describe the hop into the gateway: a client's are replaced by ours unless ``trusted`` (the
    peer is a proxy we trust, ``gateway.trusted_hops``), when theirs are kept (``Forwarded``
    gets our element appended). A client's ``X-Shadow`` never passes. ``trace``: the
    request's ``X-Request-Id`` and ``traceparent`` lines (``tracing.Ids.upstream_lines``),
    written in place of the client's."""
    special = _SPECIAL
    has_connection = False
    host = b""
    xff = b""
    xfp = xfh = fwd = b""
    parts = [method, b" ", target, b" HTTP/1.1\r\n"]
    for name, value in headers:
        lname = name.lower()
        if lname in special:
            if lname == b"host":
                host = value
            elif lname == b"x-forwarded-for":
                xff = xff + b", " + value if xff else value
                continue
            elif lname == b"connection":
                has_connection = True
                continue
            elif lname in _FORWARDING:
                if not trusted:
                    continue
                if lname == b"forwarded":
                    fwd = fwd + b", " + value if fwd else value
                    continue
                if lname == b"x-forwarded-proto":
                    xfp = value
                else:
                    xfh = value
            else:
                continue
        parts += (name, b": ", value, b"\r\n")
    if has_connection:
        tokens = _connection_tokens(headers)
        if tokens:
            parts = _without(parts, tokens)
    if not host:
        host = default_host
        parts += (b"Host: ", host, b"\r\n")
    parts += (b"X-Forwarded-For: ", xff + b", " + peer if xff else peer, b"\r\n")
    if xfp or xfh or fwd:
        if not xfp:
            parts += (b"X-Forwarded-Proto: ", proto, b"\r\n")
        if not xfh:
            parts += (b"X-Forwarded-Host: ", host, b"\r\n")
        parts += (b"Forwarded: ", fwd + b", " if fwd else b"", forwarded_element(peer, host, proto),
                  b"\r\n")
    else:          # _our_lines' memo read here: a call less per request
        parts.append(_OUR_LINES.get((peer, host, proto)) or _our_lines(peer, host, proto))
    if trace:
        parts.append(trace)
    if body_length is None:
        parts.append(b"Transfer-Encoding: chunked\r\n\r\n")
    elif body_length or method not in (b"GET", b"HEAD", b"DELETE", b"OPTIONS"):
        parts += (b"Content-Length: ", str(body_length).encode(), b"\r\n\r\n")
    else:
        parts.append(b"\r\n")
    return b"".join(parts)


_OUR_LINES: dict[tuple[bytes, bytes, bytes], bytes] = {}   # a memo: the same few keys repeat


def _our_lines(peer: bytes, host: bytes, proto: bytes) -> bytes:
    """X-Forwarded-Proto, X-Forwarded-Host and Forwarded as the gateway writes them, built once
    per (peer, host, proto): a dict lookup instead of three lines' formatting per request."""
    key = (peer, host, proto)
    lines = _OUR_LINES.get(key)
    if lines is None:
        if len(_OUR_LINES) >= 4096:      # hosts are the client's to choose: stay bounded
            _OUR_LINES.clear()
        lines = _OUR_LINES[key] = b"X-Forwarded-Proto: %s\r\nX-Forwarded-Host: %s\r\n" \
            b"Forwarded: %s\r\n" % (proto, host, forwarded_element(peer, host, proto))
    return lines


def forwarded_element(peer: bytes, host: bytes, proto: bytes) -> bytes:
    """Our RFC 7239 element: ``for`` quoted when it is an IPv6 address, ``host`` always quoted
    (it may carry a port) and left out when it holds a quote or backslash."""
    node = b'"[' + peer + b']"' if b":" in peer else peer
    if b'"' in host or b"\\" in host:
        return b"for=%s;proto=%s" % (node, proto)
    return b'for=%s;host="%s";proto=%s' % (node, host, proto)


def _without(parts: list[bytes], tokens: frozenset[bytes]) -> list[bytes]:
    """Drop header lines (name, ': ', value, CRLF quadruples after the request line)."""
    out = parts[:4]
    for i in range(4, len(parts), 4):
        if parts[i].lower() not in tokens:
            out += parts[i:i + 4]
    return out


def relayed_headers(headers: list[tuple[bytes, bytes]]) -> list[tuple[bytes, bytes]]:
    """The worker's headers minus hop-by-hop ones, Content-Length, Date and X-Request-Id (ours
    replace them)."""
    tokens: frozenset[bytes] | None = None
    out = []
    for name, value in headers:
        lname = name.lower()
        if lname in RESPONSE_DROP:
            if lname == b"connection" and value.lower() not in PLAIN_CONNECTION:
                tokens = _connection_tokens(headers)
            continue
        out.append((name, value))
    if tokens:
        out = [(n, v) for n, v in out if n.lower() not in tokens]
    return out


def response_fields(headers: list[tuple[bytes, bytes]]) -> bytes:
    """``relayed_headers`` as header lines, ready for the client's answer head: one pass and
    one join (it runs per answer); a Connection header naming others takes the long way."""
    drop = RESPONSE_DROP
    parts: list[bytes] = []
    for name, value in headers:
        lname = name.lower()
        if lname in drop:
            if lname == b"connection" and value.lower() not in PLAIN_CONNECTION:
                return b"".join([b"%s: %s\r\n" % f for f in relayed_headers(headers)])
            continue
        parts += (name, b": ", value, b"\r\n")
    return b"".join(parts)


async def chunked(body: AsyncIterable[bytes]) -> AsyncIterator[bytes]:
    """HTTP/1.1 chunked framing for a body of unknown length."""
    async for chunk in body:
        if chunk:
            yield b"%x\r\n%s\r\n" % (len(chunk), chunk)
    yield b"0\r\n\r\n"
