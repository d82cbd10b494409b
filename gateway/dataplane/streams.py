"""Streaming requests: the client asks, with its Accept header, for server-sent events or JSON
lines. Such a request is relayed chunk by chunk (``server._relay`` already writes each upstream
chunk as it arrives), never batched (a batch answers once, at its end: the first token would
wait for the last) and never mirrored (a copy would hold a worker for a whole generation, and
an event stream has no single answer to compare).
"""

from __future__ import annotations

# media types a worker streams (gateway.worker.stream); matched inside the Accept value, so a
# list or parameters around them still count
_STREAM_TYPES = (b"text/event-stream", b"application/x-ndjson", b"application/jsonl",
                 b"application/json-lines")


def accepts_stream(accept: bytes) -> bool:
    """Whether an Accept value names a stream type (``http1`` calls it from its one scan of the
    request head and keeps the answer in ``Request.wants_stream``)."""
    lowered = accept.lower()
    return any(t in lowered for t in _STREAM_TYPES)
