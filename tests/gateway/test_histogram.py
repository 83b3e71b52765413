"""LocalHistogram exposes exactly what prometheus_client's Histogram does for the same values."""

from __future__ import annotations

import re

from prometheus_client import CollectorRegistry, Histogram, generate_latest

from tiergate_gateway.histogram import LocalHistogram

BUCKETS = (0.001, 0.5, 1, 300, 1e7)
VALUES = (0.0007, 0.001, 0.3, 0.5, 2.0, 1000.0, 0.0)


def _exposition(histogram_type: type) -> str:
    registry = CollectorRegistry()
    args = ("latency_seconds", "How long", ["endpoint", "tier"])
    if histogram_type is Histogram:
        histogram = Histogram(*args, buckets=BUCKETS, registry=registry)
    else:
        histogram = LocalHistogram(*args, BUCKETS)
        registry.register(histogram)
    for index, value in enumerate(VALUES):
        histogram.labels("chat", "t" if index % 2 else "u").observe(value)
    text = generate_latest(registry).decode()
    return re.sub(r"(_created\{[^}]*\}) \S+", r"\1 <time>", text)


def test_the_exposition_matches_prometheus_client():
    assert _exposition(LocalHistogram) == _exposition(Histogram)
