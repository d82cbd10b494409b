"""The batching wire format, as pure functions on bytes.

A caller sends one instance (any JSON document) or ``{"instances": [...]}``. Its instances travel
as raw JSON texts, spliced into the worker's ``{"instances": [...]}``; the worker's
``{"predictions": [...]}`` is cut back into one ``{"predictions": [...]}`` per caller. A single
document is answered ``{"predictions": [p]}``, exactly as the worker answers it unbatched.
"""

from __future__ import annotations

from collections.abc import Iterable
from typing import Any

import orjson

from gateway.errors import BadRequest
from gateway.wire import parse_request


def split_instances(body: bytes) -> list[bytes]:
    """A caller's body -> its instances as JSON texts. A single document is kept byte for byte
    (it parsed, so it is valid JSON); ``{"instances": [...]}`` is split."""
    try:
        _, items = parse_request(body)
    except ValueError as exc:
        raise BadRequest(str(exc)) from None
    return [body] if items is None else [orjson.dumps(item) for item in items]


def timeout_from_header(value: str | None, default: float) -> float:
    """The request's own timeout (ms) may shorten the configured one, never lengthen it."""
    if value is None:
        return default
    try:
        ms = float(value)
    except ValueError:
        ms = -1.0
    if not ms > 0:
        raise BadRequest(f"request timeout header must be a positive number of ms, got {value!r}")
    return min(default, ms / 1000)


def batch_body(payloads: Iterable[list[bytes]]) -> bytes:
    """The worker's request: every caller's instances, in order."""
    return b'{"instances":[' + b",".join([p for ps in payloads for p in ps]) + b"]}"


def predictions(raw: bytes, expected: int) -> list[Any] | str:
    """The worker's predictions, or what is wrong with its answer."""
    try:
        doc = orjson.loads(raw)
    except orjson.JSONDecodeError as exc:
        return f"answer is not JSON: {exc}"
    preds = doc.get("predictions") if isinstance(doc, dict) else None
    if not isinstance(preds, list):
        return 'answer has no "predictions" list'
    if len(preds) != expected:
        return f"{len(preds)} predictions for {expected} instances"
    return preds


def answer(predictions: list[Any]) -> bytes:
    """One caller's share of the batch's predictions."""
    return orjson.dumps({"predictions": predictions})
