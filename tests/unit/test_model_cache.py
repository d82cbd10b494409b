"""The worker's LRU of multiplexed models (worker/multiplex.py): coalesced loads, LRU order,
unload on eviction (deferred while a predict still uses the model), failed loads not kept.
Hooks are async and gated by events: no threads, no sleeps."""

from __future__ import annotations

import asyncio
from typing import Any

import pytest

from gateway import tasks
from gateway.worker import BadInput
from gateway.worker.multiplex import ModelCache, check_id


class Hooks:
    def __init__(self) -> None:
        self.loads: list[str] = []
        self.unloads: list[str] = []
        self.gate = asyncio.Event()
        self.gate.set()
        self.fail: set[str] = set()

    async def load_model(self, model_id: str) -> dict[str, Any]:
        self.loads.append(model_id)
        await self.gate.wait()
        if model_id in self.fail:
            raise RuntimeError(f"no weights for {model_id}")
        return {"id": model_id}

    async def unload_model(self, model_id: str, model: dict[str, Any]) -> None:
        self.unloads.append(model_id)


async def settle() -> None:
    for _ in range(5):          # let spawned load / unload tasks run
        await asyncio.sleep(0)


async def use(cache: ModelCache, model_id: str) -> Any:
    lease = await cache.acquire(model_id)
    lease.release()
    return lease.value


async def test_loads_of_one_id_are_coalesced() -> None:
    hooks = Hooks()
    hooks.gate.clear()
    cache = ModelCache.of(hooks, 2)
    assert cache is not None
    waiting = [tasks.spawn(use(cache, "a"), name="use a") for _ in range(5)]
    await settle()
    assert cache.ids() == ["a"]           # reported while loading: the gateway routes here
    hooks.gate.set()
    values = await asyncio.gather(*waiting)
    assert hooks.loads == ["a"] and all(v is values[0] for v in values)


async def test_lru_of_capacity_two_evicts_the_least_recently_used_and_unloads_it() -> None:
    hooks = Hooks()
    cache = ModelCache.of(hooks, 2)
    assert cache is not None
    for mid in ("a", "b", "a", "c"):
        await use(cache, mid)
    await settle()
    assert cache.ids() == ["c", "a"]
    assert hooks.loads == ["a", "b", "c"] and hooks.unloads == ["b"]
    assert (cache.loads, cache.evictions) == (3, 1)


async def test_a_model_in_use_is_unloaded_only_after_its_last_predict() -> None:
    hooks = Hooks()
    cache = ModelCache.of(hooks, 1)
    assert cache is not None
    lease = await cache.acquire("a")
    await use(cache, "b")                 # evicts a while a predict still holds it
    await settle()
    assert cache.ids() == ["b"] and hooks.unloads == []
    lease.release()
    await settle()
    assert hooks.unloads == ["a"]


async def test_a_failed_load_reaches_every_waiter_and_is_not_kept() -> None:
    hooks = Hooks()
    hooks.fail.add("bad")
    cache = ModelCache.of(hooks, 2)
    assert cache is not None
    results = await asyncio.gather(use(cache, "bad"), use(cache, "bad"), return_exceptions=True)
    assert all(isinstance(r, RuntimeError) for r in results)
    assert cache.ids() == [] and hooks.loads == ["bad"]
    hooks.fail.clear()
    assert await use(cache, "bad") == {"id": "bad"}       # tried again on the next request


async def test_a_caller_that_leaves_does_not_cancel_the_load_for_the_others() -> None:
    hooks = Hooks()
    hooks.gate.clear()
    cache = ModelCache.of(hooks, 2)
    assert cache is not None
    leaving = tasks.spawn(use(cache, "a"), name="use a")
    staying = tasks.spawn(use(cache, "a"), name="use a")
    await settle()
    leaving.cancel()
    await settle()
    hooks.gate.set()
    assert await staying == {"id": "a"}
    assert cache.ids() == ["a"]


def test_models_without_load_model_are_not_multiplexed() -> None:
    class Plain:
        def predict(self, items: list[Any]) -> list[Any]:
            return items
    assert ModelCache.of(Plain(), 4) is None


def test_model_ids_are_checked() -> None:
    assert check_id("acme/v2", "x-model-id") == "acme/v2"
    for bad in (None, "", "a,b", "a b", "x" * 129):
        with pytest.raises(BadInput, match="x-model-id"):
            check_id(bad, "x-model-id")


async def test_sync_hooks_run_off_the_event_loop_thread() -> None:
    import threading

    seen: list[tuple[str, bool]] = []
    unloaded = threading.Event()

    class Sync:
        def load_model(self, model_id: str) -> str:
            seen.append((model_id, threading.current_thread() is threading.main_thread()))
            if model_id == "bad":
                raise BadInput("no model named bad")
            return model_id.upper()

        def unload_model(self, model_id: str, model: str) -> None:
            unloaded.set()

    cache = ModelCache.of(Sync(), 1)
    assert cache is not None
    assert await use(cache, "a") == "A"
    with pytest.raises(BadInput):
        await use(cache, "bad")
    await use(cache, "b")                        # evicts a: unload_model in a thread
    await asyncio.get_running_loop().run_in_executor(None, unloaded.wait, 5)
    assert unloaded.is_set()
    assert seen == [("a", False), ("bad", False), ("b", False)]
