"""The data plane's coarse deadline wheel: fires at most one tick late, never early, one loop
timer however many deadlines are filed, cancelling costs nothing."""

from __future__ import annotations

from collections.abc import Callable

from gateway.dataplane.wheel import Wheel


class FakeLoop:
    def __init__(self) -> None:
        self.now = 100.0
        self.timers: list[tuple[float, Callable[[], None]]] = []

    def call_at(self, when: float, fn: Callable[[], None]) -> object:
        self.timers.append((when, fn))
        return object()

    def advance(self, to: float) -> None:
        """Run every timer due by ``to``, in order, with the clock at its time."""
        while True:
            due = sorted((t for t in self.timers if t[0] <= to), key=lambda t: t[0])
            if not due:
                break
            when, fn = due[0]
            self.timers.remove(due[0])
            self.now = max(self.now, when)
            fn()
        self.now = to


class Item:
    def __init__(self, deadline: float) -> None:
        self.deadline = deadline
        self.fired: list[float] = []
        self.loop: FakeLoop | None = None

    def expire(self) -> None:
        assert self.loop is not None
        self.fired.append(self.loop.now)


def make(*deadlines: float) -> tuple[FakeLoop, Wheel, list[Item]]:
    loop = FakeLoop()
    wheel = Wheel(loop.call_at, lambda: loop.now, tick=0.1)
    items = []
    for d in deadlines:
        it = Item(d)
        it.loop = loop
        wheel.add(it)
        items.append(it)
    return loop, wheel, items


def test_a_deadline_fires_within_one_tick_and_never_early() -> None:
    loop, _, (a, b) = make(100.25, 100.51)
    loop.advance(100.24)
    assert a.fired == [] and b.fired == []
    loop.advance(100.36)
    assert len(a.fired) == 1 and 100.25 <= a.fired[0] <= 100.35
    assert b.fired == []
    loop.advance(101.0)
    assert len(b.fired) == 1 and 100.51 <= b.fired[0] <= 100.61
    assert a.deadline == 0 and b.deadline == 0


def test_one_loop_timer_for_many_deadlines() -> None:
    loop, wheel, items = make(*(100.5 + i * 0.001 for i in range(1000)))
    assert len(loop.timers) == 1
    loop.advance(102.0)
    assert all(len(i.fired) == 1 for i in items)
    assert loop.timers == [] and len(wheel) == 0     # nothing filed: no timer left armed


def test_a_cancelled_deadline_never_fires_and_a_moved_one_fires_once_at_its_new_time() -> None:
    loop, wheel, (a, b) = make(100.3, 100.3)
    a.deadline = 0.0                       # cancelled: the answer came
    b.deadline = 100.8                      # reused for a later exchange: filed again
    wheel.add(b)
    loop.advance(100.75)
    assert a.fired == [] and b.fired == []
    loop.advance(102.0)
    assert a.fired == [] and len(b.fired) == 1 and b.fired[0] >= 100.8


def test_the_timer_stops_when_the_wheel_empties_and_rearms_on_the_next_add() -> None:
    loop, wheel, (a,) = make(100.2)
    loop.advance(101.0)
    assert loop.timers == []
    c = Item(101.5)
    c.loop = loop
    wheel.add(c)
    assert len(loop.timers) == 1
    loop.advance(102.0)
    assert len(c.fired) == 1
