"""Prometheus metrics with bounded labels (tier/route/target names come from the config only).

One ``Metrics`` object per process, on its own registry (no module-level
state). With several workers, ``PROMETHEUS_MULTIPROC_DIR`` is set by the
master before the workers start; every worker then writes its samples to
that directory and ``/metrics`` on any worker aggregates all of them.
"""

from __future__ import annotations

import os
from collections.abc import Sequence
from typing import Any

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram, generate_latest
from prometheus_client.metrics_core import Metric
from prometheus_client.multiprocess import MultiProcessCollector
from prometheus_client.registry import Collector

from .histogram import LocalHistogram
from .settings import DEFAULT_OVERHEAD_BUCKETS, DEFAULT_TTFT_BUCKETS

__all__ = ["Metrics", "latency_buckets"]

_KNOWN_STATUSES = frozenset(
    {200, 400, 401, 403, 404, 405, 408, 413, 415, 422, 429, 500, 502, 503, 504}
)
_LATENCY_BUCKETS = (
    0.001,
    0.0025,
    0.005,
    0.01,
    0.025,
    0.05,
    0.1,
    0.25,
    0.5,
    1,
    2.5,
    5,
    10,
    30,
    60,
    120,
    300,
)


def latency_buckets(extra: Sequence[float] = ()) -> tuple[float, ...]:
    """The latency histogram's bounds: the defaults and ``extra`` (the SLO thresholds in use,
    so every threshold has a bucket of its own)."""
    return tuple(sorted({float(b) for b in (*_LATENCY_BUCKETS, *extra)}))


# Formatted once: ``str(200)`` costs about 900 instructions per request on Python 3.11.
_STATUS_LABELS = {status: str(status) for status in _KNOWN_STATUSES}


def status_label(status: int) -> str:
    return _STATUS_LABELS.get(status) or f"{status // 100}xx"


class _CallSeries:
    """One (endpoint, tier, route)'s samples: answers by status, summed until the next flush
    (no label built per call), and its latency, time-to-first-token and overhead children."""

    __slots__ = ("latency", "overhead", "statuses", "ttft")

    def __init__(self, latency: Any) -> None:
        self.latency = latency
        self.ttft: Any = None
        self.overhead: Any = None
        self.statuses: dict[int, int] = {}


class Metrics:
    def __init__(
        self,
        ttft_buckets: Sequence[float] = DEFAULT_TTFT_BUCKETS,
        overhead_buckets: Sequence[float] = DEFAULT_OVERHEAD_BUCKETS,
        extra_latency_buckets: Sequence[float] = (),
    ) -> None:
        self.registry = CollectorRegistry(auto_describe=True)
        self.multiprocess_dir = os.environ.get("PROMETHEUS_MULTIPROC_DIR")
        r = self.registry
        p = "tiergate_gateway_"
        self.requests = Counter(
            p + "requests", "Requests answered", ["endpoint", "tier", "route", "status"], registry=r
        )
        self.latency = self._histogram(
            p + "request_duration_seconds",
            "Time to the response head (streams: to the first byte)",
            ["endpoint", "tier"],
            latency_buckets(extra_latency_buckets),
        )
        self.ttft = self._histogram(
            p + "time_to_first_token_seconds",
            "From the request to the first token (streams: the first upstream chunk; "
            "otherwise the whole answer)",
            ["tier", "route"],
            ttft_buckets,
        )
        self.overhead = self._histogram(
            p + "overhead_seconds",
            "Time a served call spent in the gateway itself, upstream waits excluded "
            "(streams: up to the first chunk)",
            ["tier", "route"],
            overhead_buckets,
        )
        self.hedges = Counter(
            p + "hedges",
            "Calls also sent to another target for want of a first token (hedged)",
            ["tier", "route"],
            registry=r,
        )
        self.hedge_wins = Counter(
            p + "hedge_wins",
            "Hedged calls served by a target other than the first asked",
            ["tier", "route"],
            registry=r,
        )
        self.usage_missing = Counter(
            p + "usage_missing",
            "Served calls whose upstream reported no usage: settled on the gateway's estimates",
            ["tier", "route"],
            registry=r,
        )
        self.internal_errors = Counter(
            p + "internal_errors",
            "Answers the gateway broke itself (500s and streams cut by a gateway fault): "
            "always a bug",
            ["where"],
            registry=r,
        )
        self.attempts = Counter(
            p + "upstream_attempts",
            "Upstream attempts by outcome",
            ["route", "target", "outcome"],
            registry=r,
        )
        self.failovers = Counter(
            p + "failovers",
            "Attempts moved to another target",
            ["route", "from_target"],
            registry=r,
        )
        self.circuit = Gauge(
            p + "circuit_state",
            "Circuit breaker: 0 closed, 1 open, 2 half-open",
            ["route", "target"],
            registry=r,
            multiprocess_mode="max",
        )
        # Tiers with per_key_metrics add a ``key`` label (the key's name) to their tokens and
        # cost: one family each, samples of both label sets (``_Merged``).
        tokens_help, cost_help = "Tokens reported by upstreams", "Spend in USD"
        usage_labels = ["tier", "route", "target"]
        self.tokens = Counter(p + "tokens", tokens_help, [*usage_labels, "kind"], registry=None)
        self.tokens_by_key = Counter(
            p + "tokens", tokens_help, [*usage_labels, "kind", "key"], registry=None
        )
        self.cost = Counter(p + "cost_usd", cost_help, usage_labels, registry=None)
        self.cost_by_key = Counter(p + "cost_usd", cost_help, [*usage_labels, "key"], registry=None)
        r.register(_Merged(self.tokens, self.tokens_by_key))
        r.register(_Merged(self.cost, self.cost_by_key))
        self.rate_limited = Counter(
            p + "rate_limited", "Requests refused by a limit", ["tier", "limit"], registry=r
        )
        self.budget_rejected = Counter(
            p + "budget_rejected", "Requests refused by a hard budget", ["tier"], registry=r
        )
        self.budget_warnings = Counter(
            p + "budget_warnings", "Requests over a soft budget", ["tier"], registry=r
        )
        self.credits_rejected = Counter(
            p + "credits_rejected",
            "Requests refused: the prepaid credits are used up",
            ["tier"],
            registry=r,
        )
        self.credits_warnings = Counter(
            p + "credits_warnings",
            "Requests answered with few prepaid credits left",
            ["tier"],
            registry=r,
        )
        self.config_rejected = Counter(
            p + "config_rejected", "Configs refused (invalid or unknown version)", registry=r
        )
        self.config_loaded = Counter(p + "config_loaded", "Configs swapped in", registry=r)
        self.config_generation = Gauge(
            p + "config_generation_info",
            "The serving config generation (value 1)",
            ["generation"],
            registry=r,
            multiprocess_mode="livemax",
        )
        self._generation: str | None = None
        self._cache: dict[tuple[Any, ...], Any] = {}
        # Latency children by their labels alone: no key to build per observation.
        self._latency: dict[tuple[str, ...], Any] = {}
        # (endpoint, tier, route) -> its answers by status and histogram children (observe_call)
        self._calls: dict[tuple[str, str, str], _CallSeries] = {}
        # Hot-path samples are summed in plain dicts and handed to prometheus_client by
        # ``flush`` (every second, and before each scrape): a labelled ``inc`` with its lock
        # cost more than a tenth of a proxied request.
        self._counts: dict[tuple[Counter, tuple[str, ...]], float] = {}
        # (tier, route, target, key name or "") -> [prompt tokens, completion tokens, USD]
        self._usage: dict[tuple[str, str, str, str], list[float]] = {}

    def _histogram(
        self, name: str, documentation: str, labels: list[str], buckets: Sequence[float]
    ) -> Histogram | LocalHistogram:
        if self.multiprocess_dir is not None:
            # Only prometheus_client's own values are shared between workers.
            return Histogram(name, documentation, labels, buckets=buckets, registry=self.registry)
        histogram = LocalHistogram(name, documentation, labels, buckets)
        self.registry.register(histogram)
        return histogram

    def child(self, metric: Any, *labels: str) -> Any:
        """A labelled child, cached: ``labels()`` is the expensive part of a sample."""
        key = (id(metric), *labels)
        found = self._cache.get(key)
        if found is None:
            found = self._cache[key] = metric.labels(*labels)
        return found

    def add(self, metric: Counter, *labels: str, amount: float = 1.0) -> None:
        key = (metric, labels)
        self._counts[key] = self._counts.get(key, 0.0) + amount

    def add_usage(
        self,
        tier: str,
        route: str,
        target: str,
        prompt: int,
        completion: int,
        usd: float,
        key: str = "",
    ) -> None:
        """One settled call's tokens and cost (one lookup instead of three ``add`` calls);
        ``key``: the client key's name, for a tier with per-key metrics."""
        totals = self._usage.get((tier, route, target, key))
        if totals is None:
            totals = self._usage[(tier, route, target, key)] = [0.0, 0.0, 0.0]
        totals[0] += prompt
        totals[1] += completion
        totals[2] += usd

    def observe_latency(self, seconds: float, *labels: str) -> None:
        """Record into ``request_duration_seconds`` (at once: nothing to gain by deferring)."""
        child = self._latency.get(labels)
        if child is None:
            child = self._latency[labels] = self.latency.labels(*labels)
        child.observe(seconds)

    def observe_call(
        self,
        endpoint: str,
        tier: str,
        route: str,
        status: int,
        seconds: float,
        ttft: float | None = None,
        overhead: float = 0.0,
    ) -> None:
        """A proxied request answered: counted by status, its latency, and for a served call its
        time to first token and the gateway's own share (a count, ``observe_latency`` and the two
        served histograms in one call and one lookup: this runs for every request)."""
        series = self._calls.get((endpoint, tier, route))
        if series is None:
            series = self._calls[(endpoint, tier, route)] = _CallSeries(
                self.latency.labels(endpoint, tier)
            )
        statuses = series.statuses
        statuses[status] = statuses.get(status, 0) + 1
        series.latency.observe(seconds)
        if ttft is not None:
            if series.ttft is None:  # made when a call of these is served
                series.ttft = self.ttft.labels(tier, route)
                series.overhead = self.overhead.labels(tier, route)
            series.ttft.observe(ttft)
            series.overhead.observe(overhead)

    def flush(self) -> None:
        for (endpoint, tier, route), series in self._calls.items():
            if series.statuses:
                statuses, series.statuses = series.statuses, {}
                for status, count in statuses.items():
                    label = status_label(status)
                    self.child(self.requests, endpoint, tier, route, label).inc(count)
        counts, self._counts = self._counts, {}
        for (metric, labels), amount in counts.items():
            self.child(metric, *labels).inc(amount)
        usage, self._usage = self._usage, {}
        for (tier, route, target, key), (prompt, completion, usd) in usage.items():
            tokens, cost = (
                (self.tokens_by_key, self.cost_by_key) if key else (self.tokens, self.cost)
            )
            extra = (key,) if key else ()
            if prompt:
                self.child(tokens, tier, route, target, "prompt", *extra).inc(prompt)
            if completion:
                self.child(tokens, tier, route, target, "completion", *extra).inc(completion)
            if usd:
                self.child(cost, tier, route, target, *extra).inc(usd)

    def set_generation(self, generation: str) -> None:
        if self._generation is not None and self.multiprocess_dir is None:
            self.config_generation.remove(self._generation)
        elif self._generation is not None:
            self.config_generation.labels(self._generation).set(0)
        self.config_generation.labels(generation).set(1)
        self._generation = generation
        self.config_loaded.inc()

    def forget_labels(self) -> None:
        """Drop cached children after a config swap (names may have gone)."""
        self.flush()  # the answers counted since the last flush are kept
        self._cache.clear()
        self._latency.clear()
        self._calls.clear()

    def render(self) -> bytes:
        self.flush()
        if self.multiprocess_dir is None:
            return generate_latest(self.registry)
        registry = CollectorRegistry()
        MultiProcessCollector(registry, path=self.multiprocess_dir)  # type: ignore[no-untyped-call]
        return generate_latest(registry)


class _Merged(Collector):
    """Two counters of one name (the same family with and without a ``key`` label) exported
    as one family. In multiprocess mode their samples meet in the shared files instead."""

    def __init__(self, plain: Counter, by_key: Counter) -> None:
        self._plain, self._by_key = plain, by_key

    def collect(self) -> list[Metric]:
        merged = list(self._plain.collect())
        for family in self._by_key.collect():
            merged[0].samples.extend(family.samples)
        return merged
