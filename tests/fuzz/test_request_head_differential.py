"""The request head gathered in C (``_head.RequestHead``, what the data listener's parser calls
where the extension is built) against its pure-Python twin (``http1rules.PyRequestHead``, the
per-event Python callbacks as before): for the HTTP/1.1 fuzz corpus (tests/fuzz/http1) and
mutations of it (smuggling shapes, bare CR / LF, obs-fold, NUL, bad tokens, oversize targets and
heads, pipelining), cut into packets anywhere, llhttp gives the same verdict (the same error,
ours or its own, at the same request) and every head the same target, fields, method, version
and keep-alive. Pure: no sockets, no loop."""

from __future__ import annotations

from pathlib import Path

import httptools
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from gateway.dataplane import http1rules
from gateway.dataplane.http1rules import HeadGatherer, PyRequestHead, request_head
from tests.fuzz.headmutate import mutations

pytestmark = pytest.mark.skipif(http1rules._gatherer is PyRequestHead,
                                reason="gateway.dataplane._head not built")

CORPUS = Path(__file__).resolve().parent / "http1"
SEEDS = [p.read_bytes() for p in sorted(CORPUS.glob("*.http"))]
TOKENS = [b"\r\n", b"\r", b"\n", b" ", b"\t", b":", b"\x00", b"\x7f", b"\xff", b",", b"\r\n ",
          b"#", b"Host: x\r\n", b"Content-Length: 5\r\n", b"Content-Length: -1\r\n",
          b"Transfer-Encoding: chunked\r\n", b"Connection: close\r\n",
          b"Connection: upgrade\r\nUpgrade: h2c\r\n", b"Expect: 100-continue\r\n", b"0\r\n\r\n",
          b" HTTP/1.0", b"GET / HTTP/1.1\r\nHost: a\r\n\r\n", b"X: " + b"v" * 9000 + b"\r\n",
          b"/" * 9000, b"X-Many: " + b"w" * 40000 + b"\r\n"]


class Recorder:
    """The parser's callbacks as ``http1._Conn`` sets them: the gatherer's until a head is
    complete, then what it gives."""

    def __init__(self, gatherer: HeadGatherer) -> None:
        self.head = gatherer
        self.on_message_begin = gatherer.begin
        self.on_url = gatherer.url
        self.on_header = gatherer.header
        self.parser = httptools.HttpRequestParser(self)
        self.seen: list[object] = []

    def on_headers_complete(self) -> None:
        p = self.parser
        self.seen.append((*self.head.done(), p.get_method(), p.get_http_version(),
                          p.should_keep_alive(), self.head.in_head))

    def on_message_complete(self) -> None:
        self.seen.append("complete")


def events(gatherer: HeadGatherer, pieces: list[bytes]) -> list[object]:
    r = Recorder(gatherer)
    for piece in pieces:
        try:
            r.parser.feed_data(piece)
        except httptools.HttpParserUpgrade:
            r.seen.append("upgrade")
            break
        except httptools.HttpParserError as exc:
            cause = exc.__context__
            r.seen.append(("error", type(exc).__name__, str(exc), type(cause).__name__,
                           str(cause)))
            break
        r.seen.append(("fed", r.head.in_head))
    return r.seen


def same(data: bytes, cuts: list[int]) -> None:
    at = sorted({min(c, len(data)) for c in cuts})
    pieces = [data[a:b] for a, b in zip([0, *at], [*at, len(data)], strict=True) if b > a]
    c = events(request_head(), pieces)     # the C one (see pytestmark)
    py = events(request_head(PyRequestHead), pieces)
    assert c == py, (data[:200], at)


@pytest.mark.parametrize("seed", SEEDS, ids=[str(i) for i in range(len(SEEDS))])
def test_corpus_gathers_the_same(seed: bytes) -> None:
    same(seed, [])
    for cut in range(1, len(seed), 3):
        same(seed, [cut])


def test_limits_raise_the_same_errors() -> None:
    long_target = b"GET /" + b"a" * 9000 + b" HTTP/1.1\r\nHost: a\r\n\r\n"
    big_head = b"GET / HTTP/1.1\r\nHost: a\r\n" + b"X: " + b"v" * 70000 + b"\r\n\r\n"
    for data in (long_target, big_head):
        for cuts in ([], [100], [5000, 8200, 20000]):
            same(data, cuts)
    seen = events(request_head(), [long_target])
    assert seen[-1][3:] == ("BadRequest", "request target over 8190 bytes")   # type: ignore[index]
    # a chunked body's trailer fields share the head's 64 KiB, as they did
    trailers = (b"POST / HTTP/1.1\r\nHost: a\r\nTransfer-Encoding: chunked\r\nX: "
                + b"v" * 40000 + b"\r\n\r\n1\r\na\r\n0\r\nT: " + b"w" * 30000 + b"\r\n\r\n")
    same(trailers, [])
    seen = events(request_head(), [trailers])
    assert seen[-1][3] == "HeadTooLarge"                                   # type: ignore[index]


@settings(max_examples=600, deadline=None)
@given(mutations(SEEDS, TOKENS), st.lists(st.integers(0, 400), max_size=3))
def test_mutated_requests_gather_the_same(data: bytes, cuts: list[int]) -> None:
    same(data, cuts)
