"""control/reload.py: load -> validate -> diff -> apply, in full or not at all (no sockets)."""

from __future__ import annotations

import logging
from pathlib import Path

import pytest

from gateway.control.reload import reload_config
from gateway.errors import ConfigError, ConfigProblem
from gateway.metrics import Metrics
from gateway.spec import Spec, parse_spec

GOOD = """\
gateway:
  listen: 127.0.0.1:9000
services:
  echo:
    route: /v1/echo
    versions:
      v1:
        command: serve-gateway worker m:C --port {port}
        replicas: 1
"""


class Target:
    """Records what reload_config applies; fails on demand."""

    def __init__(self, running: Spec, fail: Exception | None = None) -> None:
        self.running = running
        self.fail = fail
        self.applied: list[Spec] = []

    def __call__(self, spec: Spec) -> list[str]:
        if self.fail is not None and not self.applied:
            self.applied.append(spec)
            raise self.fail
        self.applied.append(spec)
        self.running = spec
        return ["a note"]


def count(m: Metrics, result: str) -> float:
    value = m.registry.get_sample_value("serve_gateway_config_reloads_total", {"result": result})
    return value or 0.0


@pytest.fixture
def config(tmp_path: Path) -> Path:
    p = tmp_path / "gw.yaml"
    p.write_text(GOOD)
    return p


async def test_valid_change_is_applied_and_counted(config: Path) -> None:
    running = parse_spec(GOOD)
    target, m = Target(running), Metrics()
    config.write_text(GOOD.replace("replicas: 1", "replicas: 3").replace("/v1/echo", "/v2/echo"))
    result = await reload_config(config, running, target, m)
    assert result.ok and result.error is None
    assert target.running.services["echo"].versions["v1"].replicas == 3
    assert result.digest == target.running.digest() != result.previous == running.digest()
    doc = result.as_dict()
    assert doc["changes"] == ["service echo: route changed", "version echo/v1: replicas 1 -> 3"]
    assert doc["notes"] == ["a note"] and doc["needs_restart"] == []
    assert (count(m, "success"), count(m, "failure")) == (1, 0)


@pytest.mark.parametrize("text, expected", [
    ("gateway: [unclosed\n", "YAML syntax error"),
    (GOOD.replace("    route: /v1/echo", "    route: /v1/echo\n    routez: /x"),
     "services.echo.routez: unknown key (line 6)"),
    (GOOD.replace("replicas: 1", "replicas: -1"),
     "services.echo.versions.v1.replicas: must be >= 0 (line 9)"),
    (GOOD.replace("    versions:", "    traffic: {weights: {v1: 1, v9: 1}}\n    versions:"),
     "services.echo.traffic.weights.v9: no version named v9"),
])
async def test_invalid_file_keeps_the_running_config(config: Path, text: str, expected: str,
                                                     caplog: pytest.LogCaptureFixture) -> None:
    running = parse_spec(GOOD)
    target, m = Target(running), Metrics()
    config.write_text(text)
    with caplog.at_level(logging.ERROR, logger="gateway.reload"):
        result = await reload_config(config, running, target, m)
    assert not result.ok and target.applied == []
    assert result.digest == running.digest()
    doc = result.as_dict()
    assert doc["error"] == "invalid_config" and doc["service"] is None
    assert expected in doc["detail"] and str(config) in doc["detail"]
    assert doc["problems"] and all(p["line"] for p in doc["problems"])
    assert (count(m, "success"), count(m, "failure")) == (0, 1)
    assert expected in caplog.text and str(config) in caplog.text   # one line, path and line
    assert len(caplog.records) == 1 and "\n" not in caplog.records[0].getMessage()


async def test_restart_only_fields_are_held_and_reported(config: Path) -> None:
    running = parse_spec(GOOD)
    target, m = Target(running), Metrics()
    config.write_text(GOOD.replace("127.0.0.1:9000", "127.0.0.1:9001")
                      .replace("replicas: 1", "replicas: 2"))
    result = await reload_config(config, running, target, m)
    assert result.ok and result.needs_restart == ["gateway.listen"]
    assert target.running.gateway.listen == "127.0.0.1:9000"             # still the bound one
    assert target.running.services["echo"].versions["v1"].replicas == 2  # the rest applied
    assert m.registry.get_sample_value("serve_gateway_config_restart_pending") == 1


async def test_a_refusal_from_apply_changes_nothing(config: Path) -> None:
    running = parse_spec(GOOD)
    refusal = ConfigError([ConfigProblem("gateway.admin.token_file", "cannot read /x")])
    target, m = Target(running, fail=refusal), Metrics()
    result = await reload_config(config, running, target, m)
    assert not result.ok and target.running is running and len(target.applied) == 1
    assert "gateway.admin.token_file: cannot read /x" in result.as_dict()["detail"]
    assert count(m, "failure") == 1


async def test_a_bug_while_applying_is_reported_not_reapplied(config: Path) -> None:
    running = parse_spec(GOOD)
    target, m = Target(running, fail=RuntimeError("boom")), Metrics()
    config.write_text(GOOD.replace("replicas: 1", "replicas: 2"))
    result = await reload_config(config, running, target, m)
    assert not result.ok and "internal error" in result.as_dict()["detail"]
    assert result.digest == running.digest()
    # apply restores its own state; the old spec is not pushed through it a second time
    assert len(target.applied) == 1 and target.applied[0] is not running
    assert count(m, "failure") == 1


async def test_a_bug_while_checking_is_a_failure_not_an_exception(config: Path) -> None:
    running = parse_spec(GOOD)
    target, m = Target(running), Metrics()

    async def buggy(spec: Spec) -> None:
        raise KeyError("oops")

    result = await reload_config(config, running, target, m, check=buggy)
    assert not result.ok and "internal error while checking" in result.as_dict()["detail"]
    assert target.applied == [] and count(m, "failure") == 1


async def test_no_config_file_is_a_failure() -> None:
    running = parse_spec(GOOD)
    target, m = Target(running), Metrics()
    result = await reload_config(None, running, target, m)
    assert not result.ok and "without a config file" in result.as_dict()["detail"]
    assert target.applied == []


async def test_missing_file_is_a_failure(tmp_path: Path) -> None:
    running = parse_spec(GOOD)
    result = await reload_config(tmp_path / "gone.yaml", running, Target(running), Metrics())
    assert not result.ok and "cannot read config" in result.as_dict()["detail"]


async def test_a_plan_the_runtime_refuses_changes_nothing(config: Path) -> None:
    running = parse_spec(GOOD)
    target, m = Target(running), Metrics()
    config.write_text(GOOD.replace("replicas: 1", "replicas: 4"))

    async def no_gpus(spec: Spec) -> None:
        raise ConfigError([ConfigProblem("services.echo.versions.v1.resources.gpus",
                                         "echo/v1 needs 4 GPUs, but this gateway has 2")])

    result = await reload_config(config, running, target, m, check=no_gpus)
    assert not result.ok and target.applied == []
    assert "needs 4 GPUs" in result.error.render()   # type: ignore[union-attr]
    assert count(m, "failure") == 1
