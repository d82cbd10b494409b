"""One coarse timer wheel for the data plane's per-request deadlines.

A loop timer per request (``call_later`` and its ``cancel``) is a heap push, a handle and a
heap entry left behind on cancel, for a deadline that almost never fires. Here a deadline is a
number on the object it belongs to, filed in a slot of ``tick`` seconds; one loop timer, armed
only while something is filed, looks at the due slots ``tick`` by ``tick``. Cancelling is
setting the number to 0: nothing is unfiled (the slot is dropped when it comes due). A deadline
fires at most ``tick`` late, never early.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from typing import Any, Protocol

TICK = 0.1


class Timed(Protocol):
    """What the wheel files: ``deadline`` (loop time; 0 = none) and what to do past it."""

    deadline: float

    def expire(self) -> None: ...


class Wheel:
    """Deadlines in slots of ``tick`` seconds, looked at by one timer (``call_at`` and
    ``clock`` are the loop's: injected, so that the policy is tested without a loop)."""

    __slots__ = ("_call_at", "_clock", "_handle", "_slots", "tick")

    def __init__(self, call_at: Callable[[float, Callable[[], None]], Any],
                 clock: Callable[[], float], tick: float = TICK) -> None:
        self._call_at = call_at
        self._clock = clock
        self.tick = tick
        self._slots: dict[int, list[Timed]] = {}
        self._handle: Any = None       # the armed loop timer, None while nothing is filed

    def add(self, item: Timed) -> None:
        """File ``item`` at its ``deadline``; set it again (to a later time or to 0) freely."""
        slot = math.ceil(item.deadline / self.tick)
        items = self._slots.get(slot)
        if items is None:
            items = self._slots[slot] = []
        items.append(item)
        if self._handle is None:
            self._arm(slot)

    def __len__(self) -> int:
        """Entries filed, stale ones (deadline since reset) included."""
        return sum(len(v) for v in self._slots.values())

    def _arm(self, slot: int) -> None:
        self._handle = self._call_at(slot * self.tick, self._turn)

    def _turn(self) -> None:
        self._handle = None
        now = self._clock()
        tick = self.tick
        for slot in sorted(s for s in self._slots if s * tick <= now):
            for item in self._slots.pop(slot):
                d = item.deadline
                if d == 0:
                    continue                  # cancelled
                if d <= now:
                    item.deadline = 0.0
                    item.expire()
                elif math.ceil(d / tick) == slot:   # slot * tick rounded just short of d
                    self._slots.setdefault(slot + 1, []).append(item)
                # else: moved to a later slot, where it is filed too
        if self._slots and self._handle is None:
            self._arm(min(self._slots))
