"""Shadow-response comparators: ``(primary, shadow) -> bool`` (True = they agree).

Both arguments are the decoded JSON bodies (the raw bytes when a body is not JSON). A config
names one with ``mirror: {comparator: NAME, options: {...}}``; the options are the factory's
keyword arguments. Byte-identical bodies agree without a call: a comparator must say that a
document agrees with itself.

- ``exact``: JSON equality (``true`` is not ``1``; ``1`` equals ``1.0``; key order is ignored).
- ``numeric``: the same structure, numbers within ``tolerance`` (absolute) or ``relative``.
- ``argmax``: the same structure, and every list of numbers (scores, logits, probabilities) has
  its maximum at the same index; other scalars (ids, tags) are not compared.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from typing import Any

from gateway.plugins import register

Compare = Callable[[Any, Any], bool]
Leaf = Callable[[Any, Any], bool]


def _is_number(x: Any) -> bool:
    return isinstance(x, (int, float)) and not isinstance(x, bool)


def _same_kind(a: Any, b: Any) -> bool:
    if _is_number(a):
        return _is_number(b)
    return type(a) is type(b)


def _walk(a: Any, b: Any, leaf: Leaf, scores: Callable[[list[Any], list[Any]], bool] | None
          = None) -> bool:
    """Structural equality with pluggable leaves; ``scores`` (if set) judges lists of numbers."""
    if isinstance(a, dict):
        if not isinstance(b, dict) or a.keys() != b.keys():
            return False
        return all(_walk(v, b[k], leaf, scores) for k, v in a.items())
    if isinstance(a, list):
        if not isinstance(b, list) or len(a) != len(b):
            return False
        if scores is not None and a and all(map(_is_number, a)) and all(map(_is_number, b)):
            return scores(a, b)
        return all(_walk(x, y, leaf, scores) for x, y in zip(a, b, strict=True))
    if not _same_kind(a, b):
        return False
    return leaf(a, b)


def json_equal(a: Any, b: Any) -> bool:
    return _walk(a, b, lambda x, y: bool(x == y))


def _argmax(xs: list[float]) -> int:
    return max(range(len(xs)), key=xs.__getitem__)


@register("comparator", "exact")
def exact() -> Compare:
    return json_equal


@register("comparator", "numeric")
def numeric(tolerance: float = 1e-6, relative: float = 0.0) -> Compare:
    if tolerance < 0 or relative < 0:
        raise ValueError("tolerance and relative must be >= 0")

    def leaf(x: Any, y: Any) -> bool:
        if _is_number(x):
            return math.isclose(x, y, rel_tol=relative, abs_tol=tolerance)
        return bool(x == y)

    return lambda a, b: _walk(a, b, leaf)


@register("comparator", "argmax")
def argmax() -> Compare:
    def leaf(x: Any, y: Any) -> bool:
        return True     # outside score lists, only the structure must match

    def scores(x: list[Any], y: list[Any]) -> bool:
        return _argmax(x) == _argmax(y)

    return lambda a, b: _walk(a, b, leaf, scores)
