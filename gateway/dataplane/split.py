"""Version choice inside a service.

``WeightedSplit`` spreads requests over versions by integer weights with smooth weighted
round-robin (nginx's algorithm): deterministic, so 90/10 over 10,000 requests is exactly
9,000/1,000, and interleaved rather than bursty.
"""

from __future__ import annotations

from collections.abc import Mapping


class WeightedSplit:
    """Smooth weighted round-robin over version names; versions with weight 0 get nothing."""

    __slots__ = ("names", "weights", "total", "current", "only")

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
