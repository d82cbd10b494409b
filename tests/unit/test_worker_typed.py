"""Typed predict signatures, KServe v2 tensors, stream negotiation, the OpenAPI document and
`describe`'s rendering: pure functions, no sockets."""

from __future__ import annotations

from collections.abc import AsyncIterator, Iterator
from typing import Annotated, Any

import numpy as np
import pytest
from pydantic import BaseModel, Field

from gateway import wire_v2 as v2
from gateway.dataplane.streams import accepts_stream
from gateway.describe import render
from gateway.worker import Array
from gateway.worker.model import Loaded
from gateway.worker.openapi import document
from gateway.worker.stream import NDJSON, SSE, error_frame, frame, negotiate
from gateway.worker.typed import InvalidInstances, signature_of


class Point(BaseModel):
    x: float
    y: float = Field(ge=0)
    label: str = ""


class Score(BaseModel):
    score: float


class Typed:
    def predict(self, items: list[Point]) -> list[Score]:
        return [Score(score=p.x + p.y) for p in items]


class Stacked:
    def predict(self, batch: Annotated[np.ndarray, Array("float32", (3,))]) -> np.ndarray:
        return batch.sum(axis=1)


class PerItem:
    def predict(self, items: list[np.ndarray]) -> list[float]:
        return [float(a.sum()) for a in items]


class Untyped:
    def predict(self, items):  # type: ignore[no-untyped-def]
        return items


class Streams:
    def predict(self, items: list[Point]) -> Iterator[Score]:
        yield Score(score=1)


class AsyncStreams:
    async def predict(self, items: list[str]) -> AsyncIterator[str]:
        yield "a"


class Async:
    async def predict(self, items: list[int]) -> list[int]:
        return items


def test_pydantic_items_are_validated_and_converted() -> None:
    sig = signature_of(Typed().predict)
    out = sig.convert([{"x": 1, "y": "2"}, {"x": 0.5, "y": 0}])
    assert out == [Point(x=1, y=2), Point(x=0.5, y=0)]
    assert not sig.streaming and not sig.is_async


def test_every_bad_instance_is_named_by_index_and_field() -> None:
    sig = signature_of(Typed().predict)
    with pytest.raises(InvalidInstances) as info:
        sig.convert([{"x": 1, "y": 1}, {"y": -1}, {"x": "big", "y": 0}])
    problems = [(p.index, p.field) for p in info.value.problems]
    assert problems == [(1, "x"), (1, "y"), (2, "x")]
    assert "instance 1: x: Field required" in str(info.value)
    assert "instance 2: x:" in str(info.value)


def test_a_non_object_instance_is_refused_at_the_instance_itself() -> None:
    with pytest.raises(InvalidInstances) as info:
        signature_of(Typed().predict).convert([[1, 2]])
    assert info.value.problems[0].index == 0 and info.value.problems[0].field == ""


def test_numpy_hint_stacks_one_batch_with_dtype_and_shape() -> None:
    sig = signature_of(Stacked().predict)
    batch = sig.convert([[1, 2, 3], [4, 5, 6]])
    assert batch.dtype == np.float32 and batch.shape == (2, 3)
    with pytest.raises(InvalidInstances) as info:
        sig.convert([[1, 2, 3], [1, 2], "abc"])
    details = {p.index: p.detail for p in info.value.problems}
    assert set(details) == {1, 2}
    assert "shape (2,), expected (3,)" in details[1]


def test_list_of_arrays_keeps_instances_apart() -> None:
    arrays = signature_of(PerItem().predict).convert([[1, 2], [[1, 2], [3, 4]]])
    assert [a.shape for a in arrays] == [(2,), (2, 2)]
    with pytest.raises(InvalidInstances):
        signature_of(PerItem().predict).convert([[1, [2, 3]]])


def test_untyped_predict_passes_instances_through() -> None:
    sig = signature_of(Untyped().predict)
    items = [{"anything": 1}, "goes"]
    assert sig.convert(items) is items
    assert sig.input_schema() == {} and sig.output_schema() == {}


def test_generators_and_coroutines_are_recognised() -> None:
    s = signature_of(Streams().predict)
    assert s.streaming and not s.is_async and s.output_schema()["title"] == "Score"
    a = signature_of(AsyncStreams().predict)
    assert a.streaming and a.is_async and a.output_schema() == {"type": "string"}
    c = signature_of(Async().predict)
    assert c.is_async and not c.streaming
    assert c.convert(["1", 2]) == [1, 2]


def test_openapi_document_carries_both_schemas() -> None:
    doc = document(Loaded(Typed(), "typed"), "mod:Typed")
    ext = doc["x-serve-gateway"]
    assert ext["instance"]["required"] == ["x", "y"]
    assert ext["prediction"]["properties"]["score"]["type"] == "number"
    body = doc["paths"]["/predict"]["post"]["requestBody"]["content"]["application/json"]
    assert body["schema"]["oneOf"][0] == ext["instance"]
    assert "/v2/models/typed/infer" in doc["paths"]


class Inner(BaseModel):
    v: int


class Outer(BaseModel):
    inner: Inner


class Nested:
    def predict(self, items: list[Outer]) -> list[int]:
        return [1]


def test_openapi_refs_point_into_components() -> None:
    M = Nested
    doc = document(Loaded(M(), "m"), "m")
    text = str(doc)
    assert "#/$defs/" not in text and "#/components/schemas/Inner" in text
    assert "Inner" in doc["components"]["schemas"]


def test_v2_rows_along_the_first_dimension() -> None:
    req = {"inputs": [{"name": "x", "shape": [2, 3], "datatype": "FP32",
                       "data": [1, 2, 3, 4, 5, 6]}]}
    assert v2.instances(req) == [[1, 2, 3], [4, 5, 6]]
    nested = {"inputs": [{"name": "x", "shape": [2, 2], "datatype": "INT64",
                          "data": [[1, 2], [3, 4]]}]}
    assert v2.instances(nested) == [[1, 2], [3, 4]]
    two = {"inputs": [{"name": "text", "shape": [2], "datatype": "BYTES", "data": ["a", "b"]},
                      {"name": "flag", "shape": [2], "datatype": "BOOL", "data": [True, False]}]}
    assert v2.instances(two) == [{"text": "a", "flag": True}, {"text": "b", "flag": False}]


@pytest.mark.parametrize(("tensor", "message"), [
    ({"name": "x", "shape": [2, 2], "datatype": "FP32", "data": [1, 2, 3]}, "holds 4 values"),
    ({"name": "x", "shape": [1], "datatype": "FP8", "data": [1]}, "datatype must be one of"),
    ({"name": "x", "shape": [2], "datatype": "INT64", "data": [1, 1.5]}, "data[1]: 1.5 is not"),
    ({"name": "x", "shape": [1], "datatype": "BOOL", "data": [1]}, "is not a BOOL"),
    ({"name": "x", "shape": [-1], "datatype": "FP32", "data": []}, "non-negative"),
    ({"shape": [1], "datatype": "FP32", "data": [1]}, "name must be"),
])
def test_v2_bad_tensors_name_the_input(tensor: dict[str, Any], message: str) -> None:
    with pytest.raises((ValueError, TypeError), match=message.replace("[", r"\[")):
        v2.instances({"inputs": [tensor]})


def test_v2_inputs_must_share_the_batch_dimension() -> None:
    with pytest.raises(ValueError, match="batch dimension 1"):
        v2.instances({"inputs": [
            {"name": "a", "shape": [2], "datatype": "INT64", "data": [1, 2]},
            {"name": "b", "shape": [1], "datatype": "INT64", "data": [1]}]})


def test_v2_outputs_from_predictions() -> None:
    out = v2.outputs([[1.5, 2.0], [3.0, 4.0]])
    assert out == [{"name": "output_0", "shape": [2, 2], "datatype": "FP64",
                    "data": [1.5, 2.0, 3.0, 4.0]}]
    cols = v2.outputs([{"label": "a", "p": 0.5, "ok": True}, {"label": "b", "p": 1, "ok": False}])
    assert [(c["name"], c["datatype"], c["shape"]) for c in cols] == [
        ("label", "BYTES", [2]), ("p", "FP64", [2]), ("ok", "BOOL", [2])]
    arr = v2.outputs(list(np.ones((2, 3), dtype=np.float32)))
    assert arr[0]["datatype"] == "FP32" and arr[0]["shape"] == [2, 3]
    assert v2.outputs([1, 2], ["output_0"])[0]["datatype"] == "INT64"
    with pytest.raises(LookupError, match="no output named nope"):
        v2.outputs([1], ["nope"])
    with pytest.raises(ValueError, match="prediction 1 has shape"):
        v2.outputs([[1, 2], [1]])


def test_stream_negotiation_and_frames() -> None:
    assert negotiate("text/event-stream") == SSE
    assert negotiate("application/json, application/x-ndjson;q=0.5") == NDJSON
    assert negotiate("application/jsonl") == NDJSON
    assert negotiate("text/event-stream;q=0") is None
    assert negotiate("application/json") is None and negotiate(None) is None
    assert frame(SSE, {"a": 1}) == b'data: {"a":1}\n\n'
    assert frame(NDJSON, Score(score=1)) == b'{"score":1.0}\n'
    assert error_frame(SSE, "model_error", "x").startswith(b"event: error\ndata: ")


def test_gateway_sees_a_stream_request_by_accept() -> None:
    # the header is found by http1's one scan of the head (any case); its value decides
    assert accepts_stream(b"Text/Event-Stream")
    assert accepts_stream(b"application/json, application/x-ndjson")
    assert not accepts_stream(b"application/json")
    assert not accepts_stream(b"")


def test_describe_renders_fields_and_types() -> None:
    doc = {"service": "iris", "version": "v1", "replica": "r1", "route": "/v1/iris",
           "openapi": document(Loaded(Typed(), "typed"), "mod:Typed")}
    text = render(doc)
    assert "service iris  version v1" in text
    assert "instance:   {x: number, y: number, label?: string}" in text
    assert "prediction: {score: number}" in text
