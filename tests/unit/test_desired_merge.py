"""merge(spec, layers) -> Desired: the precedence table of control/desired.py, row by row."""

from __future__ import annotations

import pytest

from gateway.control.desired import Layers, RolloutLayer, merge
from gateway.spec import parse_spec
from gateway.spec.models import VersionSpec

SPEC = parse_spec("""\
services:
  echo:
    route: /echo
    traffic:
      weights: {v1: 90, v2: 10}
      rules: [{match: {header: {x-beta: "1"}}, to: v2}]
      mirror: {to: v2, percent: 5}
    versions:
      v1: {command: "w --port {port}", replicas: 2}
      v2: {command: "w --port {port}", replicas: 1}
  solo:
    route: /solo
    versions:
      v1: {command: "w --port {port}", replicas: 1}
""")
KEY = ("echo", "v1")
ROLL = RolloutLayer(replicas={"v1": 4}, weights={"v2": 100})
FILE, AUTO, ROLLOUT, PIN = 2, 3, 4, 5

# replicas: file < autoscaler < rollout < pin
REPLICAS = [
    (Layers(), FILE),
    (Layers(autoscaler={KEY: AUTO}), AUTO),
    (Layers(autoscaler={KEY: AUTO}, rollouts={"echo": ROLL}), ROLLOUT),
    (Layers(autoscaler={KEY: AUTO}, rollouts={"echo": ROLL}, pins={KEY: PIN}), PIN),
    (Layers(pins={KEY: PIN}), PIN),
    (Layers(rollouts={"echo": ROLL}), ROLLOUT),
    (Layers(autoscaler={("echo", "v2"): 7}), FILE),     # another version's layer: not this one
]


@pytest.mark.parametrize(("layers", "replicas"), REPLICAS)
def test_replicas_file_autoscaler_rollout_pin(layers: Layers, replicas: int) -> None:
    assert merge(SPEC, layers).replicas()[KEY] == replicas


# weights: file < operator override < rollout (a version the rollout leaves out gets 0)
WEIGHTS = [
    (Layers(), {"v1": 90, "v2": 10}),
    (Layers(overrides={"echo": {"v1": 0, "v2": 1}}), {"v1": 0, "v2": 1}),
    (Layers(overrides={"echo": {"v1": 0, "v2": 1}}, rollouts={"echo": ROLL}), {"v1": 0, "v2": 100}),
    (Layers(rollouts={"echo": ROLL}), {"v1": 0, "v2": 100}),
]


@pytest.mark.parametrize(("layers", "weights"), WEIGHTS)
def test_weights_file_override_rollout(layers: Layers, weights: dict[str, int]) -> None:
    desired = merge(SPEC, layers)
    routed = desired.weights.get("echo") or desired.spec.services["echo"].traffic.weights
    assert dict(routed) == weights


def test_a_rollouts_rules_go_first_and_its_mirror_wins() -> None:
    roll = RolloutLayer(replicas={}, weights={"v1": 1}, rules=(("cookie", "c", "b", "v2"),),
                        mirror=("v2", 50.0))
    traffic = merge(SPEC, Layers(rollouts={"echo": roll})).spec.services["echo"].traffic
    assert [(r.match.model_dump(exclude_none=True, exclude_defaults=True), r.to)
            for r in traffic.rules] == [({"cookie": {"c": {"exact": "b"}}}, "v2"),
                                        ({"header": {"x-beta": {"exact": "1"}}}, "v2")]
    assert traffic.mirror is not None and (traffic.mirror.to, traffic.mirror.percent) == ("v2", 50.0)
    plain = merge(SPEC, Layers()).spec.services["echo"].traffic
    assert plain.mirror is not None and plain.mirror.percent == 5 and len(plain.rules) == 1


def test_a_revision_rollout_runs_the_old_revision_beside_the_file_versions() -> None:
    old = VersionSpec.model_validate({"command": "w --old --port {port}", "replicas": 1})
    roll = RolloutLayer(replicas={"v1.old": 2, "v1": 1}, weights={"v1.old": 9, "v1": 1},
                        extra_versions={"v1.old": old, "v1": old})
    svc = merge(SPEC, Layers(rollouts={"echo": roll})).spec.services["echo"]
    assert list(svc.versions) == ["v1", "v2", "v1.old"]
    assert svc.versions["v1"].command == SPEC.services["echo"].versions["v1"].command  # file's own
    assert svc.versions["v1.old"].replicas == 2


def test_a_joining_version_routes_at_zero_while_another_can_serve() -> None:
    desired = merge(SPEC, Layers()).hold({("echo", "v2"), ("solo", "v1")})
    assert desired.weights == {"echo": {"v1": 90, "v2": 0}}   # solo has nothing else: it routes
    overridden = merge(SPEC, Layers(overrides={"echo": {"v1": 0, "v2": 5}})).hold({("echo", "v2")})
    assert overridden.weights == {"echo": {"v1": 0, "v2": 5}}  # v2 alone can serve: it routes


def test_merge_changes_neither_the_spec_nor_the_layers() -> None:
    before = SPEC.model_dump()
    overrides = {"echo": {"v1": 1, "v2": 1}}
    merge(SPEC, Layers(overrides=overrides, rollouts={"echo": ROLL}, pins={KEY: PIN}))
    assert SPEC.model_dump() == before and overrides == {"echo": {"v1": 1, "v2": 1}}
    assert merge(SPEC, Layers()).spec == SPEC
