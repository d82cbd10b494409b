"""The pure batching policy, on a fake clock: sizes, waits, deadlines, cancellation, replica
choice, and the online cost fit."""

from __future__ import annotations

from dataclasses import dataclass

import pytest

from gateway.dataplane.batchpolicy import (
    DONE,
    QUEUED,
    SENT,
    ArrivalPace,
    BatchConfig,
    BatchQueue,
    CostModel,
    Entry,
    adaptive_gain,
    decide,
    ejection_ends,
    fixed_hold,
    free_slots,
    least_loaded,
)

FIXED = BatchConfig(max_batch_size=4, max_wait=0.005)
ADAPTIVE = BatchConfig(max_batch_size=4, max_wait=None)


def entry(t: float, size: int = 1, timeout: float = 10.0) -> Entry:
    return Entry(t, t + timeout, size, payload=[b"1"] * size)


def queue_of(*entries: Entry) -> BatchQueue:
    q = BatchQueue()
    for e in entries:
        q.push(e)
    return q


def pace_of(*times: float) -> ArrivalPace:
    p = ArrivalPace()
    for t in times:
        p.record(t)
    return p


def fitted(a: float, c: float) -> CostModel:
    m = CostModel()
    for b in (1, 2, 4, 8, 1, 2, 4, 8):
        m.observe(b, a + c * b)
    return m


# -- the queue --------------------------------------------------------------------------------
def test_take_is_oldest_first_and_bounded_by_instances() -> None:
    es = [entry(0.0), entry(0.1, size=2), entry(0.2), entry(0.3)]
    q = queue_of(*es)
    taken = q.take(4, now=1.0)
    assert taken.batch == es[:3] and taken.items == 4
    assert all(e.state == SENT for e in taken.batch)
    assert (q.requests, q.items) == (1, 1)
    assert q.take(4, now=1.0).batch == es[3:]
    assert not q.take(4, now=1.0).batch


def test_take_keeps_fifo_rather_than_skipping_ahead() -> None:
    a, big, c = entry(0.0), entry(0.1, size=4), entry(0.2)
    q = queue_of(a, big, c)
    assert q.take(4, 1.0).batch == [a]          # big does not fit behind a; c may not jump it
    assert q.take(4, 1.0).batch == [big]
    assert q.take(4, 1.0).batch == [c]


def test_oversized_request_goes_alone() -> None:
    huge, small = entry(0.0, size=9), entry(0.1)
    q = queue_of(huge, small)
    assert q.take(4, 1.0).batch == [huge]
    assert q.take(4, 1.0).batch == [small]


def test_solo_entries_travel_alone() -> None:
    a, b, c = entry(0.0), entry(0.1), entry(0.2)
    b.solo = True
    q = queue_of(a, b, c)
    assert q.take(4, 1.0).batch == [a]
    assert q.take(4, 1.0).batch == [b]
    assert q.take(4, 1.0).batch == [c]


def test_expired_entries_are_removed_never_sent() -> None:
    late, ok = entry(0.0, timeout=0.5), entry(0.1, timeout=5.0)
    q = queue_of(late, ok)
    taken = q.take(4, now=1.0)
    assert taken.expired == [late] and taken.batch == [ok]
    assert late.state == DONE


def test_disconnected_clients_are_dropped_at_take_and_by_sweep() -> None:
    connected = {"a": True, "b": False, "c": True}
    es = [Entry(0.0, 9.0, 1, alive=lambda k=k: connected[k]) for k in "abc"]
    q = queue_of(*es)
    assert q.sweep() == [es[1]]
    assert q.requests == 2
    connected["a"] = False
    taken = q.take(4, 1.0)
    assert taken.gone == [es[0]] and taken.batch == [es[2]]


def test_cancel_is_o1_and_only_for_queued_entries() -> None:
    a, b = entry(0.0, size=3), entry(0.1)
    q = queue_of(a, b)
    assert q.cancel(a) and not q.cancel(a)
    assert (q.requests, q.items, q.oldest()) == (1, 1, 0.1)
    taken = q.take(4, 1.0)
    assert taken.batch == [b] and not q.cancel(b)       # sent: no longer the queue's


def test_push_front_restores_order_ahead_of_newcomers() -> None:
    a, b, c = entry(0.0), entry(0.1), entry(0.2)
    q = queue_of(a, b)
    sent = q.take(4, 1.0).batch
    q.push(c)
    q.push_front(sent)
    assert all(e.state == QUEUED for e in sent)
    assert q.take(4, 1.0).batch == [a, b, c]


def test_drain_empties_the_queue() -> None:
    es = [entry(0.0), entry(0.1)]
    q = queue_of(*es)
    assert q.drain() == es and q.requests == 0 and q.oldest() is None


# -- dispatch on free capacity ----------------------------------------------------------------
@pytest.mark.parametrize("cfg", [FIXED, ADAPTIVE])
def test_idle_system_dispatches_at_once(cfg: BatchConfig) -> None:
    q = queue_of(entry(10.0))
    assert decide(10.0, cfg, q, 1, pace_of(10.0), fitted(0.002, 0.0005)).dispatch


@pytest.mark.parametrize("cfg", [FIXED, ADAPTIVE])
def test_one_closed_loop_client_never_waits(cfg: BatchConfig) -> None:
    # one client: each request arrives one round trip after the last (here 3 ms, more than the
    # 2.5 ms a batch of one takes), so nothing is worth waiting for
    times = [i * 0.003 for i in range(40)]
    q = queue_of(entry(times[-1]))
    d = decide(times[-1], cfg, q, 1, pace_of(*times), fitted(0.002, 0.0005))
    assert d.dispatch


@pytest.mark.parametrize("cfg", [FIXED, ADAPTIVE])
def test_no_free_slot_means_requests_accumulate(cfg: BatchConfig) -> None:
    q = queue_of(*(entry(0.0001 * i) for i in range(10)))
    assert decide(1.0, cfg, q, 0, pace_of(0.0), CostModel()) == decide(1.0, cfg, q, 0,
                                                                      pace_of(), CostModel())
    assert not decide(1.0, cfg, q, 0, pace_of(0.0), CostModel()).dispatch


@pytest.mark.parametrize("cfg", [FIXED, ADAPTIVE])
def test_a_full_batch_leaves_at_once(cfg: BatchConfig) -> None:
    burst = [0.00001 * i for i in range(4)]
    q = queue_of(*(entry(t) for t in burst))
    assert decide(burst[-1], cfg, q, 1, pace_of(*burst), fitted(0.002, 0.0005)).dispatch


def test_empty_queue_is_idle() -> None:
    d = decide(0.0, FIXED, BatchQueue(), 3, pace_of(0.0, 0.1), CostModel())
    assert not d.dispatch and d.wake_at is None


# -- fixed max_wait: only when the pace could fill the batch ----------------------------------
def test_fixed_holds_while_a_burst_can_fill_the_batch() -> None:
    burst = [0.0, 0.0002, 0.0004]                  # 200 us apart; one more fills the batch
    q = queue_of(*(entry(t) for t in burst))
    d = decide(0.0004, FIXED, q, 1, pace_of(*burst), CostModel())
    assert not d.dispatch
    assert d.wake_at == pytest.approx(0.0004 + 2 * 0.0002)   # look again if the pace breaks
    # the pace broke (no arrival for two gaps): go with what is there
    assert decide(0.0008, FIXED, q, 1, pace_of(*burst), CostModel()).dispatch


def test_fixed_never_holds_past_max_wait() -> None:
    times = [i * 0.0012 for i in range(4)]         # 1.2 ms gaps, batch of 8 needs 6 more
    cfg = BatchConfig(max_batch_size=8, max_wait=0.005)
    q = queue_of(*(entry(t) for t in times))
    # 6 more at 1.2 ms is 7.2 ms past the last arrival: beyond the 5 ms bound, so no hold
    assert decide(times[-1], cfg, q, 1, pace_of(*times), CostModel()).dispatch
    assert fixed_hold(0.0049, need=1, oldest=0.0, max_wait=0.005, last=0.0048, gap=0.0001) \
        == pytest.approx(0.005)
    assert fixed_hold(0.005, need=1, oldest=0.0, max_wait=0.005, last=0.0049, gap=0.0001) is None


def test_fixed_zero_wait_is_pure_greedy() -> None:
    burst = [0.0, 0.00001]
    cfg = BatchConfig(max_batch_size=4, max_wait=0.0)
    q = queue_of(*(entry(t) for t in burst))
    assert decide(0.00001, cfg, q, 1, pace_of(*burst), CostModel()).dispatch


# -- adaptive: fit a + c*b, hold while the gain beats the delay -------------------------------
def test_cost_model_recovers_a_and_c() -> None:
    a, c = fitted(0.002, 0.0005).fit()  # type: ignore[misc]
    assert a == pytest.approx(0.002) and c == pytest.approx(0.0005)


def test_cost_model_with_one_size_has_no_slope() -> None:
    m = CostModel()
    assert m.fit() is None and m.predict(4) is None
    for t in (0.003, 0.005):
        m.observe(1, t)
    a, c = m.fit()  # type: ignore[misc]
    assert c == 0.0 and 0.003 < a < 0.005


def test_cost_model_forgets_old_behaviour() -> None:
    m = fitted(0.010, 0.001)
    for _ in range(400):
        for b in (1, 4, 8):
            m.observe(b, 0.002 + 0.0005 * b)
    a, c = m.fit()  # type: ignore[misc]
    assert a == pytest.approx(0.002, rel=0.05) and c == pytest.approx(0.0005, rel=0.05)


def test_adaptive_holds_for_a_fast_stream_then_stops_when_it_stalls() -> None:
    model = fitted(0.002, 0.0005)
    worth = adaptive_gain(1, 0.002, 0.0005)              # (2a + c) / 2 = 2.25 ms
    times = [i * 0.0001 for i in range(40)]              # 100 us apart
    q = queue_of(entry(times[-1]))
    d = decide(times[-1], ADAPTIVE, q, 1, pace_of(*times), model)
    assert not d.dispatch and d.wake_at == pytest.approx(times[-1] + worth)
    assert decide(times[-1] + worth, ADAPTIVE, q, 1, pace_of(*times), model).dispatch


def test_adaptive_wants_less_as_the_batch_grows() -> None:
    assert adaptive_gain(1, 0.002, 0.0005) > adaptive_gain(3, 0.002, 0.0005) > 0
    model = fitted(0.002, 0.0005)
    times = [i * 0.0012 for i in range(40)]              # 1.2 ms apart
    one = queue_of(entry(times[-1]))
    three = queue_of(*(entry(t) for t in times[-3:]))
    # worth waiting for: 4.5 ms / 2 = 2.25 ms with one queued, 4.5 ms / 4 = 1.125 ms with three
    assert not decide(times[-1], ADAPTIVE, one, 1, pace_of(*times), model).dispatch
    assert decide(times[-1], ADAPTIVE, three, 1, pace_of(*times), model).dispatch


def test_adaptive_never_holds_longer_than_a_full_batch() -> None:
    model = fitted(0.002, 0.0005)                        # full batch of 4: 4 ms
    times = [0.0, 0.00001]
    q = queue_of(entry(0.0), entry(0.00001))
    d = decide(0.00001, ADAPTIVE, q, 1, pace_of(*times), model)
    assert d.wake_at is not None and d.wake_at <= 0.004 + 1e-12


def test_adaptive_before_any_batch_is_greedy() -> None:
    times = [0.0, 0.00001]
    q = queue_of(entry(0.00001))
    assert decide(0.00001, ADAPTIVE, q, 1, pace_of(*times), CostModel()).dispatch


# -- replica choice ---------------------------------------------------------------------------
@dataclass
class Ep:
    inflight: int = 0
    ejected_until: float = 0.0


def test_least_loaded_by_free_slots() -> None:
    eps = [Ep(2), Ep(0), Ep(1)]
    assert least_loaded(eps, slots=2, now=0.0) == 1
    assert free_slots(eps, 2, now=0.0) == 3
    assert least_loaded([Ep(2), Ep(2)], slots=2, now=0.0) is None


def test_least_loaded_rotates_ties_and_avoids_ejected() -> None:
    eps = [Ep(), Ep(), Ep()]
    assert [least_loaded(eps, 1, 0.0, start=s) for s in range(4)] == [0, 1, 2, 0]
    eps[0].ejected_until = 5.0
    assert least_loaded(eps, 1, 1.0, start=0) == 1
    eps[1].inflight = eps[2].inflight = 1
    assert least_loaded(eps, 1, 1.0) is None           # ejected: nothing until its time is up
    assert free_slots(eps, 1, now=1.0) == 0 and ejection_ends(eps, 1.0) == 5.0
    assert least_loaded(eps, 1, 6.0) == 0 and ejection_ends(eps, 6.0) is None
