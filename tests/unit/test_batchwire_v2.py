"""The batcher's KServe v2 wire: callers' tensors cut into rows, batched into one tensor per
input, the worker's outputs cut back per caller. Pure bytes in, bytes out."""

from __future__ import annotations

import orjson
import pytest

from gateway.dataplane.batchwire import V1, V2, wire_for
from gateway.errors import BadRequest


def req(rows: list[list[float]], dtype: str = "FP32") -> bytes:
    return orjson.dumps({"inputs": [{"name": "x", "datatype": dtype,
                                     "shape": [len(rows), len(rows[0])],
                                     "data": [v for r in rows for v in r]}]})


def fake_worker(body: bytes) -> bytes:
    """A v2 model: per row, the sum (FP32, shape [n]) and the row doubled ([n, 3])."""
    x = orjson.loads(body)["inputs"][0]
    n, width = x["shape"]
    rows = [x["data"][i * width:(i + 1) * width] for i in range(n)]
    return orjson.dumps({"model_name": "m", "outputs": [
        {"name": "sum", "datatype": "FP32", "shape": [n], "data": [sum(r) for r in rows]},
        {"name": "double", "datatype": "FP32", "shape": [n, width],
         "data": [2 * v for r in rows for v in r]}]})


def test_the_target_picks_the_wire() -> None:
    assert isinstance(wire_for("/v2/models/mlp/infer"), V2)
    assert isinstance(wire_for("/v2/models/mlp/versions/3/infer"), V2)
    assert isinstance(wire_for("/predict"), V1)


def test_two_callers_share_one_batch_and_get_their_own_rows() -> None:
    a = V2.split(req([[1, 2, 3], [4, 5, 6]]))
    b = V2.split(req([[10, 20, 30]]))
    assert len(a) == 2 and len(b) == 1
    assert V2.key(a) == V2.key(b) and V1.key([b"1"]) is None
    body = V2.batch_body([a, b])
    x = orjson.loads(body)["inputs"][0]
    assert x["shape"] == [3, 3] and x["data"] == [1, 2, 3, 4, 5, 6, 10, 20, 30]
    preds = V2.predictions(fake_worker(body), 3)
    assert not isinstance(preds, str)
    answer_a = orjson.loads(V2.answer(preds[:2]))
    answer_b = orjson.loads(V2.answer(preds[2:]))
    assert answer_a == {"model_name": "m", "outputs": [
        {"name": "sum", "datatype": "FP32", "shape": [2], "data": [6, 15]},
        {"name": "double", "datatype": "FP32", "shape": [2, 3], "data": [2, 4, 6, 8, 10, 12]}]}
    assert answer_b["outputs"][0] == {"name": "sum", "datatype": "FP32", "shape": [1],
                                      "data": [60]}


def test_several_inputs_and_scalars_per_row() -> None:
    body = orjson.dumps({"inputs": [
        {"name": "text", "datatype": "BYTES", "shape": [2], "data": ["a", "b"]},
        {"name": "flag", "datatype": "BOOL", "shape": [2, 1], "data": [[True], [False]]}]})
    rows = V2.split(body)
    assert orjson.loads(rows[1]) == [["text", "BYTES", [], ["b"]], ["flag", "BOOL", [1], [False]]]
    batch = orjson.loads(V2.batch_body([rows[:1], rows[1:]]))
    assert batch["inputs"][0] == {"name": "text", "datatype": "BYTES", "shape": [2],
                                  "data": ["a", "b"]}


def test_bad_requests_are_400s_naming_the_input() -> None:
    with pytest.raises(BadRequest, match=r"inputs\[0\] \(x\): shape \[2, 3\] holds 6 values"):
        V2.split(b'{"inputs": [{"name": "x", "datatype": "FP32", "shape": [2, 3], "data": [1]}]}')
    with pytest.raises(BadRequest, match="not valid JSON"):
        V2.split(b"{")
    with pytest.raises(BadRequest, match='needs "inputs"'):
        V2.split(b'{"instances": [1]}')


def test_rows_that_differ_do_not_batch() -> None:
    a = V2.split(req([[1, 2, 3]]))
    b = V2.split(req([[1, 2]]))
    c = V2.split(req([[1, 2, 3]], dtype="INT64"))
    assert len({V2.key(a), V2.key(b), V2.key(c)}) == 3
    with pytest.raises(ValueError, match="cannot share a batch"):
        V2.batch_body([a, b])


def test_a_worker_answer_that_breaks_the_contract_is_named() -> None:
    assert V2.predictions(b"nope", 1).startswith("answer is not JSON")
    assert V2.predictions(b'{"outputs": []}', 1) == 'answer has no "outputs" list'
    short = orjson.dumps({"outputs": [{"name": "y", "datatype": "FP32", "shape": [1],
                                       "data": [1.0]}]})
    assert V2.predictions(short, 2) == "output y has 1 rows for 2 instances"
