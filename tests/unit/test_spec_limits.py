"""No config text makes the loader do anything but return a Spec or raise ConfigError naming a
path (and a line): merge keys, deep nesting, alias bombs, huge numbers, odd tags, empty files,
and values that validate but would misbehave (issue #14, items 1-3)."""

from __future__ import annotations

from pathlib import Path

import pytest

from gateway.errors import ConfigError
from gateway.spec import json_schema, load_spec, parse_spec
from gateway.spec.loader import MAX_DEPTH, MAX_VALUES

SERVICE = """\
services:
  echo:
    route: /v1/echo
    versions:
      v1:
        command: serve-gateway worker m:C --port {port}
"""


def refused(text: str) -> list[str]:
    with pytest.raises(ConfigError) as info:
        parse_spec(text, "gw.yaml")
    assert "internal error" not in str(info.value)
    return [str(p) for p in info.value.problems]


def test_merge_keys_merge_and_written_keys_win() -> None:
    spec = parse_spec("""\
x-defaults: &d
  timeouts: {request: 5s}
  retries: 2
  versions:
    v1: {command: "serve-gateway worker m:C --port {port}"}
x-fast: &f
  retries: 0
  timeouts: {request: 1s}
services:
  a:
    <<: [*d, *f]
    route: /a
  b:
    <<: *d
    route: /b
    retries: 3
""")
    a, b = spec.services["a"], spec.services["b"]
    assert (a.timeouts.request, a.retries) == (5.0, 2)     # the earlier merged mapping wins
    assert (b.timeouts.request, b.retries) == (5.0, 3)     # a written key wins
    assert a.versions["v1"].command == b.versions["v1"].command


def test_an_error_in_a_merged_value_names_the_service_and_the_line_it_is_written_on() -> None:
    problems = refused("""\
x-defaults: &d
  route: /v1/echo
  versions:
    v1:
      command: serve-gateway worker m:C --port {port}
      replicas: -1
services:
  one:
    <<: *d
  two:
    <<: *d
    route: /v2/echo
""")
    assert problems == ["services.one.versions.v1.replicas: must be >= 0 (line 6)",
                        "services.two.versions.v1.replicas: must be >= 0 (line 6)"]


@pytest.mark.parametrize("merge, message", [
    ("<<: 5", "services.a.<<: a merge key takes a mapping or a list of mappings"),
    ("<<: [*x, 1]", "services.a.<<: a merge key takes a mapping or a list of mappings"),
])
def test_a_bad_merge_is_refused(merge: str, message: str) -> None:
    problems = refused(f"x-a: &x {{route: /a}}\nservices:\n  a:\n    {merge}\n")
    assert any(p.startswith(message) and "(line 4)" in p for p in problems), problems


def test_deep_nesting_is_refused_before_pyyaml_recurses() -> None:
    deep = "[" * 3000 + "]" * 3000
    problems = refused(SERVICE + f"        env: {{X: {deep}}}\n")
    assert problems == [f"<root>: nested more than {MAX_DEPTH} levels deep (line 7)"]


def test_alias_expansion_is_bounded() -> None:
    rows = ['a: &a ["x","x","x","x","x","x","x","x","x","x"]']
    for prev, name in zip("abcdefg", "bcdefgh"):
        rows.append(f"{name}: &{name} [" + ",".join([f"*{prev}"] * 10) + "]")
    problems = refused(SERVICE.replace("services:", "x-bomb:\n  " + "\n  ".join(rows) +
                                       "\n  all: *h\nservices:") + "        env: {X: *h}\n")
    assert len(problems) == 1 and f"aliases expand to more than {MAX_VALUES} values" in problems[0]


def test_an_anchor_inside_itself_is_refused() -> None:
    problems = refused(SERVICE + "        env: &e {X: *e}\n")
    assert problems == ["services.echo.versions.v1.env.X: an anchor is used inside itself (line 7)"]


@pytest.mark.parametrize("value, message", [
    ("123456789012345678901", "services.echo.versions.v1.env.X: integer too large (line 7)"),
    (".nan", "services.echo.versions.v1.env.X: must be a finite number (line 7)"),
    ("!foo bar", "services.echo.versions.v1.env.X: cannot read this value"),
    ("!!binary aGVsbG8=", "services.echo.versions.v1.env: values must be text or JSON"),
])
def test_values_the_config_hash_cannot_carry_are_refused(value: str, message: str) -> None:
    [problem] = refused(SERVICE + f"        env: {{X: {value}}}\n")
    assert problem.startswith(message)


@pytest.mark.parametrize("value, message", [
    ("!!int abc", "cannot read 'abc' as int"),
    ("!!int 0x", "cannot read '0x' as int"),
    ("!!float abc", "cannot read 'abc' as float"),
    ("!!bool maybe", "cannot read 'maybe' as bool"),
    ("!!timestamp foo", "cannot read 'foo' as timestamp"),
    ("!!map x", "cannot read this value: expected a mapping node"),
    ("!!int {a: 1}", "a mapping cannot be tagged int"),
    ("!!set {a: null}", "a mapping cannot be tagged set"),
])
def test_explicit_tags_pyyaml_cannot_apply_are_refused(value: str, message: str) -> None:
    [problem] = refused(SERVICE + f"        env: {{X: {value}}}\n")
    assert problem.startswith(f"services.echo.versions.v1.env.X: {message}"), problem
    assert problem.endswith("(line 7)")


def test_twenty_digit_replicas_and_sizes_are_refused() -> None:
    assert refused(SERVICE + "        replicas: 99999999999999999999\n") == [
        "services.echo.versions.v1.replicas: integer too large (line 7)"]
    assert refused("gateway: {max_body_bytes: " + "9" * 400 + "TiB}\n" + SERVICE) == [
        "gateway.max_body_bytes: must be a size such as 512KiB or 10MB (line 1)"]


@pytest.mark.parametrize("text", ["", "# all commented out\n", "---\n"])
def test_an_empty_file_is_refused(text: str) -> None:
    assert refused(text) == ["<root>: the file is empty (a truncated write?) (line 1)"]


@pytest.mark.parametrize("text", ["gateway: {listen: 127.0.0.1:8080}\n", "services: {}\n"])
def test_no_services_is_refused_unless_allowed(text: str) -> None:
    [problem] = refused(text)
    assert problem.startswith("services: no services") and "gateway.allow_empty" in problem
    spec = parse_spec(text.replace("gateway: {", "gateway: {allow_empty: true, ")
                      if "gateway" in text else "gateway: {allow_empty: true}\n" + text)
    assert spec.services == {}


def test_unreadable_files_are_refused(tmp_path: Path) -> None:
    binary = tmp_path / "bin.yaml"
    binary.write_bytes(b"services:\n  \xff\xfe\n")
    with pytest.raises(ConfigError, match=r"not UTF-8 text \(line 2\)"):
        load_spec(binary)
    huge = tmp_path / "huge.yaml"
    huge.write_text("# " + "x" * (2 << 20))
    with pytest.raises(ConfigError, match="larger than 1024 KiB"):
        load_spec(huge)


V = "services.echo.versions.v1"


@pytest.mark.parametrize("extra, expected", [
    ("    timeouts: {request: 0}\n", "services.echo.timeouts.request: must be > 0"),
    ("    timeouts: {request: -1}\n", "services.echo.timeouts.request: must be > 0"),
    ("    timeouts: {connect: -1}\n", "services.echo.timeouts.connect: must be > 0"),
    ("        health: {liveness_interval: 0}\n", f"{V}.health.liveness_interval: must be >= 0.1"),
    ("        health: {interval: 0}\n", f"{V}.health.interval: must be >= 0.05"),
    ("        replicas: 500\n", f"{V}.replicas: must be <= 100"),
    ("gateway: {queue: {timeout: -1}}\n", "gateway.queue.timeout: must be >= 0"),
    ("gateway: {drain_timeout: -5}\n", "gateway.drain_timeout: must be >= 0"),
    ("gateway: {stop_grace: -1}\n", "gateway.stop_grace: must be >= 0"),
    ("    autoscale: {max_replicas: 1000}\n", "services.echo.autoscale.max_replicas: must be <= 100"),
    ("    traffic: {weights: {v1: 99999999}}\n", "services.echo.traffic.weights: weight of v1"),
])
def test_values_that_would_misbehave_are_refused(extra: str, expected: str) -> None:
    text = extra + SERVICE if extra.startswith("gateway") else \
        SERVICE.replace("    versions:\n", extra + "    versions:\n") if extra.startswith("    ") \
        and not extra.startswith("        ") else SERVICE + extra
    [problem] = refused(text)
    assert problem.startswith(expected), problem


def test_the_json_schema_shows_duration_bounds_and_allows_x_keys() -> None:
    schema = json_schema()
    number = schema["$defs"]["TimeoutsSpec"]["properties"]["request"]["anyOf"][0]
    assert number == {"type": "number", "exclusiveMinimum": 0, "maximum": 86400.0}
    health = schema["$defs"]["HealthSpec"]["properties"]["liveness_interval"]["anyOf"][0]
    assert (health["minimum"], health["maximum"]) == (0.1, 3600.0)
    p99 = str(schema["$defs"]["AnalysisSpec"]["properties"]["max_p99"])
    assert "'exclusiveMinimum': 0" in p99 and "'gt'" not in p99     # only JSON Schema words
    assert "^x-" in schema["patternProperties"]
