"""control/autoscale.py policies and the control/autoscaler.py loop, with a fake clock."""

from __future__ import annotations

from dataclasses import replace
from itertools import pairwise
from typing import Any

import pytest

from gateway import plugins
from gateway.control.autoscale import (
    Bounds,
    Context,
    State,
    bounds,
    default_policy,
    effective,
    load_policy,
    plugin_policy,
)
from gateway.control.autoscaler import Autoscaler
from gateway.control.desired import Layers, merge
from gateway.control.supervisor import Supervisor
from gateway.errors import ConfigError
from gateway.metrics import Metrics
from gateway.spec import parse_spec
from gateway.spec.models import Spec
from tests.fakes import ManualClock as Clock

B = Bounds(min_replicas=0, max_replicas=8, target_pending=2, scale_out_interval=10.0,
           scale_in_interval=60.0, idle_to_zero=300.0)


def ctx(now: float = 1000.0, replicas: int = 2, ready: int | None = None, starting: int = 0,
        pending: float = 0.0, arrivals: int = 0, bounds: Bounds = B, **kw: Any) -> Context:
    return Context(now=now, replicas=replicas, ready=replicas if ready is None else ready,
                   starting=starting, pending=pending, pending_now=int(pending),
                   arrivals=arrivals, arrival_rate=kw.get("rate", 0.0),
                   throughput=kw.get("throughput", 0.0), latency=0.0, bounds=bounds)


# -- one decision -------------------------------------------------------------------------------
@pytest.mark.parametrize(("case", "context", "state", "want"), [
    ("out in proportion to the excess", ctx(pending=20), State(), 8 + 0),
    ("out in proportion, not capped", ctx(pending=9), State(), 5),
    ("out at least one", ctx(pending=4), State(), 3),
    ("out bounded by max", ctx(pending=100, bounds=replace(B, max_replicas=4)), State(), 4),
    ("starting replicas count as capacity", ctx(ready=1, starting=1, pending=3), State(), 2),
    ("out waits for scale_out_interval", ctx(pending=20), State(last_out=995.0), 2),
    ("out again once the interval passed", ctx(pending=20), State(last_out=990.0), 8),
    ("from zero at once", ctx(replicas=0, pending=3), State(last_out=999.0), 2),
    ("from zero at least one", ctx(replicas=0, pending=1, bounds=replace(B, target_pending=8)),
     State(), 1),
    ("wanted but not running: hold", ctx(replicas=2, ready=0, pending=9), State(), 2),
    ("in-between load: hold", ctx(pending=2), State(low_since=0.0), 2),
    ("low, but not for a whole interval", ctx(pending=0), State(low_since=950.0), 2),
    ("low for a whole interval: in by one", ctx(pending=0, replicas=4), State(low_since=940.0), 3),
    ("in waits for scale_in_interval", ctx(pending=0), State(low_since=0.0, last_in=990.0), 2),
    ("in never below one replica", ctx(pending=0, replicas=1), State(low_since=0.0), 1),
    ("clamp above max", ctx(replicas=12, pending=4), State(), 8),
    ("clamp below min", ctx(replicas=0, bounds=replace(B, min_replicas=2)), State(), 2),
])
def test_default_policy(case: str, context: Context, state: State, want: int) -> None:
    n, after = default_policy(context, state)
    assert n == want, f"{case}: {after.reason}"
    assert after.reason


def run(policy: Any, steps: list[tuple[float, float, int]], replicas: int,
        bounds: Bounds = B) -> list[int]:
    """Feed (now, pending, arrivals) samples; the policy's answer becomes the next count."""
    state, out = State(), []
    for now, pending, arrivals in steps:
        replicas, state = policy(ctx(now, replicas, pending=pending, arrivals=arrivals,
                                     bounds=bounds), state)
        out.append(replicas)
    return out


def test_scale_in_by_one_per_whole_interval() -> None:
    times = [0, 30, 59, 60, 61, 119, 120, 179, 180, 500]
    got = run(default_policy, [(t, 0.1, 1) for t in times], 4)
    assert got == [4, 4, 4, 3, 3, 3, 2, 2, 1, 1]   # never below one by this rule


def test_low_water_must_hold_for_the_whole_interval() -> None:
    # a busy sample at t=40 restarts the low-load window
    got = run(default_policy, [(0, 0, 1), (40, 3, 1), (41, 0, 1), (100, 0, 1), (101, 0, 1)], 4)
    assert got == [4, 4, 4, 4, 3]


def test_idle_to_zero_with_min_zero_only() -> None:
    steps = [(t, 0, 0) for t in (0, 100, 299, 300)]
    assert run(default_policy, steps, 1) == [1, 1, 1, 0]
    assert run(default_policy, steps, 1, replace(B, min_replicas=1)) == [1, 1, 1, 1]
    # an arrival restarts the idle clock
    steps = [(0, 0, 0), (200, 0, 1), (300, 0, 0), (599, 0, 0), (600, 0, 0)]
    assert run(default_policy, steps, 1) == [1, 1, 1, 1, 0]


def test_reason_names_the_clamp() -> None:
    n, st = default_policy(ctx(replicas=12, pending=4), State())
    assert n == 8 and "clamped" in st.reason


# -- plugins ------------------------------------------------------------------------------------
def always(n: int) -> Any:
    def scale(replicas: int, metrics: dict[str, Any]) -> int:
        always.seen = metrics  # type: ignore[attr-defined]
        return n
    return scale


def three(replicas: int, metrics: dict[str, Any]) -> int:
    return 3


class Doubler:
    def __init__(self, factor: int = 2) -> None:
        self.factor = factor

    def scale(self, replicas: int, metrics: dict[str, Any]) -> int:
        return replicas * self.factor


@pytest.mark.parametrize(("answer", "context", "state", "want"), [
    (100, ctx(), State(), 8),                                          # clamped to max
    (-5, ctx(bounds=replace(B, min_replicas=1)), State(), 1),          # clamped to min
    (0, ctx(replicas=2), State(), 1),                                  # zero only when idle
    (0, ctx(replicas=2), State(idle_since=0.0), 0),                    # ... for idle_to_zero
    (5, ctx(), State(last_out=995.0), 2),                              # scale_out_interval
    (1, ctx(replicas=3), State(last_in=990.0), 3),                     # scale_in_interval
    (0, ctx(replicas=0, pending=4), State(), 1),                       # from zero regardless
])
def test_plugin_result_is_clamped_and_paced(answer: int, context: Context, state: State,
                                            want: int) -> None:
    n, _ = plugin_policy(always(answer))(context, state)
    assert n == want


def test_plugin_gets_lightning_metrics() -> None:
    plugin_policy(always(2))(ctx(ready=1, starting=1, pending=6, throughput=3.0), State())
    seen = always.seen  # type: ignore[attr-defined]
    assert seen["pending_requests"] == 6 and seen["pending_works"] == 1
    assert seen["queue_latency"] == pytest.approx(2.0)


def test_plugin_loaded_by_name_module_function_and_class() -> None:
    by_name = load_policy("queue_latency", {"target_seconds": 1.0})
    # 2 s expected wait over a 1 s target: twice the replicas
    assert by_name(ctx(pending=6, throughput=3.0), State())[0] == 4
    assert by_name(ctx(pending=0), State())[0] == 1          # quiet: in by one
    assert load_policy(f"{__name__}:three")(ctx(), State())[0] == 3
    assert load_policy(f"{__name__}:Doubler", {"factor": 3})(ctx(), State())[0] == 6
    assert load_policy("default") is default_policy
    for ref, opts in (("nope", {}), ("nosuch.module:f", {}), (f"{__name__}:three", {"a": 1}),
                      ("queue_latency", {"target_seconds": -1}), ("default", {"x": 1})):
        with pytest.raises(plugins.PluginError):
            load_policy(ref, opts)


# -- config -------------------------------------------------------------------------------------
CONFIG = """\
services:
  echo:
    route: /v1/echo
    batching: {{max_batch_size: 16}}
    autoscale: {{min_replicas: 0, max_replicas: 4, scale_in_interval: 2s{extra}}}
    traffic: {{weights: {{v1: 1, v2: 1}}}}
    versions:
      v1:
        command: w --port {{port}}
      v2:
        command: w --port {{port}}
        autoscale: {{max_replicas: 2{v2}}}
"""


def test_config_merges_version_over_service_and_defaults_target() -> None:
    spec = parse_spec(CONFIG.format(extra="", v2=""))
    svc = spec.services["echo"]
    v1, v2 = (bounds(svc, effective(svc, svc.versions[v])) for v in ("v1", "v2"))  # type: ignore[arg-type]
    assert (v1.min_replicas, v1.max_replicas, v1.target_pending, v1.scale_in_interval) == (0, 4, 16, 2.0)
    assert (v2.min_replicas, v2.max_replicas, v2.scale_in_interval) == (0, 2, 2.0)
    off = parse_spec(CONFIG.format(extra="", v2=", enabled: false")).services["echo"]
    assert effective(off, off.versions["v2"]) is None


def test_config_checks_name_the_yaml_path() -> None:
    with pytest.raises(ConfigError) as err:
        parse_spec(CONFIG.format(extra=", policy: nope", v2="").replace("min_replicas: 0",
                                                                         "min_replicas: 5"))
    text = str(err.value)
    assert "services.echo.autoscale.min_replicas: min_replicas 5 is above max_replicas 4" in text
    assert "services.echo.autoscale.policy: no autoscaler named 'nope'" in text
    assert "services.echo.versions.v2.autoscale.min_replicas" in text   # 5 > 2 there too


# -- the loop, on a real supervisor that never runs -----------------------------------------------
LOOP = """\
services:
  echo:
    route: /v1/echo
    autoscale: {min_replicas: 0, max_replicas: 4, target_pending: 2, scale_out_interval: 1s,
                scale_in_interval: 5s, idle_to_zero: 20s}
    versions:
      v1: {command: "w --port {port}", replicas: %d}
"""


def scaler(replicas: int = 1) -> tuple[Autoscaler, Supervisor, Clock]:
    metrics = Metrics()
    sup = Supervisor(None, metrics)  # type: ignore[arg-type]
    clock = Clock()
    auto = Autoscaler(sup, metrics, clock=clock)
    sup.on_demand = auto.demand
    spec = parse_spec(LOOP % replicas)
    auto.publish = lambda: commit(auto, sup, spec)
    auto.apply(spec)
    commit(auto, sup, spec)
    return auto, sup, clock


def commit(auto: Autoscaler, sup: Supervisor, spec: Spec) -> None:
    """The gateway's commit point, as far as replica counts go: merge the layers, apply."""
    sup.apply(merge(spec, Layers(pins=auto.pins(), autoscaler=auto.layer())).spec)


def test_demand_scales_from_zero_at_once_and_pins_win() -> None:
    auto, sup, _ = scaler(0)
    g = sup.groups[("echo", "v1")]
    assert g.desired == 0
    g.replica_set.on_demand()  # type: ignore[misc]
    assert g.desired == 1
    last = auto.describe("echo", "v1")["last_decision"]  # type: ignore[index]
    assert last["source"] == "demand" and last["to"] == 1
    auto.pin("echo", "v1", 0)
    g.replica_set.on_demand()  # type: ignore[misc]
    assert g.desired == 0                         # a manual 0 stays 0
    auto.pin("echo", "v1", None)
    assert g.desired == 0 and auto.versions[("echo", "v1")].pin is None


def test_step_scales_out_on_pending_and_reload_keeps_the_count() -> None:
    auto, sup, clock = scaler(1)
    g = sup.groups[("echo", "v1")]
    g.launching = 1                              # one replica on its way
    auto.step()
    g.replica_set.waiting = 12
    for _ in range(20):                          # the smoothed pending catches up
        clock.now += 0.25
        auto.step()
    assert g.desired == 4                        # ceil(12 / 2) = 6, max 4
    doc = auto.describe("echo", "v1")
    assert doc and doc["last_decision"]["direction"] == "out" and doc["pending_now"] == 12
    spec = parse_spec((LOOP % 1).replace("max_replicas: 4", "max_replicas: 3"))
    notes = auto.apply(spec)                     # the file says 1, the autoscaler keeps 4 ...
    commit(auto, sup, spec)
    assert g.desired == 3 and notes == []        # ... clamped into the new bounds
    auto.pin("echo", "v1", 2)
    assert auto.apply(spec) == ["manual replica counts for echo/v1 replaced"]
    commit(auto, sup, spec)
    assert g.desired == 2                        # the pin's count, now autoscaled again


# -- scale to zero stays at zero ------------------------------------------------------------------
def test_a_smoothed_remainder_at_zero_is_not_demand() -> None:
    """After silence the smoothed pending decays towards 0 without reaching it; at zero replicas
    that remainder must not count as requests waiting (infinitely many per replica)."""
    quiet = ctx(replicas=0, pending=1e-6)          # pending_now 0: nobody waits
    n, state = default_policy(quiet, State(idle_since=0.0, last_out=0.0))
    assert n == 0, state.reason
    waiting = replace(quiet, pending_now=1)          # one request waiting: from zero at once
    assert default_policy(waiting, State())[0] == 1


def _ready_members(sup: Supervisor, key: tuple[str, str]) -> None:
    """A runtime where every wanted replica is ready at once (and gone at once)."""
    from gateway.control.groups import READY, Managed, replica_spec
    from gateway.runtimes.base import Replica

    g = sup.groups[key]
    while len(g.members) < g.desired:
        rs = replica_spec(g.service, g.version, g.spec)
        g.members.append(Managed(Replica(f"r{len(g.members)}", rs, "127.0.0.1", 1, 0.0),
                                 g, state=READY))
    del g.members[g.desired:]


@pytest.mark.parametrize("policy", ["default", "queue_latency"])
def test_shipped_autoscale_example_stays_at_zero_after_one_request(policy: str) -> None:
    """config/autoscale.yaml as shipped (and with the plugin it names): one request, then 5
    minutes of silence. The version goes to zero after idle_to_zero and stays there: no replica
    started for nobody (on main: a start and a stop every 2 s)."""
    from tests.helpers import REPO_ROOT

    text = (REPO_ROOT / "config" / "autoscale.yaml").read_text()
    spec = parse_spec(text.replace("policy: default", f"policy: {policy}"))
    metrics = Metrics()
    sup = Supervisor(None, metrics)  # type: ignore[arg-type]
    clock = Clock()
    auto = Autoscaler(sup, metrics, clock=clock)
    sup.on_demand = auto.demand
    auto.publish = lambda: commit(auto, sup, spec)
    auto.apply(spec)
    commit(auto, sup, spec)
    key = ("echo", "v1")
    g = sup.groups[key]
    history = []
    for tick in range(int(300 / auto.tick)):
        _ready_members(sup, key)
        g.replica_set.waiting = 1 if tick == 4 else 0      # one request, answered at once
        if tick == 5:
            metrics.version("echo", "v1").answered += 1
        clock.now += auto.tick
        auto.step()
        history.append(g.desired)
    zero_at = history.index(0)
    assert 30 / auto.tick <= zero_at <= 40 / auto.tick, "idle_to_zero is 30s"
    assert set(history[zero_at:]) == {0}, \
        f"{sum(1 for a, b in pairwise(history) if b > a)} scale-outs with no traffic"
    assert auto.describe("echo", "v1")["pending"] == 0      # type: ignore[index]
