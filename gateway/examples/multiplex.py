"""Many small models per replica: one linear scorer per model id (think one fine-tune per
customer), chosen per request by the ``x-model-id`` header.

- ``load_model(model_id)`` builds the id's weights (deterministic from the id) after
  ``MULTIPLEX_LOAD_SECONDS`` (env, default 0.2) of pretend download;
- ``unload_model`` frees them when the worker's LRU evicts the id;
- ``predict(items, model=...)`` scores each instance (a list of numbers) with the chosen
  model and says which model and which replica answered, and how many loads and which
  unloads that replica did so far (``{"model", "replica", "score", "loads", "unloaded"}``);
  a dict instance ``{"sleep": seconds}`` holds the replica that long (to saturate it).

Serve it: ``serve-gateway worker gateway.examples.multiplex:Scorers --port 9000 --max-models 2``
then ``curl -H 'x-model-id: acme' localhost:9000/predict -d '[1, 2, 3]'``.
"""

from __future__ import annotations

import hashlib
import os
import time
from typing import Any


class Scorers:
    """A linear scorer per model id, loaded on first use."""

    def __init__(self) -> None:
        self.replica = os.environ.get("SGW_REPLICA_ID") or str(os.getpid())
        self.load_seconds = float(os.environ.get("MULTIPLEX_LOAD_SECONDS", "0.2") or 0)
        self.unloaded: list[str] = []
        self.loads = 0

    def load_model(self, model_id: str) -> dict[str, Any]:
        self.loads += 1
        time.sleep(self.load_seconds)
        digest = hashlib.sha256(model_id.encode()).digest()
        return {"id": model_id, "weights": [b / 255 for b in digest[:8]]}

    def unload_model(self, model_id: str, model: dict[str, Any]) -> None:
        model["weights"] = None           # a real one frees GPU memory here
        self.unloaded.append(model_id)

    def predict(self, items: list[Any], model: dict[str, Any]) -> list[dict[str, Any]]:
        out = []
        for item in items:
            if isinstance(item, dict) and "sleep" in item:
                time.sleep(float(item["sleep"]))
                item = item.get("x", [])
            xs = item if isinstance(item, list) else [item]
            score = sum(w * float(x) for w, x in zip(model["weights"], xs, strict=False))
            out.append({"model": model["id"], "replica": self.replica, "score": round(score, 6),
                        "loads": self.loads, "unloaded": list(self.unloaded)})
        return out
