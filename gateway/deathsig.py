"""A child that dies with its parent: the preexec_fn both kinds of child process share (the
process runtime's workers, the controller's data-plane processes).

PR_SET_PDEATHSIG=SIGKILL reaches the child when the parent dies, however it dies. prctl is
resolved in the parent, so the forked child only makes the call (no dlopen between fork and
exec); a parent that died before the call took effect is caught by the getppid() check.
"""

from __future__ import annotations

import ctypes
import os
import signal
import sys
from collections.abc import Callable

_PR_SET_PDEATHSIG = 1


def die_with_parent(then: Callable[[], None] | None = None) -> Callable[[], None] | None:
    """preexec_fn (Linux; None elsewhere): SIGKILL on the parent's death, then ``then()`` (what
    the caller's child must do before exec)."""
    if not sys.platform.startswith("linux"):
        return None
    prctl = ctypes.CDLL(None, use_errno=True).prctl
    parent = os.getpid()

    def hook() -> None:
        prctl(_PR_SET_PDEATHSIG, signal.SIGKILL, 0, 0, 0)
        if then is not None:
            then()
        if os.getppid() != parent:       # the parent died before prctl took effect
            os.kill(os.getpid(), signal.SIGKILL)
    return hook
