"""Typed inputs and outputs: what ``predict``'s annotations say, turned into validation.

``predict(self, items: list[Item])`` with a pydantic model (or any type pydantic validates,
e.g. ``dict[str, float]``) gets each instance validated and converted; ``predict(self, batch:
np.ndarray)`` gets the instances stacked into one array (``Annotated[np.ndarray, Array(dtype=
"float32", shape=(512,))]`` fixes the per-instance dtype and shape); ``list[np.ndarray]`` gets
one array per instance. The return annotation (``list[Out]``, or ``Iterator[Out]`` for a
streaming predict) documents the outputs; pydantic outputs are serialised by ``to_json``.

A request with a bad instance is refused whole (the model is not called): one ``Problem`` per
bad field names the instance index and the field, so the caller can fix every one at once. The
gateway's batcher sends each caller's instances again alone when a batch is refused, so only
the caller who sent the bad instance sees the error.
"""

from __future__ import annotations

import collections.abc as cabc
import inspect
import typing
from dataclasses import dataclass
from typing import Any

from pydantic import TypeAdapter, ValidationError

from gateway.worker import Array


@dataclass(frozen=True)
class Problem:
    """One bad field of one instance."""

    index: int
    field: str
    detail: str

    def as_dict(self) -> dict[str, Any]:
        return {"index": self.index, "field": self.field, "detail": self.detail}


class InvalidInstances(Exception):
    """Some instances do not match the item type; ``problems`` says which and where."""

    def __init__(self, problems: list[Problem]) -> None:
        self.problems = problems
        shown = "; ".join(f"instance {p.index}: {p.field or '(the instance)'}: {p.detail}"
                          for p in problems[:5])
        more = f" (and {len(problems) - 5} more)" if len(problems) > 5 else ""
        super().__init__(shown + more)


class _Codec(typing.Protocol):
    def convert(self, items: list[Any]) -> Any: ...
    def schema(self) -> dict[str, Any]: ...


class PydanticItems:
    """Each instance through a pydantic ``TypeAdapter``."""

    def __init__(self, item_type: Any) -> None:
        self.adapter: TypeAdapter[Any] = TypeAdapter(item_type)

    def convert(self, items: list[Any]) -> list[Any]:
        out: list[Any] = []
        problems: list[Problem] = []
        for i, item in enumerate(items):
            try:
                out.append(self.adapter.validate_python(item))
            except ValidationError as exc:
                problems += [Problem(i, ".".join(str(p) for p in err["loc"]), err["msg"])
                             for err in exc.errors()]
        if problems:
            raise InvalidInstances(problems)
        return out

    def schema(self) -> dict[str, Any]:
        return self.adapter.json_schema()


class ArrayItems:
    """Each instance as a numpy array of the declared dtype and shape; ``stack`` makes the
    batch one array (one forward pass), else a list of arrays."""

    def __init__(self, spec: Array, stack: bool) -> None:
        self.spec = spec
        self.stack = stack

    def convert(self, items: list[Any]) -> Any:
        import numpy as np

        arrays: list[Any] = []
        problems: list[Problem] = []
        want = self.spec.shape
        for i, item in enumerate(items):
            try:
                arr = np.asarray(item, dtype=self.spec.dtype)
            except (ValueError, TypeError) as exc:      # ragged lists, strings for numbers ...
                problems.append(Problem(i, "", f"not an array of {self.spec.dtype or 'numbers'}: "
                                               f"{exc}"))
                continue
            if arr.dtype == object:
                problems.append(Problem(i, "", "not a rectangular array of numbers"))
            elif want is not None and (arr.ndim != len(want) or any(
                    w is not None and w != n for w, n in zip(want, arr.shape, strict=True))):
                problems.append(Problem(i, "", f"shape {_shape_text(arr.shape)}, expected "
                                               f"{_shape_text(want)}"))
            arrays.append(arr)
        if problems:
            raise InvalidInstances(problems)
        if self.stack:
            if len({a.shape for a in arrays}) > 1:
                raise InvalidInstances([Problem(i, "", f"shape {_shape_text(a.shape)} differs "
                                                       f"from instance 0's")
                                        for i, a in enumerate(arrays) if a.shape != arrays[0].shape])
            return np.stack(arrays)
        return arrays

    def schema(self) -> dict[str, Any]:
        number: dict[str, Any] = {"type": "integer"} if (self.spec.dtype or "").startswith(
            ("int", "uint")) else {"type": "number"}
        if self.spec.shape is None:
            return {"description": f"an array of {self.spec.dtype or 'numbers'} (nested lists)"}
        out = number
        for n in reversed(self.spec.shape):
            out = {"type": "array", "items": out}
            if n is not None:
                out["minItems"] = out["maxItems"] = n
        return out


@dataclass(frozen=True)
class Signature:
    """What ``predict`` declares. ``items`` None: instances pass as they are (untyped)."""

    items: _Codec | None = None
    output: TypeAdapter[Any] | None = None     # of ONE prediction (or streamed item): docs only
    streaming: bool = False                     # a generator: yields items to stream
    is_async: bool = False

    def convert(self, items: list[Any]) -> Any:
        return items if self.items is None else self.items.convert(items)

    def input_schema(self) -> dict[str, Any]:
        return self.items.schema() if self.items is not None else {}

    def output_schema(self) -> dict[str, Any]:
        return self.output.json_schema(mode="serialization") if self.output is not None else {}


def json_default(value: Any) -> Any:
    """orjson's fallback: pydantic models (predictions, or inside them) as JSON data."""
    dump = getattr(value, "model_dump", None)
    if callable(dump):
        return dump(mode="json")
    raise TypeError(f"Type is not JSON serializable: {type(value).__name__}")


def signature_of(predict: Any) -> Signature:
    """Read ``predict``'s annotations (a bound method or function). Unknown or missing hints
    mean untyped, never an error: every model that worked before still works."""
    fn = inspect.unwrap(predict)
    streaming = inspect.isgeneratorfunction(fn) or inspect.isasyncgenfunction(fn)
    is_async = inspect.iscoroutinefunction(fn) or inspect.isasyncgenfunction(fn)
    try:
        hints = typing.get_type_hints(fn, include_extras=True)
    except Exception:  # noqa: BLE001 (a hint naming something the module cannot resolve)
        hints = {}
    params = [p for p in inspect.signature(predict).parameters.values()
              if p.kind in (p.POSITIONAL_ONLY, p.POSITIONAL_OR_KEYWORD)]
    items = _items_codec(hints.get(params[0].name)) if params else None
    out_hint = hints.get("return")
    output = _output_adapter(out_hint, streaming)
    return Signature(items, output, streaming, is_async)


def _items_codec(hint: Any) -> _Codec | None:
    if hint is None or hint is Any:
        return None
    array = _array_spec(hint)
    if array is not None:
        return ArrayItems(array, stack=True)
    origin = typing.get_origin(hint)
    if origin in (list, cabc.Sequence, cabc.Iterable, typing.Sequence):
        (inner,) = typing.get_args(hint) or (Any,)
        if inner is Any:
            return None
        array = _array_spec(inner)
        if array is not None:
            return ArrayItems(array, stack=False)
        return PydanticItems(inner)
    return None


def _array_spec(hint: Any) -> Array | None:
    """``np.ndarray`` (or ``Annotated[np.ndarray, Array(...)]``) -> its Array spec."""
    extra: tuple[Any, ...] = ()
    if typing.get_origin(hint) is typing.Annotated:
        hint, *rest = typing.get_args(hint)
        extra = tuple(rest)
    base = typing.get_origin(hint) or hint
    if getattr(base, "__name__", None) != "ndarray" or getattr(base, "__module__", "") != "numpy":
        return None
    return next((e for e in extra if isinstance(e, Array)), Array())


def _output_adapter(hint: Any, streaming: bool) -> TypeAdapter[Any] | None:
    if hint is None or hint is Any:
        return None
    origin = typing.get_origin(hint)
    args = typing.get_args(hint)
    containers = (cabc.Iterator, cabc.AsyncIterator, cabc.Generator, cabc.AsyncGenerator,
                  cabc.Iterable, cabc.AsyncIterable) if streaming else (list, cabc.Sequence)
    if origin not in containers or not args or args[0] is Any or _array_spec(args[0]):
        return None
    try:
        return TypeAdapter(args[0])
    except Exception:  # noqa: BLE001 (not a type pydantic knows: left undocumented)
        return None


def _shape_text(shape: tuple[int | None, ...]) -> str:
    return "(" + ", ".join("*" if n is None else str(n) for n in shape) + \
        ("," if len(shape) == 1 else "") + ")"
