"""The worker SDK's typed, async, streaming and KServe v2 sides, as real processes on loopback."""

from __future__ import annotations

import asyncio
import textwrap
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import aiohttp
import pytest

from tests.helpers import wait_http_ok, wait_until
from tests.integration.test_worker import Worker

MODELS = textwrap.dedent('''
    import asyncio, time
    from collections.abc import AsyncIterator, Iterator
    from typing import Annotated
    import numpy as np
    from pydantic import BaseModel
    from gateway.worker import Array

    class Item(BaseModel):
        n: int

    class Slow:
        """A sync generator: one item every 0.3 s."""
        def predict(self, items: list[Item]) -> Iterator[dict]:
            for i in range(items[0].n):
                time.sleep(0.3)
                yield {"i": i}

    class AsyncSlow:
        async def predict(self, items: list[Item]) -> AsyncIterator[int]:
            for i in range(items[0].n):
                await asyncio.sleep(0.3)
                yield i

    class FailsLate:
        def predict(self, items):
            yield 1
            raise RuntimeError("out of memory at token 2")

    class Coro:
        async def predict(self, items: list[int]) -> list[int]:
            await asyncio.sleep(0)
            return [i * 2 for i in items]

    class Endless:
        """Streams until the client leaves; its finally proves the generator was closed."""
        def predict(self, items):
            import pathlib
            mark = pathlib.Path(__file__).with_name("endless-closed")
            try:
                while True:
                    time.sleep(0.05)
                    yield "tick"
            finally:
                mark.write_text("closed")

    class Sum:
        def predict(self, batch: Annotated[np.ndarray, Array("float32", (3,))]) -> np.ndarray:
            return batch.sum(axis=1)
''')


@pytest.fixture(scope="module")
def models_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    path = tmp_path_factory.mktemp("typed")
    (path / "typed_models.py").write_text(MODELS)
    return path


@pytest.fixture(scope="module")
def workers(models_dir: Path) -> Iterator[dict[str, Worker]]:
    targets = {"iris": "gateway.examples.iris:Iris", "slow": "typed_models:Slow",
               "aslow": "typed_models:AsyncSlow", "late": "typed_models:FailsLate",
               "coro": "typed_models:Coro", "sum": "typed_models:Sum",
               "endless": "typed_models:Endless"}
    # cwd is a temp dir, not the checkout: gateway.examples must come from the package itself
    started = {k: Worker(t, models_dir / f"{k}.log", cwd=models_dir) for k, t in targets.items()}
    try:
        async def ready() -> None:
            await asyncio.gather(*(wait_http_ok(w.url + "/ready", 20) for w in started.values()))
        asyncio.run(ready())
        yield started
    finally:
        for w in started.values():
            w.kill()


FLOWER = {"sepal_length": 5.1, "sepal_width": 3.5, "petal_length": 1.4, "petal_width": 0.2}


async def post(url: str, doc: Any, **headers: str) -> tuple[int, Any]:
    async with aiohttp.ClientSession() as s, s.post(url, json=doc, headers=headers) as r:
        return r.status, await r.json()


async def test_example_model_runs_outside_a_checkout(workers: dict[str, Worker]) -> None:
    status, doc = await post(workers["iris"].url + "/predict", FLOWER)
    assert status == 200 and doc["predictions"][0]["species"] == "setosa"


async def test_bad_instance_is_a_400_naming_index_and_field(workers: dict[str, Worker]) -> None:
    bad = {**FLOWER, "petal_width": "wide"}
    del bad["sepal_length"]
    status, doc = await post(workers["iris"].url + "/predict", {"instances": [FLOWER, bad]})
    assert status == 400 and doc["error"] == "bad_request"
    assert {(e["index"], e["field"]) for e in doc["errors"]} == {(1, "sepal_length"),
                                                                  (1, "petal_width")}
    assert "instance 1: sepal_length: Field required" in doc["detail"]
    # the same good instance alone is fine: nothing about it was wrong
    assert (await post(workers["iris"].url + "/predict", FLOWER))[0] == 200


async def test_openapi_and_docs(workers: dict[str, Worker]) -> None:
    async with aiohttp.ClientSession() as s:
        async with s.get(workers["iris"].url + "/openapi.json") as r:
            doc = await r.json()
        async with s.get(workers["iris"].url + "/docs") as r:
            page = await r.text()
            assert r.status == 200 and r.content_type == "text/html"
    instance = doc["x-serve-gateway"]["instance"]
    assert set(instance["required"]) == set(FLOWER)
    assert doc["x-serve-gateway"]["prediction"]["properties"]["species"]["type"] == "string"
    assert "sepal_length" in page and 'href="openapi.json"' in page   # relative: behind a route too


async def test_async_predict(workers: dict[str, Worker]) -> None:
    assert await post(workers["coro"].url + "/predict", {"instances": [1, "2"]}) == \
        (200, {"predictions": [2, 4]})


async def test_numpy_hint_stacks_and_refuses_bad_shapes(workers: dict[str, Worker]) -> None:
    url = workers["sum"].url + "/predict"
    assert await post(url, {"instances": [[1, 2, 3], [1, 1, 1]]}) == \
        (200, {"predictions": [6.0, 3.0]})
    status, doc = await post(url, {"instances": [[1, 2, 3], [1, 2]]})
    assert status == 400 and doc["errors"][0]["index"] == 1
    assert "shape (2,), expected (3,)" in doc["errors"][0]["detail"]


async def read_events(url: str, accept: str, doc: Any) -> list[tuple[float, bytes]]:
    """Every chunk of a streamed answer with the time it arrived."""
    start = time.monotonic()
    out = []
    async with aiohttp.ClientSession() as s, \
            s.post(url, json=doc, headers={"Accept": accept}) as r:
        assert r.status == 200, await r.text()
        assert r.headers["Content-Type"].startswith(accept)
        async for chunk in r.content.iter_any():
            out.append((time.monotonic() - start, chunk))
    return out


@pytest.mark.parametrize("model", ["slow", "aslow"])
async def test_generator_streams_sse_as_it_yields(workers: dict[str, Worker], model: str) -> None:
    chunks = await read_events(workers[model].url + "/predict", "text/event-stream", {"n": 4})
    text = b"".join(c for _, c in chunks).decode()
    events = [e for e in text.split("\n\n") if e]
    assert len(events) == 5 and events[-1] == "event: end\ndata: {}"
    assert events[0] in ('data: {"i":0}', "data: 0")
    first, total = chunks[0][0], chunks[-1][0]
    assert total >= 1.1                   # 4 items, 0.3 s apart
    assert first < total / 2, chunks      # the first item did not wait for the others


async def test_generator_streams_json_lines_and_gathers_for_json(workers: dict[str, Worker]) -> None:
    url = workers["slow"].url + "/predict"
    chunks = await read_events(url, "application/x-ndjson", {"n": 2})
    assert b"".join(c for _, c in chunks) == b'{"i":0}\n{"i":1}\n'
    assert await post(url, {"n": 2}) == (200, {"predictions": [{"i": 0}, {"i": 1}]})


async def test_stream_errors(workers: dict[str, Worker]) -> None:
    # before the first item: a normal status; after it, an error event inside the stream
    status, doc = await post(workers["slow"].url + "/predict", {"n": "x"},
                             Accept="text/event-stream")
    assert status == 400 and doc["errors"][0]["field"] == "n"
    chunks = await read_events(workers["late"].url + "/predict", "text/event-stream", {})
    text = b"".join(c for _, c in chunks).decode()
    assert text.startswith("data: 1\n\nevent: error\ndata: ")
    assert "out of memory at token 2" in text


async def test_a_client_leaving_closes_the_generator(workers: dict[str, Worker],
                                                     models_dir: Path) -> None:
    mark = models_dir / "endless-closed"
    async with aiohttp.ClientSession() as s, s.post(
            workers["endless"].url + "/predict", json={},
            headers={"Accept": "application/x-ndjson"}) as r:
        assert await r.content.readline() == b'"tick"\n'
    # the connection is gone: the worker stops the model at its next item, runs its finally
    await wait_until(mark.exists, 10, what="the generator's finally")
    async with aiohttp.ClientSession() as s, s.get(workers["endless"].url + "/predict") as r:
        assert (await r.json())["in_flight"] == 0


async def test_kserve_v2(workers: dict[str, Worker]) -> None:
    base = workers["sum"].url
    async with aiohttp.ClientSession() as s:
        for path, want in (("/v2/health/live", {"live": True}), ("/v2/health/ready", {"ready": True}),
                           ("/v2/models/sum/ready", {"ready": True})):
            async with s.get(base + path) as r:
                assert (r.status, await r.json()) == (200, want), path
        async with s.get(base + "/v2/models/sum") as r:
            meta = await r.json()
        async with s.get(base + "/v2/models/other") as r:
            assert r.status == 404 and (await r.json())["error"] == "model_not_found"
    assert meta["name"] == "sum"
    assert meta["inputs"] == [{"name": "input_0", "datatype": "FP64", "shape": [-1, 3]}]
    req = {"id": "r1", "inputs": [{"name": "x", "shape": [2, 3], "datatype": "FP32",
                                   "data": [1, 2, 3, 4, 5, 6]}]}
    status, doc = await post(base + "/v2/models/sum/infer", req)
    assert status == 200
    assert doc == {"model_name": "sum", "id": "r1", "outputs": [
        {"name": "output_0", "shape": [2], "datatype": "FP32", "data": [6.0, 15.0]}]}
    bad = {"inputs": [{"name": "x", "shape": [2, 3], "datatype": "FP32", "data": [1, 2]}]}
    status, doc = await post(base + "/v2/models/sum/infer", bad)
    assert status == 400 and "inputs[0] (x): shape [2, 3] holds 6 values" in doc["detail"]


async def test_kserve_v2_typed_fields_are_input_names(workers: dict[str, Worker]) -> None:
    req = {"inputs": [{"name": k, "shape": [2], "datatype": "FP32", "data": [v, v + 1.5]}
                      for k, v in FLOWER.items()]}
    status, doc = await post(workers["iris"].url + "/v2/models/iris/infer", req)
    assert status == 200
    outputs = {o["name"]: o for o in doc["outputs"]}
    assert outputs["species"]["datatype"] == "BYTES" and outputs["species"]["shape"] == [2]
    assert outputs["species"]["data"][0] == "setosa"
    req["inputs"][0]["data"] = [-1, 5]        # sepal_length must be > 0
    status, doc = await post(workers["iris"].url + "/v2/models/iris/infer", req)
    assert status == 400 and doc["errors"] == [
        {"index": 0, "field": "sepal_length", "detail": "Input should be greater than 0"}]


def test_quickstart_worker_runs_from_any_directory(tmp_path: Path) -> None:
    """The installed console script, a directory that is not the checkout, no PYTHONPATH: what
    a user gets after `pip install serve-gateway[examples]` (the editable install maps exactly
    the packages pyproject ships, as a wheel would)."""
    import os
    import subprocess
    import sys

    from tests.helpers import free_port, kill_group

    port = free_port()
    env = {k: v for k, v in os.environ.items() if k != "PYTHONPATH"}
    exe = str(Path(sys.executable).with_name("serve-gateway"))
    with open(tmp_path / "worker.log", "wb") as log:
        proc = subprocess.Popen([exe, "worker", "gateway.examples.echo:Echo", "--port", str(port)],
                                cwd=tmp_path, env=env, stdout=log, stderr=subprocess.STDOUT,
                                start_new_session=True)
    try:
        asyncio.run(wait_http_ok(f"http://127.0.0.1:{port}/ready", 20))
        assert asyncio.run(post(f"http://127.0.0.1:{port}/predict", {"x": 1})) == \
            (200, {"predictions": [{"x": 1}]})
    finally:
        kill_group(proc.pid)
        proc.wait(timeout=10)
