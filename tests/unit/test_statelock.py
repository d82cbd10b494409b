"""gateway/statelock.py: one holder per state_dir and instance, the holder's pid in the refusal."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

from gateway.errors import ConfigError, StateDirLocked
from gateway.statelock import StateLock, lock_path


def test_second_holder_is_refused_with_the_pid_until_release(tmp_path: Path) -> None:
    first = StateLock(tmp_path / "state")
    first.acquire()
    first.acquire()                                    # idempotent
    with pytest.raises(StateDirLocked) as info:
        StateLock(tmp_path / "state").acquire("gw.yaml")
    assert isinstance(info.value, ConfigError)         # `up` prints it and exits 1
    assert f"pid {os.getpid()}" in info.value.render()
    assert info.value.problems[0].path == "gateway.state_dir"
    other = StateLock(tmp_path / "state", instance="blue")   # another instance: its own lock
    other.acquire()
    assert other.path == lock_path(tmp_path / "state", "blue") != first.path
    first.release()
    again = StateLock(tmp_path / "state")
    again.acquire()
    assert again.held
    again.release()
    other.release()


def test_a_half_written_lock_file_still_refuses(tmp_path: Path) -> None:
    holder = StateLock(tmp_path)
    holder.acquire()
    holder.path.write_bytes(b"")                     # the holder has not written its pid yet
    with pytest.raises(StateDirLocked, match="pid unknown"):
        StateLock(tmp_path).acquire()
    holder.release()
