"""Process runtime: each replica is a local subprocess in its own process group.

No Docker needed; this is the embedded default. Guarantees:

- a replica's whole process group is swept with SIGKILL when its leader exits or is stopped, so
  helpers a worker spawned do not outlive it;
- on Linux the leader gets PR_SET_PDEATHSIG=SIGKILL, and the whole group is registered with the
  runtime's reaper (``reaper.py``), which SIGKILLs every registered group when the gateway dies:
  a SIGKILLed gateway leaves no worker, not even one started through a shell;
- GPUs: a version's ``resources.gpus`` is served from ``gpus`` (the configured ids, or
  ``nvidia-smi -L``) by the allocator the docker runtime uses: each replica gets its own ids as
  ``CUDA_VISIBLE_DEVICES``, a replica asking none sees none, ``check`` refuses a plan that
  overcommits, and a replica's ids come back when it exits;
- ``<state_dir>/process-replicas.json`` records the live groups (pgid + start time); a restarted
  gateway cannot re-attach to their pipes or exit codes, so ``adopt()`` kills the survivors and
  the supervisor starts fresh replicas.
"""

from __future__ import annotations

import asyncio
import dataclasses
import functools
import logging
import os
import re
import secrets
import shlex
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal

import orjson

from gateway.deathsig import die_with_parent
from gateway.errors import RuntimeFailure
from gateway.runtimes.base import ExitInfo, ExitKind, Replica, ReplicaSpec, log_tail
from gateway.runtimes.gpus import GpuAllocator, check_spec, owner_name, process_env, resolve_setting
from gateway.runtimes.reaper import Reaper, send
from gateway.runtimes.statefile import read_state, write_atomic
from gateway.spec.models import Spec
from gateway.tasks import cancel_and_wait, spawn

log = logging.getLogger("gateway.runtimes.process")

HOST = "127.0.0.1"
_POLL_S = 0.05                   # exit polling, only where pidfd_open is missing
_UNSAFE_NAME = re.compile(r"[^A-Za-z0-9_.-]+")


def free_port(host: str = HOST) -> int:
    """A port free right now (the worker binds it a moment later; a race we accept)."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind((host, 0))
        port: int = sock.getsockname()[1]
        return port


def proc_start_time(pid: int) -> int | None:
    """Start time of ``pid`` in clock ticks since boot (/proc/<pid>/stat field 22): with the pid
    it identifies a process across pid reuse. None if there is no such process."""
    try:
        stat = Path(f"/proc/{pid}/stat").read_bytes()
    except OSError:
        return None
    # comm (field 2) may hold spaces and parentheses: fields 3.. start after the last ')'.
    return int(stat[stat.rindex(b")") + 2:].split()[19])


def _killpg(pgid: int, sig: int) -> None:
    try:
        os.killpg(pgid, sig)
    except (ProcessLookupError, PermissionError):
        pass


@functools.cache
def _child_setup_hook(reaper_fd: int) -> Any:
    """preexec_fn for Linux: die with the gateway (gateway/deathsig.py), and so does the whole
    group. The group (the child's pid: it runs after setsid) registers with the reaper before
    exec, so no shell or grandchild can exist unregistered."""
    def register() -> None:
        # signals were reset to defaults already: a dead reaper's pipe must not kill us here,
        # and SIG_DFL again before exec (an ignored signal stays ignored across exec)
        signal.signal(signal.SIGPIPE, signal.SIG_IGN)
        send(reaper_fd, b"+%d\n" % os.getpid())
        signal.signal(signal.SIGPIPE, signal.SIG_DFL)
    return die_with_parent(register)


async def _until_exited(pid: int) -> None:
    """Return once ``pid`` (our child) has exited, without reaping it: while it is a zombie its
    pid, and so its process-group id, cannot be reused, which makes a final killpg safe."""
    try:
        fd = os.pidfd_open(pid)
    except (AttributeError, OSError):
        # WNOHANG: a non-blocking peek; WNOWAIT: leave the zombie for the caller to reap.
        while os.waitid(os.P_PID, pid, os.WEXITED | os.WNOHANG | os.WNOWAIT) is None:  # noqa: ASYNC222, ASYNC110
            await asyncio.sleep(_POLL_S)
        return
    loop = asyncio.get_running_loop()
    readable: asyncio.Future[None] = loop.create_future()

    def on_readable() -> None:
        if not readable.done():
            readable.set_result(None)

    loop.add_reader(fd, on_readable)
    try:
        await readable
    finally:
        loop.remove_reader(fd)
        os.close(fd)


def _kill_stale(rid: str, entry: dict[str, Any]) -> None:
    """Kill a process group left by a crashed gateway, unless its pid now names someone else."""
    try:
        pgid = int(entry["pgid"])
    except (KeyError, TypeError, ValueError):
        log.warning("state entry %s has no usable pgid: %r", rid, entry)
        return
    if pgid <= 1 or pgid == os.getpgrp():
        return
    now = proc_start_time(pgid)
    if now is not None and now != entry.get("start_time"):
        log.info("stale replica %s: pid %d was reused by another process; left alone", rid, pgid)
        return
    # A leader that is gone may have left members: the kernel keeps the pgid reserved while any
    # member lives, so killpg can only reach that old group.
    log.warning("killing process group %d of stale replica %s (%s/%s)", pgid, rid,
                entry.get("service"), entry.get("version"))
    _killpg(pgid, signal.SIGKILL)


@dataclass
class _Child:
    replica: Replica
    proc: subprocess.Popen[bytes]
    start_time: int | None
    exited: asyncio.Future[int | None]     # return code; None if the runtime closed first
    stop_requested: bool = False
    watcher: asyncio.Task[None] | None = field(default=None, repr=False)

    @property
    def pgid(self) -> int:
        return self.proc.pid             # start_new_session: the leader's pid is the group id


class ProcessRuntime:
    """Runs replicas as local subprocesses (see the module docstring for the guarantees)."""

    name = "process"

    def __init__(self, state_dir: str = ".serve-gateway", instance: str = "default",
                 private_env: tuple[str, ...] = (),
                 gpus: Sequence[int] | Literal["auto"] = "auto") -> None:
        self._state_dir = Path(state_dir)
        self._instance = instance
        # the gateway's own secrets (the admin token's variables): a worker inherits the rest of
        # the environment, never the means to drive the admin API
        self._private_env = frozenset(private_env)
        suffix = "" if instance == "default" else f".{_UNSAFE_NAME.sub('_', instance)}"
        self._state_path = self._state_dir / f"process-replicas{suffix}.json"
        self._children: dict[str, _Child] = {}
        # started with the first replica; a restarted one learns the running groups
        self._reaper = Reaper(str(self._state_dir), lambda: [
            c.pgid for c in self._children.values() if c.proc.returncode is None])
        self._save_lock = asyncio.Lock()
        self._closed = False
        self._gpu_setting = gpus
        self._alloc: GpuAllocator | None = None      # built on first use ("auto" runs nvidia-smi)

    @property
    def state_path(self) -> Path:
        return self._state_path

    async def start(self, spec: ReplicaSpec) -> Replica:
        if self._closed:
            raise RuntimeFailure("process runtime is closed")
        if not spec.command:
            raise RuntimeFailure(f"{spec.service}/{spec.version}: the process runtime needs a command")
        port = free_port()
        rid = self._new_id()
        alloc = await self._allocator()
        request = list(spec.gpu_ids) if spec.gpu_ids else spec.resources.gpus
        spec = dataclasses.replace(spec, gpu_ids=alloc.allocate(
            rid, request, owner=owner_name(spec.service, spec.version)))
        argv = [arg.replace("{port}", str(port)).replace("{python}", sys.executable)
                for arg in spec.command or ()]
        log_path = self._state_dir / "logs" / _UNSAFE_NAME.sub(
            "_", f"{spec.service}-{spec.version}-{rid}.log")
        # Popen runs on the loop thread on purpose: PR_SET_PDEATHSIG fires when the *thread*
        # that forked the child ends, and only the loop thread lives as long as the gateway.
        try:
            proc = self._spawn(spec, argv, self._env(spec, rid, port, bool(alloc.available)),
                               log_path)
        except BaseException:
            alloc.release(rid)
            raise
        replica = Replica(rid, spec, HOST, port, time.time(), str(log_path), proc.pid)
        child = _Child(replica, proc, proc_start_time(proc.pid),
                       asyncio.get_running_loop().create_future())
        self._children[rid] = child
        child.watcher = spawn(self._watch(child), name=f"process-runtime:watch:{rid}")
        log.info("started %s/%s replica %s: pid %d port %d", spec.service, spec.version, rid,
                 proc.pid, port)
        await self._save()
        return replica

    async def stop(self, replica: Replica, grace: float) -> ExitInfo:
        child = self._children.get(replica.id)
        if child is None:
            return ExitInfo(ExitKind.STOPPED, None, "unknown replica")
        if child.proc.returncode is not None or child.exited.done():
            return ExitInfo(ExitKind.STOPPED, await asyncio.shield(child.exited), "had already exited")
        child.stop_requested = True
        _signal(child, signal.SIGTERM)
        detail = "stopped"
        try:
            code = await asyncio.wait_for(asyncio.shield(child.exited), timeout=max(grace, 0.0))
        except TimeoutError:
            log.warning("replica %s ignored SIGTERM for %.1fs: SIGKILL", replica.id, grace)
            _signal(child, signal.SIGKILL)
            code = await asyncio.shield(child.exited)
            detail = f"killed after {grace:g}s grace"
        return ExitInfo(ExitKind.STOPPED, code, detail)

    async def wait(self, replica: Replica) -> ExitInfo:
        child = self._children.get(replica.id)
        if child is None:
            raise RuntimeFailure(f"unknown replica {replica.id}")
        code = await asyncio.shield(child.exited)    # one waiter's cancel must not end the rest
        if code is None:
            raise RuntimeFailure(f"runtime closed before replica {replica.id} exited")
        info = _exit_info(code, child.stop_requested)
        if info.kind != ExitKind.STOPPED and replica.log_path:
            info = dataclasses.replace(
                info, log_tail=await asyncio.to_thread(_read_tail, Path(replica.log_path)))
        return info

    async def adopt(self) -> list[Replica]:
        entries = await asyncio.to_thread(read_state, self._state_path)
        for rid, entry in entries.items():
            if rid not in self._children:
                _kill_stale(rid, entry)
        await self._save()
        return []

    async def check(self, spec: Spec) -> None:
        """ConfigError when the plan needs more GPUs than this runtime has (``gpus``)."""
        check_spec(spec, (await self._allocator()).available, setting="gateway.process.gpus")

    async def _allocator(self) -> GpuAllocator:
        if self._alloc is None:
            ids = await asyncio.to_thread(resolve_setting, self._gpu_setting)
            self._alloc = self._alloc or GpuAllocator(ids)    # another caller may have won
        return self._alloc

    async def close(self) -> None:
        self._closed = True
        await cancel_and_wait(*(c.watcher for c in self._children.values()))
        if not any(c.proc.returncode is None for c in self._children.values()):
            # nothing left to guard; replicas still running keep their reaper until the
            # gateway process ends (they die with it, as PDEATHSIG has it)
            await asyncio.to_thread(self._reaper.close)

    def _new_id(self) -> str:
        while (rid := secrets.token_hex(4)) in self._children:
            pass
        return rid

    def _env(self, spec: ReplicaSpec, rid: str, port: int, host_has_gpus: bool) -> dict[str, str]:
        env = {k: v for k, v in os.environ.items() if k not in self._private_env}
        gpu_env = process_env(spec.gpu_ids, host_has_gpus)
        # the allocator's ids win over the version's env (they are what the books say); hiding
        # the GPUs from a version that asked none does not
        user = dict(spec.env)
        env.update({**user, **gpu_env} if spec.gpu_ids else {**gpu_env, **user})
        env.update(PORT=str(port), SGW_SERVICE=spec.service, SGW_VERSION=spec.version,
                   SGW_REPLICA_ID=rid, SGW_GATEWAY_INSTANCE=self._instance)
        # `serve-gateway worker ...` must find the gateway's own venv, whatever PATH says.
        bindir = os.path.dirname(sys.executable)
        env["PATH"] = bindir + (os.pathsep + env["PATH"] if env.get("PATH") else "")
        return env

    def _spawn(self, spec: ReplicaSpec, argv: list[str], env: dict[str, str],
               log_path: Path) -> subprocess.Popen[bytes]:
        cwd = spec.workdir or os.getcwd()
        try:
            log_path.parent.mkdir(parents=True, exist_ok=True)
            with open(log_path, "ab") as log_file:      # the child keeps its own copy of the fd
                stamp = time.strftime("%Y-%m-%dT%H:%M:%S")
                command = shlex.join(argv).replace("\n", "\\n")     # one header line
                log_file.write(f"=== {stamp} start: {command} (cwd {cwd})\n".encode())
                log_file.flush()
                return subprocess.Popen(argv, stdin=subprocess.DEVNULL, stdout=log_file,
                                        stderr=subprocess.STDOUT, cwd=cwd, env=env,
                                        start_new_session=True,
                                        preexec_fn=_child_setup_hook(self._reaper.fd))  # noqa: PLW1509 (prctl, one write)
        except (OSError, subprocess.SubprocessError) as exc:
            reason = getattr(exc, "strerror", None) or str(exc)
            what = getattr(exc, "filename", None) or argv[0]
            raise RuntimeFailure(f"{spec.service}/{spec.version}: cannot run {argv[0]!r} "
                                 f"in {cwd}: {reason}: {what}") from exc

    async def _watch(self, child: _Child) -> None:
        try:
            await _until_exited(child.proc.pid)
        except asyncio.CancelledError:
            # close(): the replica lives on and stays in the state file for the next adopt().
            if not child.exited.done():
                child.exited.set_result(None)
            raise
        _killpg(child.pgid, signal.SIGKILL)   # sweep helpers left in the group; pgid still ours
        self._reaper.forget(child.pgid)       # before the reap frees the pgid for reuse
        code = child.proc.wait()              # a zombie by now: returns at once
        if self._alloc is not None:
            self._alloc.release(child.replica.id)   # the group is gone: its GPUs are free
        info = _exit_info(code, child.stop_requested)
        log.log(logging.INFO if child.stop_requested else logging.WARNING,
                "replica %s (%s/%s) ended: %s", child.replica.id, child.replica.spec.service,
                child.replica.spec.version, info.detail)
        try:
            await self._save()                # stop() and wait() return with the file current
        finally:
            child.exited.set_result(code)

    async def _save(self) -> None:
        async with self._save_lock:
            # The snapshot is taken under the lock: the last writer always writes the latest state.
            live = {rid: {"pid": c.proc.pid, "pgid": c.pgid, "start_time": c.start_time,
                          "service": c.replica.spec.service, "version": c.replica.spec.version,
                          "started_at": c.replica.started_at, "log_path": c.replica.log_path}
                    for rid, c in self._children.items() if c.proc.returncode is None}
            data = orjson.dumps({"instance": self._instance, "replicas": live},
                                option=orjson.OPT_INDENT_2)
            try:
                await asyncio.to_thread(write_atomic, self._state_path, data)
            except OSError as exc:
                log.error("cannot write %s: %s", self._state_path, exc)


def _signal(child: _Child, sig: int) -> None:
    # Only an unreaped leader (running or zombie) pins its pgid; after the reap it may be reused.
    if child.proc.returncode is None:
        _killpg(child.pgid, sig)


def _read_tail(path: Path, size: int = 8192) -> tuple[str, ...]:
    """The last lines of a replica's log file; () when it cannot be read."""
    try:
        with open(path, "rb") as f:
            f.seek(max(0, f.seek(0, os.SEEK_END) - size))
            return log_tail(f.read())
    except OSError:
        return ()


def _exit_info(code: int, stop_requested: bool) -> ExitInfo:
    if code < 0:
        try:
            how = f"killed by {signal.Signals(-code).name}"
        except ValueError:
            how = f"killed by signal {-code}"
    else:
        how = f"exit code {code}"
    if stop_requested:
        return ExitInfo(ExitKind.STOPPED, code, f"stopped ({how})")
    return ExitInfo(ExitKind.KILLED if code < 0 else ExitKind.EXITED, code, how)
