"""Batching-friendly conversion between JSON instances and framework arrays.

A batch of instances becomes one ndarray per model input (one model call for the batch), and the
model's batched output becomes one prediction per instance. Pure numpy: no framework imported.

The fast path is a single ``np.asarray`` over the whole batch; only when that fails, or the shape
is not the model's, are the instances looked at one by one, so that the 400 names the bad one
(the gateway's batcher then retries each caller of a batch alone: one bad instance does not fail
the others).
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np

from gateway.worker import BadInput

Shape = tuple[int | None, ...]       # one instance's shape (no batch dimension); None: any size


@dataclass(frozen=True)
class InputSpec:
    """One model input as the adapter learnt it from the saved model."""

    name: str
    dtype: np.dtype[Any] | None = None     # None: whatever numpy infers (sklearn text pipelines)
    shape: Shape | None = None             # None: unknown (TorchScript says nothing)

    def example(self) -> np.ndarray | None:
        """A zero instance for the warm-up call; None when the shape is unknown."""
        if self.shape is None:
            return None
        return np.zeros(tuple(1 if d is None else d for d in self.shape), dtype=self.dtype)


def describe(shape: Sequence[int | None]) -> str:
    return "[" + ", ".join("?" if d is None else str(d) for d in shape) + "]"


def _fits(shape: tuple[int, ...], want: Shape) -> bool:
    return len(shape) == len(want) and all(w is None or w == s for s, w in zip(shape, want, strict=True))


def _one(index: int, item: Any, spec: InputSpec, prefix: str) -> np.ndarray:
    try:
        arr = np.asarray(item, dtype=spec.dtype)
    except (ValueError, TypeError) as exc:
        kind = spec.dtype.name if spec.dtype is not None else "an"
        raise BadInput(f"{prefix}instance {index}: not {kind} array: {exc}") from None
    if spec.dtype is None and arr.dtype == object:
        raise BadInput(f"{prefix}instance {index}: ragged or mixed values; the model takes arrays")
    if spec.shape is not None and not _fits(arr.shape, spec.shape):
        raise BadInput(f"{prefix}instance {index}: shape {describe(arr.shape)}, the model takes "
                       f"{describe(spec.shape)}")
    return arr


def stack(items: Sequence[Any], spec: InputSpec, prefix: str = "") -> np.ndarray:
    """Instances -> one array of shape (len(items), *instance shape); BadInput names the first
    instance that does not fit."""
    try:
        batch = np.asarray(items, dtype=spec.dtype)
    except (ValueError, TypeError):
        batch = None                 # ragged or not numeric: find the culprit below
    if batch is not None and batch.dtype != object and batch.ndim >= 1 \
            and (spec.shape is None or _fits(batch.shape[1:], spec.shape)):
        return batch
    rows = [_one(i, item, spec, prefix) for i, item in enumerate(items)]
    for i, row in enumerate(rows):
        if row.shape != rows[0].shape:
            raise BadInput(f"{prefix}instance {i}: shape {describe(row.shape)}, instance 0 has "
                           f"{describe(rows[0].shape)}; one batch needs one shape")
    return np.stack(rows)


def to_feeds(items: Sequence[Any], inputs: Sequence[InputSpec]) -> dict[str, np.ndarray]:
    """A batch -> {input name: array}. A model with one input takes plain instances; one with
    several takes objects keyed by input name."""
    if len(inputs) == 1:
        return {inputs[0].name: stack(items, inputs[0])}
    names = [spec.name for spec in inputs]
    for i, item in enumerate(items):
        if not isinstance(item, Mapping):
            raise BadInput(f"instance {i}: the model has inputs {names}: send an object with them")
        missing = [n for n in names if n not in item]
        if missing:
            raise BadInput(f"instance {i}: missing input {', '.join(missing)} (the model has {names})")
    return {spec.name: stack([item[spec.name] for item in items], spec, f"input {spec.name}: ")
            for spec in inputs}


def unstack(output: Any, n: int) -> list[Any]:
    """A batched output (array, or a tuple / list / dict of them) -> n JSON-ready predictions."""
    if isinstance(output, Mapping):
        columns = {str(k): unstack(v, n) for k, v in output.items()}
        return [{k: col[i] for k, col in columns.items()} for i in range(n)]
    if isinstance(output, tuple) or (isinstance(output, list) and output
                                     and all(isinstance(o, np.ndarray) for o in output)):
        if len(output) == 1:
            return unstack(output[0], n)
        parts = [unstack(o, n) for o in output]
        return [[p[i] for p in parts] for i in range(n)]
    arr = np.asarray(output)
    if arr.ndim == 0 or arr.shape[0] != n:
        got = "a scalar" if arr.ndim == 0 else f"{arr.shape[0]} rows"
        raise RuntimeError(f"the model returned {got} for a batch of {n}")
    rows: list[Any] = arr.tolist()       # native floats / ints, one element per instance
    return rows
