"""One Docker events stream, read in a thread, reporting container ends to the event loop.

Kept apart from ``docker.py`` so that the runtime module stays small; it talks to the client it
is given and never imports the Docker SDK itself.
"""

from __future__ import annotations

import asyncio
import logging
import threading
import time
from collections.abc import Callable
from typing import Any

log = logging.getLogger("gateway.runtimes.docker")

# Container actions that mean "its process is gone". Docker records the exit (code, OOMKilled) in
# the container's state before it emits "die", so an inspect after "die" sees how it ended. ("oom"
# comes before the process is gone: not an end.)
END_ACTIONS = frozenset({"die", "destroy"})


class EventWatcher:
    """Streams ``client.events(filters=...)`` in a daemon thread and calls ``on_end(attributes)``
    on the loop (``call_soon_threadsafe``) for each container end. When the stream breaks it
    reconnects with backoff, replaying from the last event seen (``since``), and meanwhile
    ``healthy`` is False so that the runtime polls instead."""

    def __init__(self, make_client: Callable[[], Any], filters: dict[str, str],
                 on_end: Callable[[dict[str, str]], None], on_broken: Callable[[], None],
                 loop: asyncio.AbstractEventLoop,
                 errors: tuple[type[BaseException], ...]) -> None:
        self._make_client = make_client
        self._filters = filters
        self._on_end = on_end
        self._on_broken = on_broken
        self._loop = loop
        self._errors = errors           # what a broken stream raises (the SDK's own types)
        self._stop = threading.Event()
        self._stream: Any = None
        self._client: Any = None
        self.healthy = False
        # Replay from a second before we started: events between "thread started" and "stream
        # connected" would otherwise be lost (a replica dying in that gap would never be seen).
        self._since = int(time.time()) - 1
        self._thread = threading.Thread(target=self._run, name="docker-events", daemon=True)

    def start(self) -> None:
        self._thread.start()

    def _run(self) -> None:
        backoff = 0.2
        while not self._stop.is_set():
            try:
                if self._client is None:
                    self._client = self._make_client()
                self._stream = self._client.events(decode=True, filters=self._filters,
                                                   since=self._since)
                self.healthy = True
                backoff = 0.2
                for event in self._stream:
                    self._dispatch(event)
                    if self._stop.is_set():
                        break
            except self._errors as exc:     # reconnect; the runtime polls meanwhile
                if not self._stop.is_set():
                    log.warning("docker events stream broke (%s); polling until it is back", exc)
            if self._stop.is_set():
                break
            self._set_broken()
            self._drop_client()
            self._stop.wait(backoff)
            backoff = min(backoff * 2, 5.0)
        self._drop_client()

    def _set_broken(self) -> None:
        self.healthy = False
        try:
            self._loop.call_soon_threadsafe(self._on_broken)
        except RuntimeError:                # the loop is closed: nobody is waiting any more
            self._stop.set()

    def _dispatch(self, event: dict[str, Any]) -> None:
        when = event.get("time")
        if isinstance(when, int):
            self._since = when
        action = str(event.get("Action") or event.get("status") or "")
        if action not in END_ACTIONS:
            return
        attributes = dict((event.get("Actor") or {}).get("Attributes") or {})
        attributes["_action"] = action
        try:
            self._loop.call_soon_threadsafe(self._on_end, attributes)
        except RuntimeError:
            self._stop.set()

    def _drop_client(self) -> None:
        client, self._client = self._client, None
        if client is not None:
            try:
                client.close()
            except self._errors as exc:
                log.debug("closing the events client: %s", exc)

    def close(self, timeout: float = 5.0) -> None:
        """Stop the thread (blocking: call it through asyncio.to_thread)."""
        self._stop.set()
        stream = self._stream
        if stream is not None:
            try:
                stream.close()          # unblocks the thread's read of the stream
            except self._errors as exc:
                log.debug("closing the events stream: %s", exc)
        if self._thread.is_alive():
            self._thread.join(timeout)
