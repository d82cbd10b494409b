"""Echo: returns every instance unchanged; a test double with knobs.

- a dict instance with ``"sleep": seconds`` delays the batch (a batch sleeps once, for its
  longest ``sleep``, the way one forward pass costs about the same for one item or many);
- a dict instance with ``"fail": message`` makes predict raise ``RuntimeError(message)``;
- env ``ECHO_TAG``: each dict prediction gets ``"tag": ECHO_TAG`` (tells versions apart);
- env ``ECHO_LOAD_SECONDS``: load() takes that long (exercises readiness gating);
- env ``ECHO_FAIL_EVERY`` = N: every N-th predict call raises (a bad version: 20 gives 5% 500s);
- env ``ECHO_DELAY_SECONDS``: every predict call takes that much longer (a slower version).

Serve it: ``serve-gateway worker gateway.examples.echo:Echo --port 9000``.
"""

from __future__ import annotations

import os
import time
from typing import Any


class Echo:
    """Identity model for tests and demos."""

    def __init__(self) -> None:
        self.tag: str | None = None
        self.fail_every = 0
        self.delay = 0.0
        self.calls = 0

    def load(self) -> None:
        time.sleep(float(os.environ.get("ECHO_LOAD_SECONDS", "0") or 0))
        self.tag = os.environ.get("ECHO_TAG") or None
        self.fail_every = int(os.environ.get("ECHO_FAIL_EVERY", "0") or 0)
        self.delay = float(os.environ.get("ECHO_DELAY_SECONDS", "0") or 0)

    def predict(self, items: list[Any]) -> list[Any]:
        self.calls += 1
        if self.fail_every and self.calls % self.fail_every == 0:
            raise RuntimeError(f"call {self.calls}: failing every {self.fail_every}th call")
        knobs = [item for item in items if isinstance(item, dict)]
        delay = self.delay + max((float(item["sleep"]) for item in knobs if "sleep" in item),
                                 default=0.0)
        if delay > 0:
            time.sleep(delay)
        for item in knobs:
            if "fail" in item:
                raise RuntimeError(item["fail"])
        if self.tag is None:
            return list(items)
        return [{**item, "tag": self.tag} if isinstance(item, dict) else item for item in items]
