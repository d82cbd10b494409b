"""One gateway per state_dir and instance: an exclusive ``flock`` on a file in state_dir.

Two gateways on the same state would fight over it: the second one's start-up kills the
replicas the first one's state file lists (process runtime) or adopts and removes its containers
(Docker), long before it fails to bind the listen address. So ``Gateway.start`` takes this lock
first, before the runtime, the journals or any replica is touched, and a second ``up`` is refused
with the holder's pid. The kernel drops the lock when the holding process exits, however it
exits (SIGKILL included), so there is never a stale lock to clean up; the pid written in the
file is for the message only.
"""

from __future__ import annotations

import fcntl
import os
import re
import time
from pathlib import Path

import orjson

from gateway.errors import StateDirLocked

_UNSAFE_NAME = re.compile(r"[^A-Za-z0-9_.-]+")


def lock_path(state_dir: str | Path, instance: str = "default") -> Path:
    """``gateway.lock``, or ``gateway.<instance>.lock`` (named like the process runtime's state
    file, which is per instance too)."""
    suffix = "" if instance == "default" else f".{_UNSAFE_NAME.sub('_', instance)}"
    return Path(state_dir) / f"gateway{suffix}.lock"


class StateLock:
    """Held from ``acquire`` until ``release`` or the end of the process."""

    def __init__(self, state_dir: str | Path, instance: str = "default") -> None:
        self.path = lock_path(state_dir, instance)
        self.instance = instance
        self._fd: int | None = None

    @property
    def held(self) -> bool:
        return self._fd is not None

    def acquire(self, source: str = "") -> None:
        """Take the lock or raise StateDirLocked naming the holder; idempotent."""
        if self._fd is not None:
            return
        self.path.parent.mkdir(parents=True, exist_ok=True)
        # O_CLOEXEC: a worker must never inherit the lock and keep it after the gateway died
        fd = os.open(self.path, os.O_RDWR | os.O_CREAT | os.O_CLOEXEC, 0o644)
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            holder = _describe(os.pread(fd, 4096, 0))
            os.close(fd)
            raise StateDirLocked(
                f"{self.path.parent} (instance {self.instance}) is in use by another "
                f"serve-gateway ({holder}); stop that one first, or give this one another "
                "gateway.state_dir", source) from None
        except BaseException:
            os.close(fd)
            raise
        doc = {"pid": os.getpid(), "instance": self.instance, "since": time.time()}
        os.ftruncate(fd, 0)
        os.pwrite(fd, orjson.dumps(doc) + b"\n", 0)
        self._fd = fd

    def release(self) -> None:
        fd, self._fd = self._fd, None
        if fd is not None:
            os.close(fd)               # closing the last descriptor drops the flock


def _describe(data: bytes) -> str:
    """``pid 1234, up since 2026-12-02 06:04:45``, or what can be said of a half-written file."""
    try:
        doc = orjson.loads(data)
        pid = int(doc["pid"])
        since = time.strftime("%Y-%m-%d %H:%M:%S", time.localtime(float(doc["since"])))
    except (orjson.JSONDecodeError, KeyError, TypeError, ValueError):
        return "pid unknown: it is still starting"
    return f"pid {pid}, up since {since}"
