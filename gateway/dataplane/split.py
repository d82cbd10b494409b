"""Version choice inside a service: explicit rules first, then weights.

Weights are split two ways:

- without a sticky key, ``WeightedSplit`` spreads requests by smooth weighted round-robin
  (nginx's algorithm): deterministic, so 90/10 over 10,000 requests is exactly 9,000/1,000, and
  interleaved rather than bursty;
- with a sticky key (a cookie or a header), the key hashes to one of ``BUCKETS`` buckets and
  ``BucketMap`` maps bucket ranges to versions by cumulative weight in the *config's version
  order* (old to new). Moving weight towards later versions only moves boundaries down, so a
  user only ever moves forward (v1 -> v2), never back, and with two versions raising v2 moves
  exactly the users between the old and the new boundary.

When the sticky key is a cookie the client lacks, the gateway draws a random key (from an
injected generator), routes by it and asks for a ``Set-Cookie`` so the browser stays put.
Everything here is pure apart from the counters, and takes its randomness as an argument.
"""

from __future__ import annotations

import hashlib
import random
from bisect import bisect_right
from collections.abc import Callable, Mapping, Sequence

from gateway.dataplane.match import NO_COOKIES, RequestView, Rules, parse_cookies
from gateway.spec.models import StickySpec

BUCKETS = 10_000


class WeightedSplit:
    """Smooth weighted round-robin over version names; versions with weight 0 get nothing."""

    __slots__ = ("current", "names", "only", "total", "weights")

    def __init__(self, weights: Mapping[str, int]) -> None:
        live = [(n, w) for n, w in weights.items() if w > 0]
        self.names = [n for n, _ in live]
        self.weights = [w for _, w in live]
        self.total = sum(self.weights)
        self.current = [0] * len(live)
        self.only = self.names[0] if len(live) == 1 else None

    def next(self) -> str | None:
        if self.only is not None:
            return self.only
        if not self.names:
            return None
        cur, weights = self.current, self.weights
        best = 0
        for i, w in enumerate(weights):
            cur[i] += w
            if cur[i] > cur[best]:
                best = i
        cur[best] -= self.total
        return self.names[best]


def bucket_of(key: str) -> int:
    """A stable bucket for a sticky key: the same on every gateway, restart and Python."""
    digest = hashlib.blake2b(key.encode("utf-8", "surrogatepass"), digest_size=8).digest()
    return int.from_bytes(digest, "big") % BUCKETS


class BucketMap:
    """Buckets ``[0, BUCKETS)`` -> versions, by cumulative weight in a fixed version order."""

    __slots__ = ("bounds", "names")

    def __init__(self, order: Sequence[str], weights: Mapping[str, int]) -> None:
        live = [(n, weights.get(n, 0)) for n in order if weights.get(n, 0) > 0]
        total = sum(w for _, w in live)
        self.names = tuple(n for n, _ in live)
        bounds, cum = [], 0
        for _, w in live:
            cum += w
            # floor keeps each boundary monotone in its cumulative share: a smaller share never
            # yields a higher boundary, which is what makes moves one-directional
            bounds.append(cum * BUCKETS // total)
        self.bounds = tuple(bounds)

    def version(self, bucket: int) -> str | None:
        if not self.names:
            return None
        return self.names[bisect_right(self.bounds, bucket)]


def random_key(rng: random.Random) -> Callable[[], str]:
    """Sticky cookie values: 64 random bits as hex (a bucket key, not a secret)."""
    return lambda: f"{rng.getrandbits(64):016x}"


class TrafficPolicy:
    """A service's version choice: rules, then sticky buckets or smooth weighted round-robin.

    ``choose`` returns ``(version or None, Set-Cookie value or None)``; None as the version
    means every weight is 0.
    """

    __slots__ = (
        "_cookie_attrs",
        "_cookies",
        "_new_key",
        "buckets",
        "cookie",
        "header",
        "rules",
        "split",
    )

    def __init__(self, order: Sequence[str], weights: Mapping[str, int], rules: Rules,
                 sticky: StickySpec | None = None,
                 new_key: Callable[[], str] | None = None) -> None:
        self.rules = rules
        self.split = WeightedSplit({n: weights.get(n, 0) for n in order if n in weights})
        self.buckets = BucketMap(order, weights)
        self.cookie = sticky.cookie if sticky else None
        self.header = sticky.header.lower() if sticky and sticky.header else None
        self._cookies = rules.cookies or self.cookie is not None
        max_age = int(sticky.max_age) if sticky else 0
        self._cookie_attrs = f"; Path=/; Max-Age={max_age}; HttpOnly; SameSite=Lax"
        self._new_key = new_key or random_key(random.Random())

    @property
    def sticky(self) -> bool:
        return self.cookie is not None or self.header is not None

    def choose(self, request: RequestView) -> tuple[str | None, str | None]:
        headers = request.headers
        cookies = parse_cookies(headers.get("cookie")) if self._cookies else NO_COOKIES
        if self.rules:
            to = self.rules.first(headers, cookies)
            if to is not None:
                return to, None
        cookie = self.cookie
        if cookie is not None:
            key = cookies.get(cookie)
            if not key:
                key = self._new_key()
                return self.buckets.version(bucket_of(key)), f"{cookie}={key}{self._cookie_attrs}"
            return self.buckets.version(bucket_of(key)), None
        if self.header is not None:
            key = headers.get(self.header)
            if key:
                return self.buckets.version(bucket_of(key)), None
        return self.split.next(), None   # no sticky key: the deterministic counter
