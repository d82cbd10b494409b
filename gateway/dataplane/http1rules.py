"""The rules of the data listener's HTTP/1.1 server (``http1``) that need no connection:
deadlines, the RFC 9112 checks on a request head, the request head's gathering from llhttp's
events, and the helper parser callbacks."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from functools import partial
from typing import Protocol

import httptools

from gateway.errors import BadRequest, HeadTooLarge, NotImplementedCoding, VersionNotSupported

MAX_FIELDS = 100                # header lines: 431 above (as nginx and Envoy)
MAX_TARGET = 8190               # request-target bytes (as aiohttp's line limit): 400 above
MAX_HEAD = 64 * 1024            # header field bytes: 431 above
OnTimeout = Callable[[str], None]     # called with "header_read", "body_idle", "client_write"


@dataclass(frozen=True, slots=True)
class Deadlines:
    """How long the data plane waits on a peer (``gateway.deadlines``), in seconds."""

    header_read: float = 10.0
    body_idle: float = 30.0
    upstream_idle: float = 60.0
    client_write: float = 30.0


DEFAULT_DEADLINES = Deadlines()


def no_count(kind: str) -> None:
    pass


class BodyConn(Protocol):
    reading_done: bool

    def on_body(self, body: bytes) -> None: ...
    def on_message_complete(self) -> None: ...


class BodyOnly:
    """Parser callbacks for the body of an ``Upgrade`` request: llhttp skips that body (it
    expects the new protocol to follow), so a second parser reads it as a plain message."""

    __slots__ = ("conn",)

    def __init__(self, conn: BodyConn) -> None:
        self.conn = conn

    def on_body(self, body: bytes) -> None:
        self.conn.on_body(body)

    def on_message_complete(self) -> None:
        conn = self.conn
        conn.on_message_complete()
        conn.reading_done = True       # nothing after it is read: we did not switch protocols


def check_head(version: str, hosts: int, coding: bytes, url: bytes) -> None:
    """The RFC 9112 MUSTs on a request head, off the common path (one Host, HTTP/1.1, no
    Transfer-Encoding): raises the error to answer."""
    if version not in ("1.1", "1.0"):
        raise VersionNotSupported(f"HTTP/{version} is not supported: HTTP/1.1 or 1.0 only")
    if hosts > 1:
        raise BadRequest("more than one Host header")
    if hosts == 0 and version == "1.1":
        raise BadRequest("an HTTP/1.1 request needs a Host header")
    if b"#" in url:
        raise BadRequest("'#' (a fragment) is not allowed in the request target")
    if coding:
        codings = [c.strip().lower() for c in coding.split(b",")]
        if codings != [b"chunked"]:
            if codings[-1] != b"chunked":
                raise BadRequest("chunked must be the final transfer coding")
            raise NotImplementedCoding("only the chunked transfer coding is supported, got "
                                       + coding.decode("latin-1"))


class PyRequestHead:
    """Gathers a request head from llhttp's events: ``begin`` (on_message_begin), ``url``
    (on_url), ``header`` (on_header), then ``done`` at on_headers_complete gives (target,
    fields). ``http1`` hands these bound methods to the parser as its callbacks; where the C
    extension is built its ``_head.RequestHead`` does the same in C (llhttp then calls no Python
    until the head is complete). The over-limit errors are raised while parsing, as llhttp goes,
    from the given factories."""

    __slots__ = ("fields", "head_error", "in_head", "max_head", "max_target", "size", "target",
                 "target_error")

    def __init__(self, max_target: int, max_head: int, target_error: Callable[[], Exception],
                 head_error: Callable[[], Exception]) -> None:
        self.max_target = max_target
        self.max_head = max_head
        self.target_error = target_error
        self.head_error = head_error
        self.in_head = False
        self.target = b""
        self.fields: list[tuple[bytes, bytes]] = []
        self.size = 0

    def begin(self) -> None:
        self.in_head = True
        self.target = b""
        self.fields = []
        self.size = 0

    def url(self, data: bytes) -> None:
        self.target += data
        if len(self.target) > self.max_target:
            raise self.target_error()

    def header(self, name: bytes, value: bytes) -> None:
        self.fields.append((name, value))
        self.size += len(name) + len(value) + 4
        if self.size > self.max_head:
            raise self.head_error()

    def done(self) -> tuple[bytes, tuple[tuple[bytes, bytes], ...]]:
        out = self.target, tuple(self.fields)
        self.in_head = False
        self.target = b""
        self.fields = []
        # ``size`` runs on until ``begin``: llhttp reports a chunked body's trailer fields by
        # on_header too, and they share the head's ``max_head``
        return out


class HeadGatherer(Protocol):
    """``PyRequestHead``'s contract, which ``_head.RequestHead`` keeps in C."""

    in_head: bool

    def begin(self) -> None: ...
    def url(self, data: bytes) -> None: ...
    def header(self, name: bytes, value: bytes) -> None: ...
    def done(self) -> tuple[bytes, tuple[tuple[bytes, bytes], ...]]: ...


_Gatherer = Callable[[int, int, Callable[[], Exception], Callable[[], Exception]], HeadGatherer]
_gatherer: _Gatherer
try:
    from gateway.dataplane._head import RequestHead as _gatherer
except ImportError:             # built without a C compiler
    _gatherer = PyRequestHead


def request_head(make: _Gatherer | None = None) -> HeadGatherer:
    """A connection's head gatherer, with the data listener's limits and errors (``make``: the
    C one where built, else ``PyRequestHead``)."""
    return (make or _gatherer)(MAX_TARGET, MAX_HEAD,
                               partial(BadRequest, f"request target over {MAX_TARGET} bytes"),
                               partial(HeadTooLarge,
                                       f"request header fields over {MAX_HEAD} bytes"))


class _Nothing:
    """Callbacks of the parser a closed connection keeps (it is never fed)."""


# what a closed connection holds instead of its parser, whose bound methods made a cycle
DEAD_PARSER = httptools.HttpRequestParser(_Nothing())
