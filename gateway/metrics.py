"""Every Prometheus metric in one place.

Labels stay bounded: service, version, status code, state and error kind come from the config
or from small fixed sets, never from paths or user input. Hot-path code keeps the labelled
children it needs (``VersionMetrics``) instead of looking labels up per request.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram, Info, ProcessCollector
from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily, Metric
from prometheus_client.exposition import generate_latest
from prometheus_client.registry import Collector

from gateway.errors import ProxyError

LATENCY_BUCKETS = (0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0,
                   2.5, 5.0, 10.0, 30.0)
DIFF_BUCKETS = (-5.0, -1.0, -0.25, -0.1, -0.05, -0.025, -0.01, -0.005, -0.001, 0.0, 0.001,
                0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 1.0, 5.0)
START_BUCKETS = (0.25, 0.5, 1, 2, 5, 10, 20, 30, 60, 120, 300)
TIMEOUT_KINDS = ("header_read", "body_idle", "upstream_idle", "client_write")
BATCH_BUCKETS = (1, 2, 4, 8, 16, 32, 64, 128, 256, 512, 1024)
# label sets known in advance: each series is created at 0 (a version's when the version is
# first routed), so that rate() and increase() see the first event instead of starting at it
EXIT_REASONS = ("exited", "killed", "oom_killed")    # runtimes.base.ExitKind, less "stopped"


def _kinds(cls: type[ProxyError]) -> set[str]:
    out = {cls.kind}
    for sub in cls.__subclasses__():
        out |= _kinds(sub)
    return out


def _metrics(cls: type[ProxyError]) -> set[str]:
    out = {cls.metric}
    for sub in cls.__subclasses__():
        out |= _metrics(sub)
    return out


ERROR_KINDS = tuple(sorted(_kinds(ProxyError)))                    # serve_gateway_errors_total
UPSTREAM_ERROR_KINDS = tuple(sorted(_metrics(ProxyError) | {"5xx"}))   # _upstream_errors_total


class VersionMetrics:
    """The labelled children one version's requests touch, resolved once per table build."""

    __slots__ = ("_m", "service", "version", "latency", "upstream_latency", "_codes",
                 "answered", "seconds", "failed", "streams", "streams_open")

    def __init__(self, m: Metrics, service: str, version: str) -> None:
        self._m = m
        self.service = service
        self.version = version
        self.latency = m.request_seconds.labels(service, version)
        self.upstream_latency = m.upstream_seconds.labels(service, version)
        self.streams = m.streams.labels(service, version)
        self.streams_open = m.streams_open.labels(service, version)
        self._codes: dict[int, Counter] = {}
        for kind in UPSTREAM_ERROR_KINDS:
            m.upstream_errors.labels(service, version, kind)
        for reason in EXIT_REASONS:
            m.replica_exits.labels(service, version, reason)
        m.replica_restarts.labels(service, version)
        m.retries.labels(service, version)
        m.queue_wait.labels(service, version)
        m.cold_start.labels(service, version)
        self.answered = 0         # plain running totals: the autoscaler and rollouts sample
        self.seconds = 0.0
        self.failed = 0           # answers with a 5xx status

    def observe(self, status: int, seconds: float) -> None:
        c = self._codes.get(status)
        if c is None:
            c = self._codes[status] = self._m.requests.labels(self.service, self.version, str(status))
        c.inc()
        self.latency.observe(seconds)
        self.answered += 1
        self.seconds += seconds
        if status >= 500:
            self.failed += 1

    def buckets(self) -> tuple[float, ...]:
        """Cumulative latency counts per bucket of ``LATENCY_BUCKETS`` (+Inf last): a rollout
        analysis takes the difference of two to get one window's p99."""
        total = 0.0
        out = []
        for b in self.latency._buckets:   # noqa: SLF001 - prometheus_client keeps them private
            total += b.get()
            out.append(total)
        return tuple(out)

    def upstream_error(self, kind: str) -> None:
        self._m.upstream_errors.labels(self.service, self.version, kind).inc()


class ShadowMetrics:
    """One mirror target's children and its running agreement (kept across table builds)."""

    __slots__ = ("_m", "service", "version", "sent", "dropped", "error", "agree", "disagree",
                 "mismatch", "latency_diff", "agreed", "compared", "_ratio")

    def __init__(self, m: Metrics, service: str, version: str) -> None:
        self._m = m
        self.service = service
        self.version = version
        self.sent = m.shadow_requests.labels(service, version, "sent")
        self.dropped = m.shadow_requests.labels(service, version, "dropped")
        self.error = m.shadow_requests.labels(service, version, "error")
        self.agree = m.shadow_comparisons.labels(service, version, "agree")
        self.disagree = m.shadow_comparisons.labels(service, version, "disagree")
        self.mismatch = m.shadow_status_mismatch.labels(service, version)
        self.latency_diff = m.shadow_latency_diff.labels(service, version)
        self.agreed = 0
        self.compared = 0
        self._ratio: Gauge | None = None

    def compared_one(self, agree: bool) -> None:
        self.compared += 1
        if agree:
            self.agreed += 1
            self.agree.inc()
        else:
            self.disagree.inc()
        self._show_ratio()

    def absorb(self, agreed: int, disagreed: int) -> None:
        """Comparisons a data-plane process made (control/gather.py feeds the counters)."""
        self.agreed += agreed
        self.compared += agreed + disagreed
        if self.compared:
            self._show_ratio()

    def _show_ratio(self) -> None:
        if self._ratio is None:   # appears with the first comparison: 0 before would mislead
            self._ratio = self._m.shadow_agreement.labels(self.service, self.version)
            self._ratio.set_function(lambda: self.agreed / self.compared)   # read at scrape

    def totals(self) -> tuple[int, int, int, int]:
        """(answered, failed, agreed, compared) so far: failed counts copies that got no answer
        or an answer whose status differs from the primary's."""
        failed = _count(self.error) + _count(self.mismatch)
        return _count(self.sent) + _count(self.error), failed, self.agreed, self.compared

    def agreement(self) -> float | None:
        """Share of compared answers that agreed, or None before the first comparison."""
        return self.agreed / self.compared if self.compared else None


class BatchMetrics:
    """The labelled children one version's batcher touches (dataplane/batcher.py); queue
    length and pending instances are scrape-time gauges reported by the batchers."""

    __slots__ = ("_m", "service", "version", "size", "wait", "shed")

    def __init__(self, m: Metrics, service: str, version: str) -> None:
        self._m = m
        self.service = service
        self.version = version
        self.size = m.batch_size.labels(service, version)
        self.wait = m.batch_queue_wait.labels(service, version)
        self.shed = m.batch_shed.labels(service, version)

    def error(self, kind: str) -> None:
        self._m.batch_errors.labels(self.service, self.version, kind).inc()


class ModelMetrics:
    """Requests per multiplexed model id of one version, by placement (``held``: the replica
    had it; ``load``: sent to one that loads it). Ids come from clients, so labels are bounded:
    the first ``top`` ids seen get their own series, every later one counts as ``other``."""

    __slots__ = ("_children", "_m", "_named", "service", "top", "version")

    OTHER = "other"

    def __init__(self, m: Metrics, service: str, version: str, top: int) -> None:
        self._m = m
        self.service = service
        self.version = version
        self.top = top
        self._children: dict[tuple[bytes, bool], Counter] = {}   # at most 2 * (top + 1)
        self._named: set[bytes] = set()

    def count(self, model: bytes, held: bool) -> None:
        c = self._children.get((model, held))
        if c is None:
            c = self._child(model, held)
        c.inc()

    def _child(self, model: bytes, held: bool) -> Counter:
        if model in self._named or len(self._named) < self.top:
            self._named.add(model)
            label, key = model.decode("latin-1"), (model, held)
        else:
            label, key = self.OTHER, (b"", held)
        c = self._children.get(key)
        if c is None:
            c = self._children[key] = self._m.model_requests.labels(
                self.service, self.version, label, "held" if held else "load")
        return c


class Metrics:
    def __init__(self, registry: CollectorRegistry | None = None) -> None:
        r = self.registry = registry or CollectorRegistry()
        self.requests = Counter("serve_gateway_requests", "Requests answered, by status code",
                                ["service", "version", "code"], registry=r)
        self.request_seconds = Histogram(
            "serve_gateway_request_duration_seconds", "Time from request arrival to response",
            ["service", "version"], buckets=LATENCY_BUCKETS, registry=r)
        self.upstream_seconds = Histogram(
            "serve_gateway_upstream_duration_seconds", "Time a worker took to answer",
            ["service", "version"], buckets=LATENCY_BUCKETS, registry=r)
        self.queue_wait = Histogram(
            "serve_gateway_queue_wait_seconds", "Time a request waited for a ready replica",
            ["service", "version"], buckets=LATENCY_BUCKETS, registry=r)
        self.upstream_errors = Counter(
            "serve_gateway_upstream_errors", "Failed upstream exchanges by kind",
            ["service", "version", "kind"], registry=r)
        self.retries = Counter("serve_gateway_retries", "Requests retried on another replica",
                               ["service", "version"], registry=r)
        # streamed answers (Accept: text/event-stream or JSON lines): relayed chunk by chunk
        self.streams = Counter("serve_gateway_streams", "Streamed answers started",
                               ["service", "version"], registry=r)
        self.streams_open = Gauge("serve_gateway_streams_open", "Streamed answers being relayed now",
                                  ["service", "version"], registry=r)
        self.errors = Counter("serve_gateway_errors", "Errors the gateway answered itself",
                              ["kind"], registry=r)
        for kind in ERROR_KINDS:
            self.errors.labels(kind)
        self.timeouts = Counter("serve_gateway_timeouts", "Waits on a peer cut by their deadline "
                                "(gateway.deadlines), by kind", ["kind"], registry=r)
        for kind in TIMEOUT_KINDS:   # every series exists from the start, for rate()
            self.timeouts.labels(kind)
        self.replica_restarts = Counter("serve_gateway_replica_restarts",
                                        "Replicas restarted after an exit",
                                        ["service", "version"], registry=r)
        self.replica_exits = Counter("serve_gateway_replica_exits",
                                     "Replica exits not asked for, by reason",
                                     ["service", "version", "reason"], registry=r)
        self.cold_start = Histogram("serve_gateway_replica_cold_start_seconds",
                                    "Replica launch to first successful readiness probe",
                                    ["service", "version"], buckets=START_BUCKETS, registry=r)
        self.config_reloads = Counter("serve_gateway_config_reloads", "Config reloads by result",
                                      ["result"], registry=r)
        self.config_info = Info("serve_gateway_config", "The loaded config", registry=r)
        self.config_loaded = Gauge("serve_gateway_config_last_load_timestamp_seconds",
                                   "When the running config was loaded", registry=r)
        self.config_restart_pending = Gauge(
            "serve_gateway_config_restart_pending",
            "1 when the last reloaded file changed settings that apply only after a restart",
            registry=r)
        for result in ("success", "failure"):   # both series exist from the start, for rate()
            self.config_reloads.labels(result)
        ProcessCollector(registry=r)   # process_cpu_seconds_total, resident memory, open fds
        # shadow traffic (dataplane/mirror.py), per service and mirror version
        self.shadow_requests = Counter(
            "serve_gateway_shadow_requests", "Mirror copies by result (sent = answered)",
            ["service", "version", "result"], registry=r)
        self.shadow_comparisons = Counter(
            "serve_gateway_shadow_comparisons", "Mirror answers compared with the primary's",
            ["service", "version", "result"], registry=r)
        self.shadow_agreement = Gauge(
            "serve_gateway_shadow_agreement_ratio",
            "Share of compared mirror answers that agree with the primary's", ["service", "version"],
            registry=r)
        self.shadow_status_mismatch = Counter(
            "serve_gateway_shadow_status_mismatch", "Mirror answers whose status differs",
            ["service", "version"], registry=r)
        self.shadow_latency_diff = Histogram(
            "serve_gateway_shadow_latency_difference_seconds",
            "Mirror latency minus primary latency (negative: the mirror was faster)",
            ["service", "version"], buckets=DIFF_BUCKETS, registry=r)
        # micro-batching (dataplane/batcher.py), per service and version
        self.batch_size = Histogram(
            "serve_gateway_batch_size", "Instances per batch sent to a worker",
            ["service", "version"], buckets=BATCH_BUCKETS, registry=r)
        self.batch_queue_wait = Histogram(
            "serve_gateway_batch_queue_wait_seconds",
            "Time from arrival until a request's batch left",
            ["service", "version"], buckets=LATENCY_BUCKETS, registry=r)
        self.batch_shed = Counter(
            "serve_gateway_batch_shed",
            "Requests refused with 503 because the batch queue was full",
            ["service", "version"], registry=r)
        self.batch_errors = Counter(
            "serve_gateway_batch_errors", "Batching failures by kind (per batch, or per request "
            "for deadline)", ["service", "version", "kind"], registry=r)
        # autoscaling (control/autoscaler.py); desired replicas and smoothed load are
        # scrape-time gauges the autoscaler reports
        self.autoscale_decisions = Counter(
            "serve_gateway_autoscale_decisions", "Replica count changes by direction (out, in) "
            "and source (policy, demand = scale from zero, manual, reload)",
            ["service", "version", "direction", "source"], registry=r)
        # rollouts (control/rollouts.py), per service
        self.rollout_phase = Gauge(
            "serve_gateway_rollout_phase", "1 for the phase each service's rollout is in",
            ["service", "phase"], registry=r)
        self.rollout_step = Gauge("serve_gateway_rollout_step", "Current step (0-based)",
                                  ["service"], registry=r)
        self.rollout_weight = Gauge("serve_gateway_rollout_weight",
                                    "Traffic percent per version set by the rollout",
                                    ["service", "version"], registry=r)
        self.rollout_checks = Counter(
            "serve_gateway_rollout_analysis", "Rollout analysis checks by result",
            ["service", "check", "result"], registry=r)
        self.rollout_check_value = Gauge(
            "serve_gateway_rollout_analysis_value", "The last value of each analysis check",
            ["service", "check"], registry=r)
        self.rollouts = Counter(
            "serve_gateway_rollouts", "Ended rollouts by strategy and outcome (done, aborted = "
            "by an operator or a new target, degraded = rolled back by analysis)",
            ["service", "strategy", "outcome"], registry=r)
        self.rollout_journal_errors = Counter(
            "serve_gateway_rollout_journal_errors",
            "Unreadable rollout journals moved aside at start-up", registry=r)
        # multiplexed models (dataplane/affinity.py): bounded labels, see ModelMetrics
        self.model_requests = Counter(
            "serve_gateway_model_requests", "Requests of multiplexed models by model id (the "
            "first N seen; the rest: other) and placement (held: on a replica holding it, "
            "load: on one that loads it)", ["service", "version", "model", "placement"],
            registry=r)
        self._models: dict[tuple[str, str], ModelMetrics] = {}
        self._versions: dict[tuple[str, str], VersionMetrics] = {}
        self._shadows: dict[tuple[str, str], ShadowMetrics] = {}
        self._batches: dict[tuple[str, str], BatchMetrics] = {}
        # what render shows: the registry with same-named gauge families added up (a
        # controller's own gauges plus its data-plane processes', control/gather.py)
        self._exposed = CollectorRegistry(auto_describe=False)
        self._exposed.register(_Callback(lambda: _merged(self.registry.collect())))

    def version(self, service: str, version: str) -> VersionMetrics:
        key = (service, version)
        vm = self._versions.get(key)
        if vm is None:
            vm = self._versions[key] = VersionMetrics(self, service, version)
        return vm

    def timeout(self, kind: str) -> None:
        """One wait on a peer cut by its deadline (one of ``TIMEOUT_KINDS``)."""
        self.timeouts.labels(kind).inc()

    def reloaded(self, ok: bool, restart_pending: bool = False) -> None:
        """Count one config reload; a failed one leaves the running config (and its gauges)."""
        self.config_reloads.labels("success" if ok else "failure").inc()
        if ok:
            self.config_restart_pending.set(1 if restart_pending else 0)

    def batch(self, service: str, version: str) -> BatchMetrics:
        key = (service, version)
        bm = self._batches.get(key)
        if bm is None:
            bm = self._batches[key] = BatchMetrics(self, service, version)
        return bm

    def models(self, service: str, version: str, top: int) -> ModelMetrics:
        """One version's per-model counters, kept across reloads (``top`` may change)."""
        mm = self._models.get((service, version))
        if mm is None:
            mm = self._models[(service, version)] = ModelMetrics(self, service, version, top)
        mm.top = top
        return mm

    def shadow(self, service: str, version: str) -> ShadowMetrics:
        key = (service, version)
        sm = self._shadows.get(key)
        if sm is None:
            sm = self._shadows[key] = ShadowMetrics(self, service, version)
        return sm

    def add_gauges(self, collect: Callable[[], Iterable[Metric]]) -> None:
        """Register a collector computed at scrape time (replica states, in-flight counts):
        the owner of the state reports it, the hot path never updates a gauge."""
        self.registry.register(_Callback(collect))

    def flush(self) -> None:
        """Fold the hot path's plain tallies into the prometheus_client children. Everything
        that reads the children (``render``, a data-plane process's report to its controller)
        calls this first; the hot path itself never touches prometheus_client."""

    def render(self) -> bytes:
        self.flush()
        return generate_latest(self._exposed)


class _Callback(Collector):
    def __init__(self, collect: Callable[[], Iterable[Metric]]) -> None:
        self._collect = collect

    def collect(self) -> Iterable[Metric]:
        return self._collect()

    def describe(self) -> Iterable[Metric]:
        return []


def _merged(families: Iterable[Metric]) -> Iterable[Metric]:
    """``families`` with gauge families of one name merged into the first: values of equal
    labels added, so one name appears once in the exposition, as the format requires."""
    out: list[Metric] = []
    gauges: dict[str, Metric] = {}
    for fam in families:
        first = gauges.get(fam.name) if fam.type == "gauge" else None
        if first is None:
            out.append(fam)
            if fam.type == "gauge":
                gauges[fam.name] = fam
            continue
        index = {(s.name, tuple(sorted(s.labels.items()))): i for i, s in enumerate(first.samples)}
        for s in fam.samples:
            i = index.get((s.name, tuple(sorted(s.labels.items()))))
            if i is None:
                first.samples.append(s)
            else:
                first.samples[i] = first.samples[i]._replace(value=first.samples[i].value + s.value)
    return out


def _count(counter: Counter) -> int:
    return int(counter._value.get())   # noqa: SLF001 - a child's value has no public getter


def gauge(name: str, doc: str, labels: list[str],
          samples: Iterable[tuple[tuple[str, ...], float]]) -> GaugeMetricFamily:
    g = GaugeMetricFamily(name, doc, labels=labels)
    for values, v in samples:
        g.add_metric(list(values), v)
    return g


def counter(name: str, doc: str, labels: list[str],
            samples: Iterable[tuple[tuple[str, ...], float]]) -> CounterMetricFamily:
    """A counter its owner keeps as a plain int (``name`` without ``_total``)."""
    c = CounterMetricFamily(name, doc, labels=labels)
    for values, v in samples:
        c.add_metric(list(values), v)
    return c
