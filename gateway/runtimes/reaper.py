"""The reaper: kills every worker process group when the gateway dies, however it dies.

PR_SET_PDEATHSIG reaches only the process the gateway forked, the group leader. A worker started
through a shell (``sh -c "python ...; true"``) is a grandchild: when a SIGKILLed gateway takes the
shell with it, the model process is re-parented to init and lives on, holding its port and GPU.
Only someone still alive can kill the whole group, so each process runtime starts one reaper:

- a tiny stdlib-only process (``python -I reaper.py``) in its own session, so a signal to the
  gateway's terminal or process group does not take it too;
- its stdin is a pipe whose only write end the gateway holds (close-on-exec: no worker keeps it);
- every replica registers its own group from ``preexec_fn``, before ``exec`` (``+<pgid>``), so not
  even a gateway killed mid-start leaves a group unregistered; the gateway unregisters a group
  once it has swept it (``-<pgid>``);
- end of file on stdin means the gateway is gone (the kernel closes its descriptors) or has
  closed the runtime: the reaper SIGKILLs every group still registered and exits. A pgid whose
  leader is now another process (same pid, other start time) is left alone.

This file is run as a script by path and imports nothing from the package, so starting it costs
a bare interpreter and never a heavy import.
"""

from __future__ import annotations

import contextlib
import logging
import os
import signal
import subprocess
import sys
from collections.abc import Callable, Iterable
from pathlib import Path

log = logging.getLogger("gateway.runtimes.reaper")


def start_time(pid: int) -> int | None:
    """Start time of ``pid`` in clock ticks since boot; None when there is no such process."""
    try:
        stat = Path(f"/proc/{pid}/stat").read_bytes()
    except OSError:
        return None
    return int(stat[stat.rindex(b")") + 2:].split()[19])


class Reaper:
    """The gateway's side: starts the reaper, registers and unregisters groups, closes it."""

    def __init__(self, label: str, live: Callable[[], Iterable[int]] = tuple) -> None:
        self.label = label                    # in the reaper's argv, for `ps`
        self.live = live                      # groups running now: a new reaper learns them
        self._proc: subprocess.Popen[bytes] | None = None
        self._fd: int | None = None

    @property
    def fd(self) -> int:
        """The write end, for a child's ``preexec_fn``: (re)starts the reaper when needed."""
        if self._proc is None or self._proc.poll() is not None or self._fd is None:
            if self._proc is not None:
                log.warning("the worker reaper (pid %d) is gone: starting another",
                            self._proc.pid)
            self._start()
        assert self._fd is not None
        return self._fd

    def _start(self) -> None:
        self.close()
        read, write = os.pipe()               # both close-on-exec (PEP 446)
        try:
            self._proc = subprocess.Popen(
                [sys.executable, "-I", __file__, self.label], stdin=read,
                stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, start_new_session=True)
        except BaseException:
            os.close(write)
            raise
        finally:
            os.close(read)
        # never block the event loop on a stopped reaper: a lost line is logged, not waited for
        os.set_blocking(write, False)
        self._fd = write
        for pgid in self.live():             # the groups the last reaper guarded
            send(write, b"+%d\n" % pgid)

    def forget(self, pgid: int) -> None:
        """The group is swept: no need to kill it later (and its pgid may be reused)."""
        if self._fd is not None:
            send(self._fd, b"-%d\n" % pgid)

    def close(self) -> None:
        """End of file for the reaper: it kills what is still registered and exits."""
        fd, self._fd = self._fd, None
        if fd is not None:
            os.close(fd)
        proc, self._proc = self._proc, None
        if proc is not None:
            with contextlib.suppress(subprocess.TimeoutExpired):
                proc.wait(5)                  # at once: it only reads to end of file


def send(fd: int, line: bytes) -> None:
    """One write of a line shorter than PIPE_BUF is atomic; errors are the reaper's absence,
    which the next ``Reaper.fd`` repairs (safe to call between fork and exec)."""
    with contextlib.suppress(OSError):
        os.write(fd, line)


class Registry:
    """The reaper's state: registered groups with their leader's start time at registration."""

    def __init__(self) -> None:
        self.groups: dict[int, int | None] = {}

    def feed(self, line: bytes) -> None:
        sign, number = line[:1], line[1:].strip()
        if not number.isdigit():
            return
        pgid = int(number)
        if sign == b"+":
            # read now, while the leader surely lives, so pid reuse can be told apart later
            self.groups[pgid] = start_time(pgid)
        elif sign == b"-":
            self.groups.pop(pgid, None)

    def kill_all(self) -> list[int]:
        """SIGKILL every registered group still ours; returns those signalled."""
        killed = []
        for pgid, started in self.groups.items():
            now = start_time(pgid)
            if pgid <= 1 or (now is not None and now != started):
                continue                      # the pid names another process now
            # a leader that is gone may have left members: the kernel keeps the pgid reserved
            # while any member lives, so killpg reaches only that old group
            try:
                os.killpg(pgid, signal.SIGKILL)
                killed.append(pgid)
            except (ProcessLookupError, PermissionError):
                pass
        return killed


def main() -> None:
    # its own session already; a stray terminal signal must not cost the workers their reaper
    signal.signal(signal.SIGINT, signal.SIG_IGN)
    signal.signal(signal.SIGHUP, signal.SIG_IGN)
    registry = Registry()
    for line in sys.stdin.buffer:             # until end of file: the gateway is gone
        registry.feed(line)
    registry.kill_all()


if __name__ == "__main__":
    main()
