"""The rules of the data listener's HTTP/1.1 server (``http1``) that need no connection:
deadlines, the RFC 9112 checks on a request head, and the helper parser callbacks."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import Protocol

import httptools

from gateway.errors import BadRequest, NotImplementedCoding, VersionNotSupported

MAX_FIELDS = 100                # header lines: 431 above (as nginx and Envoy)
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


class _Nothing:
    """Callbacks of the parser a closed connection keeps (it is never fed)."""


# what a closed connection holds instead of its parser, whose bound methods made a cycle
DEAD_PARSER = httptools.HttpRequestParser(_Nothing())
