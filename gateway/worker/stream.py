"""Streaming answers: server-sent events or JSON lines, chosen by the request's Accept.

``Accept: text/event-stream`` gets one ``data: <json>`` event per item, then ``event: end``;
``Accept: application/x-ndjson`` (or ``application/jsonl``) one JSON document per line. An
error before the first item is an ordinary JSON error answer (status and all); an error after
it can only travel inside the stream: an ``event: error`` event, or a line
``{"error": kind, "detail": ...}``. Each item is written (and flushed) as soon as the model
yields it: the gateway relays chunks as they come, so time to first byte is the model's.
"""

from __future__ import annotations

import logging
from collections.abc import AsyncGenerator
from typing import Any

from aiohttp import web

from gateway.worker.model import to_json

log = logging.getLogger("gateway.worker")

SSE = "text/event-stream"
NDJSON = "application/x-ndjson"
_STREAM_TYPES = {SSE: SSE, NDJSON: NDJSON, "application/jsonl": NDJSON,
                 "application/json-lines": NDJSON}


def negotiate(accept: str | None) -> str | None:
    """The stream type an Accept header asks for (the first listed, q > 0), or None: JSON."""
    if not accept:
        return None
    for part in accept.split(","):
        media, *params = (p.strip() for p in part.split(";"))
        kind = _STREAM_TYPES.get(media.lower())
        if kind is not None and not any(p.replace(" ", "") in ("q=0", "q=0.0", "q=0.00",
                                                                 "q=0.000") for p in params):
            return kind
    return None


def frame(kind: str, item: Any) -> bytes:
    data = to_json(item)
    return b"data: " + data + b"\n\n" if kind == SSE else data + b"\n"


def error_frame(kind: str, error: str, detail: str) -> bytes:
    doc = to_json({"error": error, "detail": detail})
    return b"event: error\ndata: " + doc + b"\n\n" if kind == SSE else doc + b"\n"


def end_frame(kind: str) -> bytes:
    return b"event: end\ndata: {}\n\n" if kind == SSE else b""


async def respond(request: web.Request, kind: str, first: Any,
                  rest: AsyncGenerator[Any, None]) -> web.StreamResponse:
    """Write ``first`` then every item of ``rest`` as they come. The caller took ``first``
    already, so that a model failing at once still gets a proper JSON error status."""
    resp = web.StreamResponse(status=200, headers={
        "Content-Type": kind,
        "Cache-Control": "no-cache",
        "X-Accel-Buffering": "no",          # tells an nginx in front not to buffer either
    })
    resp.enable_chunked_encoding()
    await resp.prepare(request)
    try:
        await resp.write(frame(kind, first))
        try:
            async for item in rest:
                await resp.write(frame(kind, item))
        except (ConnectionError, OSError):
            raise
        except Exception as exc:  # the model failed mid-stream: say so in the stream
            log.error("streaming predict failed after the first item", exc_info=exc)
            await resp.write(error_frame(kind, "model_error", f"{type(exc).__name__}: {exc}"))
            return resp
        end = end_frame(kind)
        if end:
            await resp.write(end)
        await resp.write_eof()
    except (ConnectionError, OSError):
        log.info("stream client went away; the model's generator is closed")
    finally:
        await rest.aclose()       # the generator's own cleanup runs now, not at GC
    return resp
