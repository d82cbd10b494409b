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


def wants_stream(raw_headers: tuple[tuple[bytes, bytes], ...]) -> bool:
    """Whether Accept names a stream type (one pass over the raw headers, no decoding)."""
    for name, value in raw_headers:
        if len(name) == 6 and name.lower() == b"accept":
            lowered = value.lower()
            if any(t in lowered for t in _STREAM_TYPES):
                return True
    return False
