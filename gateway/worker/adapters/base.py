"""What every adapter shares: settings, warm-up, and the batch path around one model call."""

from __future__ import annotations

import logging
import os
import time
from pathlib import Path
from typing import Any, ClassVar

import numpy as np

from gateway.worker.adapters import DEVICE_ENV, MODEL_ENV
from gateway.worker.adapters.arrays import InputSpec, describe, to_feeds, unstack

log = logging.getLogger("gateway.worker.adapters")


class Adapter:
    """A saved model behind the worker SDK's interface. Subclasses implement ``_open`` (read the
    file, fill ``inputs``, place the model on ``device``) and ``_run`` (one batched call)."""

    framework: ClassVar[str]

    def __init__(self, path: str | None = None, device: str | None = None) -> None:
        path = path or os.environ.get(MODEL_ENV)
        if not path:
            raise ValueError(f"no model file: pass --model PATH (or set {MODEL_ENV})")
        self.path = Path(path)
        self.requested_device = device or os.environ.get(DEVICE_ENV) or "auto"
        self.device = "cpu"
        self.inputs: list[InputSpec] = []
        self.warmup_seconds: float | None = None

    def load(self) -> None:
        if not self.path.is_file():
            raise FileNotFoundError(f"{self.framework} model file not found: {self.path}")
        started = time.monotonic()
        self._open()
        log.info("%s model %s loaded on %s in %.2fs; inputs %s", self.framework, self.path,
                 self.device, time.monotonic() - started,
                 ", ".join(f"{i.name} {describe(i.shape) if i.shape is not None else '(any shape)'}"
                           for i in self.inputs) or "(unknown)")
        self.warm_up()

    def warm_up(self) -> None:
        """One call on a zero instance before /ready: the first request otherwise pays for lazy
        initialisation (allocators, kernels, graph optimisation)."""
        example = self.example()
        if example is None:
            log.info("no warm-up call: %s does not record its input shape", self.path)
            return
        started = time.monotonic()
        self.predict([example])
        self.warmup_seconds = time.monotonic() - started
        log.info("warm-up call took %.3fs", self.warmup_seconds)

    def example(self) -> Any | None:
        """One zero instance in the form ``predict`` takes; None if a shape is unknown."""
        arrays = [spec.example() for spec in self.inputs]
        if not arrays or any(a is None for a in arrays):
            return None
        if len(arrays) == 1:
            return arrays[0]
        return {spec.name: a for spec, a in zip(self.inputs, arrays, strict=True)}

    def predict(self, items: list[Any]) -> list[Any]:
        return unstack(self._run(to_feeds(items, self.inputs)), len(items))

    def _open(self) -> None:
        raise NotImplementedError

    def _run(self, feeds: dict[str, np.ndarray]) -> Any:
        raise NotImplementedError
