"""Logging set-up: one line per event, human-readable by default, JSON lines for machines.

With ``--log-format json`` each line is one JSON object: ``ts``, ``level``, ``logger``, ``msg``
and the event's own fields, passed by the code that logs through ``extra=`` (``fields()``
builds them): ``event`` (what happened: ``access``, ``predict``, ``replica_ready`` ...),
``service``, ``version``, ``replica``, ``status``, ``latency_ms``, ``request_id`` and a few
more. A field is left out when the event does not have it, so a query such as
``select(.request_id == "...")`` finds every line about one request, at the gateway and at
the worker.
"""

from __future__ import annotations

import logging
import sys
import time
from typing import Any

import orjson

# the structured fields a JSON line may carry, in the order they are written
FIELDS = ("event", "service", "version", "replica", "status", "latency_ms", "request_id",
          "method", "path", "peer", "instances", "reason", "address")


def fields(event: str, **values: Any) -> dict[str, Any]:
    """``extra=`` for a log call: the event's name and its fields (None values left out)."""
    out = {"event": event}
    out.update((k, v) for k, v in values.items() if v is not None)
    return out


class JsonFormatter(logging.Formatter):
    def format(self, record: logging.LogRecord) -> str:
        doc: dict[str, Any] = {"ts": round(record.created, 3), "level": record.levelname.lower(),
                               "logger": record.name, "msg": record.getMessage()}
        attrs = record.__dict__
        for key in FIELDS:
            value = attrs.get(key)
            if value is not None:
                doc[key] = value
        if record.exc_info:
            doc["exc"] = self.formatException(record.exc_info)
        return orjson.dumps(doc, default=str).decode()


def setup(fmt: str = "text", level: str = "info") -> None:
    handler = logging.StreamHandler(sys.stderr)
    if fmt == "json":
        handler.setFormatter(JsonFormatter())
    else:
        f = logging.Formatter("%(asctime)s %(levelname)-7s %(name)s: %(message)s", "%Y-%m-%dT%H:%M:%S")
        f.converter = time.gmtime
        handler.setFormatter(f)
    root = logging.getLogger()
    root.handlers[:] = [handler]
    root.setLevel(level.upper())
    logging.getLogger("aiohttp.access").setLevel(logging.WARNING)
