"""Autoscaling policies: pure functions ``(context, state) -> (replicas, state)``.

The default policy is the Lightning AutoScaler's, made robust:

- pending requests per (ready + starting) replica >= ``target_pending``: scale out, in
  proportion to the excess (``ceil(pending / target)``, at least one more), at most once per
  ``scale_out_interval``; a version with no replica and requests waiting scales out at once;
- below 25% of the target for a whole ``scale_in_interval``: scale in by one (never below one
  replica; zero is ``idle_to_zero``'s business), at most once per ``scale_in_interval``;
- with ``min_replicas: 0``, no request pending and none arriving for ``idle_to_zero``: zero;
  at zero only requests waiting now (``pending_now``) scale out, never the smoothed remainder
  of an earlier burst, so an idle version stays at zero;
- always clamped to [min_replicas, max_replicas] (a rollout's need is its own layer, above
  the autoscaler's in the merge, not a bound here).

A plugin may replace the decision with Lightning's ``scale(replicas, metrics) -> int``; its
answer is clamped the same way and follows the same intervals (``plugin_policy``). Time comes
in the context (``now``), so tests drive every rule with a fake clock.
"""

from __future__ import annotations

import inspect
import math
from collections.abc import Callable, Mapping
from dataclasses import dataclass, replace
from typing import Any

from gateway import plugins
from gateway.spec.models import AutoscaleSpec, ServiceSpec, VersionSpec

LOW_WATER = 0.25      # share of the target below which a version counts as over-provisioned
PLUGIN_KIND = "autoscaler"


@dataclass(frozen=True)
class Bounds:
    """One version's resolved ``autoscale:`` settings (service block, then version keys)."""

    min_replicas: int
    max_replicas: int
    target_pending: int
    scale_out_interval: float
    scale_in_interval: float
    idle_to_zero: float
    policy: str = "default"
    options: Mapping[str, Any] | None = None


@dataclass(frozen=True)
class Context:
    """What a policy sees of one version at one instant."""

    now: float
    replicas: int          # the current desired count
    ready: int
    starting: int          # launched, not ready yet (Lightning's pending_works)
    pending: float         # queued + waiting + in flight, smoothed
    pending_now: int       # the same, not smoothed
    arrivals: int          # requests that arrived since the previous sample
    arrival_rate: float    # requests/s, smoothed
    throughput: float      # answers/s, smoothed
    latency: float         # mean seconds per answered request, smoothed
    bounds: Bounds

    @property
    def low(self) -> int:
        return min(self.bounds.min_replicas, self.bounds.max_replicas)

    @property
    def queue_latency(self) -> float:
        """Expected wait of a new request (Little's law: pending / throughput), in seconds."""
        if self.pending <= 0:
            return 0.0
        return self.pending / self.throughput if self.throughput > 0 else math.inf


@dataclass(frozen=True)
class State:
    """A policy's memory between samples; ``reason`` explains the last answer."""

    last_out: float = -math.inf
    last_in: float = -math.inf
    low_since: float | None = None      # pending per replica below LOW_WATER * target since
    idle_since: float | None = None     # nothing pending and nothing arriving since
    reason: str = "start"


Policy = Callable[[Context, State], tuple[int, State]]


def _clamp(ctx: Context, n: int) -> int:
    return max(ctx.low, min(ctx.bounds.max_replicas, n))


def _idle(ctx: Context, state: State) -> State:
    if ctx.pending_now == 0 and ctx.arrivals == 0:
        return state if state.idle_since is not None else replace(state, idle_since=ctx.now)
    return replace(state, idle_since=None)


def _finish(ctx: Context, n: int, state: State, reason: str) -> tuple[int, State]:
    """Clamp, and say so when the clamp changed the answer (after what the policy wanted)."""
    out = _clamp(ctx, n)
    if out != n:
        reason = f"{reason}; clamped to [{ctx.low}, {ctx.bounds.max_replicas}]"
    return out, replace(state, reason=reason)


def default_policy(ctx: Context, state: State) -> tuple[int, State]:
    """The default policy; see the module docstring."""
    b = ctx.bounds
    state = _idle(ctx, state)
    cur = ctx.replicas
    capacity = ctx.ready + ctx.starting
    target = b.target_pending
    # With no replica, only a request waiting *now* is demand: the smoothed value left by the
    # last burst decays towards zero without reaching it, and scaling out on it would start and
    # stop a replica every scale_out_interval for as long as the silence lasts.
    per = ctx.pending / capacity if capacity else (math.inf if ctx.pending_now > 0 else 0.0)
    if capacity == 0 and ctx.pending_now > 0 and cur == 0:
        # requests wait and nothing is coming: the activator case, no interval to respect
        want = max(1, math.ceil(ctx.pending / target))
        return _finish(ctx, want, replace(state, last_out=ctx.now, low_since=None),
                       f"{ctx.pending_now} requests waiting with no replica: scale from zero")
    if capacity == 0 and cur > 0 and ctx.pending > 0:
        # replicas are wanted but none runs (a start failed, backoff): more would not help
        return _finish(ctx, cur, state, "waiting for replicas to start")
    if per >= target:
        state = replace(state, low_since=None)
        if ctx.now - state.last_out >= b.scale_out_interval and cur < b.max_replicas:
            want = max(cur + 1, math.ceil(ctx.pending / target))
            return _finish(ctx, want, replace(state, last_out=ctx.now),
                           f"pending {ctx.pending:.1f} over {capacity} replicas >= target {target}")
        return _finish(ctx, cur, state, "over target; waiting for scale_out_interval"
                       if cur < b.max_replicas else "over target at max_replicas")
    if per < LOW_WATER * target:
        low_since = ctx.now if state.low_since is None else state.low_since
        state = replace(state, low_since=low_since)
        idle_for = ctx.now - state.idle_since if state.idle_since is not None else -1.0
        if ctx.low == 0 and cur > 0 and idle_for >= b.idle_to_zero:
            return _finish(ctx, 0, replace(state, last_in=ctx.now, low_since=ctx.now),
                           f"idle for {idle_for:.0f}s >= idle_to_zero")
        low_for = ctx.now - low_since
        if cur > max(ctx.low, 1) and low_for >= b.scale_in_interval \
                and ctx.now - state.last_in >= b.scale_in_interval:
            # the next step down needs another whole interval of low load
            return _finish(ctx, cur - 1, replace(state, last_in=ctx.now, low_since=ctx.now),
                           f"pending {ctx.pending:.1f} below {LOW_WATER:.0%} of target for "
                           f"{low_for:.0f}s")
        return _finish(ctx, cur, state, f"below {LOW_WATER:.0%} of target for {low_for:.0f}s")
    return _finish(ctx, cur, replace(state, low_since=None), "pending within target")


# -- plugins ----------------------------------------------------------------------------------
Scale = Callable[[int, dict[str, Any]], int]


def plugin_metrics(ctx: Context) -> dict[str, Any]:
    """The ``metrics`` argument of a plugin's ``scale``: Lightning's keys, then ours."""
    return {"pending_requests": ctx.pending_now, "pending_works": ctx.starting,
            "pending_smoothed": ctx.pending, "ready": ctx.ready, "arrivals": ctx.arrivals,
            "arrival_rate": ctx.arrival_rate, "throughput": ctx.throughput,
            "latency": ctx.latency, "queue_latency": ctx.queue_latency,
            "target_pending": ctx.bounds.target_pending, "min_replicas": ctx.low,
            "max_replicas": ctx.bounds.max_replicas, "now": ctx.now}


def plugin_policy(scale: Scale) -> Policy:
    """A ``scale(replicas, metrics) -> int`` plugin as a policy: clamped, intervals respected,
    scale from zero at once (a plugin cannot leave waiting requests without a replica)."""

    def policy(ctx: Context, state: State) -> tuple[int, State]:
        state = _idle(ctx, state)
        if ctx.replicas == 0 and ctx.pending_now > 0 and ctx.ready + ctx.starting == 0:
            return _finish(ctx, 1, replace(state, last_out=ctx.now), "scale from zero")
        want = int(scale(ctx.replicas, plugin_metrics(ctx)))
        b, cur = ctx.bounds, ctx.replicas
        idle_for = ctx.now - state.idle_since if state.idle_since is not None else -1.0
        if want <= 0 < cur and idle_for < b.idle_to_zero:
            want = 1          # zero only after idle_to_zero, whatever the plugin says
        if want > cur and ctx.now - state.last_out < b.scale_out_interval:
            return _finish(ctx, cur, state, f"plugin wants {want}; waiting for scale_out_interval")
        if want < cur and ctx.now - state.last_in < b.scale_in_interval:
            return _finish(ctx, cur, state, f"plugin wants {want}; waiting for scale_in_interval")
        if want > cur:
            state = replace(state, last_out=ctx.now)
        elif want < cur:
            state = replace(state, last_in=ctx.now)
        return _finish(ctx, want, state, f"plugin {b.policy}: {want}"
                       if want != cur else state.reason)

    return policy


def load_policy(ref: str, options: Mapping[str, Any] | None = None) -> Policy:
    """``default``, a built-in plugin name (``gateway/plugins_builtin/autoscalers.py``, or an installed entry point) or ``module:attr``.

    ``module:function`` names ``scale(replicas, metrics) -> int`` itself; a class (or a
    registered factory) is called with ``options`` and its ``scale`` method (or the object,
    if callable) is used. Raises ``plugins.PluginError``."""
    if ref == "default":
        if options:
            raise plugins.PluginError("the default policy takes no options")
        return default_policy
    obj = plugins.resolve(PLUGIN_KIND, ref)
    if ":" in ref and not inspect.isclass(obj):
        if options:
            raise plugins.PluginError(f"autoscaler {ref!r} is a function: it takes no options")
        scale: Any = obj
    else:
        made = plugins.create(PLUGIN_KIND, ref, dict(options or {}))
        scale = getattr(made, "scale", made)
    if not callable(scale):
        raise plugins.PluginError(f"autoscaler {ref!r} has no scale(replicas, metrics)")
    return plugin_policy(scale)


# -- configuration ----------------------------------------------------------------------------
def effective(svc: ServiceSpec, ver: VersionSpec) -> AutoscaleSpec | None:
    """A version's ``autoscale:``: the service's block with the keys the version sets on top;
    None when neither has one or the result says ``enabled: false``."""
    base, own = svc.autoscale, ver.autoscale
    if own is not None:
        base = own if base is None else base.model_copy(
            update={k: getattr(own, k) for k in own.model_fields_set})
    return base if base is not None and base.enabled else None


def bounds(svc: ServiceSpec, spec: AutoscaleSpec) -> Bounds:
    target = spec.target_pending or (svc.batching.max_batch_size if svc.batching else 1)
    return Bounds(spec.min_replicas, spec.max_replicas, target, spec.scale_out_interval,
                  spec.scale_in_interval, spec.idle_to_zero, spec.policy, spec.options)
