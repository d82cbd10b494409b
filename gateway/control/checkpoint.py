"""Put a controller's state back as it was: what a reload that fails half-way needs."""

from __future__ import annotations

import copy
from collections.abc import Callable
from typing import TypeVar

K = TypeVar("K")
V = TypeVar("V")


def checkpoint(items: dict[K, V]) -> Callable[[], dict[K, V]]:
    """Remember ``items`` and each value's attributes now; the returned call puts every value's
    attributes back (the objects stay the same: others may hold them) and returns the mapping
    as it was."""
    saved = [(key, value, copy.copy(value)) for key, value in items.items()]

    def restore() -> dict[K, V]:
        for _, value, was in saved:
            vars(value).update(vars(was))
        return {key: value for key, value, _ in saved}
    return restore
