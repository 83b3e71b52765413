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


def test_answers_counted_by_status_are_kept_across_flushes_and_config_swaps():
    from tiergate_gateway.metrics import Metrics

    metrics = Metrics()
    for status in (200, 200, 429, 599):
        metrics.observe_call("chat", "t", "m", status, 0.01, ttft=0.005, overhead=0.001)
    metrics.flush()
    metrics.observe_call("chat", "t", "m", 200, 0.01)
    metrics.add(metrics.requests, "chat", "t", "m", "200")  # the same series from elsewhere
    metrics.forget_labels()  # a config swap before the next flush
    metrics.observe_call("chat", "t", "m", 200, 0.01)
    text = metrics.render().decode()
    total = 'tiergate_gateway_requests_total{endpoint="chat",route="m",status="%s",tier="t"} %s'
    assert total % ("200", "5.0") in text
    assert total % ("429", "1.0") in text
    assert total % ("5xx", "1.0") in text
    assert 'tiergate_gateway_request_duration_seconds_count{endpoint="chat",tier="t"} 6.0' in text
    assert 'tiergate_gateway_time_to_first_token_seconds_count{route="m",tier="t"} 4.0' in text
