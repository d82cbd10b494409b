"""``serve-gateway describe SERVICE``: a service's instance and prediction schemas, as a ready
replica reports them through the admin API (``GET /services/{name}/schema``)."""

from __future__ import annotations

import argparse
import sys
from typing import Any

import orjson


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("service", help="the service's name in the config")
    parser.add_argument("--version", default=None,
                        help="a version of the service (default: the one with the most weight)")
    parser.add_argument("--json", action="store_true", help="print the worker's OpenAPI document")


def run(args: argparse.Namespace) -> int:
    from gateway.admin import adminclient

    path = f"/services/{args.service}/schema"
    if args.version:
        path += f"?version={args.version}"
    doc = adminclient.call(args, "GET", path)
    if doc is None:
        return 1
    if args.json:
        sys.stdout.write(orjson.dumps(doc["openapi"], option=orjson.OPT_INDENT_2).decode() + "\n")
    else:
        print(render(doc))
    return 0


def render(doc: dict[str, Any]) -> str:
    api = doc.get("openapi") or {}
    ext = api.get("x-serve-gateway") or {}
    defs = (api.get("components") or {}).get("schemas") or {}
    kind = "streams (text/event-stream, application/x-ndjson)" if ext.get("streaming") else \
        "one prediction per instance"
    lines = [f"service {doc['service']}  version {doc['version']}  (from replica {doc['replica']})",
             f"  route {doc.get('route', '')}   model {ext.get('model', '?')}: {kind}",
             "  body: one instance, or {\"instances\": [instance, ...]}",
             f"  instance:   {_type(ext.get('instance') or {}, defs)}",
             f"  prediction: {_type(ext.get('prediction') or {}, defs)}"]
    return "\n".join(lines)


def _type(schema: dict[str, Any], defs: dict[str, Any], depth: int = 0) -> str:
    """A one-line reading of a JSON Schema: object fields with their types, array shapes."""
    ref = schema.get("$ref")
    if isinstance(ref, str):
        schema = defs.get(ref.rsplit("/", 1)[-1], {})
    if not schema:
        return "any JSON"
    if depth > 4:
        return "..."
    kind = schema.get("type")
    if kind == "object" and isinstance(schema.get("properties"), dict):
        required = set(schema.get("required") or ())
        fields = [f"{n}{'' if n in required else '?'}: {_type(s, defs, depth + 1)}"
                  for n, s in schema["properties"].items()]
        return "{" + ", ".join(fields) + "}"
    if kind == "array":
        n = schema.get("maxItems")
        return f"[{_type(schema.get('items') or {}, defs, depth + 1)}]" + (f"*{n}" if n else "")
    if "anyOf" in schema:
        return " | ".join(_type(s, defs, depth + 1) for s in schema["anyOf"])
    return str(kind or schema.get("description") or "any JSON")
