"""Metrics (metrics.py): deferred records keep Prometheus semantics."""

from __future__ import annotations


def test_deferred_metrics_match_prometheus_semantics():
    from tiergate_gateway.metrics import Metrics

    metrics = Metrics()
    for seconds in (0.0007, 0.001, 0.3, 1000.0):
        metrics.observe_latency(seconds, "chat", "t")
    metrics.add(metrics.requests, "chat", "t", "m", "200")
    metrics.add(metrics.tokens, "t", "m", "a", "prompt", amount=12)
    text = metrics.render().decode()
    bucket = 'tiergate_gateway_request_duration_seconds_bucket{endpoint="chat",le="%s",tier="t"} %s'
    assert bucket % ("0.001", "2.0") in text  # le is inclusive
    assert bucket % ("0.5", "3.0") in text
    assert bucket % ("+Inf", "4.0") in text
    assert 'tiergate_gateway_request_duration_seconds_count{endpoint="chat",tier="t"} 4.0' in text
    assert (
        'tiergate_gateway_requests_total{endpoint="chat",route="m",status="200",tier="t"} 1.0'
        in text
    )
    assert 'tiergate_gateway_tokens_total{kind="prompt",route="m",target="a",tier="t"} 12.0' in text
    metrics.add(metrics.requests, "chat", "t", "m", "200")
    assert 'status="200",tier="t"} 2.0' in metrics.render().decode()
