"""The model side of the worker: import the user's class and call its ``predict`` whatever its
kind (plain, ``async def``, generator, async generator), typed or not.

Sync code runs in a bounded thread pool so the event loop only moves bytes (probes stay fast
while the model computes); ``async def`` predict runs on the loop, as its author intends.
"""

from __future__ import annotations

import asyncio
import copy
import functools
import importlib
import threading
from collections.abc import AsyncGenerator, Callable
from concurrent.futures import ThreadPoolExecutor
from typing import Any, Protocol, TypeVar

import orjson

from gateway.worker.typed import Signature, json_default, signature_of

T = TypeVar("T")
_END = object()          # what next() gives back, in the pool, when a sync generator is done


class Model(Protocol):
    def predict(self, items: list[Any]) -> Any: ...


class ModelError(Exception):
    """The model broke the contract: wrong number of predictions, or output JSON cannot hold."""


def load_target(target: str) -> Model:
    """Import ``module:attr`` and turn it into a model: a class or factory is called with no
    arguments; an object that already has ``predict`` is used as is."""
    module_name, _, attr = target.partition(":")
    obj: Any = importlib.import_module(module_name)
    for part in attr.split("."):
        obj = getattr(obj, part)
    if isinstance(obj, type) or (callable(obj) and not hasattr(obj, "predict")):
        obj = obj()
    if not callable(getattr(obj, "predict", None)):
        raise TypeError(f"{target} gives a {type(obj).__name__} without a predict(items) method")
    model: Model = obj
    return model


def to_json(doc: Any) -> bytes:
    try:
        return orjson.dumps(doc, default=json_default, option=orjson.OPT_SERIALIZE_NUMPY)
    except TypeError as exc:     # orjson.JSONEncodeError is a TypeError
        raise ModelError(f"predictions are not JSON serializable: {exc}") from None


def check_predictions(predictions: Any, expected: int | None) -> list[Any]:
    """What ``predict`` returned must be a sequence with one prediction per instance."""
    if isinstance(predictions, (str, bytes, dict)) or not hasattr(predictions, "__len__"):
        raise ModelError(f"predict must return a list, got {type(predictions).__name__}")
    if expected is not None and len(predictions) != expected:
        raise ModelError(f"predict returned {len(predictions)} predictions for {expected} instances")
    return predictions if isinstance(predictions, list) else list(predictions)


def encode_predictions(predictions: Any, expected: int | None) -> bytes:
    """Check what ``predict`` returned and serialise ``{"predictions": ...}``."""
    if expected is not None:
        check_predictions(predictions, expected)
    return to_json({"predictions": predictions})


class Loaded:
    """A loaded model and what its ``predict`` declares (read once)."""

    def __init__(self, model: Model, name: str) -> None:
        self.model = model
        self.name = name
        self.sig: Signature = signature_of(model.predict)
        # what the Predictor calls: the model's predict, or (multiplexed) one bound to the
        # model the request chose (``with_model``)
        self.predict: Callable[..., Any] = model.predict

    def with_model(self, chosen: Any) -> Loaded:
        """This model for one request of a multiplexed worker: ``predict(items, model=chosen)``."""
        bound = copy.copy(self)
        predict: Callable[..., Any] = self.model.predict   # takes model= (not in the Protocol)
        bound.predict = functools.partial(predict, model=chosen)
        return bound


class Predictor:
    """Owns the predict thread pool; counts the pool's running calls for the drain."""

    def __init__(self, threads: int) -> None:
        self._pool = ThreadPoolExecutor(max_workers=threads, thread_name_prefix="predict")
        self._busy = 0
        self._lock = threading.Lock()

    @property
    def busy(self) -> int:
        """Calls still running in pool threads (a handler cancelled by the drain timeout
        leaves its thread running: Python threads cannot be stopped)."""
        with self._lock:
            return self._busy

    def close(self) -> None:
        self._pool.shutdown(wait=False, cancel_futures=True)

    async def _run(self, fn: Callable[..., T], *args: Any) -> T:
        def counted() -> T:
            with self._lock:
                self._busy += 1
            try:
                return fn(*args)
            finally:
                with self._lock:
                    self._busy -= 1
        return await asyncio.get_running_loop().run_in_executor(self._pool, counted)

    async def payload(self, m: Loaded, items: list[Any]) -> bytes:
        """``{"predictions": [...]}`` as bytes; validation, predict and serialisation all off
        the loop for a sync model."""
        sig = m.sig
        if not sig.is_async and not sig.streaming:
            def call() -> bytes:
                return encode_predictions(m.predict(sig.convert(items)), len(items))
            return await self._run(call)
        if sig.streaming:       # asked for JSON: the streamed items, gathered
            return to_json({"predictions": [x async for x in self.stream(m, items)]})
        return encode_predictions(await m.predict(sig.convert(items)), len(items))

    async def predictions(self, m: Loaded, items: list[Any]) -> list[Any]:
        """The predictions as Python values (for protocols that re-shape them, e.g. v2)."""
        sig = m.sig
        if sig.streaming:
            return [x async for x in self.stream(m, items)]
        if sig.is_async:
            out = await m.predict(sig.convert(items))
        else:
            out = await self._run(lambda: m.predict(sig.convert(items)))
        return check_predictions(out, len(items))

    async def stream(self, m: Loaded, items: list[Any]) -> AsyncGenerator[Any, None]:
        """Items as the model produces them: a generator's yields one by one (a sync one
        advanced in the pool, so a slow step never blocks the loop); a plain predict's
        predictions once they are all there."""
        sig = m.sig
        if not sig.streaming:
            for p in await self.predictions(m, items):
                yield p
            return
        if sig.is_async:
            agen = m.predict(sig.convert(items))
            try:
                async for x in agen:
                    yield x
            finally:
                await agen.aclose()
            return
        gen = await self._run(lambda: iter(m.predict(sig.convert(items))))
        try:
            while (x := await self._run(next, gen, _END)) is not _END:
                yield x
        finally:
            # runs the generator's own finally (frees what it holds) when the client left
            await self._run(getattr(gen, "close", lambda: None))
