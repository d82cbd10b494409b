"""The overload bench's model: a fixed cost per call plus a cost per instance, spent asleep
(a GPU busy on someone else's behalf), so that capacity is set by the model, not by this
machine's CPUs. One predict thread per worker (the SDK default): a replica serves one call
at a time, about 10 calls/s alone (20 ms + 80 ms per instance): batching gains a little
(a batch of 8 instances costs 660 ms instead of 800 ms), as it does on a model that is
already compute bound.
"""

from __future__ import annotations

import time

CALL_S = 0.02
INSTANCE_S = 0.08


class Slow:
    def load(self) -> None:
        pass

    def predict(self, items: list) -> list:
        time.sleep(CALL_S + INSTANCE_S * len(items))
        return [0 for _ in items]
