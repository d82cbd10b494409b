"""The batching wire format, as pure functions on bytes.

A caller sends one instance (any JSON document) or ``{"instances": [...]}``. Its instances travel
as raw JSON texts, spliced into the worker's ``{"instances": [...]}``; the worker's
``{"predictions": [...]}`` is cut back into one ``{"predictions": [...]}`` per caller. A single
document is answered ``{"predictions": [p]}``, exactly as the worker answers it unbatched.

KServe v2 (``V2``, for a batching target ``/v2/models/{name}/infer``): a caller's input tensors
are cut along the first dimension into rows; a batch concatenates the rows of every caller into
one tensor per input, and the worker's output tensors are cut the same way and put back
together per caller. Rows batch together only when their inputs agree (names, datatypes, row
shapes): ``V2.key`` tells them apart.
"""

from __future__ import annotations

import math
import re
from collections.abc import Hashable, Iterable
from typing import Any, Protocol

import orjson

from gateway import wire_v2
from gateway.errors import BadRequest
from gateway.wire import parse_request


def split_instances(body: bytes) -> list[bytes]:
    """A caller's body -> its instances as JSON texts. A single document is kept byte for byte
    (it parsed, so it is valid JSON); ``{"instances": [...]}`` is split."""
    try:
        _, items = parse_request(body)
    except ValueError as exc:
        raise BadRequest(str(exc)) from None
    return [body] if items is None else [orjson.dumps(item) for item in items]


def timeout_from_header(value: str | None, default: float) -> float:
    """The request's own timeout (ms) may shorten the configured one, never lengthen it."""
    if value is None:
        return default
    try:
        ms = float(value)
    except ValueError:
        ms = -1.0
    if not ms > 0:
        raise BadRequest(f"request timeout header must be a positive number of ms, got {value!r}")
    return min(default, ms / 1000)


def batch_body(payloads: Iterable[list[bytes]]) -> bytes:
    """The worker's request: every caller's instances, in order."""
    return b'{"instances":[' + b",".join([p for ps in payloads for p in ps]) + b"]}"


def predictions(raw: bytes, expected: int) -> list[Any] | str:
    """The worker's predictions, or what is wrong with its answer."""
    try:
        doc = orjson.loads(raw)
    except orjson.JSONDecodeError as exc:
        return f"answer is not JSON: {exc}"
    preds = doc.get("predictions") if isinstance(doc, dict) else None
    if not isinstance(preds, list):
        return 'answer has no "predictions" list'
    if len(preds) != expected:
        return f"{len(preds)} predictions for {expected} instances"
    return preds


def answer(predictions: list[Any]) -> bytes:
    """One caller's share of the batch's predictions."""
    return orjson.dumps({"predictions": predictions})


class Wire(Protocol):
    """How one batching target's bodies are cut into instances and put back together."""

    def split(self, body: bytes) -> list[bytes]: ...
    def key(self, payload: list[bytes]) -> Hashable: ...
    def batch_body(self, payloads: Iterable[list[bytes]]) -> bytes: ...
    def predictions(self, raw: bytes, expected: int) -> list[Any] | str: ...
    def answer(self, predictions: list[Any]) -> bytes: ...


class V1:
    """``{"instances": [...]}`` -> ``{"predictions": [...]}`` (the functions above)."""

    split = staticmethod(split_instances)

    @staticmethod
    def key(payload: list[bytes]) -> Hashable:
        return None                 # any instances share a batch
    batch_body = staticmethod(batch_body)
    predictions = staticmethod(predictions)
    answer = staticmethod(answer)


_V2_INFER = re.compile(r"^/v2/models/[^/]+(/versions/[^/]+)?/infer$")


def wire_for(target: str) -> Wire:
    """The wire of a batching target: KServe v2 for ``/v2/models/{name}/infer``, else v1."""
    return V2() if _V2_INFER.match(target) else V1()


class V2:
    """KServe v2 tensors, one row of every input per instance. A row travels as the JSON text
    ``[[name, datatype, row_shape, row_data], ...]`` (one entry per input)."""

    @staticmethod
    def split(body: bytes) -> list[bytes]:
        try:
            tensors = wire_v2.tensors(orjson.loads(body))
        except orjson.JSONDecodeError as exc:
            raise BadRequest(f"body is not valid JSON: {exc}") from None
        except (ValueError, TypeError) as exc:
            raise BadRequest(str(exc)) from None
        if tensors[0].shape[0] == 0:
            raise BadRequest("the batch dimension (the first of every input's shape) is 0")
        cut = [(t, math.prod(t.shape[1:])) for t in tensors]
        return [orjson.dumps([[t.name, t.datatype, t.shape[1:], t.flat[j * n:(j + 1) * n]]
                              for t, n in cut])
                for j in range(tensors[0].shape[0])]

    @staticmethod
    def key(payload: list[bytes]) -> Hashable:
        """A caller's rows all agree (split checked them); callers with equal keys concatenate
        into one tensor per input."""
        if not payload:
            return None
        return tuple((name, dtype, tuple(shape))
                     for name, dtype, shape, _ in orjson.loads(payload[0]))

    @staticmethod
    def batch_body(payloads: Iterable[list[bytes]]) -> bytes:
        rows = [orjson.loads(r) for ps in payloads for r in ps]
        first = rows[0]
        sig = [(name, dtype, shape) for name, dtype, shape, _ in first]
        inputs = []
        for k, (name, dtype, shape) in enumerate(sig):
            data: list[Any] = []
            for row in rows:
                if len(row) != len(sig) or row[k][:3] != [name, dtype, shape]:
                    raise ValueError(f"rows differ in input {name} ({dtype} {shape}): they "
                                     "cannot share a batch (V2.key tells them apart)")
                data += row[k][3]
            inputs.append({"name": name, "datatype": dtype, "shape": [len(rows), *shape],
                           "data": data})
        return orjson.dumps({"inputs": inputs})

    @staticmethod
    def predictions(raw: bytes, expected: int) -> list[Any] | str:
        """The worker's output tensors cut into ``expected`` rows ``[model_name, [[name,
        datatype, row_shape, row_data], ...]]``, or what is wrong with its answer."""
        try:
            doc = orjson.loads(raw)
        except orjson.JSONDecodeError as exc:
            return f"answer is not JSON: {exc}"
        outputs = doc.get("outputs") if isinstance(doc, dict) else None
        if not isinstance(outputs, list) or not outputs:
            return 'answer has no "outputs" list'
        model = doc.get("model_name")
        cut = []
        for i, out in enumerate(outputs):
            try:
                t = wire_v2.output_tensor(out, f"outputs[{i}]")
            except (ValueError, TypeError) as exc:
                return str(exc)
            if t.shape[0] != expected:
                return f"output {t.name} has {t.shape[0]} rows for {expected} instances"
            cut.append((t, math.prod(t.shape[1:])))
        return [[model, [[t.name, t.datatype, t.shape[1:], t.flat[j * n:(j + 1) * n]]
                         for t, n in cut]] for j in range(expected)]

    @staticmethod
    def answer(predictions: list[Any]) -> bytes:
        model, first = predictions[0]
        outputs = []
        for k, (name, dtype, shape, _) in enumerate(first):
            data = [v for _, row in predictions for v in row[k][3]]
            outputs.append({"name": name, "datatype": dtype,
                            "shape": [len(predictions), *shape], "data": data})
        return orjson.dumps({"model_name": model, "outputs": outputs})
