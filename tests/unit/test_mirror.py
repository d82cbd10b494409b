"""The pure parts of mirroring: which requests are copied, admission, the verdict."""

from __future__ import annotations

from gateway.dataplane.mirror import Gate, Sampler, agrees, eligible, mirror_methods
from gateway.plugins_builtin.comparators import json_equal


def test_sampler_is_an_exact_evenly_spread_counter() -> None:
    s = Sampler(20)
    picks = [s() for _ in range(1000)]
    assert sum(picks) == 200
    assert picks[:10] == [False] * 4 + [True] + [False] * 4 + [True]
    assert sum(Sampler(100)() for _ in range(50)) == 50
    assert sum(Sampler(0)() for _ in range(50)) == 0
    s = Sampler(0.5)
    assert sum(s() for _ in range(10_000)) == 50


def test_only_safe_methods_and_small_known_bodies() -> None:
    safe, with_post = mirror_methods(False), mirror_methods(True)
    assert safe == {"GET", "HEAD"} and with_post == {"GET", "HEAD", "POST"}
    assert eligible("GET", False, None, safe, 1000)
    assert not eligible("POST", True, 10, safe, 1000)
    assert eligible("POST", True, 10, with_post, 1000)
    assert not eligible("POST", True, 1001, with_post, 1000)     # over the cap
    assert not eligible("POST", True, None, with_post, 1000)     # chunked: length unknown
    assert not eligible("DELETE", False, None, with_post, 1000)


def test_gate_admits_running_plus_queued_then_drops() -> None:
    g = Gate(concurrency=2, queue=1)
    assert [g.enter() for _ in range(4)] == [True, True, True, False]
    g.leave()
    assert g.enter() and not g.enter()


def test_verdict_needs_same_status_and_comparator_approval() -> None:
    body = b'{"predictions": [1]}'
    assert agrees(200, body, 200, b'{"predictions":[1]}', json_equal)
    assert not agrees(200, body, 500, body, json_equal)
    assert not agrees(200, body, 200, b'{"predictions": [2]}', json_equal)
    assert agrees(200, b"not json", 200, b"not json", json_equal)

    def broken(a: object, b: object) -> bool:
        raise RuntimeError("bug in a plugin")

    assert not agrees(200, body, 200, b'{"predictions": [1] }', broken)
    assert agrees(200, body, 200, body, broken)     # identical bytes: the comparator is not asked
