"""The worker SDK as a real process on loopback: `python -m gateway.worker module:Class`."""

from __future__ import annotations

import asyncio
import os
import signal
import subprocess
import sys
import textwrap
import time
from collections.abc import AsyncIterator, Iterator
from pathlib import Path
from typing import Any

import aiohttp
import pytest

from tests.helpers import REPO_ROOT, free_port, kill_group, wait_http_ok, wait_until

# Models that break the rules on purpose; served from a temp dir that is the worker's cwd,
# which also proves the cwd is importable.
ODD_MODELS = textwrap.dedent("""
    import os, time
    from gateway.worker import BadInput

    class WrongLength:
        def predict(self, items):
            return items[1:]

    class Gated:
        def load(self):
            while not os.path.exists(os.environ["GATE_FILE"]):
                time.sleep(0.02)
        def predict(self, items):
            return ["ok" for _ in items]

    class Broken:
        def load(self):
            raise ValueError("no weights at /nowhere")
        def predict(self, items):
            return items

    def make_upper():
        class Upper:
            def predict(self, items):
                if not all(isinstance(i, str) for i in items):
                    raise BadInput("strings only")
                return [i.upper() for i in items]
        return Upper()
""")


class Worker:
    """A worker subprocess in its own process group; output goes to a log file."""

    def __init__(self, target: str, log_path: Path, cwd: Path = REPO_ROOT,
                 env: dict[str, str] | None = None, use_env_port: bool = False,
                 extra_args: tuple[str, ...] | list[str] = ()) -> None:
        self.port = free_port()
        self.url = f"http://127.0.0.1:{self.port}"
        self.log_path = log_path
        argv = [sys.executable, "-m", "gateway.worker", target, *extra_args]
        full_env = {**os.environ, **(env or {}), "PYTHONPATH": str(REPO_ROOT)}
        if use_env_port:
            full_env["PORT"] = str(self.port)
        else:
            argv += ["--port", str(self.port)]
        with open(log_path, "ab") as log:
            self.proc = subprocess.Popen(argv, cwd=cwd, env=full_env, stdout=log,
                                         stderr=subprocess.STDOUT, start_new_session=True)

    def log(self) -> str:
        return self.log_path.read_text()

    def kill(self) -> None:
        kill_group(self.proc.pid)
        self.proc.wait(timeout=10)


@pytest.fixture
def start_worker(tmp_path: Path) -> Iterator[Any]:
    workers: list[Worker] = []

    def start(target: str, **kwargs: Any) -> Worker:
        worker = Worker(target, tmp_path / f"worker-{len(workers)}.log", **kwargs)
        workers.append(worker)
        return worker

    yield start
    for worker in workers:
        worker.kill()


@pytest.fixture(scope="module")
def echo(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Worker]:
    worker = Worker("examples.models.echo:Echo", tmp_path_factory.mktemp("echo") / "worker.log",
                    env={"ECHO_TAG": "t1", "SGW_REPLICA_ID": "r-test"})
    try:
        asyncio.run(wait_http_ok(worker.url + "/ready"))
        yield worker
    finally:
        worker.kill()


@pytest.fixture(scope="module")
def odd_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    path = tmp_path_factory.mktemp("odd")
    (path / "odd_models.py").write_text(ODD_MODELS)
    return path


@pytest.fixture
async def http() -> AsyncIterator[aiohttp.ClientSession]:
    async with aiohttp.ClientSession(timeout=aiohttp.ClientTimeout(total=10)) as session:
        yield session


async def call(http: aiohttp.ClientSession, method: str, url: str,
               body: bytes | None = None) -> tuple[int, Any]:
    async with http.request(method, url, data=body) as resp:
        assert resp.content_type == "application/json"
        return resp.status, await resp.json()


async def test_health_ready_and_metadata(echo: Worker, http: aiohttp.ClientSession) -> None:
    assert await call(http, "GET", echo.url + "/health") == (200, {"status": "ok"})
    assert await call(http, "GET", echo.url + "/ready") == (200, {"ready": True})
    status, meta = await call(http, "GET", echo.url + "/predict")
    assert status == 200
    assert meta == {"model": "examples.models.echo:Echo", "pid": echo.proc.pid,
                    "replica": "r-test", "ready": True, "in_flight": 0}


async def test_predict_single_and_instances(echo: Worker, http: aiohttp.ClientSession) -> None:
    url = echo.url + "/predict"
    assert await call(http, "POST", url, b'{"x": 1}') == (200, {"predictions": [{"x": 1, "tag": "t1"}]})
    assert await call(http, "POST", url, b"[1, 2]") == (200, {"predictions": [[1, 2]]})
    assert await call(http, "POST", url, b'{"instances": [{"a": 1}, 7]}') == (
        200, {"predictions": [{"a": 1, "tag": "t1"}, 7]})
    assert await call(http, "POST", url, b'{"instances": []}') == (200, {"predictions": []})


@pytest.mark.parametrize("body, detail", [
    (b"{not json", "not valid JSON"),
    (b"", "not valid JSON"),
    (b'{"instances": "abc"}', '"instances" must be a list'),
])
async def test_malformed_requests_get_400(echo: Worker, http: aiohttp.ClientSession,
                                          body: bytes, detail: str) -> None:
    status, doc = await call(http, "POST", echo.url + "/predict", body)
    assert status == 400 and doc["error"] == "bad_request" and detail in doc["detail"]


async def test_model_exception_is_500_with_message(echo: Worker, http: aiohttp.ClientSession) -> None:
    status, doc = await call(http, "POST", echo.url + "/predict", b'{"fail": "kaboom"}')
    assert (status, doc) == (500, {"error": "model_error", "detail": "RuntimeError: kaboom"})
    assert "RuntimeError: kaboom" in echo.log()           # with its traceback, for the operator
    assert (await call(http, "POST", echo.url + "/predict", b"1"))[0] == 200


async def test_unknown_path_is_json_404(echo: Worker, http: aiohttp.ClientSession) -> None:
    status, doc = await call(http, "GET", echo.url + "/nope")
    assert status == 404 and doc["error"] == "not_found"


async def test_probes_answer_while_predict_runs(echo: Worker, http: aiohttp.ClientSession) -> None:
    slow = asyncio.ensure_future(call(http, "POST", echo.url + "/predict", b'{"sleep": 1.0}'))
    await wait_until(lambda: _in_flight(http, echo.url), what="the slow request in flight")
    assert (await call(http, "GET", echo.url + "/health"))[0] == 200
    assert not slow.done()                 # health did not queue behind the running predict()
    assert (await slow)[0] == 200


async def _in_flight(http: aiohttp.ClientSession, url: str) -> bool:
    return (await call(http, "GET", url + "/predict"))[1]["in_flight"] > 0


async def test_mlp_predicts_batches(start_worker: Any, http: aiohttp.ClientSession) -> None:
    mlp = start_worker("examples.models.mlp:MLP", use_env_port=True)
    await wait_http_ok(mlp.url + "/ready")
    status, doc = await call(http, "POST", mlp.url + "/predict",
                             b'{"instances": [%s, %s]}' % (b"[0.1" + b", 0.1" * 511 + b"]",
                                                           b"[1" + b", -1" * 511 + b"]"))
    assert status == 200
    assert [len(p) for p in doc["predictions"]] == [16, 16]
    status, doc = await call(http, "POST", mlp.url + "/predict", b'{"instances": [[1, 2, 3]]}')
    assert status == 400 and "512 numbers" in doc["detail"]


async def test_contract_violations(start_worker: Any, odd_dir: Path,
                                   http: aiohttp.ClientSession) -> None:
    wrong = start_worker("odd_models:WrongLength", cwd=odd_dir)
    upper = start_worker("odd_models:make_upper", cwd=odd_dir)     # module:factory
    await wait_http_ok(wrong.url + "/ready")
    status, doc = await call(http, "POST", wrong.url + "/predict", b'{"instances": [1, 2]}')
    assert status == 500 and doc == {"error": "model_error",
                                     "detail": "predict returned 1 predictions for 2 instances"}
    await wait_http_ok(upper.url + "/ready")
    assert await call(http, "POST", upper.url + "/predict", b'"ab"') == (200, {"predictions": ["AB"]})
    assert await call(http, "POST", upper.url + "/predict", b"1") == (
        400, {"error": "bad_request", "detail": "strings only"})


async def test_slow_load_is_healthy_but_not_ready(start_worker: Any, odd_dir: Path, tmp_path: Path,
                                                  http: aiohttp.ClientSession) -> None:
    gate = tmp_path / "gate"
    worker = start_worker("odd_models:Gated", cwd=odd_dir, env={"GATE_FILE": str(gate)})
    await wait_http_ok(worker.url + "/health")
    assert await call(http, "GET", worker.url + "/ready") == (503, {"ready": False, "draining": False})
    status, doc = await call(http, "POST", worker.url + "/predict", b"1")
    assert status == 503 and doc["error"] == "not_ready"
    assert (await call(http, "GET", worker.url + "/predict"))[1]["ready"] is False
    gate.touch()
    await wait_http_ok(worker.url + "/ready")
    assert await call(http, "POST", worker.url + "/predict", b"1") == (200, {"predictions": ["ok"]})


async def test_failed_load_exits_non_zero(start_worker: Any, odd_dir: Path) -> None:
    worker = start_worker("odd_models:Broken", cwd=odd_dir)
    await wait_until(lambda: worker.proc.poll() is not None, what="the worker to exit")
    assert worker.proc.returncode == 1
    assert "ValueError: no weights at /nowhere" in worker.log()


async def test_sigterm_drains_in_flight_request_and_exits_0(start_worker: Any,
                                                            http: aiohttp.ClientSession) -> None:
    worker = start_worker("examples.models.echo:Echo")
    await wait_http_ok(worker.url + "/ready")
    slow = asyncio.ensure_future(call(http, "POST", worker.url + "/predict", b'{"sleep": 0.8}'))
    await wait_until(lambda: _in_flight(http, worker.url), what="the slow request in flight")
    worker.proc.send_signal(signal.SIGTERM)
    assert await slow == (200, {"predictions": [{"sleep": 0.8}]})
    await wait_until(lambda: worker.proc.poll() is not None, what="the worker to exit")
    assert worker.proc.returncode == 0
    with pytest.raises(aiohttp.ClientConnectionError):
        await call(http, "GET", worker.url + "/health")


async def test_sigterm_during_load_exits_0_at_once(start_worker: Any, odd_dir: Path,
                                                  tmp_path: Path) -> None:
    worker = start_worker("odd_models:Gated", cwd=odd_dir, env={"GATE_FILE": str(tmp_path / "never")})
    await wait_http_ok(worker.url + "/health")
    worker.proc.send_signal(signal.SIGTERM)
    await wait_until(lambda: worker.proc.poll() is not None, deadline=5, what="the worker to exit")
    assert worker.proc.returncode == 0


async def test_drain_timeout_bounds_shutdown(start_worker: Any, http: aiohttp.ClientSession) -> None:
    worker = start_worker("examples.models.echo:Echo", extra_args=["--drain-timeout", "0.3"])
    await wait_http_ok(worker.url + "/ready")
    stuck = asyncio.ensure_future(call(http, "POST", worker.url + "/predict", b'{"sleep": 30}'))
    await wait_until(lambda: _in_flight(http, worker.url), what="the stuck request in flight")
    began = time.monotonic()
    worker.proc.send_signal(signal.SIGTERM)
    await wait_until(lambda: worker.proc.poll() is not None, deadline=5, what="the worker to exit")
    assert worker.proc.returncode == 0 and time.monotonic() - began < 3
    with pytest.raises(aiohttp.ClientError):
        await stuck
