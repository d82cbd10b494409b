from dataclasses import dataclass

from gateway.dataplane.outlier import OutlierPolicy


@dataclass
class Ep:
    fails: int = 0
    ejections: int = 0
    ejected_until: float = 0.0
    back_at: float = 0.0


def fail(policy: OutlierPolicy, ep: Ep, peers: list[Ep], now: float, times: int) -> bool:
    ejected = False
    for _ in range(times):            # every failure counts, even after an ejection
        ejected = policy.failure(ep, peers, now) or ejected
    return ejected


def test_consecutive_errors_eject_and_a_success_resets_the_count() -> None:
    p = OutlierPolicy(consecutive=3, base=10, max_time=300)
    a, b = Ep(), Ep()
    assert not fail(p, a, [a, b], 0.0, 2)
    p.success(a)
    assert not fail(p, a, [a, b], 0.0, 2)
    assert p.failure(a, [a, b], 0.0) and a.ejected_until == 10.0


def test_each_ejection_lasts_longer_up_to_the_cap_and_is_forgiven_after_a_clean_spell() -> None:
    p = OutlierPolicy(consecutive=1, base=10, max_time=25)
    a, b = Ep(), Ep()
    spans = []
    now = 0.0
    for _ in range(4):
        assert p.failure(a, [a, b], now)
        spans.append(a.ejected_until - now)
        now = a.ejected_until + 1
    assert spans == [10, 20, 25, 25]
    now = a.back_at + 26                 # longer than max_time without an error
    assert p.failure(a, [a, b], now) and a.ejected_until - now == 10


def test_the_ejected_share_is_bounded() -> None:
    p = OutlierPolicy(consecutive=1, base=10, max_percent=50)
    four = [Ep() for _ in range(4)]
    assert [p.failure(e, four, 0.0) for e in four] == [True, True, False, False]
    # the third keeps its count and goes as soon as a place is free
    assert p.failure(four[2], four, 10.5)
    one = [Ep()]
    assert not fail(p, one[0], one, 0.0, 10)          # never the only replica
    two = [Ep(), Ep()]
    assert p.allowed(2) == 1 and OutlierPolicy(max_percent=10).allowed(3) == 1
    assert OutlierPolicy(max_percent=0).allowed(10) == 0
    assert p.failure(two[0], two, 0.0) and not p.failure(two[1], two, 0.0)
