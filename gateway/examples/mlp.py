"""MLP: a numpy multilayer perceptron, 512 -> 2048 -> 2048 -> 16, float32, ReLU.

A stand-in for a real network whose cost is dominated by matrix products: a whole batch goes
through ONE matmul chain, so B instances cost far less than B single calls, which is what the
gateway's micro-batching is for. Weights are deterministic (seed 0, He-scaled normal).

Request: ``{"instances": [[512 numbers], ...]}``; response: 16 floats per instance.
Serve it: ``serve-gateway worker gateway.examples.mlp:MLP --port 9000``.
"""

from __future__ import annotations

import itertools
from typing import Any

import numpy as np

from gateway.worker import BadInput

LAYERS = (512, 2048, 2048, 16)


class MLP:
    """Three dense layers; ``load()`` builds the weights, ``predict()`` runs a batch."""

    def __init__(self) -> None:
        self.weights: list[np.ndarray] = []
        self.biases: list[np.ndarray] = []

    def load(self) -> None:
        rng = np.random.default_rng(0)
        for fan_in, fan_out in itertools.pairwise(LAYERS):
            scale = np.float32(np.sqrt(2.0 / fan_in))      # He init keeps ReLU activations O(1)
            self.weights.append(rng.standard_normal((fan_in, fan_out), dtype=np.float32) * scale)
            self.biases.append(np.zeros(fan_out, dtype=np.float32))

    def predict(self, items: list[Any]) -> list[list[float]]:
        x = self._stack(items)
        last = len(self.weights) - 1
        for i, (w, b) in enumerate(zip(self.weights, self.biases, strict=True)):
            x = x @ w + b
            if i < last:
                np.maximum(x, 0, out=x)
        out: list[list[float]] = x.tolist()
        return out

    @staticmethod
    def _stack(items: list[Any]) -> np.ndarray:
        want = f"each instance must be a list of {LAYERS[0]} numbers"
        try:
            x = np.asarray(items, dtype=np.float32)
        except (ValueError, TypeError) as exc:     # ragged lists, strings, nested dicts ...
            raise BadInput(f"{want}: {exc}") from None
        if x.ndim != 2 or x.shape[1] != LAYERS[0]:
            shape = "x".join(str(n) for n in x.shape[1:]) or "a scalar"
            raise BadInput(f"{want}; got {shape} per instance")
        return x
