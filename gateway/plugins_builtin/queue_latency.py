"""``queue_latency``: scale on how long a new request would wait, not on how many wait.

The expected wait is Little's law on the version's own numbers: pending requests divided by
the answers per second (``metrics["queue_latency"]``). Above ``target_seconds`` it scales out in
proportion (twice the target -> twice the replicas, at most ``max_step`` more at once); below
``low * target_seconds`` it scales in by one. Intervals and [min, max] are the gateway's to
enforce. Config::

    autoscale:
      policy: queue_latency
      options: {target_seconds: 0.5}
"""

from __future__ import annotations

import math
from typing import Any

from gateway.plugins import register


class QueueLatency:
    """The policy object; ``scale`` is called once per autoscaler sample."""

    def __init__(self, target_seconds: float = 0.5, low: float = 0.25, max_step: int = 4) -> None:
        if target_seconds <= 0 or not 0 <= low < 1 or max_step < 1:
            raise ValueError("need target_seconds > 0, 0 <= low < 1 and max_step >= 1")
        self.target = target_seconds
        self.low = low
        self.max_step = max_step

    def scale(self, replicas: int, metrics: dict[str, Any]) -> int:
        wait = float(metrics.get("queue_latency", 0.0))
        if metrics.get("pending_requests", 0) and replicas == 0:
            return 1
        if wait > self.target:
            if math.isinf(wait):          # nothing answered yet: one more, not a flood
                return replicas + 1
            more = math.ceil(max(replicas, 1) * (wait / self.target - 1))
            return replicas + max(1, min(self.max_step, more))
        if wait < self.low * self.target and not metrics.get("pending_works", 0):
            return replicas - 1
        return replicas


@register("autoscaler", "queue_latency")
def queue_latency(target_seconds: float = 0.5, low: float = 0.25, max_step: int = 4) -> QueueLatency:
    return QueueLatency(target_seconds, low, max_step)
