from pathlib import Path

import pytest

from gateway.errors import ConfigError
from gateway.spec import json_schema, load_spec, parse_spec

ROOT = Path(__file__).resolve().parents[2]

GOOD = """
gateway:
  listen: 127.0.0.1:9000
  queue: {timeout: 500ms}
services:
  mlp:
    route: /v1/mlp/
    versions:
      v1:
        command: serve-gateway worker m:C --port {port}
        replicas: 3
        env: {A: 1}
"""


def problems(text: str) -> list[str]:
    with pytest.raises(ConfigError) as e:
        parse_spec(text, "t.yaml")
    return [str(p) for p in e.value.problems]


def test_valid_config_is_parsed_and_normalised() -> None:
    spec = parse_spec(GOOD)
    svc = spec.services["mlp"]
    assert svc.route == "/v1/mlp"                       # trailing slash dropped
    assert svc.versions["v1"].command == ["serve-gateway", "worker", "m:C", "--port", "{port}"]
    assert svc.versions["v1"].env == {"A": "1"}
    assert spec.gateway.queue.timeout == 0.5


def test_errors_name_path_and_line() -> None:
    text = GOOD.replace("replicas: 3", "replicas: -1\n        replicaz: 2")
    assert problems(text) == ["services.mlp.versions.v1.replicas: must be >= 0 (line 11)",
                              "services.mlp.versions.v1.replicaz: unknown key (line 12)"]


def test_yaml_syntax_error_has_line() -> None:
    [p] = problems("services:\n  a: [1\n")
    assert "YAML syntax error" in p and "(line 3)" in p


def test_duplicate_key_is_an_error() -> None:
    [p] = problems("services: {}\nservices: {}\n")
    assert p == "services: duplicate key (line 2)"


def test_cross_field_checks() -> None:
    text = GOOD.replace("replicas: 3", "replicas: 3\n      v2:\n        command: x {port}") + \
        "    traffic:\n      weights: {v1: 1, v9: 1}\n"
    assert problems(text) == ["services.mlp.traffic.weights.v9: no version named v9 (versions: v1, v2) (line 16)"]


def test_several_versions_need_weights() -> None:
    text = GOOD.replace("replicas: 3", "replicas: 3\n      v2:\n        command: x {port}")
    assert problems(text) == ["services.mlp.traffic: a service with several versions needs traffic.weights (or a rollout) (line 6)"]


def test_command_needs_port_and_names_are_checked() -> None:
    text = GOOD.replace("--port {port}", "").replace("mlp:", "Bad Name:")
    ps = problems(text)
    assert any(p.startswith("services.Bad Name: name must be") for p in ps)
    assert any("must contain {port}" in p for p in ps)


def test_bad_duration_and_listen() -> None:
    ps = problems(GOOD.replace("500ms", "soon").replace("127.0.0.1:9000", "nope"))
    assert "gateway.listen: must be 'host:port' with a port from 0 to 65535 (line 3)" in ps
    assert "gateway.queue.timeout: must be a duration such as 500ms, 10s or 5m (line 4)" in ps


def test_shipped_examples_validate() -> None:
    for path in (ROOT / "config").glob("*.yaml"):
        if path.name in ("broken.yaml", "prometheus.yml"):
            continue
        load_spec(path)   # raises on any problem


def test_broken_example_is_broken() -> None:
    with pytest.raises(ConfigError):
        load_spec(ROOT / "config" / "broken.yaml")


def test_revision_changes_only_with_what_defines_a_replica() -> None:
    a = parse_spec(GOOD).services["mlp"].versions["v1"]
    b = parse_spec(GOOD.replace("replicas: 3", "replicas: 5")).services["mlp"].versions["v1"]
    c = parse_spec(GOOD.replace("{A: 1}", "{A: 2}")).services["mlp"].versions["v1"]
    assert a.revision() == b.revision() != c.revision()


def test_json_schema_describes_the_config() -> None:
    schema = json_schema()
    assert schema["title"] == "serve-gateway config"
    assert {"gateway", "services"} <= set(schema["properties"])
    assert schema["$defs"]["VersionSpec"]["additionalProperties"] is False
