"""The C heads reader (gateway/dataplane/_head.c) on its error paths: each raises the error
it should and frees what it built (a leak would grow the traced memory with every call)."""

from __future__ import annotations

import gc
import tracemalloc
from functools import partial

import pytest

from gateway.dataplane.proxy import RESPONSE_DROP

_head = pytest.importorskip("gateway.dataplane._head")

BAD_ANSWERS = [
    (b"HTTP/1.1 200 OK\r\nX: 1\r\n", "no complete head"),
    (b"HTTP/1.1 200 OK\r\nContent-Length: x\r\n\r\n", "invalid literal"),
    (b"HTTP/1.1 200 OK\r\nNoColon\r\n\r\n", "without ':'"),
]


def errors_once(head: object) -> None:
    for raw, _ in BAD_ANSWERS:
        with pytest.raises(ValueError):
            _head.response(raw, 0, RESPONSE_DROP)
    head.begin()                                     # type: ignore[attr-defined]
    with pytest.raises(ValueError, match="target"):
        head.url(b"x" * 11)                          # type: ignore[attr-defined]
    head.begin()                                     # type: ignore[attr-defined]
    with pytest.raises(KeyError, match="head"):
        head.header(b"a" * 10, b"b" * 10)            # type: ignore[attr-defined]


def test_errors_say_what_and_leak_nothing() -> None:
    for raw, message in BAD_ANSWERS:
        with pytest.raises(ValueError, match=message):
            _head.response(raw, 0, RESPONSE_DROP)
    head = _head.RequestHead(10, 20, partial(ValueError, "target"), partial(KeyError, "head"))
    for _ in range(2000):                            # warm: caches, free lists
        errors_once(head)
    gc.collect()
    tracemalloc.start()
    try:
        before = tracemalloc.get_traced_memory()[0]
        for _ in range(20000):
            errors_once(head)
        gc.collect()
        grown = tracemalloc.get_traced_memory()[0] - before
    finally:
        tracemalloc.stop()
    assert grown < 64 * 1024, f"{grown} bytes kept after 20,000 rounds of errors"


def test_a_gatherer_not_initialised_says_so() -> None:
    head = _head.RequestHead.__new__(_head.RequestHead)
    with pytest.raises(RuntimeError, match="__init__"):
        head.begin()
