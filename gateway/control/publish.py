"""The controller's routing snapshots for data-plane processes: built from the committed state,
versioned, coalesced, and handed out by long poll (``GET /control/v1/snapshot``, admin/control.py).

``changed()`` is called on every commit (table swap) and every change of a replica set (a
replica ready, drained, crashed: the supervisor's ``on_change``). It only marks the snapshot due;
one build runs per loop turn however many changes came in that turn, and a build whose JSON is
the same as the last one's publishes nothing (no version bump, no wake-up). A slow tick catches
what nobody signals (a replica starting or no longer starting changes ``starting``).

A version is ``epoch:version``: the epoch is random per controller start, so a data plane that
outlived a controller restart never takes the new controller's version 1 for one it has seen.
Nothing is built until a data plane asks (a single-process gateway followed by nobody pays
nothing).
"""

from __future__ import annotations

import asyncio
import logging
import uuid
from collections.abc import Callable
from typing import Any

import orjson

from gateway import tasks

log = logging.getLogger("gateway.publish")
TICK = 1.0          # seconds between two unsignalled rebuilds (skipped when nothing changed)
MAX_WAIT = 30.0     # the longest long poll


class Publisher:
    def __init__(self, build: Callable[[], dict[str, Any]], epoch: str | None = None) -> None:
        self._build = build
        self.epoch = epoch or uuid.uuid4().hex[:16]
        self.version = 0
        self.active = False          # someone asked: from now on changes are built
        self.body = b""              # the whole answer of the current version
        self._json = b""             # the current snapshot, to skip a build that changed nothing
        self._due = False
        self._next: asyncio.Future[None] | None = None   # resolved when the next version is out
        self._tick: asyncio.Task[None] | None = None

    @property
    def tag(self) -> str:
        return f"{self.epoch}:{self.version}"

    def changed(self) -> None:
        """The committed state or a replica set changed: build once this loop turn ends."""
        if self._due or not self.active:
            return
        self._due = True
        asyncio.get_running_loop().call_soon(self.publish)

    def publish(self) -> None:
        """Build now; a new version when the snapshot differs from the last one."""
        self._due = False
        try:
            doc = self._build()
            data = orjson.dumps(doc)
        except Exception:   # a bug here must not stop the controller; the last version stands
            log.exception("building the routing snapshot failed; version %s stays", self.tag)
            return
        if data == self._json:
            return
        self._json = data
        self.version += 1
        self.body = b'{"epoch":%s,"version":%d,"snapshot":%s}' % (
            orjson.dumps(self.epoch), self.version, data)
        nxt, self._next = self._next, None
        if nxt is not None and not nxt.done():
            nxt.set_result(None)

    async def wait(self, after: str | None, timeout: float) -> bytes | None:
        """The current version's answer at once when it is not ``after``; else the next one
        within ``timeout`` seconds, or None."""
        if not self.active:
            self.active = True
            self.publish()
            self._tick = tasks.spawn(self._ticker(), name="snapshot tick")
        elif self._due:
            self.publish()
        if after != self.tag:
            return self.body
        if self._next is None:
            self._next = asyncio.get_running_loop().create_future()
        try:
            await asyncio.wait_for(asyncio.shield(self._next), min(timeout, MAX_WAIT))
        except TimeoutError:
            return None
        return self.body if after != self.tag else None

    async def _ticker(self) -> None:
        while True:
            await asyncio.sleep(TICK)
            self.changed()

    async def stop(self) -> None:
        await tasks.cancel_and_wait(self._tick)
        nxt, self._next = self._next, None
        if nxt is not None and not nxt.done():   # a long poll in flight answers now (its 204)
            nxt.set_result(None)
