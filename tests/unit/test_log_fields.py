"""--log-format json (gateway/logs.py): one object per line, the event's fields as keys."""

from __future__ import annotations

import logging

import orjson

from gateway.logs import JsonFormatter, fields


def record(msg: str, *args: object, extra: dict | None = None) -> logging.LogRecord:
    rec = logging.LogRecord("gateway.access", logging.INFO, __file__, 1, msg, args, None)
    for k, v in (extra or {}).items():
        setattr(rec, k, v)
    return rec


def test_json_lines_carry_the_events_fields() -> None:
    extra = fields("access", service="echo", version="v1", replica="echo-v1-1", status=200,
                   latency_ms=1.5, request_id="abc", peer=None)
    line = JsonFormatter().format(record("POST /v1/echo %d", 200, extra=extra))
    doc = orjson.loads(line)
    assert "\n" not in line
    assert doc["msg"] == "POST /v1/echo 200" and doc["logger"] == "gateway.access"
    assert doc["level"] == "info" and isinstance(doc["ts"], float)
    assert {k: doc[k] for k in ("event", "service", "version", "replica", "status",
                                "latency_ms", "request_id")} == \
        {"event": "access", "service": "echo", "version": "v1", "replica": "echo-v1-1",
         "status": 200, "latency_ms": 1.5, "request_id": "abc"}
    assert "peer" not in doc                 # a field the event does not have is left out


def test_a_line_without_fields_is_still_one_object() -> None:
    doc = orjson.loads(JsonFormatter().format(record("plain %s", "text")))
    assert doc["msg"] == "plain text" and "event" not in doc
