"""Unit tests are pure: no sockets. A test here that binds or connects a socket fails at once
with a message that says where it belongs (tests/integration, which runs real loopback servers).

An audit hook sees every ``socket.bind`` / ``socket.connect`` made through Python's socket module
(asyncio's selector loop included); it cannot be removed, so it only acts while a unit test runs
and the rest of a whole-suite run is untouched. Imports at collection time (urllib3 probing IPv6
when docker is imported) are not a test's doing and pass.
"""

from __future__ import annotations

import sys
from collections.abc import Iterator

import pytest

_active = [False]


def _audit(event: str, args: tuple[object, ...]) -> None:
    if _active[0] and event in ("socket.bind", "socket.connect"):
        raise RuntimeError(f"tests/unit uses no sockets ({event} {args[1]!r}): a test that needs "
                           "one belongs in tests/integration")


sys.addaudithook(_audit)


@pytest.fixture(autouse=True)
def _no_sockets() -> Iterator[None]:
    _active[0] = True
    try:
        yield
    finally:
        _active[0] = False
