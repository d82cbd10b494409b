"""Named benchmark scenarios: what the gateway is configured with, what load it gets, and which
targets are checked against which numbers.

A new case (traffic policies, a batching concurrency curve ...) is one more ``Scenario`` in
``SCENARIOS``: its own ``services`` config for the gateway, its own ``Load`` list (one Load per
point of a concurrency curve), the baselines worth running next to it, and its checks. Its
results land in bench/README.md between ``<!-- results:NAME -->`` markers.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from statistics import median
from typing import Any

from wrkload import Load, WrkResult

# Target keys, in table order. "direct" is the bench's own backend (the same nginx the gateway
# runs as its worker); the proxies in front of it are measured against the gateway.
TARGETS: dict[str, str] = {
    "direct": "direct (nginx backend)",
    "gateway": "serve-gateway",
    "nginx": "nginx proxy_pass",
    "naive": "naive aiohttp proxy",
}
FIXED_RATE_TARGETS = ("direct", "gateway", "nginx")

ServicesFn = Callable[[list[str]], dict[str, Any]]


@dataclass
class Results:
    """Everything one scenario run measured; absent entries were not measured."""

    closed: dict[str, dict[str, WrkResult]] = field(default_factory=dict)  # load -> target ->
    cpu: dict[str, dict[str, dict[str, float]]] = field(default_factory=dict)  # load -> target ->
    fixed: dict[str, dict[str, Any]] = field(default_factory=dict)  # target -> fixed_rate summary
    fixed_rate: float | None = None
    fixed_basis: str = ""
    rss: dict[str, Any] | None = None
    orphans: list[str] = field(default_factory=list)
    # load -> target -> req/s of each closed-loop round, in round order (for paired ratios)
    rounds: dict[str, dict[str, list[float]]] = field(default_factory=dict)

    def rps(self, load: str, target: str) -> float | None:
        res = self.closed.get(load, {}).get(target)
        return res.rps if res else None

    def paired(self, a: tuple[str, str], b: tuple[str, str]) -> list[float] | None:
        """req/s of ``a`` over ``b`` (each a (load, target)) round by round: two runs of one
        round are minutes apart at most, so each ratio sees one state of a drifting host."""
        ra = self.rounds.get(a[0], {}).get(a[1])
        rb = self.rounds.get(b[0], {}).get(b[1])
        if not ra or not rb or len(ra) != len(rb) or not all(rb):
            return None
        return [x / y for x, y in zip(ra, rb, strict=True)]

    def errors(self, load: str, *targets: str) -> int:
        by = self.closed.get(load, {})
        return sum(by[t].errors for t in targets if t in by)

    def added_p99_ms(self, target: str) -> float | None:
        """Fixed-rate p99 of ``target`` minus that of direct, at the same rate."""
        a, b = self.fixed.get(target), self.fixed.get("direct")
        if not a or not b:
            return None
        return float(a["p99_ms"]) - float(b["p99_ms"])


@dataclass(frozen=True)
class Check:
    """One pass/fail line of the table: ``measure`` returns (shown value, passed) or None."""

    name: str
    target: str
    measure: Callable[[Results], tuple[str, bool] | None]


@dataclass(frozen=True)
class Scenario:
    """A named case: gateway services config, closed-loop loads, baselines, checks."""

    name: str
    title: str
    services: ServicesFn  # backend argv (with "{port}") -> the config's `services:` mapping
    loads: tuple[Load, ...]
    baselines: tuple[str, ...] = ("direct", "nginx", "naive")
    fixed_rate: bool = True  # open-loop latency at half the gateway's saturation rate
    idle_conns: int = 1000  # gateway RSS with this many idle keep-alive clients; 0 = skip
    checks: tuple[Check, ...] = ()
    rounds: int = 3  # closed-loop rounds (--rounds overrides; --quick: 1)
    paired: tuple[tuple[str, str], ...] = ()  # (load, base load) ratios of gateway req/s to show


def one_version(backend: list[str]) -> dict[str, Any]:
    """One version of one replica running the bench backend."""
    return {"command": backend, "replicas": 1, "health": {"path": "/ready"}}


def one_backend(backend: list[str]) -> dict[str, Any]:
    """One service on / with one version of one replica: the bare proxy path."""
    return {"bench": {"route": "/", "versions": {"v1": one_version(backend)}}}


def _spread(ratios: list[float], fmt: str) -> str:
    """The median of per-round ratios, and their range when there are several."""
    shown = fmt.format(median(ratios))
    if len(ratios) > 1:
        shown += f" (rounds {fmt.format(min(ratios))}-{fmt.format(max(ratios))})"
    return shown


def _unless_errors(shown: str, ok: bool, errors: int) -> tuple[str, bool]:
    """A rate made of error responses proves nothing: any error fails the check."""
    return (f"{shown} ({errors} errors)", False) if errors else (shown, ok)


def _ratio_check(load: str, other: str, at_least: float, as_percent: bool) -> Check:
    label = {"nginx": "nginx proxy_pass", "naive": "naive proxy"}[other]

    def measure(r: Results) -> tuple[str, bool] | None:
        ratios = r.paired((load, "gateway"), (load, other))
        if not ratios:
            return None
        ratio = median(ratios)
        shown = _spread(ratios, "{:.0%}" if as_percent else "{:.2f}x")
        return _unless_errors(shown, ratio >= at_least, r.errors(load, "gateway", other))

    want = f">= {at_least:.0%}" if as_percent else f">= {at_least:g}x"
    return Check(f"gateway / {label} throughput, {load}", want, measure)


def _added_p99(limit_ms: float) -> Check:
    def measure(r: Results) -> tuple[str, bool] | None:
        added = r.added_p99_ms("gateway")
        if added is None:
            return None
        errors = sum(int(r.fixed[k]["errors"]) for k in ("gateway", "direct"))
        return _unless_errors(f"{added:+.2f} ms", added <= limit_ms, errors)

    return Check("added p99 vs direct, fixed rate", f"<= {limit_ms:g} ms", measure)


def _rss(limit_mb: float) -> Check:
    def measure(r: Results) -> tuple[str, bool] | None:
        if not r.rss:
            return None
        ok = r.rss["rss_mb"] < limit_mb and r.rss["alive_after"] == r.rss["connections"]
        return f"{r.rss['rss_mb']:.1f} MB ({r.rss['alive_after']} alive)", ok

    return Check("gateway RSS, 1,000 idle keep-alive conns", f"< {limit_mb:g} MB, all alive",
                 measure)


GET = Load("GET")
POST = Load("POST 1 KB", script="post.lua")

SPINE = Scenario(
    name="spine",
    title="Bare proxy path: one service, one version, one replica",
    services=one_backend,
    loads=(GET, POST),
    checks=(
        _ratio_check("GET", "naive", 2.5, as_percent=False),
        _ratio_check("POST 1 KB", "naive", 2.5, as_percent=False),
        _ratio_check("GET", "nginx", 0.25, as_percent=True),
        _ratio_check("POST 1 KB", "nginx", 0.25, as_percent=True),
        _added_p99(1.0),
        _rss(150.0),
    ),
)



# -- traffic policies: 10 rules + a 3-way weight split + 20% mirroring, against plain routing --
RULE_HEADERS = tuple(f"x-rule-{i}: on-{i}" for i in range(10))


def traffic_services(backend: list[str]) -> dict[str, Any]:
    """``/plain``: the bare path. ``/``: ten rules that all evaluate (each header regex matches,
    each rule's cookie is absent, so none wins), then v1/v2/v3 at 60/30/10, and 20% of requests
    copied to a shadow version and compared. Both in one gateway, so one run compares them."""
    rules = [{"match": {"header": {f"x-rule-{i}": {"regex": "on-[0-9]+"}},
                        "cookie": {f"group-{i}": "beta"}}, "to": f"v{i % 3 + 1}"}
             for i in range(10)]
    return {
        "plain": {"route": "/plain", "versions": {"v1": one_version(backend)}},
        "policies": {"route": "/",
                     "versions": {v: one_version(backend) for v in ("v1", "v2", "v3", "shadow")},
                     "traffic": {"rules": rules, "weights": {"v1": 60, "v2": 30, "v3": 10},
                                 "mirror": {"to": "shadow", "percent": 20}}},
    }


def _relative(load: str, base: str, at_least: float) -> Check:
    def measure(r: Results) -> tuple[str, bool] | None:
        ratios = r.paired((load, "gateway"), (base, "gateway"))
        if not ratios:
            return None
        return _unless_errors(_spread(ratios, "{:.0%}"), median(ratios) >= at_least,
                              r.errors(load, "gateway") + r.errors(base, "gateway"))

    return Check(f"gateway {load} / {base} throughput", f">= {at_least:.0%}", measure)


PLAIN_GET = Load("plain GET", path="/plain/x", headers=RULE_HEADERS)   # same bytes to parse
POLICY_GET = Load("policies GET", path="/x", headers=RULE_HEADERS)

TRAFFIC = Scenario(
    name="traffic",
    title="Traffic policies: 10 rules + 3-way weights + 20% mirroring vs plain routing",
    services=traffic_services,
    loads=(PLAIN_GET, POLICY_GET),
    baselines=("direct",),
    fixed_rate=False,
    idle_conns=0,
    checks=(_relative("policies GET", "plain GET", 0.85),),
    rounds=7,   # a ratio of two runs of one process: more rounds, a steadier median
)


# -- mirror share: the same primary path with 0, 5, 20, 50 and 100% of requests mirrored --------
MIRROR_SHARES = (5, 20, 50, 100)


def mirror_services(backend: list[str]) -> dict[str, Any]:
    """``/``: one version. ``/mN``: the same, plus a shadow version getting N% copies.
    How the cost grows with N separates what a copy costs the gateway (linear in N) from what
    waking a mostly idle worker costs this machine (largest per copy at small N)."""
    services = {"plain": {"route": "/", "versions": {"v1": one_version(backend)}}}
    for pct in MIRROR_SHARES:
        services[f"m{pct}"] = {"route": f"/m{pct}",
                               "versions": {v: one_version(backend) for v in ("v1", "shadow")},
                               "traffic": {"weights": {"v1": 1, "shadow": 0},
                                           "mirror": {"to": "shadow", "percent": pct}}}
    return services


MIRROR = Scenario(
    name="mirror",
    title="Mirror share: plain routing against 5, 20, 50 and 100% of requests mirrored",
    services=mirror_services,
    loads=(Load("plain GET", path="/x"),
           *(Load(f"{pct}% GET", path=f"/m{pct}/x") for pct in MIRROR_SHARES)),
    baselines=(),
    fixed_rate=False,
    idle_conns=0,
    rounds=5,
    paired=tuple((f"{pct}% GET", "plain GET") for pct in MIRROR_SHARES),
)

SCENARIOS: dict[str, Scenario] = {s.name: s for s in (SPINE, TRAFFIC, MIRROR)}
