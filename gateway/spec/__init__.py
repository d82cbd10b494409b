"""YAML -> validated, frozen ``Spec``; every error names the YAML path and line."""

from __future__ import annotations

import sys
from pathlib import Path
from typing import Any, cast, get_args

from pydantic import BaseModel, ValidationError

from gateway.errors import ConfigError, ConfigProblem
from gateway.spec.checks import CHECKS
from gateway.spec.loader import MAX_BYTES, dotted, line_of, load_yaml
from gateway.spec.models import ROLLOUT_STRATEGIES, ServiceSpec, Spec, VersionSpec

__all__ = ["Spec", "ServiceSpec", "VersionSpec", "load_spec", "parse_spec", "json_schema"]


def load_spec(path: str | Path) -> Spec:
    p = Path(path)
    try:
        with p.open("rb") as f:
            raw = f.read(MAX_BYTES + 1)
    except OSError as exc:
        raise ConfigError([ConfigProblem("", f"cannot read config: {exc.strerror}")], str(p)) from None
    if len(raw) > MAX_BYTES:
        raise ConfigError([ConfigProblem("", f"larger than {MAX_BYTES >> 10} KiB: not a config "
                                             "file?")], str(p))
    try:
        text = raw.decode("utf-8")
    except UnicodeDecodeError as exc:
        line = raw[:exc.start].count(b"\n") + 1
        raise ConfigError([ConfigProblem("", "not UTF-8 text", line)], str(p)) from None
    return parse_spec(text, str(p))



def load_or_report(path: str | Path) -> Spec | None:
    """The validated config, or None after printing every problem with its path and line (the
    CLI commands that read a config file share it)."""
    try:
        return load_spec(path)
    except ConfigError as exc:
        print(exc.render(), file=sys.stderr)
        return None

def parse_spec(text: str, source: str = "") -> Spec:
    """The validated spec, or ConfigError; nothing else, whatever the text (a bug in a
    validator is reported as an internal error rather than raised)."""
    try:
        return _parse(text, source)
    except ConfigError:
        raise
    except Exception as exc:
        raise ConfigError([ConfigProblem("", f"internal error while validating: {exc!r} "
                                             "(please report it)")], source) from exc


def _parse(text: str, source: str) -> Spec:
    data, lines = load_yaml(text, source)
    if data is None or not lines:      # nothing, only comments, or a bare "---"
        raise ConfigError([ConfigProblem("", "the file is empty (a truncated write?)", 1)], source)
    if not isinstance(data, dict):
        raise ConfigError([ConfigProblem("", "the config must be a mapping", 1)], source)
    try:
        spec = Spec.model_validate(data)
    except ValidationError as exc:
        raise ConfigError([_problem(e, lines) for e in exc.errors()], source) from None
    problems = [ConfigProblem(dotted(path), msg, line_of(lines, path))
                for check in CHECKS for path, msg in check(spec)]
    if problems:
        raise ConfigError(problems, source)
    return spec


def json_schema() -> dict[str, Any]:
    schema = Spec.model_json_schema()
    schema["$schema"] = "https://json-schema.org/draft/2020-12/schema"
    schema["title"] = "serve-gateway config"
    schema["patternProperties"] = {"^x-": {"description": "ignored: anchors for <<: merge keys"}}
    _duration_bounds(Spec, schema)
    return schema


_BOUNDS = {"gt": "exclusiveMinimum", "ge": "minimum", "lt": "exclusiveMaximum", "le": "maximum"}


def _duration_bounds(model: type[BaseModel], schema: dict[str, Any]) -> None:
    """A duration's schema is 'number or "10s"' (types.py); put its field's bounds on the
    number so that editors show them too."""
    defs = schema.get("$defs", {})
    props = (defs.get(model.__name__) or schema).get("properties", {})
    for name, field in model.model_fields.items():
        for sub in _models(field.annotation):
            if sub.__name__ in defs and sub is not model:
                _duration_bounds(sub, schema)
        prop = props.get(field.alias or name, {})
        number = _number_branch(prop)
        if number is None:
            continue
        _strip_bounds(prop)      # pydantic copies an optional field's bounds verbatim
        for meta in field.metadata:
            for attr, key in _BOUNDS.items():
                if getattr(meta, attr, None) is not None:
                    number[key] = getattr(meta, attr)
        if "exclusiveMinimum" in number:
            number.pop("minimum", None)


def _strip_bounds(prop: dict[str, Any]) -> None:
    for key in _BOUNDS:
        prop.pop(key, None)
    for branch in prop.get("anyOf", []):
        _strip_bounds(branch)


def _number_branch(prop: dict[str, Any]) -> dict[str, Any] | None:
    for branch in prop.get("anyOf", []):
        if branch.get("type") == "number":
            return cast(dict[str, Any], branch)
        found = _number_branch(branch)
        if found is not None:
            return found
    return None


def _models(annotation: Any) -> list[type[BaseModel]]:
    if isinstance(annotation, type) and issubclass(annotation, BaseModel):
        return [annotation]
    return [m for arg in get_args(annotation) for m in _models(arg)]


def _problem(err: Any, lines: dict[Any, int]) -> ConfigProblem:
    # pydantic adds union-member and validator names to loc; keep only real YAML keys/indexes
    raw = err["loc"]
    loc = tuple(p for i, p in enumerate(raw)
                if not (isinstance(p, str) and ("[" in p or p in _UNION_TAGS
                                                or (i and raw[i - 1] == "rollout"
                                                    and p in ROLLOUT_STRATEGIES))))
    if err["type"] in ("union_tag_invalid", "union_tag_not_found"):
        loc += (err["ctx"]["discriminator"].strip("'"),)
    return ConfigProblem(dotted(loc), _message(err), line_of(lines, loc))


_UNION_TAGS = {"int", "str", "float", "bool", "list[int]", "list[str]", "dict[str,str]"}


def _message(err: Any) -> str:
    kind, ctx = err["type"], err.get("ctx") or {}
    if kind == "extra_forbidden":
        return "unknown key"
    if kind == "missing":
        return "required"
    if kind in ("greater_than_equal", "greater_than", "less_than_equal", "less_than"):
        op = {"greater_than_equal": ">=", "greater_than": ">", "less_than_equal": "<=", "less_than": "<"}[kind]
        bound = next(iter(ctx.values()))
        if isinstance(bound, float) and bound.is_integer():
            bound = int(bound)              # "must be > 0", not "> 0.0"
        return f"must be {op} {bound}"
    if kind == "union_tag_invalid":
        return f"must be one of {ctx.get('expected_tags')}"
    if kind == "union_tag_not_found":
        return "required"
    if kind == "literal_error":
        return f"must be one of {ctx.get('expected')}"
    if kind == "too_short":
        return "must not be empty"
    if kind == "value_error":
        return str(ctx.get("error", err["msg"]))
    return str(err["msg"]).replace("Input should be", "must be")
