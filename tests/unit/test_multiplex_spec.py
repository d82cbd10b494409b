"""The `multiplex` version key: defaults and bounds, refused with batching (path and line),
passed to the worker in its environment (a new revision when the LRU size changes), and the
per-model metric labels bounded (first N ids, then 'other')."""

from __future__ import annotations

import pytest
from prometheus_client import CollectorRegistry

from gateway.errors import ConfigError
from gateway.metrics import Metrics
from gateway.spec import parse_spec
from tests.helpers import metric_value

BASE = """\
services:
  pool:
    route: /v1/pool
{batching}    versions:
      v1:
        command: serve-gateway worker gateway.examples.multiplex:Scorers --port {{port}}
        multiplex: {multiplex}
"""


def spec_text(multiplex: str, batching: str = "") -> str:
    return BASE.format(multiplex=multiplex, batching=batching)


def problems(text: str) -> list[str]:
    with pytest.raises(ConfigError) as e:
        parse_spec(text, "t.yaml")
    return [str(p) for p in e.value.problems]


def test_defaults_and_worker_environment() -> None:
    v = parse_spec(spec_text("{}")).services["pool"].versions["v1"]
    assert v.multiplex is not None
    assert (v.multiplex.max_models_per_replica, v.multiplex.header, v.multiplex.load_slack,
            v.multiplex.metrics_models) == (4, "x-model-id", 2, 20)
    assert v.worker_env() == {"SGW_MULTIPLEX_MAX_MODELS": "4", "SGW_MULTIPLEX_HEADER": "x-model-id"}


def test_the_lru_size_makes_a_new_revision_the_load_bound_does_not() -> None:
    def rev(m: str) -> str:
        return parse_spec(spec_text(m)).services["pool"].versions["v1"].revision()
    assert rev("{max_models_per_replica: 2}") != rev("{max_models_per_replica: 3}")
    assert rev("{load_slack: 1}") == rev("{load_slack: 5}")


@pytest.mark.parametrize("bad, where", [
    ("{max_models_per_replica: 0}", "multiplex.max_models_per_replica"),
    ("{max_models_per_replica: 5000}", "multiplex.max_models_per_replica"),
    ("{header: 'x model'}", "multiplex.header"),
    ("{load_slack: -1}", "multiplex.load_slack"),
    ("{metrics_models: 100000}", "multiplex.metrics_models"),
    ("{max_models: 2}", "multiplex.max_models"),
])
def test_bad_values_name_the_field_and_line(bad: str, where: str) -> None:
    found = problems(spec_text(bad))
    assert any(f"services.pool.versions.v1.{where}" in p and "line 7" in p for p in found), found


def test_multiplexing_with_batching_is_refused_with_the_reason() -> None:
    found = problems(spec_text("{}", "    batching: {max_batch_size: 8}\n"))
    assert len(found) == 1
    assert found[0].startswith("services.pool.versions.v1.multiplex:")
    assert "batching do not mix" in found[0] and "line 8" in found[0]


def test_model_metric_labels_are_bounded() -> None:
    m = Metrics(CollectorRegistry())
    models = m.models("pool", "v1", top=2)
    for model, held in ((b"a", False), (b"a", True), (b"b", False), (b"c", False),
                        (b"d", True), (b"a", True)):
        models.count(model, held)
    text = m.render().decode()
    series = [line for line in text.splitlines()
              if line.startswith("serve_gateway_model_requests_total{")]
    labels = {line.split('model="')[1].split('"')[0] for line in series}
    assert labels == {"a", "b", "other"}
    def value(model: str, placement: str) -> float | None:
        return metric_value(text, "serve_gateway_model_requests_total", service="pool",
                            version="v1", model=model, placement=placement)
    assert (value("a", "held"), value("a", "load"), value("b", "load")) == (2, 1, 1)
    assert (value("other", "load"), value("other", "held")) == (1, 1)     # c and d
    assert m.models("pool", "v1", top=2) is models        # kept across table builds
