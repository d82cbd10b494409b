"""Request ids and W3C traceparent (gateway/tracing.py): pure, with a seeded RNG."""

from __future__ import annotations

import random

from gateway.dataplane.proxy import request_head, response_fields
from gateway.tracing import HexPool, Ids, parse_traceparent, request_ids

TRACE = b"4bf92f3577b34da6a3ce929d0e0e4736"
SPAN = b"00f067aa0ba902b7"
TP = b"00-" + TRACE + b"-" + SPAN + b"-01"


def ids(rid: bytes | None = None, tp: bytes | None = None, seed: int = 1) -> Ids:
    """What the data plane does with the values http1 found (none: None)."""
    given = None if rid is None and tp is None else (rid, tp)
    rng = random.Random(seed)
    return request_ids(given, rng.getrandbits, HexPool(rng.getrandbits).take)


def test_parse_traceparent() -> None:
    assert parse_traceparent(TP) == (TRACE, SPAN, b"01")
    assert parse_traceparent(b" " + TP + b" ") == (TRACE, SPAN, b"01")       # OWS
    assert parse_traceparent(b"cc-" + TRACE + b"-" + SPAN + b"-01-more") == (TRACE, SPAN, b"01")
    for bad in (b"", b"00-" + TRACE + b"-" + SPAN,                     # fields missing
                b"ff-" + TRACE + b"-" + SPAN + b"-01",                  # version ff
                b"00-" + b"0" * 32 + b"-" + SPAN + b"-01",              # zero trace id
                b"00-" + TRACE + b"-" + b"0" * 16 + b"-01",             # zero parent id
                b"00-" + TRACE.upper() + b"-" + SPAN + b"-01",          # upper case
                TP + b"-extra",                                         # v00 is exact
                b"0-" + TRACE + b"-" + SPAN + b"-01"):
        assert parse_traceparent(bad) is None, bad


def test_a_new_request_gets_one_random_id_for_request_and_trace() -> None:
    a, b = ids(), ids(seed=2)
    assert len(a.request_id) == 32 and a.request_id == a.trace_id and a.parent == b""
    assert a.request_id != b.request_id
    assert a.response_line == b"X-Request-Id: " + a.request_id + b"\r\n"
    tp = a.upstream_lines.split(b"\r\n")[1]
    assert tp.startswith(b"traceparent: 00-" + a.trace_id + b"-") and tp.endswith(b"-01")
    assert parse_traceparent(tp.split(b": ")[1]) is not None


def test_the_clients_ids_are_kept_when_valid() -> None:
    got = ids(b"order-42/retry:1", TP)
    assert got.request_id == b"order-42/retry:1"
    assert (got.trace_id, got.parent, got.flags) == (TRACE, SPAN, b"01")
    assert got.upstream_lines == b"X-Request-Id: order-42/retry:1\r\ntraceparent: " + TP + b"\r\n"


def test_bad_ids_are_replaced() -> None:
    for rid in (b"", b"x" * 129, b"two words", b"a,b", b"caf\xc3\xa9", b"semi;colon"):
        got = ids(rid)
        assert got.request_id != rid and len(got.request_id) == 32, rid
    assert ids(b"x" * 128).request_id == b"x" * 128
    # a valid traceparent with a bad id: the trace is kept, the id is new (not the trace's)
    got = ids(b"no good", TP)
    assert got.trace_id == TRACE and got.request_id not in (b"no good", TRACE)


def test_the_upstream_head_carries_our_lines_instead_of_the_clients() -> None:
    got = ids(b"mine", TP)
    head = request_head(b"GET", b"/x", ((b"Host", b"h"), (b"X-Request-Id", b"mine"),
                                        (b"traceparent", TP), (b"tracestate", b"a=b")),
                        b"127.0.0.1", b"http", 0, b"svc", trace=got.upstream_lines)
    lines = head.decode().split("\r\n")
    assert [line for line in lines if line.lower().startswith("x-request-id")] == \
        ["X-Request-Id: mine"]
    assert [line for line in lines if line.lower().startswith("traceparent")] == \
        ["traceparent: " + TP.decode()]
    assert "tracestate: a=b" in lines and head.endswith(b"\r\n\r\n")


def test_a_workers_own_request_id_is_not_relayed() -> None:
    # the gateway adds the request's X-Request-Id to every answer: a worker echoing one would
    # otherwise give the client two
    assert response_fields([(b"X-Request-Id", b"w"), (b"X-Other", b"1")]) == b"X-Other: 1\r\n"


def test_new_ids_come_from_a_pool_of_random_hex() -> None:
    pool = HexPool(random.Random(3).getrandbits, ids=2)
    taken = [pool.take() for _ in range(5)]            # past the pool's end: a new draw
    assert len({rid for rid, _, _ in taken}) == 5
    for rid, line, upstream in taken:
        assert len(rid) == 32 and int(rid, 16) and line == b"X-Request-Id: %s\r\n" % rid
        tp = upstream.removeprefix(line).removeprefix(b"traceparent: ").removesuffix(b"\r\n")
        assert parse_traceparent(tp) is not None and tp.split(b"-")[1] == rid
    got = request_ids(None, take=pool.take)
    assert len(got.request_id) == 32 and got.trace_id == got.request_id
