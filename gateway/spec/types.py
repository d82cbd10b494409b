"""Reusable annotated field types: durations, sizes, listen addresses."""

from __future__ import annotations

import math
import re
from typing import Annotated, Any

from pydantic import BeforeValidator, WithJsonSchema

_DURATION = re.compile(r"^\s*(\d+(?:\.\d+)?)\s*(ms|s|m|h)?\s*$")
_UNITS = {"ms": 0.001, "s": 1.0, "m": 60.0, "h": 3600.0, None: 1.0}
_SIZE = re.compile(r"^\s*(\d+(?:\.\d+)?)\s*([kmgt]i?b?|b)?\s*$", re.IGNORECASE)
_SIZE_UNITS = {"": 1, "b": 1, "k": 1000, "m": 1000**2, "g": 1000**3, "t": 1000**4,
               "ki": 1024, "mi": 1024**2, "gi": 1024**3, "ti": 1024**4}


def parse_duration(value: Any) -> Any:
    """'500ms', '10s', '5m', '1h' or a number of seconds -> float seconds."""
    if isinstance(value, bool):
        raise ValueError("must be a duration such as 500ms, 10s or 5m")
    seconds = None
    if isinstance(value, (int, float)):
        seconds = float(value)
    elif isinstance(value, str) and (m := _DURATION.match(value)):
        seconds = float(m.group(1)) * _UNITS[m.group(2)]
    if seconds is None or not math.isfinite(seconds):   # 400 digits read as a float: inf
        raise ValueError("must be a duration such as 500ms, 10s or 5m")
    return seconds


def parse_size(value: Any) -> Any:
    """'10MiB', '512k', '1GB' or a number of bytes -> int bytes."""
    if isinstance(value, bool):
        raise ValueError("must be a size such as 512KiB or 10MB")
    if isinstance(value, int):
        return value
    if isinstance(value, str):
        m = _SIZE.match(value)
        if m:
            unit = (m.group(2) or "").lower().removesuffix("b")
            size = float(m.group(1)) * _SIZE_UNITS[unit]
            if math.isfinite(size):
                return int(size)
    raise ValueError("must be a size such as 512KiB or 10MB")


def parse_listen(value: Any) -> Any:
    """'host:port' (port 0 = any free port); '[::1]:8080' for IPv6."""
    if not isinstance(value, str):
        raise ValueError("must be 'host:port'")
    host, sep, port = value.rpartition(":")
    if not sep or not host or not port.isdigit() or not 0 <= int(port) <= 65535:
        raise ValueError("must be 'host:port' with a port from 0 to 65535")
    return value


Duration = Annotated[
    float,
    BeforeValidator(parse_duration),
    WithJsonSchema({"anyOf": [{"type": "number", "minimum": 0},
                              {"type": "string", "pattern": r"^\d+(\.\d+)?(ms|s|m|h)?$"}]}),
]
Size = Annotated[
    int,
    BeforeValidator(parse_size),
    WithJsonSchema({"anyOf": [{"type": "integer", "minimum": 0},
                              {"type": "string", "pattern": r"^\d+(\.\d+)?\s*([kKmMgGtT]i?[bB]?|[bB])?$"}]}),
]
Listen = Annotated[
    str,
    BeforeValidator(parse_listen),
    WithJsonSchema({"type": "string", "pattern": r"^.+:\d{1,5}$"}),
]


def split_listen(value: str) -> tuple[str, int]:
    host, _, port = value.rpartition(":")
    return host.strip("[]"), int(port)
