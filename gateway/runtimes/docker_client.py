"""The Docker SDK client both Docker-backed runtimes (docker.py, swarm.py) talk through.

One place for how the client is made (base_url or DOCKER_HOST), how a blocking SDK call leaves
the event loop (``asyncio.to_thread``), and how the SDK's errors become a RuntimeFailure that
says what failed and what to do.
"""

from __future__ import annotations

import asyncio
import os
from collections.abc import Awaitable, Callable
from typing import Any, TypeVar

import docker
import docker.errors
import requests
import urllib3.exceptions

from gateway.errors import RuntimeFailure
from gateway.runtimes.base import ExitInfo

T = TypeVar("T")

SDK_ERRORS = (docker.errors.DockerException, requests.RequestException, OSError)
# A broken events stream may also surface as a half-read JSON document or an urllib3 error.
STREAM_ERRORS = (*SDK_ERRORS, ValueError, urllib3.exceptions.HTTPError)


class DockerPlumbing:
    """A lazily made ``docker.DockerClient`` and the off-loop call wrapper around it."""

    # which runtime to suggest instead when the daemon cannot be reached
    _fallback = "gateway.docker.base_url"

    def __init__(self, base_url: str | None, timeout: float) -> None:
        self.base_url = base_url
        self.timeout = timeout
        self._client: docker.DockerClient | None = None
        self._client_lock: asyncio.Lock | None = None

    def _new_client(self) -> docker.DockerClient:
        """Blocking: connects to learn the API version."""
        if self.base_url:
            return docker.DockerClient(base_url=self.base_url, timeout=self.timeout)
        return docker.from_env(timeout=self.timeout)

    def _where(self) -> str:
        return self.base_url or os.environ.get("DOCKER_HOST") or "the default socket"

    async def _off_loop(self, what: str, fn: Callable[..., T], *args: Any) -> T:
        """Run a blocking SDK call in a thread; SDK and transport errors become RuntimeFailure."""
        try:
            return await asyncio.to_thread(fn, *args)
        except SDK_ERRORS as exc:
            raise RuntimeFailure(f"docker ({self._where()}): {what}: {explain(exc)}") from exc

    async def _docker(self) -> docker.DockerClient:
        if self._client is None:
            if self._client_lock is None:
                self._client_lock = asyncio.Lock()
            async with self._client_lock:
                if self._client is None:
                    try:
                        self._client = await asyncio.to_thread(self._new_client)
                    except SDK_ERRORS as exc:
                        # the SDK's own text buries the cause under three wrappers: say what
                        # failed, why in a few words, and what to do
                        raise RuntimeFailure(
                            f"cannot reach the Docker daemon at {self._where()} "
                            f"({root_cause(exc)}): start dockerd, or point DOCKER_HOST or "
                            f"{self._fallback} at it, or use gateway.runtime: process"
                        ) from None
        return self._client

    async def _close_client(self) -> None:
        client, self._client = self._client, None
        if client is not None:
            await asyncio.to_thread(client.close)


def inspect_container(client: docker.DockerClient, ref: str) -> dict[str, Any] | None:
    """Blocking. A container's attrs, or None when it no longer exists (or is on another node)."""
    try:
        attrs: dict[str, Any] = client.api.inspect_container(ref)
        return attrs
    except docker.errors.NotFound:
        return None


def root_cause(exc: BaseException) -> str:
    """The innermost OS error's words (``No such file or directory``, ``Permission denied``),
    else the error's own text."""
    seen: set[int] = set()
    todo: list[BaseException] = [exc]
    while todo:
        e = todo.pop()
        if id(e) in seen:
            continue
        seen.add(id(e))
        if isinstance(e, OSError) and e.strerror:
            return str(e.strerror)
        todo += [c for c in (e.__cause__, e.__context__) if c is not None]
        todo += [a for a in e.args if isinstance(a, BaseException)]
    return explain(exc)


def explain(exc: BaseException) -> str:
    """The daemon's own words when there are some (APIError.explanation), else the error."""
    explanation = getattr(exc, "explanation", None)
    return str(explanation or exc)


async def until_ended(look: Callable[[], Awaitable[ExitInfo | None]], ended: asyncio.Event,
                      closed: Callable[[], bool], poll: float, closing: str) -> ExitInfo:
    """How a replica ended, waiting for it: ``look()`` (None while it runs) first, then again
    each time its end is signalled (``ended``). The caller's watcher is listening before the
    first look (it replays from before it started), so an end between the look and the wait is
    never lost; signalled yet still running (a racing poll, or a container's "die" before Swarm
    records the task's end): look again after ``poll`` seconds. ``closing``: the error once the runtime closed."""
    info = await look()
    while info is None:
        if ended.is_set():
            await asyncio.sleep(poll)
        else:
            await ended.wait()
        if closed():
            raise RuntimeFailure(closing)
        info = await look()
    return info
