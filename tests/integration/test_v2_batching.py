"""KServe v2 infer requests through the gateway's micro-batcher: callers' tensors are cut
along the first dimension, batched with other callers' rows, and each caller gets its own
rows back; callers whose tensors cannot share a batch are sent alone."""

from __future__ import annotations

import asyncio
from pathlib import Path
from typing import Any

import aiohttp

from tests.helpers import ECHO, GatewayProc, metric_value


def v2(rows: list[list[int]], sleep: float = 0.0) -> dict[str, Any]:
    """Echo sleeps for the longest "sleep" of a batch and answers every instance as it is."""
    return {"inputs": [
        {"name": "sleep", "datatype": "FP32", "shape": [len(rows)], "data": [sleep] * len(rows)},
        {"name": "x", "datatype": "INT64", "shape": [len(rows), len(rows[0])],
         "data": [v for r in rows for v in r]}]}


async def test_v2_infer_through_the_batcher(tmp_path: Path) -> None:
    services = {"echo": {
        "route": "/v2/models/echo/infer",           # the batching target is the infer path
        "batching": {"max_batch_size": 32, "max_wait_ms": 50, "slots_per_replica": 1},
        "versions": {"v1": {"command": ECHO, "replicas": 1}}}}
    async with GatewayProc(tmp_path, services) as gw:
        url = gw.url("/v2/models/echo/infer")

        async def call(doc: dict[str, Any], after: float = 0.0) -> tuple[int, Any]:
            await asyncio.sleep(after)
            async with aiohttp.ClientSession() as s, s.post(url, json=doc) as r:
                return r.status, await r.json()

        # the first holds the replica's only slot; the others queue meanwhile and share batches
        callers = [v2([[0, 0]], sleep=1.0), v2([[1, 1]]), v2([[2, 2], [3, 3]]),
                   v2([[4, 4], [5, 5], [6, 6]]), v2([[7, 7, 7]])]   # the last: other row shape
        answers = await asyncio.gather(call(callers[0]),
                                       *(call(c, after=0.2) for c in callers[1:]))
        for doc, (status, answer) in zip(callers, answers):
            assert status == 200, answer
            n = doc["inputs"][1]["shape"][0]
            assert answer["model_name"] == "echo"
            out = {o["name"]: o for o in answer["outputs"]}
            assert out["x"]["shape"] == doc["inputs"][1]["shape"]
            assert out["x"]["data"] == doc["inputs"][1]["data"]
            assert out["sleep"]["shape"] == [n]

        text = ""
        async with aiohttp.ClientSession() as s, s.get(gw.admin("/metrics")) as r:
            text = await r.text()
        labels = {"service": "echo", "version": "v1"}
        batches = metric_value(text, "serve_gateway_batch_size_count", **labels)
        rows = metric_value(text, "serve_gateway_batch_size_sum", **labels)
        assert batches is not None and rows is not None
        # 1 + (1 + 2 + 3 together) + 1 alone: the odd one out does not split the others up
        assert batches <= 3 and rows == 8, (batches, rows)
        regrouped = metric_value(text, "serve_gateway_batch_errors_total", kind="regroup",
                                 **labels)
        assert regrouped == 1

        # a bad tensor is its caller's 400, named, and never reaches the worker
        bad = {"inputs": [{"name": "x", "datatype": "INT64", "shape": [2, 2], "data": [1, 2, 3]}]}
        status, doc = await call(bad)
        assert status == 400 and doc["error"] == "bad_request"
        assert "inputs[0] (x): shape [2, 2] holds 4 values, data has 3" in doc["detail"]
