"""``GET /openapi.json`` and ``GET /docs``: the worker's endpoints with its instance and
prediction schemas, as ``predict``'s annotations declare them (``{}`` = any JSON)."""

from __future__ import annotations

import html
from typing import Any

import orjson

from gateway.worker.model import Loaded


def _lift(schema: dict[str, Any], defs: dict[str, Any]) -> dict[str, Any]:
    """Move pydantic's ``$defs`` into ``components.schemas`` (refs are rewritten to match)."""
    schema = dict(schema)
    defs.update(schema.pop("$defs", {}))
    text = orjson.dumps(schema).replace(b'"#/$defs/', b'"#/components/schemas/')
    out: dict[str, Any] = orjson.loads(text)
    return out


def document(m: Loaded, title: str) -> dict[str, Any]:
    defs: dict[str, Any] = {}
    item = _lift(m.sig.input_schema(), defs)
    pred = _lift(m.sig.output_schema(), defs)
    for name, d in list(defs.items()):
        defs[name] = orjson.loads(orjson.dumps(d).replace(b'"#/$defs/', b'"#/components/schemas/'))
    error = {"type": "object", "required": ["error", "detail"], "properties": {
        "error": {"type": "string"}, "detail": {"type": "string"},
        "errors": {"type": "array", "description": "one entry per bad field of a bad instance",
                   "items": {"type": "object", "properties": {
                       "index": {"type": "integer"}, "field": {"type": "string"},
                       "detail": {"type": "string"}}}}}}
    stream_note = ("The model streams: with Accept: text/event-stream each item is one SSE "
                   "`data:` event (then `event: end`); with application/x-ndjson one JSON line.")
    request = {"oneOf": [item, {"type": "object", "required": ["instances"], "properties": {
        "instances": {"type": "array", "items": item}}}]}
    responses: dict[str, Any] = {
        "200": {"description": "one prediction per instance, in order", "content": {
            "application/json": {"schema": {"type": "object", "properties": {
                "predictions": {"type": "array", "items": pred}}}},
            "text/event-stream": {"schema": {"type": "string"}},
            "application/x-ndjson": {"schema": pred}}},
        "400": {"description": "bad JSON or bad instances: nothing was predicted",
                "content": {"application/json": {"schema": error}}},
        "500": {"description": "the model raised", "content": {
            "application/json": {"schema": error}}},
        "503": {"description": "still loading", "content": {
            "application/json": {"schema": error}}},
    }
    return {
        "openapi": "3.1.0",
        "info": {"title": title, "version": "1",
                 "description": stream_note if m.sig.streaming else
                 "KServe v1 style predict; KServe v2 under /v2/models/{name}."},
        "paths": {
            "/predict": {"post": {
                "summary": f"predict with {m.name}", "operationId": "predict",
                "requestBody": {"required": True, "content": {
                    "application/json": {"schema": request}}},
                "responses": responses}},
            "/ready": {"get": {"summary": "200 once loaded", "responses": {
                "200": {"description": "ready"}, "503": {"description": "loading or draining"}}}},
            f"/v2/models/{m.name}/infer": {"post": {
                "summary": "KServe v2 / Open Inference Protocol infer",
                "operationId": "infer_v2", "responses": {
                    "200": {"description": "output tensors"},
                    "400": {"description": "bad tensors or instances",
                            "content": {"application/json": {"schema": error}}}}}},
        },
        "components": {"schemas": defs},
        "x-serve-gateway": {"model": m.name, "streaming": m.sig.streaming,
                            "async": m.sig.is_async, "instance": item, "prediction": pred},
    }


def docs_page(doc: dict[str, Any]) -> str:
    """A self-contained page (no CDN: workers often run offline) with the schemas and a form
    that posts to /predict."""
    ext = doc["x-serve-gateway"]
    pretty = {k: html.escape(orjson.dumps(v, option=orjson.OPT_INDENT_2).decode())
              for k, v in (("instance", ext["instance"]), ("prediction", ext["prediction"]),
                           ("components", doc["components"]["schemas"]))}
    title = html.escape(doc["info"]["title"])
    return f"""<!doctype html>
<html><head><meta charset="utf-8"><title>{title}</title>
<style>body{{font-family:sans-serif;max-width:60em;margin:2em auto}}pre{{background:#f4f4f4;
padding:1em;overflow:auto}}textarea{{width:100%;height:8em}}</style></head><body>
<h1>{title}</h1>
<p>{html.escape(doc["info"]["description"])}</p>
<p><code>POST /predict</code> with one instance or <code>{{"instances": [...]}}</code>;
machine-readable: <a href="openapi.json">openapi.json</a>.</p>
<h2>Instance</h2><pre>{pretty["instance"] or "{}"}</pre>
<h2>Prediction</h2><pre>{pretty["prediction"] or "{}"}</pre>
<h2>Schemas</h2><pre>{pretty["components"]}</pre>
<h2>Try it</h2><textarea id="body">{{"instances": []}}</textarea>
<button onclick="fetch('predict',{{method:'POST',headers:{{'Content-Type':'application/json'}},
body:document.getElementById('body').value}}).then(r=>r.text()).then(t=>
document.getElementById('out').textContent=t)">POST /predict</button><pre id="out"></pre>
</body></html>
"""
