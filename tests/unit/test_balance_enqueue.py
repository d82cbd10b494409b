"""The fast path's queue entry (``ReplicaSet.enqueue``): the same admission, order and deadline
as ``wait``, answered by a callback run from the loop after the hand-over, never inside it."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import pytest

from gateway.dataplane.balance import Endpoint, ReplicaSet
from gateway.errors import ClientGone, Overloaded, ProxyError


class FakeLoop:
    """What enqueue uses of a loop: time, call_at (the queue's deadline timer), call_soon."""

    def __init__(self) -> None:
        self.now = 50.0
        self.soon: list[tuple[Callable[..., Any], tuple[Any, ...]]] = []
        self.timers: list[tuple[float, Callable[..., Any], tuple[Any, ...]]] = []

    def time(self) -> float:
        return self.now

    def call_soon(self, fn: Callable[..., Any], *args: Any) -> None:
        self.soon.append((fn, args))

    def call_at(self, when: float, fn: Callable[..., Any], *args: Any) -> Any:
        self.timers.append((when, fn, args))

        class H:
            def cancel(self) -> None:
                pass
        return H()

    def run_soon(self) -> None:
        soon, self.soon = self.soon, []
        for fn, args in soon:
            fn(*args)


def one_slot(max_waiting: int = 2) -> tuple[ReplicaSet, Endpoint, FakeLoop]:
    loop = FakeLoop()
    rs = ReplicaSet("s", "v", limit=1, max_waiting=max_waiting, clock=lambda: loop.now)
    ep = Endpoint("r0", "127.0.0.1", 1)
    rs.publish([ep])
    return rs, ep, loop


def test_a_freed_slot_goes_to_the_oldest_waiter_by_callback_after_the_release() -> None:
    rs, ep, loop = one_slot()
    assert rs.take() is ep
    got: list[tuple[Endpoint | None, ProxyError | None, str]] = []
    rs.enqueue(loop, 55.0, None, lambda e, x: got.append((e, x, "first")))
    rs.enqueue(loop, 55.0, None, lambda e, x: got.append((e, x, "second")))
    assert rs.waiting == 2
    rs.release(ep)
    assert got == []                     # not inside release: from the loop, just after
    loop.run_soon()
    assert got == [(ep, None, "first")] and ep.inflight == 1 and rs.waiting == 1


def test_admission_refuses_at_once_past_max_waiting() -> None:
    rs, ep, loop = one_slot(max_waiting=1)
    rs.take()
    rs.enqueue(loop, 55.0, None, lambda e, x: None)
    with pytest.raises(Overloaded):
        rs.enqueue(loop, 55.0, None, lambda e, x: None)


def test_the_deadline_and_a_gone_client_answer_the_callback_with_the_error() -> None:
    rs, ep, loop = one_slot()
    rs.take()
    got: list[Any] = []
    rs.enqueue(loop, 51.0, lambda: False, lambda e, x: got.append(("gone", e, x)))
    rs.enqueue(loop, 52.0, None, lambda e, x: got.append(("late", e, x)))
    rs.release(ep)                        # the first waiter's client hung up: skipped
    loop.run_soon()
    assert got[0][0] == "gone" and got[0][1] is None and isinstance(got[0][2], ClientGone)
    assert got[1][0] == "late" and got[1][1] is ep
    rs.release(ep)
    rs.take()
    rs.enqueue(loop, 53.0, None, lambda e, x: got.append(("expired", e, x)))
    loop.now = 53.5
    when, fn, args = loop.timers[-1]
    fn(*args)                             # the queue's one deadline timer
    loop.run_soon()
    assert got[-1][0] == "expired" and isinstance(got[-1][2], Overloaded)
    assert rs.waiting == 0
