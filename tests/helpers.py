"""Small generic helpers for tests: free ports, polling with deadlines, process checks."""

from __future__ import annotations

import asyncio
import inspect
import os
import signal
import socket
import subprocess
import time
from collections.abc import Awaitable, Callable
from pathlib import Path

import aiohttp

REPO_ROOT = Path(__file__).resolve().parent.parent


def free_port() -> int:
    """A loopback port nobody listens on right now."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind(("127.0.0.1", 0))
        port: int = sock.getsockname()[1]
        return port


async def wait_until(predicate: Callable[[], bool | Awaitable[bool]], deadline: float = 10.0,
                     what: str = "condition", interval: float = 0.02) -> None:
    """Poll ``predicate`` (sync or async) until it is true; fail after ``deadline`` seconds."""
    end = time.monotonic() + deadline
    while True:
        result = predicate()
        if inspect.isawaitable(result):
            result = await result
        if result:
            return
        if time.monotonic() > end:
            raise AssertionError(f"timed out after {deadline}s waiting for {what}")
        await asyncio.sleep(interval)


async def wait_http_ok(url: str, deadline: float = 10.0) -> None:
    """Poll ``GET url`` until it answers 200; fail after ``deadline`` seconds."""
    async with aiohttp.ClientSession(timeout=aiohttp.ClientTimeout(total=1.0)) as session:
        async def ok() -> bool:
            try:
                async with session.get(url) as resp:
                    return resp.status == 200
            except (aiohttp.ClientError, TimeoutError):
                return False
        await wait_until(ok, deadline, what=f"200 from {url}")


def proc_state(pid: int) -> str | None:
    """The /proc state letter of ``pid`` ('R', 'S', 'Z' ...), or None if there is no such pid."""
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return None
    return stat[stat.rindex(")") + 2]


def alive(pid: int) -> bool:
    """Running (a zombie counts as dead: only its exit status is left)."""
    return proc_state(pid) not in (None, "Z")


def group_members(pgid: int) -> list[int]:
    """Living processes whose process group is ``pgid``."""
    members = []
    for entry in os.listdir("/proc"):
        if not entry.isdigit():
            continue
        try:
            stat = Path(f"/proc/{entry}/stat").read_text()
        except OSError:
            continue
        fields = stat[stat.rindex(")") + 2:].split()
        if int(fields[2]) == pgid and fields[0] != "Z":
            members.append(int(entry))
    return members


def kill_group(pgid: int) -> None:
    """SIGKILL a whole process group; for test cleanup, so errors are ignored."""
    try:
        os.killpg(pgid, signal.SIGKILL)
    except (ProcessLookupError, PermissionError):
        pass


# -- a real gateway in a subprocess ---------------------------------------------------------------

ECHO = "serve-gateway worker examples.models.echo:Echo --port {port}"
MLP = "serve-gateway worker examples.models.mlp:MLP --port {port}"


def echo_service(route: str = "/v1/echo", replicas: int = 2, **extra: object) -> dict:
    """A service of echo workers; extra keys go into the service (traffic, timeouts ...)."""
    return {"route": route, "rewrite": "/predict",
            "versions": {"v1": {"command": ECHO, "replicas": replicas}}, **extra}


# admin port -> the admin token of the gateway there, so that ``run_cli(..., "--admin", URL)``
# can pass it the way an operator would ($SERVE_GATEWAY_ADMIN_TOKEN)
_TOKENS: dict[int, str] = {}


class GatewayProc:
    """``serve-gateway up`` on free loopback ports, with its state in a temp dir.

    Use ``async with GatewayProc(tmp_path, services) as gw``: it waits until every service has a
    ready replica (``ready=False`` to skip), and on exit stops the gateway with SIGTERM, checks
    it exited 0 and that no worker it ran is left; whatever happens, it kills what is left.
    ``gw.auth`` is the Authorization header of the admin token the gateway generated into its
    state_dir (empty when the config names its own token).
    """

    def __init__(self, tmp_path: Path, services: dict, ready: bool = True, **gateway: object) -> None:
        import yaml

        self.port, self.admin_port = free_port(), free_port()
        self.state_dir = tmp_path / "state"
        gw = {"listen": f"127.0.0.1:{self.port}", "admin": {"listen": f"127.0.0.1:{self.admin_port}"},
              "state_dir": str(self.state_dir), "drain_timeout": "5s", "stop_grace": "3s", **gateway}
        self.config = {"gateway": gw, "services": services}
        self.config_path = tmp_path / "config.yaml"
        self.config_path.write_text(yaml.safe_dump(self.config, sort_keys=False))
        self.log_path = tmp_path / "gateway.log"
        self.wait_ready = ready
        self.up_args: list[str] = []          # extra `serve-gateway up` options (--keep-replicas)
        self.proc: subprocess.Popen[bytes] | None = None
        self.worker_pids: set[int] = set()
        self.expect_exit_code: int | None = 0
        self.token: str | None = None

    @property
    def auth(self) -> dict[str, str]:
        return {"Authorization": f"Bearer {self.token}"} if self.token else {}

    async def read_token(self) -> str | None:
        """The token the gateway wrote to <state_dir>/admin-token at start (None: it names its
        own); it is written once the admin listener is up, hence the short wait."""
        path = self.state_dir / "admin-token"
        admin = self.config["gateway"].get("admin") or {}
        if admin.get("token_env") or admin.get("token_file"):
            return None
        await wait_until(path.exists, 5, what=f"{path}")
        self.token = path.read_text().strip()
        _TOKENS[self.admin_port] = self.token
        return self.token

    def url(self, path: str = "/") -> str:
        return f"http://127.0.0.1:{self.port}{path}"

    def admin(self, path: str = "/status") -> str:
        return f"http://127.0.0.1:{self.admin_port}{path}"

    def rewrite(self, config: dict) -> None:
        """Write a new config file (for reload tests)."""
        import yaml

        self.config_path.write_text(yaml.safe_dump(config, sort_keys=False))

    async def status(self) -> dict:
        async with aiohttp.ClientSession() as s, s.get(self.admin("/status")) as r:
            doc: dict = await r.json()
        for svc in doc["services"].values():
            for ver in svc["versions"].values():
                self.worker_pids.update(r["pid"] for r in ver["replicas"] if r.get("pid"))
        return doc

    async def all_ready(self) -> bool:
        """Every version has as many ready replicas as it wants."""
        doc = await self.status()
        return all(v["ready"] >= v["desired"] for svc in doc["services"].values()
                   for v in svc["versions"].values())

    async def __aenter__(self) -> GatewayProc:
        import sys

        exe = str(Path(sys.executable).with_name("serve-gateway"))
        argv = [exe, "up", str(self.config_path), *self.up_args]
        self.proc = subprocess.Popen(argv, cwd=REPO_ROOT,
                                     stdout=self.log_path.open("wb"), stderr=subprocess.STDOUT,
                                     start_new_session=True)
        try:
            await wait_http_ok(self.admin("/healthz"), 15)
            await self.read_token()
            if self.wait_ready:
                await wait_until(self.all_ready, 30, what="every replica ready", interval=0.1)
            await self.status()
        except BaseException:
            self._kill()
            raise
        return self

    async def stop(self, sig: int = signal.SIGTERM, timeout: float = 30) -> int:
        assert self.proc is not None
        if self.proc.poll() is None:
            try:
                await self.status()
            except aiohttp.ClientError:
                pass
            self.proc.send_signal(sig)
        await wait_until(lambda: self.proc is not None and self.proc.poll() is not None, timeout,
                         what="the gateway to exit")
        return self.proc.returncode

    async def __aexit__(self, *exc: object) -> None:
        try:
            if self.proc is not None and self.proc.poll() is None:
                code = await self.stop()
                if exc[0] is None and self.expect_exit_code is not None:
                    assert code == self.expect_exit_code, f"gateway exited {code}:\n{self.log()}"
            if exc[0] is None:
                await wait_until(lambda: not any(alive(p) for p in self.worker_pids), 10,
                                 what="no worker left behind")
        finally:
            self._kill()

    def log(self) -> str:
        return self.log_path.read_text(errors="replace") if self.log_path.exists() else ""

    def _kill(self) -> None:
        if self.proc is not None:
            kill_group(self.proc.pid)
            self.proc.wait()
        for pid in self.worker_pids:
            kill_group(pid)



async def run_cli(*args: str | Path, env: dict[str, str] | None = None,
                  timeout: float = 30) -> tuple[int, str, str]:
    """Run ``serve-gateway ARGS`` without blocking the loop; returns (exit code, stdout, stderr)."""
    import sys

    exe = str(Path(sys.executable).with_name("serve-gateway"))
    argv = [str(a) for a in args]
    extra = {}
    if "--admin" in argv[:-1]:   # a harness gateway's token, as the operator would export it
        port = argv[argv.index("--admin") + 1].rstrip("/").rpartition(":")[2]
        if port.isdigit() and int(port) in _TOKENS:
            extra["SERVE_GATEWAY_ADMIN_TOKEN"] = _TOKENS[int(port)]
    proc = await asyncio.create_subprocess_exec(
        exe, *argv, cwd=REPO_ROOT, env={**os.environ, **extra, **(env or {})},
        stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.PIPE)
    try:
        out, err = await asyncio.wait_for(proc.communicate(), timeout)
    except BaseException:
        proc.kill()
        await proc.wait()
        raise
    assert proc.returncode is not None
    return proc.returncode, out.decode(), err.decode()


def metric_value(text: str, name: str, **labels: str) -> float | None:
    """The value of one sample in Prometheus text output (labels matched exactly), or None."""
    from prometheus_client.parser import text_string_to_metric_families

    for family in text_string_to_metric_families(text):
        for sample in family.samples:
            if sample.name == name and sample.labels == labels:
                return float(sample.value)
    return None


class Load:
    """Bounded closed-loop load for rollout and scale tests: ``clients`` tasks POST ``body`` to
    each URL in turn until ``stop()`` (or ``limit_s``), counting answers by URL, status and
    ``x-served-by``. ``failures`` keeps every non-2xx answer (and connection error) for the
    assertion message."""

    def __init__(self, urls: list[str], clients: int = 4, body: bytes = b'{"x": 1}',
                 limit_s: float = 120.0, pause: float = 0.005) -> None:
        from collections import Counter

        self.urls, self.clients, self.body = urls, clients, body
        self.limit_s, self.pause = limit_s, pause
        self.answers: Counter[tuple[str, int, str]] = Counter()
        self.failures: list[tuple[str, int, str, str]] = []
        self._tasks: list[asyncio.Task[None]] = []
        self._stopping = False

    def count(self, url: str | None = None, served_by: str | None = None) -> int:
        return sum(n for (u, _, s), n in self.answers.items()
                   if (url is None or u == url) and (served_by is None or s == served_by))

    async def __aenter__(self) -> Load:
        self._session = aiohttp.ClientSession(timeout=aiohttp.ClientTimeout(total=60))
        self._tasks = [asyncio.create_task(self._client(i)) for i in range(self.clients)]
        return self

    async def _client(self, i: int) -> None:
        end = time.monotonic() + self.limit_s
        n = i
        while not self._stopping and time.monotonic() < end:
            url = self.urls[n % len(self.urls)]
            n += 1
            try:
                async with self._session.post(url, data=self.body) as r:
                    text = await r.text()
                    served = r.headers.get("x-served-by", "")
                    self.answers[(url, r.status, served)] += 1
                    if not 200 <= r.status < 300:
                        self.failures.append((url, r.status, served, text[:200]))
            except (aiohttp.ClientError, TimeoutError) as exc:
                self.answers[(url, 0, "")] += 1
                self.failures.append((url, 0, "", repr(exc)))
            await asyncio.sleep(self.pause)

    async def stop(self) -> None:
        self._stopping = True
        await asyncio.gather(*self._tasks)
        await self._session.close()

    async def __aexit__(self, *exc: object) -> None:
        if not self._stopping:
            await self.stop()


# -- several data-plane processes (gateway.workers >= 2) ------------------------------------------

async def fresh_posts(url: str, n: int, body: bytes = b'{"x": 1}',
                      concurrent: bool = False) -> list[tuple[int, str]]:
    """``n`` POSTs, each on a new connection (so SO_REUSEPORT spreads them over the data-plane
    processes): (status, x-served-by) of each."""
    async with aiohttp.ClientSession(connector=aiohttp.TCPConnector(force_close=True, limit=0),
                                     timeout=aiohttp.ClientTimeout(total=60)) as s:
        async def one() -> tuple[int, str]:
            async with s.post(url, data=body) as r:
                await r.read()
                return r.status, r.headers.get("x-served-by", "")
        if concurrent:
            return list(await asyncio.gather(*(one() for _ in range(n))))
        return [await one() for _ in range(n)]


def dataplanes(status: dict) -> dict[str, dict]:
    """/status "dataplanes" by process name."""
    return {p["name"]: p for p in status["dataplanes"]}
