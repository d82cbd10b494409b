"""KServe v2 / Open Inference Protocol tensors <-> the instances ``predict`` takes (shared by
the worker SDK and the gateway's batcher).

A v2 request carries named tensors ``{"name", "shape", "datatype", "data"}``, ``data`` in
row-major order (flat, or nested as the JSON form allows). Instances are the rows along the
first dimension: with one input tensor an instance is its row (a scalar for a 1-d tensor, else
nested lists); with several, a dict ``{input name: row}``, so a typed model's fields can be
the input names. Predictions go back the same way: dict predictions give one output tensor
per key, anything else one tensor ``output_0``; shapes are ``[batch, *row shape]``.

Pure functions: errors are ``ValueError`` (``TypeError`` for a wrong JSON type) with a message
fit for a 400.
"""

from __future__ import annotations

import math
from typing import Any, NamedTuple

INTS = {"UINT8", "UINT16", "UINT32", "UINT64", "INT8", "INT16", "INT32", "INT64"}
FLOATS = {"FP16", "FP32", "FP64", "BF16"}
DATATYPES = INTS | FLOATS | {"BOOL", "BYTES"}
_NUMPY = {"bool": "BOOL", "float16": "FP16", "float32": "FP32", "float64": "FP64",
          **{t.lower(): t for t in INTS}, "object": "BYTES"}


class Tensor(NamedTuple):
    name: str
    datatype: str
    shape: list[int]
    flat: list[Any]          # row-major


def tensors(doc: Any) -> list[Tensor]:
    """A v2 infer request body (parsed JSON) -> its input tensors, checked: names, datatypes,
    shapes that hold their data, one batch dimension for all."""
    if not isinstance(doc, dict) or not isinstance(doc.get("inputs"), list) or not doc["inputs"]:
        raise ValueError('a v2 infer request needs "inputs": a non-empty list of tensors')
    out: list[Tensor] = []
    for i, t in enumerate(doc["inputs"]):
        tensor = _tensor(t, f"inputs[{i}]")
        if out and tensor.shape[0] != out[0].shape[0]:
            raise ValueError(f"inputs[{i}] ({tensor.name}): batch dimension {tensor.shape[0]}, "
                             f"but the first input's is {out[0].shape[0]}")
        out.append(tensor)
    return out


def instances(doc: Any) -> list[Any]:
    """A v2 infer request body (parsed JSON) -> one instance per row of the batch dimension."""
    ts = tensors(doc)
    rows = {t.name: _rows(t.flat, t.shape) for t in ts}
    if len(rows) == 1:
        return next(iter(rows.values()))
    return [{name: r[j] for name, r in rows.items()} for j in range(ts[0].shape[0])]


def _tensor(t: Any, where: str) -> Tensor:
    if not isinstance(t, dict):
        raise TypeError(f"{where} must be an object with name, shape, datatype and data")
    name, shape, dtype, data = t.get("name"), t.get("shape"), t.get("datatype"), t.get("data")
    if not isinstance(name, str) or not name:
        raise ValueError(f"{where}.name must be a non-empty string")
    where = f"{where} ({name})"
    if not isinstance(shape, list) or not shape or not all(
            isinstance(n, int) and not isinstance(n, bool) and n >= 0 for n in shape):
        raise ValueError(f"{where}.shape must be a non-empty list of non-negative integers, "
                         f"got {shape!r}")
    if dtype not in DATATYPES:
        raise ValueError(f"{where}.datatype must be one of {', '.join(sorted(DATATYPES))}, "
                         f"got {dtype!r}")
    if not isinstance(data, list):
        raise TypeError(f"{where}.data must be a list")
    flat = flatten(data)
    if len(flat) != math.prod(shape):
        raise ValueError(f"{where}: shape {shape} holds {math.prod(shape)} values, data has "
                         f"{len(flat)}")
    for k, v in enumerate(flat):
        if not _fits(dtype, v):
            raise ValueError(f"{where}.data[{k}]: {v!r} is not a {dtype} value")
    return Tensor(name, dtype, shape, flat)


def output_tensor(t: Any, where: str) -> Tensor:
    """An output tensor of a worker's answer, checked as an input would be."""
    return _tensor(t, where)


def _fits(dtype: str, v: Any) -> bool:
    if dtype == "BOOL":
        return isinstance(v, bool)
    if dtype == "BYTES":
        return isinstance(v, str)
    if isinstance(v, bool):
        return False
    if dtype in INTS:
        return isinstance(v, int) and (v >= 0 or not dtype.startswith("U"))
    return isinstance(v, (int, float))


def flatten(data: list[Any]) -> list[Any]:
    out: list[Any] = []
    stack = [iter(data)]
    while stack:
        for v in stack[-1]:
            if isinstance(v, list):
                stack.append(iter(v))
                break
            out.append(v)
        else:
            stack.pop()
    return out


def _rows(flat: list[Any], shape: list[int]) -> list[Any]:
    """Row-major flat data -> ``shape[0]`` nested rows of ``shape[1:]``."""
    def build(offset: int, dims: list[int]) -> Any:
        if not dims:
            return flat[offset]
        step = math.prod(dims[1:])
        return [build(offset + k * step, dims[1:]) for k in range(dims[0])]
    row = math.prod(shape[1:])
    return [build(j * row, shape[1:]) for j in range(shape[0])]


def outputs(predictions: list[Any], wanted: list[str] | None = None) -> list[dict[str, Any]]:
    """Predictions (one per instance) -> v2 output tensors. Raises ValueError when they cannot
    form a tensor (rows of different shapes, mixed types): a contract error of the model."""
    if predictions and all(isinstance(p, dict) for p in predictions):
        names = list(predictions[0])
        columns = {n: [p.get(n) for p in predictions] for n in names}
    else:
        columns = {"output_0": list(predictions)}
    if wanted:
        missing = [n for n in wanted if n not in columns]
        if missing:
            raise LookupError(f"no output named {', '.join(missing)} (outputs: "
                              f"{', '.join(columns)})")
        columns = {n: columns[n] for n in wanted}
    return [_output(name, rows) for name, rows in columns.items()]


def _output(name: str, rows: list[Any]) -> dict[str, Any]:
    dtype = None
    plain = []
    for r in rows:
        if hasattr(r, "dtype") and hasattr(r, "tolist"):      # a numpy array or scalar
            dtype = dtype or _NUMPY.get(str(r.dtype))
            r = r.tolist()
        plain.append(r)
    row_shape = shape_of(plain[0]) if plain else []
    flat: list[Any] = []
    for k, r in enumerate(plain):
        if shape_of(r) != row_shape:
            raise ValueError(f"output {name}: prediction {k} has shape {shape_of(r)}, "
                             f"prediction 0 has {row_shape}")
        flat += flatten(r) if isinstance(r, list) else [r]
    return {"name": name, "shape": [len(plain), *row_shape],
            "datatype": dtype or _datatype(flat, name), "data": flat}


def shape_of(value: Any) -> list[int]:
    shape = []
    while isinstance(value, list):
        shape.append(len(value))
        if not value:
            break
        value = value[0]
    return shape


def _datatype(flat: list[Any], name: str) -> str:
    kinds = {type(v) for v in flat}
    if not kinds or kinds <= {float, int} and float in kinds:
        return "FP64"
    if kinds == {bool}:
        return "BOOL"
    if kinds == {int}:
        return "INT64"
    if kinds == {str}:
        return "BYTES"
    raise ValueError(f"output {name}: values of types {sorted(k.__name__ for k in kinds)} "
                     "do not form one tensor")


def metadata_tensors(schema: dict[str, Any], prefix: str) -> list[dict[str, Any]]:
    """Best-effort v2 tensor metadata from an instance's JSON Schema (-1: any size)."""
    props = schema.get("properties")
    if schema.get("type") == "object" and isinstance(props, dict):
        return [{"name": n, **_meta(s)} for n, s in props.items()]
    if not schema:
        return []
    return [{"name": f"{prefix}_0", **_meta(schema)}]


def _meta(schema: dict[str, Any]) -> dict[str, Any]:
    shape = [-1]
    while schema.get("type") == "array":
        shape.append(schema.get("maxItems", -1))
        schema = schema.get("items") or {}
    kind = schema.get("type")
    dtype = {"integer": "INT64", "number": "FP64", "boolean": "BOOL"}.get(str(kind), "BYTES")
    return {"datatype": dtype, "shape": shape}
