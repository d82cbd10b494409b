"""Readiness and liveness probes over HTTP (one shared client session, slow path only)."""

from __future__ import annotations

import aiohttp


class HttpProber:
    """GET http://host:port/path; 200 means ready. Any error or other status means not."""

    def __init__(self) -> None:
        self._session: aiohttp.ClientSession | None = None

    async def probe(self, host: str, port: int, path: str, timeout: float) -> bool:
        if self._session is None:
            self._session = aiohttp.ClientSession(
                connector=aiohttp.TCPConnector(force_close=True, limit=0),
                cookie_jar=aiohttp.DummyCookieJar())
        url = f"http://{host}:{port}{path}"
        try:
            async with self._session.get(url, timeout=aiohttp.ClientTimeout(total=timeout)) as r:
                await r.read()
                return r.status == 200
        except (aiohttp.ClientError, TimeoutError, OSError):
            return False

    async def close(self) -> None:
        if self._session is not None:
            await self._session.close()
            self._session = None
