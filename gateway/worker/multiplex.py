"""Many models per replica (model multiplexing, as Ray Serve's ``@serve.multiplexed``).

A model class that defines ``load_model(model_id)`` is multiplexed: each request names its model
in a header (``x-model-id`` by default), the worker keeps the last ``capacity`` loaded models in
an LRU, and ``predict(items, model=...)`` gets the loaded one. ``unload_model(model_id, model)``,
when defined, is called on eviction (to free GPU memory, say).

- Loads of one id are coalesced: the first request starts the load (a task of its own, so a
  client that leaves does not cancel it), the others wait for the same result.
- A model still used by a predict when it is evicted leaves the LRU at once (new loads have
  room), but is unloaded only when its last user is done.
- Every answer carries ``x-loaded-models`` (ids held or loading, most recent first): the gateway
  learns from it which replica holds what, with no polling.
"""

from __future__ import annotations

import asyncio
import inspect
import logging
import re
import threading
from collections import OrderedDict
from collections.abc import Callable
from typing import Any

from gateway import tasks
from gateway.worker import BadInput

log = logging.getLogger("gateway.worker.multiplex")

LOADED_HEADER = "x-loaded-models"
DEFAULT_HEADER = "x-model-id"
# ids travel in a comma-separated header: no commas, no spaces, bounded length
_ID = re.compile(r"[A-Za-z0-9._:/@+-]{1,128}")


def check_id(model_id: str | None, header: str) -> str:
    """The model id of a request, or BadInput (400) saying what is wrong with it."""
    if not model_id:
        raise BadInput(f"this worker serves many models: name one in the {header} header")
    if not _ID.fullmatch(model_id):
        raise BadInput(f"{header}: {model_id[:140]!r} is not a model id (1 to 128 of "
                       "A-Z a-z 0-9 . _ : / @ + -)")
    return model_id


class _Entry:
    __slots__ = ("evicted", "users", "value")

    def __init__(self, value: Any) -> None:
        self.value = value
        self.users = 0
        self.evicted = False


class Lease:
    """One predict's hold on a loaded model: it is not unloaded before ``release``."""

    __slots__ = ("_cache", "_entry", "model_id")

    def __init__(self, cache: ModelCache, model_id: str, entry: _Entry) -> None:
        self._cache = cache
        self._entry = entry
        self.model_id = model_id

    @property
    def value(self) -> Any:
        return self._entry.value

    def release(self) -> None:
        self._cache._release(self.model_id, self._entry)    # its owner's bookkeeping


class ModelCache:
    """The LRU of loaded models of one replica; the only owner of that state."""

    def __init__(self, load: Callable[[str], Any], capacity: int,
                 unload: Callable[[str, Any], Any] | None = None) -> None:
        if capacity < 1:
            raise ValueError(f"capacity must be >= 1, got {capacity}")
        self.capacity = capacity
        self._load = load
        self._unload = unload
        self._held: OrderedDict[str, _Entry] = OrderedDict()   # least recently used first
        self._loading: dict[str, asyncio.Task[_Entry]] = {}
        self.loads = 0          # loads started (a coalesced request starts none)
        self.evictions = 0

    @classmethod
    def of(cls, model: object, capacity: int) -> ModelCache | None:
        """The cache for ``model`` when it is multiplexed (has ``load_model``), else None."""
        load = getattr(model, "load_model", None)
        if not callable(load):
            return None
        unload = getattr(model, "unload_model", None)
        return cls(load, capacity, unload if callable(unload) else None)

    def ids(self) -> list[str]:
        """Ids held or being loaded, most recently used first."""
        return [*reversed(self._held), *(i for i in self._loading if i not in self._held)]

    def header(self) -> str:
        return ",".join(self.ids())

    async def acquire(self, model_id: str) -> Lease:
        """The loaded model for the time of one predict (loading it first if needed); the
        caller must ``release`` the lease. Raises what ``load_model`` raised."""
        entry = await self._get(model_id)
        entry.users += 1
        return Lease(self, model_id, entry)

    def _release(self, model_id: str, entry: _Entry) -> None:
        entry.users -= 1
        if entry.evicted and entry.users == 0:
            self._start_unload(model_id, entry)

    async def _get(self, model_id: str) -> _Entry:
        entry = self._held.get(model_id)
        if entry is not None:
            self._held.move_to_end(model_id)
            return entry
        task = self._loading.get(model_id)
        if task is None:
            self.loads += 1
            task = self._loading[model_id] = tasks.spawn(self._load_one(model_id),
                                                         name=f"load model {model_id}")
        # shielded: a caller that leaves (client gone) must not cancel the others' load
        return await asyncio.shield(task)

    async def _load_one(self, model_id: str) -> _Entry:
        try:
            value = await _call(self._load, model_id)
        finally:
            del self._loading[model_id]
        entry = _Entry(value)
        self._held[model_id] = entry
        log.info("model %s loaded (%d held of %d)", model_id, len(self._held), self.capacity)
        while len(self._held) > self.capacity:
            old_id, old = self._held.popitem(last=False)
            self.evictions += 1
            old.evicted = True
            log.info("model %s evicted (least recently used)", old_id)
            if old.users == 0:
                self._start_unload(old_id, old)
        return entry

    def _start_unload(self, model_id: str, entry: _Entry) -> None:
        if self._unload is not None:
            tasks.spawn(self._unload_one(model_id, entry.value), name=f"unload model {model_id}")

    async def _unload_one(self, model_id: str, value: Any) -> None:
        assert self._unload is not None
        try:
            await _call(self._unload, model_id, value)
        except Exception:    # a failed unload must not take the worker down
            log.exception("unload_model(%s) failed", model_id)


async def _call(fn: Callable[..., Any], *args: Any) -> Any:
    """A hook, sync (in a thread: loads are slow) or async (on the loop)."""
    if inspect.iscoroutinefunction(fn):
        return await fn(*args)
    return await _in_daemon_thread(fn, *args)


async def _in_daemon_thread(fn: Callable[..., Any], *args: Any) -> Any:
    """``fn(*args)`` in a daemon thread of its own, as ``load()`` runs: a SIGTERM during a long
    download must not wait for it (the loop's default executor is joined at exit)."""
    loop = asyncio.get_running_loop()
    fut: asyncio.Future[Any] = loop.create_future()

    def settle(value: Any, error: BaseException | None) -> None:
        if fut.done():
            return
        if error is not None:
            fut.set_exception(error)
        else:
            fut.set_result(value)

    def run() -> None:
        try:
            result: tuple[Any, BaseException | None] = (fn(*args), None)
        except BaseException as exc:  # noqa: BLE001 (handed to the awaiting load)
            result = (None, exc)
        try:
            loop.call_soon_threadsafe(settle, *result)
        except RuntimeError:          # the loop closed: the worker is exiting
            pass

    threading.Thread(target=run, name=f"{getattr(fn, '__name__', 'hook')}{args[:1]}",
                     daemon=True).start()
    return await fut
