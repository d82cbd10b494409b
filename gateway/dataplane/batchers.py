"""The data plane's batchers: one ``Batcher`` per (service, version) with ``batching:``."""

from __future__ import annotations

import asyncio
from collections.abc import Iterable, Iterator
from typing import Any

from gateway.dataplane.balance import ReplicaSet
from gateway.dataplane.batcher import Batcher
from gateway.dataplane.batchpolicy import BatchConfig
from gateway.metrics import Metrics, gauge
from gateway.spec.models import BatchingSpec

Key = tuple[str, str]


def batch_config(spec: BatchingSpec) -> BatchConfig:
    wait = None if spec.max_wait_ms == "adaptive" else float(spec.max_wait_ms) / 1000
    return BatchConfig(spec.max_batch_size, wait, spec.max_queue, spec.slots_per_replica,
                       spec.timeout_ms / 1000)


class Batchers:
    """One ``Batcher`` per (service, version), owned by the data plane and kept across table
    rebuilds, the way the control plane keeps ``ReplicaSet``s: a reload re-configures a batcher
    in place and never drops what it holds."""

    def __init__(self, metrics: Metrics) -> None:
        self._metrics = metrics
        self._by_key: dict[Key, Batcher] = {}
        metrics.add_gauges(self._gauges)

    def get(self, service: str, version: str, spec: BatchingSpec, replicas: ReplicaSet, *,
            target: str, host: str, request_timeout: float, retries: int) -> Batcher:
        cfg = batch_config(spec)
        b = self._by_key.get((service, version))
        if b is None:
            b = self._by_key[(service, version)] = Batcher(
                service, version, replicas, self._metrics.batch(service, version), cfg,
                target=target, host=host, request_timeout=request_timeout, retries=retries,
                timeout_header=spec.timeout_header)
        else:
            b.configure(cfg, target=target, host=host, request_timeout=request_timeout,
                        retries=retries, timeout_header=spec.timeout_header)
            b.bind(replicas)
        return b

    def retain(self, keys: Iterable[Key]) -> None:
        """Forget batchers the latest table does not use, once they hold nothing (a busy one
        finishes its work first; a table still using a forgotten one keeps working with it)."""
        keep = set(keys)
        for key, b in list(self._by_key.items()):
            if key not in keep and b.idle:
                del self._by_key[key]
                b.detach()            # its replica set counts pending without it again

    def __iter__(self) -> Iterator[Batcher]:
        return iter(self._by_key.values())

    async def shutdown(self, grace: float) -> None:
        """Every batcher: finish within ``grace``, then answer the rest with 503."""
        await asyncio.gather(*(b.close(grace) for b in self._by_key.values()))

    def _gauges(self) -> Iterable[Any]:
        batchers = list(self._by_key.values())
        yield gauge("serve_gateway_batch_queue_length", "Requests queued for a batch",
                    ["service", "version"],
                    (((b.service, b.version), b.queue.requests) for b in batchers))
        yield gauge("serve_gateway_batch_pending", "Instances queued or in flight in batches "
                    "(the autoscaler's load signal)", ["service", "version"],
                    (((b.service, b.version), b.pending_count()) for b in batchers))
