"""The ``rollout:`` section: validation errors with path and line, conversion of every shipped
example to its planner plan, and the analysis window the controller hands the planners."""

from __future__ import annotations

from pathlib import Path

import pytest

from gateway.control.rollout.fromspec import stable_of, to_plan
from gateway.control.rollout.model import (
    ABPlan,
    BlueGreenPlan,
    CanaryPlan,
    CanaryStep,
    RampedPlan,
    RecreatePlan,
    RolloutState,
    RouteRule,
    ShadowPlan,
)
from gateway.control.rolloutobs import Counts, quantile, window
from gateway.control.rollouts import window_start
from gateway.errors import ConfigError
from gateway.metrics import LATENCY_BUCKETS
from gateway.spec import load_spec, parse_spec

ROOT = Path(__file__).resolve().parents[2]

BASE = """
services:
  m:
    route: /m
    versions:
      v1: {command: "w {port}"}
      v2: {command: "w {port}", replicas: 3}
"""


def problems(text: str) -> list[str]:
    with pytest.raises(ConfigError) as e:
        parse_spec(text, "t.yaml")
    return [str(p) for p in e.value.problems]


def test_rollout_errors_name_the_field_and_line() -> None:
    assert problems(BASE + "    rollout: {strategy: canary, to: v3}\n") == [
        "services.m.rollout.to: no version named v3 (versions: v1, v2) (line 8)"]
    assert problems(BASE + "    rollout: {strategy: canery, to: v2}\n") == [
        "services.m.rollout.strategy: must be one of 'recreate', 'ramped', 'blue_green', "
        "'canary', 'ab', 'shadow' (line 8)"]
    assert problems(BASE + "    rollout:\n      strategy: canary\n      to: v2\n"
                    "      steps: [{weight: 10}, {weight: 150}]\n") == [
        "services.m.rollout.steps.1.weight: must be <= 100 (line 11)"]
    assert problems(BASE + "    rollout: {strategy: ab, to: v2}\n") == [
        "services.m.rollout: an A/B rollout needs a 'rule', a 'weight' or both (line 8)"]
    assert problems(BASE + "    rollout: {strategy: ramped, to: v2, from: v2}\n") == [
        "services.m.rollout.from: must differ from 'to' (line 8)"]
    three = BASE + '      v3: {command: "w {port}"}\n    rollout: {strategy: ramped, to: v2}\n'
    assert problems(three) == [
        "services.m.rollout: with 3 versions, say which one serves now: 'from' (line 9)"]


def test_a_rollout_replaces_the_weights_a_multi_version_service_needs() -> None:
    spec = parse_spec(BASE + "    rollout: {strategy: recreate, to: v2}\n")
    svc = spec.services["m"]
    assert stable_of(svc) == "v1"
    assert to_plan("m", svc, "v1") == RecreatePlan("m", "v1", "v2", replicas=3)


def test_every_shipped_rollout_example_becomes_its_plan() -> None:
    plans = {p.stem: to_plan("echo", svc, stable_of(svc))
             for p in sorted((ROOT / "config").glob("rollout-*.yaml"))
             for svc in [load_spec(p).services["echo"]]}
    assert {k: type(v) for k, v in plans.items()} == {
        "rollout-ab": ABPlan, "rollout-bluegreen": BlueGreenPlan, "rollout-canary": CanaryPlan,
        "rollout-ramped": RampedPlan, "rollout-recreate": RecreatePlan,
        "rollout-shadow": ShadowPlan}
    canary = plans["rollout-canary"]
    assert isinstance(canary, CanaryPlan)
    assert canary.steps == (CanaryStep(10, 60.0), CanaryStep(50, 120.0))
    assert canary.analysis is not None and canary.analysis.max_p99_s == 0.5
    assert (canary.stable, canary.target, canary.replicas) == ("v1", "v2", 2)
    bg = plans["rollout-bluegreen"]
    assert isinstance(bg, BlueGreenPlan)
    assert bg.preview == RouteRule("x-preview", "green", kind="header")
    assert bg.auto_promote_after is None and bg.scale_down_delay == 600.0
    ab = plans["rollout-ab"]
    assert isinstance(ab, ABPlan) and ab.rule == RouteRule("ab-group", "beta", kind="cookie")


def test_p99_interpolates_inside_its_bucket_like_prometheus() -> None:
    n = len(LATENCY_BUCKETS) + 1
    assert quantile(0.99, LATENCY_BUCKETS, (0.0,) * n) is None
    # 100 answers, all in the (0.01, 0.025] bucket: rank 99 of 100 inside it
    cumulative = tuple(0.0 if b < 0.025 else 100.0 for b in (*LATENCY_BUCKETS, float("inf")))
    assert quantile(0.99, LATENCY_BUCKETS, cumulative) == pytest.approx(0.01 + 0.015 * 0.99)
    # beyond the last bound: the highest finite bound
    over = (0.0,) * (n - 1) + (10.0,)
    assert quantile(0.99, LATENCY_BUCKETS, over) == LATENCY_BUCKETS[-1]


def test_window_counts_only_what_happened_since_it_opened() -> None:
    n = len(LATENCY_BUCKETS) + 1
    before = Counts(1000, 50, (1000.0,) * n, (10, 1, 8, 9))
    slow = tuple(0.0 if b < 1.0 else 100.0 for b in (*LATENCY_BUCKETS, float("inf")))
    after = Counts(1100, 55, tuple(a + b for a, b in zip(before.buckets, slow, strict=True)),
                   (30, 3, 26, 29))
    obs = window(after, before, ready=2, starting=1, shadow=False)
    assert (obs.requests, obs.errors, obs.ready, obs.starting) == (100, 5, 2, 1)
    assert obs.p99_s is not None and 0.5 < obs.p99_s <= 1.0   # the old fast answers don't count
    assert (obs.agreement, obs.agreement_samples) == (18 / 20, 20)
    copies = window(after, before, ready=1, starting=0, shadow=True)
    assert (copies.requests, copies.errors, copies.p99_s) == (20, 2, None)


def test_the_window_opens_where_the_analysis_counts_from() -> None:
    s = RolloutState("m", "canary", "v1", "v2", started_at=10.0)
    assert window_start(s) == 10.0
    assert window_start(RolloutState("m", "canary", "v1", "v2", 10.0, step_started_at=20.0)) == 20.0
    assert window_start(RolloutState("m", "canary", "v1", "v2", 10.0, step_started_at=20.0,
                                     last_analysis_at=30.0)) == 30.0


def test_a_rollout_without_to_is_for_a_single_version_service() -> None:
    assert problems(BASE + "    rollout: {strategy: ramped}\n") == [
        "services.m.rollout: a rollout without 'to' rolls out new revisions of a service's only "
        "version: name the version to move to in 'to' (line 8)"]
    single = BASE.replace('      v2: {command: "w {port}", replicas: 3}\n', "")
    spec = parse_spec(single + "    rollout: {strategy: ramped}\n")
    svc = spec.services["m"]
    assert to_plan("m", svc, "v1.abc", "v1") == RampedPlan("m", "v1.abc", "v1", replicas=1)


def test_plan_prints_each_examples_timeline_offline(capsys: pytest.CaptureFixture[str]) -> None:
    from gateway.cli import main

    assert main(["plan", str(ROOT / "config" / "rollout-canary.yaml"), "--rps", "2"]) == 0
    out = capsys.readouterr().out
    assert "echo: canary v1 -> v2, 2 replicas; at 2 req/s" in out
    assert "step 1: v2 at 10%" in out and "to full promotion: 180s at the earliest" in out
    assert "warning:" in out and "min_requests 50" in out    # 10% of 2 req/s never fills it
    assert main(["plan", str(ROOT / "config" / "rollout-bluegreen.yaml")]) == 0
    assert "to full promotion: needs a promote" in capsys.readouterr().out


def test_plan_warns_when_the_gpus_cannot_hold_the_peak(tmp_path: Path,
                                                       capsys: pytest.CaptureFixture[str]) -> None:
    from gateway.cli import main

    config = tmp_path / "gpu.yaml"
    config.write_text("""
gateway: {runtime: docker, docker: {gpus: [0, 1]}}
services:
  m:
    route: /m
    versions:
      v1: {image: "w:1", port: 8000, replicas: 2, resources: {gpus: 1}}
      v2: {image: "w:2", port: 8000, replicas: 2, resources: {gpus: 1}}
    rollout: {strategy: blue_green, to: v2}
""")
    assert main(["plan", str(config)]) == 0
    assert "warning: needs 4 replicas at its peak, more than max_replicas 2" \
        in capsys.readouterr().out


def test_plan_warns_when_a_shadow_cannot_see_posts(tmp_path: Path,
                                                   capsys: pytest.CaptureFixture[str]) -> None:
    from gateway.cli import main

    text = (ROOT / "config" / "rollout-shadow.yaml").read_text()
    (tmp_path / "s.yaml").write_text(text.replace("mirror_post: true", "mirror_post: false")
                                     .replace("methods: [POST]", "methods: [GET]"))
    assert main(["plan", str(tmp_path / "s.yaml")]) == 0
    assert "only GET and HEAD requests are mirrored" in capsys.readouterr().out
    assert main(["plan", str(ROOT / "config" / "rollout-shadow.yaml")]) == 0
    assert "mirrored" not in capsys.readouterr().out
