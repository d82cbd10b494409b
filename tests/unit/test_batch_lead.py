"""Under overload a batching queue must not send requests that cannot be answered in time."""

from gateway.dataplane.batchpolicy import BatchQueue, Entry


def test_entries_a_batch_would_answer_too_late_are_not_sent() -> None:
    q = BatchQueue()
    old = [Entry(0.0, 10.0, 1, payload=[b"1"]) for _ in range(3)]     # 0.5 s left at 9.5
    fresh = [Entry(9.0, 19.0, 1, payload=[b"1"]) for _ in range(3)]
    for e in old + fresh:
        q.push(e)
    taken = q.take(4, now=9.5, lead=0.66)       # a batch takes 0.66 s
    assert taken.expired == old and taken.batch == fresh
    assert q.requests == 0
    # without a lead the old ones would have been sent, and answered after their deadline
    q2 = BatchQueue()
    for e in [Entry(0.0, 10.0, 1, payload=[b"1"]) for _ in range(3)]:
        q2.push(e)
    assert len(q2.take(4, now=9.5).batch) == 3
