"""The naive baseline: the reverse proxy most people would write first with aiohttp.

One process on uvloop, one long-lived ClientSession with default settings; each request is
read whole, forwarded (method, path, headers, body), and the upstream response read whole and
returned. Only the headers that would make the forwarded message wrong are dropped.

    python bench/naive_proxy.py --port 8001 --upstream http://127.0.0.1:8000
"""

from __future__ import annotations

import argparse
import asyncio

import uvloop
from aiohttp import ClientSession, web

# Hop-by-hop headers plus the framing ones aiohttp recomputes for the new message.
_DROP = frozenset(h.lower() for h in (
    "Connection", "Keep-Alive", "Proxy-Connection", "TE", "Trailer", "Transfer-Encoding",
    "Upgrade", "Content-Length", "Host",
))
_DROP_RESP = _DROP | {"content-encoding"}


def _forwardable(headers: object, drop: frozenset[str]) -> dict[str, str]:
    return {k: v for k, v in headers.items() if k.lower() not in drop}  # type: ignore[attr-defined]


def make_app(upstream: str) -> web.Application:
    """The proxy app; the ClientSession lives as long as the app."""
    app = web.Application()
    session_key = web.AppKey("session", ClientSession)

    async def session_ctx(app: web.Application):  # type: ignore[no-untyped-def]
        app[session_key] = ClientSession(auto_decompress=False)
        yield
        await app[session_key].close()

    async def proxy(request: web.Request) -> web.Response:
        body = await request.read()
        async with app[session_key].request(
            request.method, upstream + request.path_qs,
            headers=_forwardable(request.headers, _DROP), data=body or None,
        ) as resp:
            data = await resp.read()
            return web.Response(status=resp.status, body=data,
                                headers=_forwardable(resp.headers, _DROP_RESP))

    app.cleanup_ctx.append(session_ctx)
    app.router.add_route("*", "/{tail:.*}", proxy)
    return app


async def _serve(port: int, upstream: str) -> None:
    runner = web.AppRunner(make_app(upstream.rstrip("/")), access_log=None)
    await runner.setup()
    await web.TCPSite(runner, "127.0.0.1", port).start()
    try:
        await asyncio.Event().wait()
    finally:
        await runner.cleanup()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--port", type=int, required=True)
    parser.add_argument("--upstream", required=True, help="e.g. http://127.0.0.1:8000")
    args = parser.parse_args()
    uvloop.run(_serve(args.port, args.upstream))


if __name__ == "__main__":
    main()
