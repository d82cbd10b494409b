"""Dynamic batching decisions as pure code: the queue, the dispatch rule, the replica choice.

Nothing here touches asyncio or a clock of its own: every function takes ``now``, so unit tests
drive it with a fake clock. ``batcher.py`` owns the event loop side (futures, timers, sockets).

The rule (``decide``): a batch leaves as soon as a replica has a free slot and the queue is not
empty, oldest requests first, up to ``max_batch_size`` instances. An idle system therefore adds
no wait, and under load batches grow by themselves while every slot is busy. A free slot holds
back only when waiting is expected to pay:

- fixed ``max_wait``: only when the recent arrival pace would *fill* the batch before the oldest
  request has waited ``max_wait`` (and only while that pace lasts);
- adaptive: batch time is fitted online as ``a + c*b``; holding one more arrival gap ``g`` for
  ``q`` queued requests costs about ``(q+1)*g`` of added delay and saves a batch's fixed cost
  for the newcomer (``2a + c``, see ``adaptive_gain``), so it holds while that holds, never
  longer than one full batch takes.
"""

from __future__ import annotations

from collections import deque
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass
from typing import Any, Protocol

QUEUED, SENT, DONE = 0, 1, 2


@dataclass(frozen=True, slots=True)
class BatchConfig:
    """One version's batching settings, in seconds (the spec speaks milliseconds)."""

    max_batch_size: int = 32
    max_wait: float | None = 0.005      # None: adaptive
    max_queue: int = 1024               # queued requests; beyond: shed
    slots_per_replica: int = 1
    timeout: float = 10.0               # per request, from arrival


class Entry:
    """One caller's request: ``size`` instances, a deadline, and whatever the batcher attaches
    (``payload``: the serialized instances; ``waiter``: its future)."""

    __slots__ = (
        "alive",
        "arrival",
        "attempts",
        "deadline",
        "payload",
        "rid",
        "size",
        "solo",
        "state",
        "timer",
        "waiter",
    )

    def __init__(self, arrival: float, deadline: float, size: int, payload: Any = None,
                 alive: Callable[[], bool] | None = None) -> None:
        self.arrival = arrival
        self.deadline = deadline
        self.size = size
        self.payload = payload
        self.rid = b""              # the caller's request id (the batch carries them all)
        self.alive = alive          # False once the client has disconnected
        self.waiter: Any = None
        self.timer: Any = None
        self.state = QUEUED
        self.solo = False           # must travel alone (isolating a bad input)
        self.attempts = 0


@dataclass(slots=True)
class Taken:
    """What ``BatchQueue.take`` removed: the batch, plus entries dropped on the way."""

    batch: list[Entry]
    expired: list[Entry]
    gone: list[Entry]

    @property
    def items(self) -> int:
        return sum(e.size for e in self.batch)


class BatchQueue:
    """FIFO of waiting requests with O(1) cancellation (entries are marked, skipped later)."""

    def __init__(self) -> None:
        self._q: deque[Entry] = deque()
        self.requests = 0
        self.items = 0

    def __len__(self) -> int:
        return self.requests

    def push(self, entry: Entry) -> None:
        entry.state = QUEUED
        self._q.append(entry)
        self.requests += 1
        self.items += entry.size

    def push_front(self, entries: Sequence[Entry]) -> None:
        """Put entries back at the head, in their order (a batch that never reached a worker)."""
        for entry in reversed(entries):
            entry.state = QUEUED
            self._q.appendleft(entry)
            self.requests += 1
            self.items += entry.size

    def cancel(self, entry: Entry) -> bool:
        """Remove a queued entry (deadline, disconnect, shutdown); False if it was not queued."""
        if entry.state != QUEUED:
            return False
        entry.state = DONE
        self.requests -= 1
        self.items -= entry.size
        return True

    def _head(self) -> Entry | None:
        q = self._q
        while q and q[0].state != QUEUED:
            q.popleft()
        return q[0] if q else None

    def oldest(self) -> float | None:
        head = self._head()
        return head.arrival if head is not None else None

    def take(self, max_items: int, now: float, lead: float = 0.0) -> Taken:
        """Oldest first, up to ``max_items`` instances (one oversized request goes alone; a
        ``solo`` entry goes alone). Entries past their deadline, or within ``lead`` of it (the
        time a batch takes: it would come back too late), or whose client left are removed
        and returned apart: they are never sent. Under overload the queue's head is always
        old; sending it anyway fills every slot with batches nobody waits for."""
        out = Taken([], [], [])
        items = 0
        while (head := self._head()) is not None:
            late = head.deadline <= now + lead
            if late or (head.alive is not None and not head.alive()):
                self.cancel(head)
                (out.expired if late else out.gone).append(head)
                continue
            if out.batch and (head.solo or out.batch[0].solo or items + head.size > max_items):
                break
            self._q.popleft()
            head.state = SENT
            self.requests -= 1
            self.items -= head.size
            out.batch.append(head)
            items += head.size
            if items >= max_items:
                break
        return out

    def sweep(self) -> list[Entry]:
        """Remove every queued entry whose client has left (before shedding a newcomer)."""
        gone = [e for e in self._q if e.state == QUEUED and e.alive is not None and not e.alive()]
        for e in gone:
            self.cancel(e)
        return gone

    def drain(self) -> list[Entry]:
        """Remove and return everything still queued (shutdown)."""
        out = [e for e in self._q if e.state == QUEUED]
        for e in out:
            self.cancel(e)
        self._q.clear()
        return out


class ArrivalPace:
    """Mean gap between the last ``window`` arrivals. A lull is part of the window, so one lone
    request after a quiet spell never looks like a burst."""

    def __init__(self, window: int = 32) -> None:
        self._times: deque[float] = deque(maxlen=window)

    def record(self, now: float) -> None:
        self._times.append(now)

    @property
    def last(self) -> float | None:
        return self._times[-1] if self._times else None

    def gap(self) -> float | None:
        t = self._times
        if len(t) < 2:
            return None
        return (t[-1] - t[0]) / (len(t) - 1)


class CostModel:
    """Online least-squares fit of batch time ``t = a + c*b`` with exponential forgetting.

    With one batch size seen so far the slope is unknowable: then ``c = 0`` and ``a`` is the
    mean time, which errs towards dispatching (the safe side: no idle wait)."""

    def __init__(self, decay: float = 0.98) -> None:
        self.decay = decay
        self._w = self._b = self._bb = self._t = self._bt = 0.0

    def observe(self, size: int, seconds: float) -> None:
        d = self.decay
        self._w = self._w * d + 1.0
        self._b = self._b * d + size
        self._bb = self._bb * d + size * size
        self._t = self._t * d + seconds
        self._bt = self._bt * d + size * seconds

    def fit(self) -> tuple[float, float] | None:
        """(a, c), both >= 0; None before the first observation."""
        if self._w <= 0:
            return None
        mean_b, mean_t = self._b / self._w, self._t / self._w
        var = self._bb / self._w - mean_b * mean_b
        c = 0.0
        if var > 1e-9 * max(1.0, mean_b * mean_b):
            c = max(0.0, (self._bt / self._w - mean_b * mean_t) / var)
        a = mean_t - c * mean_b
        if a < 0:               # a line through the origin is the best non-negative fit
            a, c = 0.0, mean_t / mean_b if mean_b else 0.0
        return a, c

    def predict(self, size: int) -> float | None:
        f = self.fit()
        return None if f is None else f[0] + f[1] * size


@dataclass(frozen=True, slots=True)
class Decision:
    """Send a batch now, or look again at ``wake_at`` (None: on the next event only)."""

    dispatch: bool
    wake_at: float | None = None


DISPATCH = Decision(True)
IDLE = Decision(False)


def decide(now: float, cfg: BatchConfig, queue: BatchQueue, free_slots: int,
           pace: ArrivalPace, model: CostModel) -> Decision:
    """Whether a free slot takes a batch now. Pure: all state comes in as arguments."""
    oldest = queue.oldest()
    if oldest is None or free_slots <= 0:
        return IDLE
    if queue.items >= cfg.max_batch_size:
        return DISPATCH
    last, gap = pace.last, pace.gap()
    if last is None or gap is None:
        return DISPATCH
    if cfg.max_wait is not None:
        hold = fixed_hold(now, cfg.max_batch_size - queue.items, oldest, cfg.max_wait, last, gap)
    else:
        hold = adaptive_hold(now, queue.requests, oldest, cfg.max_batch_size, last, gap,
                             model.fit())
    return DISPATCH if hold is None or hold <= now else Decision(False, hold)


def fixed_hold(now: float, need: int, oldest: float, max_wait: float, last: float,
               gap: float) -> float | None:
    """Hold until when, or None: only while ``need`` more arrivals at the recent pace fill the
    batch before the oldest has waited ``max_wait``, and only until the pace breaks (no
    arrival for two gaps)."""
    bound = oldest + max_wait
    if now >= bound or last + need * gap > bound or now - last >= 2 * gap:
        return None
    return min(bound, last + 2 * gap)


def adaptive_gain(queued: int, a: float, c: float) -> float:
    """Largest arrival gap worth waiting for with ``queued`` requests held.

    Waiting a gap ``g`` delays the ``queued`` requests (and the newcomer) by about ``g`` each.
    Not waiting sends the newcomer behind this batch (``a + c*queued`` of slot time, minus the
    gap) and then in a batch of its own (``a + c``): holding wins while
    ``(queued + 1) * g < 2a + c`` (the ``c*queued`` terms cancel)."""
    return (2 * a + c) / (queued + 1)


def adaptive_hold(now: float, queued: int, oldest: float, max_batch: int, last: float,
                  gap: float, fit: tuple[float, float] | None) -> float | None:
    """Hold until when, or None: while the next arrival is expected sooner than the gap worth
    waiting for. Time since the last arrival counts as a gap too, so a stalled stream stops
    the hold by itself; one full batch's time caps it."""
    if fit is None:
        return None
    a, c = fit
    worth = adaptive_gain(queued, a, c)
    if max(gap, now - last) >= worth:
        return None
    return min(oldest + a + c * max_batch, last + worth)


class SlotHolder(Protocol):
    """What the replica choice needs of an endpoint (``balance.Endpoint`` fits)."""

    inflight: int
    ejected_until: float


def free_slots(endpoints: Iterable[SlotHolder], slots: int, now: float) -> int:
    """Free batch slots over the endpoints not ejected."""
    return sum(max(0, slots - e.inflight) for e in endpoints if e.ejected_until <= now)


def least_loaded(endpoints: Sequence[SlotHolder], slots: int, now: float,
                 start: int = 0) -> int | None:
    """Index of the endpoint with the most free slots (ties: the first from ``start``, which
    the caller rotates to spread idle-time batches). Ejected endpoints (a connect failed) get
    nothing until their time is up: queued requests wait for them, or for a new replica,
    within their deadline, rather than fail on a replica known to refuse."""
    best: int | None = None
    n = len(endpoints)
    for k in range(n):
        i = (start + k) % n
        e = endpoints[i]
        if e.inflight >= slots or e.ejected_until > now:
            continue
        if best is None or e.inflight < endpoints[best].inflight:
            best = i
    return best


def ejection_ends(endpoints: Iterable[SlotHolder], now: float) -> float | None:
    """When the first ejected endpoint may be tried again, if any is ejected."""
    ends = [e.ejected_until for e in endpoints if e.ejected_until > now]
    return min(ends) if ends else None
