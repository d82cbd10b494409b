"""Version choice: exact counter split, sticky buckets that only ever move users forward."""

from __future__ import annotations

import random
from collections import Counter
from dataclasses import dataclass, field

from hypothesis import given, settings
from hypothesis import strategies as st
from multidict import CIMultiDict

from gateway.dataplane.match import Rules
from gateway.dataplane.split import (
    BUCKETS,
    BucketMap,
    TrafficPolicy,
    WeightedSplit,
    bucket_of,
    random_key,
)
from gateway.spec.models import RuleSpec, StickySpec


@dataclass
class Req:
    headers: CIMultiDict[str] = field(default_factory=CIMultiDict)


def with_cookie(cookie: str) -> Req:
    return Req(CIMultiDict({"Cookie": cookie}))


def layout(order: list[str], weights: dict[str, int]) -> list[str | None]:
    m = BucketMap(order, weights)
    return [m.version(b) for b in range(BUCKETS)]


# -- counter split ----------------------------------------------------------------------------
def test_90_10_over_10000_is_exact_and_interleaved() -> None:
    split = WeightedSplit({"v1": 90, "v2": 10})
    seq = [split.next() for _ in range(10_000)]
    assert Counter(seq) == {"v1": 9000, "v2": 1000}
    longest = max(len(run) for run in "".join("a" if v == "v1" else "b" for v in seq).split("b"))
    assert longest <= 9                     # smooth: never a burst of v1 longer than its share


def test_three_way_and_any_scale() -> None:
    split = WeightedSplit({"a": 5, "b": 3, "c": 2, "off": 0})
    assert Counter(split.next() for _ in range(1000)) == {"a": 500, "b": 300, "c": 200}
    one = WeightedSplit({"a": 0, "b": 7})
    assert one.only == "b" and one.next() == "b"
    assert WeightedSplit({"a": 0}).next() is None


# -- sticky buckets ---------------------------------------------------------------------------
def test_bucket_of_is_stable_and_spread() -> None:
    assert bucket_of("user-1") == bucket_of("user-1")
    assert bucket_of("user-1") == 3768            # pinned: must not change across releases
    rng = random.Random(7)
    counts = Counter(BucketMap(["v1", "v2"], {"v1": 90, "v2": 10}).version(
        bucket_of(f"{rng.getrandbits(64):x}")) for _ in range(20_000))
    assert abs(counts["v2"] - 2000) < 200


def test_bucket_shares_are_exact() -> None:
    counts = Counter(layout(["v1", "v2", "v3"], {"v1": 50, "v2": 30, "v3": 20}))
    assert counts == {"v1": 5000, "v2": 3000, "v3": 2000}
    counts = Counter(layout(["v1", "v2", "v3"], {"v1": 1, "v2": 0, "v3": 2}))
    assert counts == {"v1": 3333, "v3": 6667}
    assert layout(["a"], {"a": 0})[0] is None


def test_raising_v2_from_10_to_50_moves_only_v1_users() -> None:
    before = layout(["v1", "v2"], {"v1": 90, "v2": 10})
    after = layout(["v1", "v2"], {"v1": 50, "v2": 50})
    moves = Counter((a, b) for a, b in zip(before, after) if a != b)
    assert moves == {("v1", "v2"): 4000}


weights_st = st.integers(min_value=0, max_value=1000)


@settings(max_examples=60, deadline=None)
@given(w1=weights_st, w2=weights_st, w1b=weights_st, w2b=weights_st)
def test_two_versions_raising_v2_share_never_moves_anyone_back(w1: int, w2: int, w1b: int,
                                                                w2b: int) -> None:
    if w1 + w2 == 0 or w1b + w2b == 0 or w2b * (w1 + w2) < w2 * (w1b + w2b):
        return     # only changes that raise (or keep) v2's share
    before = layout(["v1", "v2"], {"v1": w1, "v2": w2})
    after = layout(["v1", "v2"], {"v1": w1b, "v2": w2b})
    assert all(a == b or (a, b) == ("v1", "v2") for a, b in zip(before, after))


@settings(max_examples=60, deadline=None)
@given(weights=st.lists(weights_st, min_size=2, max_size=5).filter(lambda w: sum(w) > 0),
       data=st.data())
def test_moving_weight_to_a_later_version_only_moves_users_forward(weights: list[int],
                                                                   data: st.DataObject) -> None:
    order = [f"v{i}" for i in range(len(weights))]
    src = data.draw(st.integers(0, len(weights) - 2))
    dst = data.draw(st.integers(src + 1, len(weights) - 1))
    amount = data.draw(st.integers(0, weights[src]))
    new = list(weights)
    new[src] -= amount
    new[dst] += amount
    before = layout(order, dict(zip(order, weights)))
    after = layout(order, dict(zip(order, new)))
    index = {v: i for i, v in enumerate(order)}
    for a, b in zip(before, after):
        assert a is not None and b is not None
        assert index[b] >= index[a]
        if a != b:          # the source lost users, the destination gained them
            assert index[a] <= dst and index[b] >= src


# -- the policy -------------------------------------------------------------------------------
RULES = Rules([RuleSpec.model_validate({"match": {"header": {"x-model-version": "v2"}},
                                        "to": "v2"})])


def policy(sticky: dict[str, object] | None, seed: int = 1) -> TrafficPolicy:
    return TrafficPolicy(["v1", "v2"], {"v1": 90, "v2": 10}, RULES,
                         StickySpec.model_validate(sticky) if sticky else None,
                         random_key(random.Random(seed)))


def test_rules_come_before_weights_and_set_no_cookie() -> None:
    p = policy({"cookie": "sgw"})
    assert p.choose(Req(CIMultiDict({"x-model-version": "v2"}))) == ("v2", None)


def test_missing_sticky_cookie_is_assigned_and_then_honoured() -> None:
    p = policy({"cookie": "sgw", "max_age": "1h"})
    version, cookie = p.choose(Req())
    assert cookie is not None
    name_value, *attrs = cookie.split("; ")
    assert name_value.startswith("sgw=") and len(name_value) == 4 + 16
    assert attrs == ["Path=/", "Max-Age=3600", "HttpOnly", "SameSite=Lax"]
    key = name_value[4:]
    assert version == BucketMap(["v1", "v2"], {"v1": 90, "v2": 10}).version(bucket_of(key))
    for _ in range(20):
        assert p.choose(with_cookie(f"other=1; sgw={key}")) == (version, None)
    assert policy({"cookie": "sgw", "max_age": "1h"}).choose(Req())[1] == cookie  # seeded RNG


def test_sticky_header_without_the_header_falls_back_to_the_counter() -> None:
    p = policy({"header": "X-User-Id"})
    counts = Counter(p.choose(Req())[0] for _ in range(100))
    assert counts == {"v1": 90, "v2": 10}
    users = [f"user-{i}" for i in range(200)]
    first = [p.choose(Req(CIMultiDict({"x-user-id": u})))[0] for u in users]
    again = [p.choose(Req(CIMultiDict({"x-user-id": u}))) for u in users]
    assert again == [(v, None) for v in first]
    assert set(first) == {"v1", "v2"}
