"""The one place background tasks are started.

asyncio keeps only weak references to tasks, so a task nobody holds can be garbage collected
mid-flight, and an exception in a task nobody awaits is reported late or never. ``spawn`` keeps a
strong reference until the task ends and logs any failure at once.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Coroutine
from typing import Any, TypeVar

log = logging.getLogger("gateway.tasks")
T = TypeVar("T")

_live: set[asyncio.Task[Any]] = set()


def spawn(coro: Coroutine[Any, Any, T], *, name: str) -> asyncio.Task[T]:
    task = asyncio.get_running_loop().create_task(coro, name=name)
    _live.add(task)
    task.add_done_callback(_finished)
    return task


def _finished(task: asyncio.Task[Any]) -> None:
    _live.discard(task)
    if task.cancelled():
        return
    exc = task.exception()
    if exc is not None:
        log.error("task %s failed: %r", task.get_name(), exc, exc_info=exc)


async def cancel_and_wait(*tasks: asyncio.Task[Any] | None) -> None:
    """Cancel tasks and wait until each has really finished."""
    real = [t for t in tasks if t is not None and not t.done()]
    for t in real:
        t.cancel()
    if real:
        await asyncio.gather(*real, return_exceptions=True)
