"""``serve-gateway worker --adapter sklearn|torch|onnx --model PATH`` end to end: tiny models
saved at test time, served by the real worker behind the real gateway with batching on."""

from __future__ import annotations

import asyncio
from collections.abc import Callable
from pathlib import Path
from typing import Any

import aiohttp
import numpy as np
import orjson
import pytest

from tests.helpers import GatewayProc, metric_value, run_cli


def _sklearn(tmp: Path) -> tuple[Path, Callable[[np.ndarray], Any]]:
    import joblib

    from examples.adapters.save_sklearn import save
    path = save(tmp / "iris.joblib")
    model = joblib.load(path)
    return path, lambda x: model.predict(x).tolist()


def _onnx(tmp: Path) -> tuple[Path, Callable[[np.ndarray], Any]]:
    from examples.adapters.save_onnx import B, W, save
    path = save(tmp / "linear.onnx")

    def expect(x: np.ndarray) -> Any:
        scores = x.astype(np.float32) @ W + B
        return [{"scores": s.tolist(), "label": int(s.argmax())} for s in scores]
    return path, expect


def _torch(name: str, torchscript: bool) -> Callable[[Path], tuple[Path, Callable[[np.ndarray], Any]]]:
    def make(tmp: Path) -> tuple[Path, Callable[[np.ndarray], Any]]:
        import torch

        from examples.adapters.save_torch import build, save
        path = save(tmp / name, torchscript=torchscript)
        model: Any = build()

        def expect(x: np.ndarray) -> Any:
            with torch.inference_mode():
                out: list[Any] = model(torch.from_numpy(x.astype(np.float32))).numpy().tolist()
                return out
        return path, expect
    return make


CASES = {"sklearn": ("sklearn", _sklearn), "onnx": ("onnx", _onnx),
         "torch-export": ("torch", _torch("mlp.pt2", False)),
         "torch-script": ("torch", _torch("mlp.ts", True))}


def service(adapter: str, model: Path, **env: str) -> dict[str, Any]:
    return {"route": "/v1/model", "rewrite": "/predict",
            "batching": {"max_batch_size": 16, "max_wait_ms": 50, "slots_per_replica": 1},
            "versions": {"v1": {
                "command": f"serve-gateway worker --adapter {adapter} --model {model} --port {{port}}",
                "replicas": 1, "env": {"OMP_NUM_THREADS": "1", **env},
                "health": {"start_timeout": "90s"}}}}


async def post(s: aiohttp.ClientSession, url: str, doc: Any) -> tuple[int, Any]:
    async with s.post(url, data=orjson.dumps(doc)) as r:
        return r.status, await r.json()


def replica_log(gw: GatewayProc) -> str:
    return "".join(p.read_text(errors="replace") for p in (gw.state_dir / "logs").glob("*.log"))


@pytest.mark.parametrize("case", list(CASES))
async def test_adapter_serves_saved_model_batched(tmp_path: Path, case: str) -> None:
    adapter, make = CASES[case]
    path, expect = make(tmp_path)
    rng = np.random.default_rng(3)
    x = np.round(rng.uniform(0, 7, (24, 4)), 3)
    want = expect(x)
    async with GatewayProc(tmp_path, {"m": service(adapter, path)}) as gw, \
            aiohttp.ClientSession() as s:
        url = gw.url("/v1/model")
        # 20 concurrent clients with one instance each, and one with {"instances": [4]}
        singles = [post(s, url, row) for row in x[:20].tolist()]
        results = await asyncio.gather(*singles, post(s, url, {"instances": x[20:].tolist()}))
        got = []
        for status, body in results:
            assert status == 200, body
            got += body["predictions"]
        assert _close(got, want), (got, want)
        async with s.get(gw.admin("/metrics")) as r:
            text = await r.text()
        batches = metric_value(text, "serve_gateway_batch_size_count", service="m", version="v1")
        instances = metric_value(text, "serve_gateway_batch_size_sum", service="m", version="v1")
        assert instances == 24
        assert batches is not None and batches < 21, "requests were batched into fewer calls"

        # a bad instance among good ones: a 400 that says what is wrong, the others unaffected
        docs: list[Any] = [row for row in x[:6].tolist()]
        docs.insert(3, [1.0, 2.0, 3.0])
        results = await asyncio.gather(*(post(s, url, d) for d in docs))
        statuses = [status for status, _ in results]
        assert statuses == [200, 200, 200, 400, 200, 200, 200], results
        bad = results[3][1]
        assert bad["error"] == "bad_request" and "shape [3]" in bad["detail"], bad
        assert _close([b["predictions"][0] for i, (_, b) in enumerate(results) if i != 3],
                      want[:6])
        log = replica_log(gw)
    assert "warm-up call took" in log, log      # before /ready: the gateway waited for it
    assert "loaded on cpu" in log, log


def _close(got: Any, want: Any) -> bool:
    try:
        np.testing.assert_allclose(_flat(got), _flat(want), rtol=1e-4, atol=1e-5)
    except AssertionError:
        return False
    return True


def _flat(v: Any) -> list[float]:
    if isinstance(v, dict):
        return [x for k in sorted(v) for x in _flat(v[k])]
    if isinstance(v, (list, tuple)):
        return [x for item in v for x in _flat(item)]
    return [float(v)]


async def test_assigned_gpu_without_cuda_support_serves_on_cpu(tmp_path: Path) -> None:
    """A replica given a GPU (CUDA_VISIBLE_DEVICES) whose framework build cannot use it serves
    on the CPU and says why, rather than failing to start."""
    path, _ = _onnx(tmp_path)
    svc = service("onnx", path, CUDA_VISIBLE_DEVICES="0")
    async with GatewayProc(tmp_path, {"m": svc}) as gw, aiohttp.ClientSession() as s:
        status, body = await post(s, gw.url("/v1/model"), [0, 0, 0, 1])
        assert status == 200 and body["predictions"][0]["label"] == 2, body
        log = replica_log(gw)
    import onnxruntime
    if "CUDAExecutionProvider" in onnxruntime.get_available_providers():
        assert "loaded on cuda" in log, log
    else:
        assert "GPU 0 assigned but the framework has no CUDA support" in log, log


@pytest.mark.parametrize("args, message", [
    (["--adapter", "sklearn"], "--adapter sklearn needs --model PATH"),
    (["--adapter", "onnx", "--model", "/nonexistent/m.onnx"], "no such file"),
    (["--model", "m.onnx"], "--model and --device go with --adapter"),
    (["examples.models.echo:Echo", "--adapter", "onnx", "--model", "pyproject.toml"],
     "not both"),
])
async def test_adapter_arguments_refused_clearly(args: list[str], message: str) -> None:
    code, _, err = await run_cli("worker", *args, "--port", "1")
    assert code == 2 and message in err, err


async def test_unreadable_model_file_fails_the_load(tmp_path: Path) -> None:
    bad = tmp_path / "garbage.onnx"
    bad.write_bytes(b"not an onnx file")
    code, _, err = await run_cli("worker", "--adapter", "onnx", "--model", bad, "--port", "0")
    assert code == 1 and "garbage.onnx" in err, err


async def test_shipped_adapter_examples_serve_their_curl_lines(tmp_path: Path) -> None:
    """config/adapter-*.yaml with the model files their save scripts write: the curl line in
    each file's header answers as its comment says."""
    import re

    import yaml

    from examples.adapters import save_onnx, save_sklearn, save_torch
    root = Path(__file__).resolve().parents[2]
    services: dict[str, Any] = {}
    curls: dict[str, Any] = {}
    for name, saver in (("sklearn", save_sklearn.save), ("torch", save_torch.save),
                        ("onnx", save_onnx.save)):
        text = (root / "config" / f"adapter-{name}.yaml").read_text()
        spec = yaml.safe_load(text)
        ((svc_name, svc),) = spec["services"].items()
        version = svc["versions"]["v1"]
        model = re.search(r"--model (\S+)", version["command"])
        assert model is not None
        saved = saver(tmp_path / model.group(1))
        version["command"] = version["command"].replace(model.group(1), str(saved))
        version["replicas"] = 1
        services[svc_name] = svc
        curl = re.search(r"curl -s localhost:8080(\S+) -d '([^']+)'", text)
        assert curl is not None
        curls[curl.group(1)] = orjson.loads(curl.group(2))
    async with GatewayProc(tmp_path, services) as gw, aiohttp.ClientSession() as s:
        answers = {route: await post(s, gw.url(route), doc) for route, doc in curls.items()}
    assert answers["/v1/iris"] == (200, {"predictions": [0, 2]})
    status, body = answers["/v1/linear"]
    assert status == 200 and [p["label"] for p in body["predictions"]] == [0, 2], body
    status, body = answers["/v1/torch-mlp"]
    assert status == 200 and len(body["predictions"][0]) == 3, body
