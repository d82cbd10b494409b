"""The process runtime's state file (``process-replicas.json``): written atomically, read
back by the next gateway, set aside (never lost in silence) when it cannot be read."""

from __future__ import annotations

import logging
import os
import time
from pathlib import Path
from typing import Any

import orjson

log = logging.getLogger("gateway.runtimes.process")


def write_atomic(path: Path, data: bytes) -> None:
    """temp + fsync + rename + fsync(dir): a crash leaves the old file or the new, never half."""
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.name}.{os.getpid()}.tmp")
    with open(tmp, "wb") as f:
        f.write(data)
        f.flush()
        os.fsync(f.fileno())
    os.replace(tmp, path)
    dir_fd = os.open(path.parent, os.O_RDONLY)
    try:
        os.fsync(dir_fd)
    finally:
        os.close(dir_fd)


def read_state(path: Path) -> dict[str, dict[str, Any]]:
    try:
        doc = orjson.loads(path.read_bytes())
        replicas = doc["replicas"]
        if not isinstance(replicas, dict):
            raise TypeError("replicas is not an object")
        return replicas
    except FileNotFoundError:
        return {}
    except (orjson.JSONDecodeError, KeyError, TypeError) as exc:
        aside = path.with_name(f"{path.name}.corrupt-{int(time.time())}")
        log.error("unreadable state file %s (%s); moved to %s", path, exc, aside)
        os.replace(path, aside)
        return {}
