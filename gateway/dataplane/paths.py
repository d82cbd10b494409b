"""Path normalisation, so that no spelling of a path can escape the route it matched.

``/a/../b``, ``//``, ``/./`` and percent-encoded dots (``%2e%2e``) are resolved before routing,
and the normalised path is what the worker receives. Encoded slashes and backslashes (``%2f``,
``%5c``) and NUL are refused: they would let a path mean one thing to us and another to the
worker (Envoy rejects them the same way).
"""

from __future__ import annotations

import re

from gateway.errors import BadRequest

_UNRESERVED = re.compile(r"%(2[dDeE]|5[fF]|7[eE]|[46][1-9a-fA-F]|[57][0-9aA]|3[0-9])")
_FORBIDDEN = re.compile(r"%(2[fF]|5[cC]|00)")


def normalise(path: str) -> str:
    """Return the canonical form of an absolute path (no query string)."""
    if not path.startswith("/"):
        raise BadRequest("path must start with '/'")
    if "%" not in path and "//" not in path and "/." not in path and "\\" not in path:
        return path   # the common case costs four substring checks
    if _FORBIDDEN.search(path):
        raise BadRequest("encoded '/', '\\' or NUL in the path is not allowed")
    if "\\" in path:
        raise BadRequest("'\\' in the path is not allowed")
    # decode only unreserved characters (letters, digits, - . _ ~): the rest stays encoded
    path = _UNRESERVED.sub(lambda m: chr(int(m.group(1), 16)), path)
    out: list[str] = []
    for seg in path.split("/"):
        if seg in ("", "."):
            continue
        if seg == "..":
            if out:
                out.pop()
            continue
        out.append(seg)
    trailing = "/" if path.endswith("/") and out else ""
    return "/" + "/".join(out) + trailing
