"""``tiergate status``'s pure parts: spend summed from the gateways' metrics."""

from __future__ import annotations

from decimal import Decimal

from tiergate_cli.status import spend_from_metrics

METRICS = """\
# TYPE tiergate_gateway_cost_usd_total counter
tiergate_gateway_cost_usd_total{route="deepseek-chat",target="primary",tier="startup"} 4e-06
tiergate_gateway_cost_usd_total{route="deepseek-chat",target="secondary",tier="startup"} 1.5
tiergate_gateway_cost_usd_created{route="deepseek-chat",target="primary",tier="startup"} 1.7e+09
"""


def test_spend_sums_the_cost_counters_per_tier_and_route() -> None:
    assert spend_from_metrics(METRICS) == {("startup", "deepseek-chat"): Decimal("1.500004")}
