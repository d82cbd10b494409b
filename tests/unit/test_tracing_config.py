"""gateway.tracing in the config: bounded, named in errors, and held until a restart."""

from __future__ import annotations

import pytest

from gateway.errors import ConfigError
from gateway.spec import parse_spec
from gateway.spec.diff import diff_specs

BASE = """\
gateway:
  listen: 127.0.0.1:9000
{tracing}services:
  echo:
    route: /v1/echo
    versions:
      v1: {{command: "serve-gateway worker m:C --port {{port}}"}}
"""


def config(tracing: str = "") -> str:
    return BASE.format(tracing=tracing)


def test_off_by_default_and_an_endpoint_is_taken() -> None:
    assert parse_spec(config(), "t.yaml").gateway.tracing.otlp_endpoint is None
    spec = parse_spec(config("  tracing: {otlp_endpoint: 'http://127.0.0.1:4318'}\n"), "t.yaml")
    assert spec.gateway.tracing.otlp_endpoint == "http://127.0.0.1:4318"
    assert spec.gateway.tracing.service_name == "serve-gateway"


@pytest.mark.parametrize("bad", ["'127.0.0.1:4318'", "'ftp://x'", "'http://a b'",
                                 "'http://" + "x" * 2048 + "'"])
def test_a_bad_endpoint_is_refused_with_its_field_and_line(bad: str) -> None:
    with pytest.raises(ConfigError) as err:
        parse_spec(config(f"  tracing:\n    otlp_endpoint: {bad}\n"), "t.yaml")
    text = err.value.render()
    assert "gateway.tracing.otlp_endpoint" in text and "line 4" in text, text


def test_changing_tracing_needs_a_restart() -> None:
    old = parse_spec(config(), "t.yaml")
    new = parse_spec(config("  tracing: {otlp_endpoint: 'http://collector:4318'}\n"), "t.yaml")
    d = diff_specs(old, new)
    assert d.needs_restart == ("gateway.tracing",) and not d.gateway_changed
