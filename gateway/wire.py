"""The KServe v1 / TF Serving REST request body, shared by the worker SDK and the batcher."""

from __future__ import annotations

from typing import Any

import orjson


def parse_request(body: bytes) -> tuple[Any, list[Any] | None]:
    """``body`` -> (the document, its ``instances`` list, or None when the document is one
    instance). Raises ValueError with a message fit for a 400."""
    try:
        doc = orjson.loads(body)
    except orjson.JSONDecodeError as exc:
        raise ValueError(f"body is not valid JSON: {exc}") from None
    if isinstance(doc, dict) and "instances" in doc:
        items = doc["instances"]
        if not isinstance(items, list):
            raise ValueError(f'"instances" must be a list, got {type(items).__name__}')
        return doc, items
    return doc, None
