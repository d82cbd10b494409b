"""Process plumbing for the bench: free ports, process groups, readiness polls, cleanup.

Every process the bench starts gets its own session (process group) and is registered with a
``ProcSet``; leaving the ``with`` block stops them all, in reverse start order, pass or fail.
"""

from __future__ import annotations

import contextlib
import os
import signal
import socket
import subprocess
import time
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Self


def free_port() -> int:
    """A port that was free a moment ago on 127.0.0.1 (the kernel picks it)."""
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def http_status(port: int, path: str = "/", timeout: float = 1.0) -> int | None:
    """Status of one GET on 127.0.0.1:port, or None when nothing answers.

    A raw socket rather than urllib: no proxy environment variables, no redirects, no surprises.
    """
    req = f"GET {path} HTTP/1.1\r\nHost: 127.0.0.1:{port}\r\nConnection: close\r\n\r\n".encode()
    try:
        with socket.create_connection(("127.0.0.1", port), timeout=timeout) as s:
            s.sendall(req)
            head = s.recv(64)
    except OSError:
        return None
    parts = head.split(b" ", 2)
    if len(parts) < 2 or not parts[0].startswith(b"HTTP/"):
        return None
    try:
        return int(parts[1])
    except ValueError:
        return None


@dataclass
class Proc:
    """A started process (leader of its own process group) and where its output goes."""

    name: str
    popen: subprocess.Popen[bytes]
    log: Path

    @property
    def pid(self) -> int:
        return self.popen.pid

    def alive(self) -> bool:
        return self.popen.poll() is None

    def log_tail(self, lines: int = 30) -> str:
        try:
            text = self.log.read_text(errors="replace")
        except OSError:
            return ""
        return "\n".join(text.splitlines()[-lines:])

    def stop(self, grace: float) -> None:
        """SIGTERM the group, wait up to ``grace`` seconds, then SIGKILL the group."""
        if self.alive():
            _signal_group(self.pid, signal.SIGTERM)
            try:
                self.popen.wait(timeout=grace)
            except subprocess.TimeoutExpired:
                pass
        # The leader may be gone while children of its group live on: always sweep the group.
        _signal_group(self.pid, signal.SIGKILL)
        with contextlib.suppress(subprocess.TimeoutExpired):
            self.popen.wait(timeout=2.0)


def _signal_group(pgid: int, sig: int) -> None:
    with contextlib.suppress(ProcessLookupError, PermissionError):
        os.killpg(pgid, sig)


class ProcSet:
    """Starts processes in new sessions and stops every one of them on exit."""

    def __init__(self, log_dir: Path, pid_dirs: Sequence[Path] = ()) -> None:
        self._log_dir = log_dir
        self._procs: list[tuple[Proc, float]] = []
        # Directories whose */nginx.pid files name processes we caused to start indirectly
        # (the gateway's own backends): swept last, so nothing outlives the bench.
        self._pid_dirs = list(pid_dirs)
        self.orphans: list[str] = []

    def start(self, name: str, argv: Sequence[str], *, env: dict[str, str] | None = None,
              cwd: str | Path | None = None, grace: float = 5.0) -> Proc:
        log = self._log_dir / f"{name}.log"
        with open(log, "wb") as out:
            popen = subprocess.Popen(list(argv), stdout=out, stderr=subprocess.STDOUT,
                                     stdin=subprocess.DEVNULL, env=env, cwd=cwd,
                                     start_new_session=True)
        proc = Proc(name, popen, log)
        self._procs.append((proc, grace))
        return proc

    def stop_all(self) -> None:
        for proc, grace in reversed(self._procs):
            proc.stop(grace)
        self._procs.clear()
        for pid_dir in self._pid_dirs:
            self.orphans += _kill_pidfiles(pid_dir)

    def __enter__(self) -> Self:
        return self

    def __exit__(self, *exc: object) -> None:
        self.stop_all()


def _kill_pidfiles(root: Path) -> list[str]:
    """Kill every live process named by root/*/nginx.pid; return a description of each."""
    killed = []
    for pidfile in root.glob("*/nginx.pid"):
        try:
            pid = int(pidfile.read_text().strip())
        except (OSError, ValueError):
            continue
        if not Path(f"/proc/{pid}").exists():
            continue
        # nginx master: SIGTERM is a fast shutdown that takes its workers down with it.
        with contextlib.suppress(ProcessLookupError):
            os.kill(pid, signal.SIGTERM)
            killed.append(f"nginx pid {pid} ({pidfile.parent.name})")
        if not _wait_gone(pid, 3.0):
            with contextlib.suppress(ProcessLookupError):
                os.kill(pid, signal.SIGKILL)
    return killed


def _wait_gone(pid: int, timeout: float) -> bool:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if not Path(f"/proc/{pid}").exists() or _is_zombie(pid):
            return True
        time.sleep(0.05)
    return False


def _is_zombie(pid: int) -> bool:
    fields = _stat_fields(pid)
    return not fields or fields[0] == "Z"


def wait_http_ok(proc: Proc, port: int, path: str = "/", timeout: float = 30.0) -> None:
    """Poll until GET path answers 200; raise with the log tail if it dies or times out."""
    deadline = time.monotonic() + timeout
    delay = 0.02
    last: int | None = None
    while time.monotonic() < deadline:
        if not proc.alive():
            raise RuntimeError(f"{proc.name} exited with {proc.popen.returncode} before it was "
                               f"ready; log tail:\n{proc.log_tail()}")
        last = http_status(port, path)
        if last == 200:
            return
        time.sleep(delay)
        delay = min(delay * 1.5, 0.25)
    raise RuntimeError(f"{proc.name} not ready on :{port}{path} after {timeout:.0f}s "
                       f"(last status {last}); log tail:\n{proc.log_tail()}")


_TICK = os.sysconf("SC_CLK_TCK")


def children_running(pid: int, marker: str) -> list[int]:
    """Live child processes of ``pid`` whose command line contains ``marker`` (the gateway's
    data-plane processes, not its replicas)."""
    found = []
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        fields = _stat_fields(int(entry.name))
        if len(fields) > 1 and int(fields[1]) == pid and fields[0] != "Z":
            with contextlib.suppress(OSError):
                if marker.encode() in (entry / "cmdline").read_bytes():
                    found.append(int(entry.name))
    return found


def _stat_fields(pid: int) -> list[str]:
    """/proc/<pid>/stat fields after the command name (field 3 onwards); [] if gone."""
    try:
        return Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    except (OSError, IndexError):
        return []


def group_pids(pgid: int) -> list[int]:
    """Live processes of one process group (an nginx master and its workers)."""
    pids = []
    for entry in Path("/proc").iterdir():
        if entry.name.isdigit():
            fields = _stat_fields(int(entry.name))
            if len(fields) > 2 and int(fields[2]) == pgid:
                pids.append(int(entry.name))
    return pids


def host_busy_seconds() -> float:
    """CPU seconds every core of the machine spent busy so far (/proc/stat: all but idle and
    iowait): with the load generator and the backends on the same host, the cost of one request
    to the whole machine."""
    fields = Path("/proc/stat").read_text().split("\n", 1)[0].split()[1:]
    ticks = [int(f) for f in fields[:8]]
    busy = sum(ticks) - ticks[3] - ticks[4]
    return busy / os.sysconf("SC_CLK_TCK")


def pin(pids: Sequence[int], cpus: set[int]) -> None:
    """Run these processes, every thread of them, on ``cpus`` only (threads they start later
    inherit it)."""
    for pid in pids:
        for task in Path(f"/proc/{pid}/task").glob("*"):
            with contextlib.suppress(OSError):
                os.sched_setaffinity(int(task.name), cpus)


def cpu_seconds(pids: Sequence[int]) -> float:
    """User + system CPU time these processes have used so far (all their threads)."""
    return sum(cpu_split(pids))


def cpu_split(pids: Sequence[int]) -> tuple[float, float]:
    """(user, system) CPU time these processes have used so far (all their threads)."""
    user = system = 0
    for pid in pids:
        fields = _stat_fields(pid)
        if len(fields) > 12:
            user += int(fields[11])                     # utime, stime (fields 14, 15)
            system += int(fields[12])
    return user / _TICK, system / _TICK


def read_rss_kib(pid: int) -> dict[str, int]:
    """VmRSS / VmHWM of a process in KiB, from /proc/<pid>/status."""
    out: dict[str, int] = {}
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        key, _, rest = line.partition(":")
        if key in ("VmRSS", "VmHWM"):
            out[key] = int(rest.split()[0])
    return out


@contextlib.contextmanager
def raised_nofile() -> Iterator[None]:
    """Raise the soft fd limit to the hard one (inherited by the children we start)."""
    import resource

    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    resource.setrlimit(resource.RLIMIT_NOFILE, (hard, hard))
    try:
        yield
    finally:
        resource.setrlimit(resource.RLIMIT_NOFILE, (soft, hard))
