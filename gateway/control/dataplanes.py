"""The controller's data-plane processes (``gateway.workers`` >= 2): N children of
``python -m gateway.dataplane.child`` accepting on the data port with SO_REUSEPORT, started,
restarted with backoff when one dies, drained on stop, and their reports kept for ``/status``.

- The controller holds the port: a SO_REUSEPORT socket bound (never listening, so the kernel
  never queues a connection on it) before any child starts, which also picks the port for
  ``listen: ...:0``; a child that dies loses only its own connections and the port stays ours.
- Each child gets PR_SET_PDEATHSIG=SIGKILL, so a SIGKILLed controller leaves no data plane
  behind (and its replicas die with it the same way, runtimes/process.py).
- Reports (``POST /control/v1/report``) from processes this controller did not start (a gateway
  on another host running the same child command) are listed too.
"""

from __future__ import annotations

import asyncio
import contextlib
import functools
import logging
import os
import signal
import socket
import sys
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

from gateway import tasks
from gateway.admin.adminclient import TOKEN_ENV
from gateway.control.gather import Gather
from gateway.control.groups import backoff
from gateway.deathsig import die_with_parent
from gateway.errors import BadObservations
from gateway.spec.types import split_listen

log = logging.getLogger("gateway.dataplanes")
STALE_AFTER = 5.0      # seconds without a report before a remote process leaves /status
MAIN = "main"          # the controller itself in the sharers, when it serves the data port
RESTART_WINDOW = 60.0  # crashes older than this no longer lengthen the backoff


def resolve_workers(setting: int | str) -> int:
    """``gateway.workers`` as a count: ``auto`` is the cores this process may run on, at most
    16 (past that one controller's reports and snapshots are the next limit, not the cores);
    0: this process is only the controller."""
    if setting == "auto":
        try:
            cores = len(os.sched_getaffinity(0))
        except AttributeError:       # not Linux
            cores = os.cpu_count() or 1
        return max(1, min(cores, 16))
    return int(setting)


def hold_port(host: str, port: int) -> socket.socket:
    """A bound SO_REUSEPORT socket that never listens: it keeps ``port`` (or picks one for 0)
    for the data-plane processes, which bind the same address with SO_REUSEPORT."""
    family = socket.AF_INET6 if ":" in host else socket.AF_INET
    sock = socket.socket(family, socket.SOCK_STREAM)
    try:
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEPORT, 1)
        sock.bind((host, port))
    except OSError:
        sock.close()
        raise
    return sock


def controller_url(admin_listen: str, port: int) -> str:
    """The admin URL the local children reach the controller at (a wildcard listener is
    reached on loopback)."""
    host, _ = split_listen(admin_listen)
    if host in ("", "0.0.0.0", "::"):   # noqa: S104 - a wildcard is not an address to connect to
        host = "::1" if host == "::" else "127.0.0.1"
    return f"http://[{host}]:{port}" if ":" in host else f"http://{host}:{port}"


@functools.cache
def _ignore_group_signals() -> None:
    """A data-plane child ignores SIGINT and SIGHUP from its first instruction (ignored stays
    ignored across exec): a terminal's Ctrl-C or a SIGHUP reaches the whole group, and the
    controller stops the children in order, or reloads."""
    signal.signal(signal.SIGINT, signal.SIG_IGN)
    signal.signal(signal.SIGHUP, signal.SIG_IGN)


@dataclass
class Process:
    """One data-plane process as /status shows it."""

    name: str
    pid: int | None = None
    incarnation: str | None = None
    snapshot: list[Any] = field(default_factory=list)     # [epoch, version] it applied
    connections: int = 0
    requests: int = 0
    restarts: int = 0
    up_since: float | None = None       # time.time() of this incarnation's start
    error: str | None = None
    seen: float = 0.0                   # monotonic time of the last report
    local: bool = False                 # started by this controller
    share: tuple[int, int] = (0, 1)     # its part of every per-replica limit: index, count

    def doc(self) -> dict[str, Any]:
        return {"name": self.name, "pid": self.pid, "incarnation": self.incarnation,
                "snapshot": self.snapshot, "connections": self.connections,
                "requests": self.requests, "restarts": self.restarts,
                "up_since": self.up_since, "error": self.error, "share": list(self.share)}


class DataPlanes:
    """N local data-plane processes, and the table of every process that reports.

    Shares: every process that sends to the replicas (the local children, other hosts' data
    planes that reported within ``STALE_AFTER``, and the controller itself when it serves the
    data port) is a sharer, and sharer i of n keeps ``share(limit, i, n)`` of each per-replica
    concurrency limit and wait queue (dataplane/snapshot.py), so the parts add up to the limit
    however many hosts serve. Each report's answer tells the process its share; the
    controller's own part goes to ``on_reshare``."""

    def __init__(self, count: int, gather: Gather, *, main: bool = False,
                 python: str = sys.executable, clock: Callable[[], float] = time.monotonic) -> None:
        self.count = count
        self.main = main            # the controller serves the data port too (workers 1)
        self.gather = gather        # where their observations go
        self.python = python
        self.clock = clock
        # the controller's own --log-format / --log-level, so every process logs alike
        self.log_args: tuple[str, ...] = ()
        self.processes: dict[str, Process] = {}
        # the controller's own share changed (it serves the data port: ``main``)
        self.on_reshare: Callable[[tuple[int, int]], None] | None = None
        self._sharers: tuple[str, ...] = (MAIN,) if main else ()
        self._procs: dict[str, asyncio.subprocess.Process] = {}
        self._tasks: list[asyncio.Task[None]] = []
        self._stopping = False

    def start(self, controller: str, token: str, host: str, port: int) -> None:
        """Start the children (they wait for their first snapshot, then bind)."""
        env = {**os.environ, TOKEN_ENV: token}
        for i in range(self.count):
            name = f"dp-{i}"
            self.processes[name] = Process(name, local=True, share=(i, self.count))
            argv = [self.python, "-m", "gateway.dataplane.child", "--controller", controller,
                    "--name", name, "--share", f"{i}/{self.count}",
                    "--listen", f"{host}:{port}", *self.log_args]
            self._tasks.append(tasks.spawn(self._keep(name, argv, env), name=f"data plane {name}"))

    def watch(self) -> None:
        """Sweep once a second, so that a host's data plane gone silent gives its share back
        even when no other process reports (stopped by ``stop``)."""
        self._tasks.append(tasks.spawn(self._sweeps(), name="data plane sweeps"))

    async def _sweeps(self) -> None:
        while True:
            await asyncio.sleep(1.0)
            self._sweep()

    async def _keep(self, name: str, argv: list[str], env: dict[str, str]) -> None:
        """Run one child until the controller stops; restart it (with backoff) when it dies."""
        entry = self.processes[name]
        crashes: list[float] = []
        while not self._stopping:
            proc = await asyncio.create_subprocess_exec(*argv, env=env,
                                                        stdin=asyncio.subprocess.DEVNULL,
                                                        preexec_fn=die_with_parent(_ignore_group_signals))
            self._procs[name] = proc
            entry.pid, entry.incarnation, entry.up_since = proc.pid, None, time.time()
            entry.snapshot, entry.connections, entry.error = [], 0, None
            try:
                code = await proc.wait()
            finally:       # cancelled by stop() before stop saw it (a restart in that instant)
                if proc.returncode is None:
                    with contextlib.suppress(ProcessLookupError):
                        proc.kill()
            if self._stopping:
                return
            now = self.clock()
            crashes = [t for t in crashes if t > now - RESTART_WINDOW] + [now]
            delay = backoff(len(crashes))
            entry.restarts += 1
            log.error("data plane %s (pid %d) exited with %s: restarting it in %.1fs", name,
                      proc.pid, code, delay)
            self.gather.forget(name)        # its gauges go; what it counted stays
            await asyncio.sleep(delay)

    def report(self, doc: dict[str, Any]) -> Process:
        """A process's report (admin/control.py checked its fields): its observations to the
        gather (ValueError, nothing counted, when they cannot be read), the rest to the table;
        a process this controller did not start gets its own entry. The entry's ``share`` is
        what the process is told to keep."""
        applied = doc["snapshot"]
        try:
            self.gather.absorb(doc["process"], doc["incarnation"], doc.get("observations", {}),
                               (applied[0], applied[1]) if len(applied) == 2 else None)
        except BadObservations as exc:
            raise ValueError(str(exc)) from None
        name = doc["process"]
        entry = self.processes.get(name)
        if entry is None:
            entry = self.processes[name] = Process(name)
        if entry.local and doc["pid"] != entry.pid:
            return entry          # the last words of an incarnation that is gone already
        if not entry.local and entry.incarnation not in (None, doc["incarnation"]):
            entry.restarts += 1
            entry.up_since = time.time()
        if entry.up_since is None:
            entry.up_since = time.time()
        entry.pid, entry.incarnation = doc["pid"], doc["incarnation"]
        entry.snapshot, entry.connections = doc["snapshot"], doc["connections"]
        entry.requests, entry.error = doc["requests"], doc.get("error")
        entry.seen = self.clock()
        self._sweep()
        return entry

    def status(self) -> list[dict[str, Any]]:
        self._sweep()
        return [p.doc() for p in self.processes.values()]

    def _sweep(self) -> None:
        """Drop other hosts' processes silent for ``STALE_AFTER``; hand out the shares again
        when the sharers changed."""
        now = self.clock()
        gone = [n for n, p in self.processes.items() if not p.local and p.seen < now - STALE_AFTER]
        for name in gone:
            del self.processes[name]
            self.gather.forget(name)
        # the controller first, then the local children in their order (child i keeps the
        # index of its --share), then the other hosts' by name
        sharers = ((MAIN,) if self.main else ()) + \
            tuple(n for n, p in self.processes.items() if p.local) + \
            tuple(sorted(n for n, p in self.processes.items() if not p.local))
        if sharers == self._sharers:
            return
        log.info("%d processes send to the replicas: each keeps its share of every "
                 "per-replica limit (%s)", len(sharers), ", ".join(sharers))
        self._sharers = sharers
        for i, name in enumerate(sharers):
            if name in self.processes:
                self.processes[name].share = (i, len(sharers))
        if self.main and self.on_reshare is not None:
            self.on_reshare((0, len(sharers)))

    def serving(self) -> bool:
        """At least one local process has applied a snapshot (so it listens on the port)."""
        return any(p.local and p.snapshot for p in self.processes.values())

    async def wait_serving(self, tag: Callable[[], list[Any]], deadline: float) -> bool:
        """Until every local child reports the snapshot ``tag()`` applied (it binds before its
        first report), at most ``deadline`` seconds; False if one did not."""
        end = time.monotonic() + deadline
        while time.monotonic() < end:
            want = tag()
            if all(p.snapshot == want for p in self.processes.values() if p.local):
                return True
            await asyncio.sleep(0.02)
        return False

    async def stop(self, drain_timeout: float) -> None:
        """SIGTERM every child (each drains its in-flight requests, up to ``drain_timeout``),
        wait for them, SIGKILL what is left a little after the deadline; end the sweeps."""
        self._stopping = True
        procs = [p for p in self._procs.values() if p.returncode is None]
        for p in procs:
            with contextlib.suppress(ProcessLookupError):
                p.send_signal(signal.SIGTERM)
        waits = [tasks.spawn(p.wait(), name=f"data plane {p.pid} exit") for p in procs]
        if waits:
            _, late = await asyncio.wait(waits, timeout=drain_timeout + 5.0)
            for p in procs:
                if p.returncode is None:
                    log.error("data plane pid %d did not drain in time: killing it", p.pid)
                    with contextlib.suppress(ProcessLookupError):
                        p.kill()
            if late:
                await asyncio.wait(late)
        await tasks.cancel_and_wait(*self._tasks)
