"""ProcessRuntime with real subprocesses: start, stop, wait, logs, state file, adopt."""

from __future__ import annotations

import asyncio
import os
import signal
import subprocess
import sys
import textwrap
import time
from collections.abc import AsyncIterator, Callable, Coroutine
from pathlib import Path
from typing import Any

import aiohttp
import orjson
import pytest

from gateway.errors import RuntimeFailure
from gateway.runtimes.base import ExitKind, Replica, ReplicaSpec
from gateway.runtimes.process import ProcessRuntime, proc_start_time
from tests.helpers import REPO_ROOT, alive, group_members, kill_group, wait_http_ok, wait_until

Start = Callable[..., Coroutine[Any, Any, Replica]]


def spec(*command: str, **kwargs: Any) -> ReplicaSpec:
    return ReplicaSpec(service="svc", version="v1", revision="r1", command=command, **kwargs)


def py(code: str, *args: str, **kwargs: Any) -> ReplicaSpec:
    """A replica running an inline Python script."""
    return spec("{python}", "-c", textwrap.dedent(code), *args, **kwargs)


ECHO = spec("{python}", "-m", "gateway.worker", "examples.models.echo:Echo", "--port", "{port}",
            workdir=str(REPO_ROOT), env=(("ECHO_TAG", "blue"),))


@pytest.fixture
async def runtime(tmp_path: Path) -> AsyncIterator[ProcessRuntime]:
    rt = ProcessRuntime(state_dir=str(tmp_path / "state"), instance="test")
    yield rt
    await rt.close()


@pytest.fixture
async def start(runtime: ProcessRuntime) -> AsyncIterator[Start]:
    """Start replicas through the runtime; whatever a test leaves running is killed after it."""
    started: list[Replica] = []

    async def _start(replica_spec: ReplicaSpec) -> Replica:
        replica = await runtime.start(replica_spec)
        started.append(replica)
        return replica

    yield _start
    for replica in started:
        await asyncio.wait_for(runtime.stop(replica, grace=0), 10)


def state(runtime: ProcessRuntime) -> dict[str, Any]:
    replicas: dict[str, Any] = orjson.loads(runtime.state_path.read_bytes())["replicas"]
    return replicas


def log_text(replica: Replica) -> str:
    assert replica.log_path is not None
    return Path(replica.log_path).read_text()


def log_line(replica: Replica, prefix: str) -> str | None:
    """The first line the replica printed starting with ``prefix`` (the runtime's own header
    line quotes the command, so plain substring checks would match the script text)."""
    return next((line for line in log_text(replica).splitlines() if line.startswith(prefix)), None)


async def test_serves_then_stops_gracefully(runtime: ProcessRuntime, start: Start) -> None:
    replica = await start(ECHO)
    url = f"http://{replica.address}"
    await wait_http_ok(url + "/ready")
    async with aiohttp.ClientSession() as http:
        async with http.get(url + "/predict") as resp:
            meta = await resp.json()
        async with http.post(url + "/predict", data=b'{"x": 1}') as resp:
            assert await resp.json() == {"predictions": [{"x": 1, "tag": "blue"}]}
    assert meta["replica"] == replica.id
    entry = state(runtime)[replica.id]
    assert entry["pgid"] == meta["pid"] and entry["start_time"] == proc_start_time(meta["pid"])
    assert "listening on" in log_text(replica)

    waiters = [asyncio.ensure_future(runtime.wait(replica)) for _ in range(2)]
    stopped = await runtime.stop(replica, grace=5)
    assert (stopped.kind, stopped.code) == (ExitKind.STOPPED, 0)
    for info in await asyncio.gather(*waiters):
        assert (info.kind, info.code) == (ExitKind.STOPPED, 0)
    assert state(runtime) == {}
    again = await asyncio.wait_for(runtime.stop(replica, grace=5), 0.5)      # idempotent
    assert again.kind is ExitKind.STOPPED


async def test_crash_reports_exit_code_env_and_log(runtime: ProcessRuntime, start: Start,
                                                   tmp_path: Path) -> None:
    replica = await start(py("""
        import os, sys
        keys = ["PORT", "SGW_SERVICE", "SGW_VERSION", "SGW_REPLICA_ID", "SGW_GATEWAY_INSTANCE", "FOO"]
        print(*[os.environ[k] for k in keys], sys.argv[1], os.getcwd())
        print("first PATH entry", os.environ["PATH"].split(os.pathsep)[0])
        sys.exit(3)
        """, "{port}", env=(("FOO", "bar"),), workdir=str(tmp_path)))
    info = await asyncio.wait_for(runtime.wait(replica), 10)
    assert (info.kind, info.code, info.detail) == (ExitKind.EXITED, 3, "exit code 3")
    port = str(replica.port)
    assert log_line(replica, port) == f"{port} svc v1 {replica.id} test bar {port} {tmp_path}"
    assert log_line(replica, "first PATH") == f"first PATH entry {os.path.dirname(sys.executable)}"
    assert state(runtime) == {}


async def test_signal_death_is_killed(runtime: ProcessRuntime, start: Start) -> None:
    replica = await start(py("import os, signal; os.kill(os.getpid(), signal.SIGKILL)"))
    info = await asyncio.wait_for(runtime.wait(replica), 10)
    assert (info.kind, info.code, info.detail) == (ExitKind.KILLED, -9, "killed by SIGKILL")


# The leader and its helper both ignore SIGTERM; "ready" means the helper exists.
STUBBORN = """
    import signal, subprocess, sys, time
    signal.signal(signal.SIGTERM, signal.SIG_IGN)
    helper = subprocess.Popen([sys.executable, "-c",
        "import signal, time; signal.signal(signal.SIGTERM, signal.SIG_IGN); time.sleep(60)"])
    print("ready", helper.pid, flush=True)
    time.sleep(60)
"""


async def test_sigterm_ignored_means_sigkill_after_grace(runtime: ProcessRuntime,
                                                         start: Start) -> None:
    replica = await start(py(STUBBORN))
    await wait_until(lambda: log_line(replica, "ready ") is not None, what="the stubborn replica")
    pgid = state(runtime)[replica.id]["pgid"]
    assert len(group_members(pgid)) == 2
    began = time.monotonic()
    info = await asyncio.wait_for(runtime.stop(replica, grace=0.5), 10)
    assert time.monotonic() - began >= 0.45     # asyncio may fire a timer a hair early
    assert (info.kind, info.code, info.detail) == (ExitKind.STOPPED, -9, "killed after 0.5s grace")
    await wait_until(lambda: group_members(pgid) == [], deadline=5, what="an empty process group")


async def test_leader_exit_sweeps_its_group(runtime: ProcessRuntime, start: Start) -> None:
    replica = await start(py("""
        import subprocess, sys
        helper = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(60)"])
        print("helper", helper.pid, flush=True)
        """))
    info = await asyncio.wait_for(runtime.wait(replica), 10)
    assert (info.kind, info.code) == (ExitKind.EXITED, 0)
    line = log_line(replica, "helper ")
    assert line is not None
    helper = int(line.split()[1])
    try:
        await wait_until(lambda: not alive(helper), deadline=5, what="the helper to be killed")
    finally:
        if alive(helper):
            os.kill(helper, signal.SIGKILL)


async def test_missing_binary_is_runtime_failure(runtime: ProcessRuntime) -> None:
    with pytest.raises(RuntimeFailure, match="no-such-binary-sgw"):
        await runtime.start(spec("no-such-binary-sgw", "--port", "{port}"))
    with pytest.raises(RuntimeFailure, match="needs a command"):
        await runtime.start(spec())


async def test_adopt_kills_stale_groups_from_a_crashed_gateway(runtime: ProcessRuntime) -> None:
    def sleeper() -> subprocess.Popen[bytes]:
        return subprocess.Popen([sys.executable, "-c", "import time; time.sleep(60)"],
                                start_new_session=True)

    stale, reused = sleeper(), sleeper()
    try:
        entries = {
            "aaaa": {"pgid": stale.pid, "start_time": proc_start_time(stale.pid)},
            # same pid but another start time: the pid now names an unrelated process
            "bbbb": {"pgid": reused.pid, "start_time": (proc_start_time(reused.pid) or 0) + 1},
        }
        runtime.state_path.parent.mkdir(parents=True)
        runtime.state_path.write_bytes(orjson.dumps({"replicas": entries}))
        assert await runtime.adopt() == []
        await wait_until(lambda: stale.poll() is not None, deadline=5, what="the stale group killed")
        assert stale.returncode == -signal.SIGKILL
        assert reused.poll() is None
        assert state(runtime) == {}
    finally:
        for proc in (stale, reused):
            kill_group(proc.pid)
            proc.wait()


async def test_adopt_moves_a_corrupt_state_file_aside(runtime: ProcessRuntime) -> None:
    runtime.state_path.parent.mkdir(parents=True)
    runtime.state_path.write_text("{half a file")
    assert await runtime.adopt() == []
    assert state(runtime) == {}
    assert [p.name.split(".corrupt-")[0] for p in runtime.state_path.parent.glob("*.corrupt-*")] == [
        runtime.state_path.name]


GATEWAY = """
    import asyncio, sys
    from gateway.runtimes.base import ReplicaSpec
    from gateway.runtimes.process import ProcessRuntime

    async def main():
        rt = ProcessRuntime(state_dir=sys.argv[1])
        await rt.start(ReplicaSpec("svc", "v1", "r1",
                                   command=("{python}", "-c", "import time; time.sleep(60)")))
        print("started", flush=True)
        await asyncio.sleep(60)

    asyncio.run(main())
"""


async def test_sigkilled_gateway_leaves_no_worker(tmp_path: Path) -> None:
    gateway = await asyncio.create_subprocess_exec(
        sys.executable, "-c", textwrap.dedent(GATEWAY), str(tmp_path), cwd=REPO_ROOT,
        stdout=asyncio.subprocess.PIPE)
    worker_pid = 0
    try:
        assert gateway.stdout is not None
        assert await asyncio.wait_for(gateway.stdout.readline(), 10) == b"started\n"
        doc = orjson.loads((tmp_path / "process-replicas.json").read_bytes())
        [entry] = doc["replicas"].values()
        worker_pid = entry["pid"]
        assert alive(worker_pid)
        gateway.kill()
        await gateway.wait()
        await wait_until(lambda: not alive(worker_pid), deadline=5, what="the orphan to die")
    finally:
        if gateway.returncode is None:
            gateway.kill()
            await gateway.wait()
        if worker_pid:
            kill_group(worker_pid)
