"""Pure rendering: a tier's ``spec.slo`` -> a PrometheusRule of burn-rate alerts.

The method is the SRE workbook's "multiwindow, multi-burn-rate alerts" (chapter 5,
alerting on SLOs) over a 30-day objective: an alert fires when the error budget burns
faster than a factor over a long window *and* still does over a short one (a twelfth of
it), so it fires soon after a burst starts and stops soon after it ends:

| long / short window | burn rate | budget spent when it fires | severity |
| ------------------- | --------- | -------------------------- | -------- |
| 1h / 5m             | 14.4      | 2% in an hour              | critical |
| 6h / 30m            | 6         | 5% in six hours            | critical |
| 1d / 2h             | 3         | 10% in a day               | warning  |
| 3d / 6h             | 1         | 10% in three days          | warning  |

Availability counts answers with a 5xx status (``tiergate_gateway_requests_total``)
against all answers; latency counts answers slower than the threshold, read from the
``le`` bucket at the threshold of ``tiergate_gateway_request_duration_seconds`` (so the
gateway's histogram needs that bucket: ``latency_buckets``). Series are selected by
``namespace`` (the target label the Prometheus Operator's ServiceMonitor scrapes gateways
with) and ``tier``: tier names are unique only within a namespace.
"""

from __future__ import annotations

from dataclasses import dataclass
from decimal import Decimal
from typing import Any

from tiergate_operator.plans import GatewayPlan, TierObjectives
from tiergate_operator.registry import (
    COMPONENT_LABEL,
    INSTANCE_LABEL,
    MANAGED_BY,
    NAME_LABEL,
    PART_OF,
    PART_OF_LABEL,
    PROMETHEUS_RULE,
)
from tiergate_operator.settings import OperatorSettings

__all__ = [
    "BURN_RATE_ALERTS",
    "SLO_COMPONENT",
    "BurnRateAlert",
    "bucket_label",
    "latency_buckets",
    "render_slo_rules",
    "slo_rule_name",
]

Manifest = dict[str, Any]
SLO_COMPONENT = "slo-rules"
REQUESTS = "tiergate_gateway_requests_total"
LATENCY = "tiergate_gateway_request_duration_seconds"
ERRORS_RECORD = "tiergate_tier:slo_errors:ratio_rate"
SLOW_RECORD = "tiergate_tier:slo_slow_requests:ratio_rate"


@dataclass(frozen=True)
class BurnRateAlert:
    long_window: str
    short_window: str
    burn_rate: Decimal
    severity: str


BURN_RATE_ALERTS = (
    BurnRateAlert("1h", "5m", Decimal("14.4"), "critical"),
    BurnRateAlert("6h", "30m", Decimal("6"), "critical"),
    BurnRateAlert("1d", "2h", Decimal("3"), "warning"),
    BurnRateAlert("3d", "6h", Decimal("1"), "warning"),
)
WINDOWS = ("5m", "30m", "1h", "2h", "6h", "1d", "3d")


def slo_rule_name(tier: str) -> str:
    return f"tiergate-slo-{tier}"


def _number(value: Decimal) -> str:
    """A plain decimal for PromQL: ``0.0144``, never ``1.44E-2``."""
    return format(value.normalize(), "f")


def bucket_label(threshold_milliseconds: int) -> str:
    """The ``le`` label of the bucket at a threshold, as Prometheus 3 normalises it on
    ingestion and prometheus_client writes it (Go's float formatting): ``0.5``, ``1.0``."""
    seconds = Decimal(threshold_milliseconds) / 1000
    text = _number(seconds)
    return text if "." in text else f"{text}.0"


def latency_buckets(plan: GatewayPlan) -> tuple[str, ...]:
    """The latency thresholds the gateway's tiers alert on, as ``le`` values in seconds,
    sorted: its latency histogram must have a bucket at each."""
    thresholds = {
        o.slo.latency.threshold_milliseconds for o in plan.objectives if o.slo.latency is not None
    }
    return tuple(bucket_label(milliseconds) for milliseconds in sorted(thresholds))


def _budget(percent: str) -> Decimal:
    """The error budget of an objective: ``"99.9"`` -> 0.001."""
    return (Decimal(100) - Decimal(percent)) / 100


def _selector(namespace: str, tier: str, **extra: str) -> str:
    matchers = {"namespace": f'="{namespace}"', "tier": f'="{tier}"', **extra}
    return "{" + ",".join(f"{name}{matcher}" for name, matcher in matchers.items()) + "}"


def _ratio(numerator: str, denominator: str) -> str:
    return f"sum by (namespace, tier) ({numerator})\n/\nsum by (namespace, tier) ({denominator})"


def _error_records(namespace: str, tier: str) -> list[Manifest]:
    errors = REQUESTS + _selector(namespace, tier, status='=~"5.."')
    answers = f"{REQUESTS}{_selector(namespace, tier)}"
    return [
        {
            "record": ERRORS_RECORD + window,
            "expr": _ratio(f"rate({errors}[{window}])", f"rate({answers}[{window}])"),
        }
        for window in WINDOWS
    ]


def _slow_records(namespace: str, tier: str, threshold_milliseconds: int) -> list[Manifest]:
    le = bucket_label(threshold_milliseconds)
    fast = f"{LATENCY}_bucket" + _selector(namespace, tier, le=f'="{le}"')
    every = f"{LATENCY}_count{_selector(namespace, tier)}"
    return [
        {
            "record": SLOW_RECORD + window,
            "expr": "1 - (\n"
            + _ratio(f"rate({fast}[{window}])", f"rate({every}[{window}])")
            + "\n)",
        }
        for window in WINDOWS
    ]


@dataclass(frozen=True)
class _Objective:
    alert: str
    record: str
    slo: str  # the alerts' ``slo`` label
    failing: str  # what a request that spends the budget did, for the description
    budget: Decimal


def _alerts(namespace: str, tier: str, objective: _Objective) -> list[Manifest]:
    rules = []
    record, budget = objective.record, objective.budget
    for burn in BURN_RATE_ALERTS:
        limit = _number(burn.burn_rate * budget)
        series = _selector(namespace, tier)
        rules.append(
            {
                "alert": objective.alert,
                "expr": (
                    f"{record}{burn.long_window}{series} > {limit}\n"
                    f"and\n{record}{burn.short_window}{series} > {limit}"
                ),
                "labels": {
                    "severity": burn.severity,
                    "slo": objective.slo,
                    "long_window": burn.long_window,
                    "short_window": burn.short_window,
                    "burn_rate": _number(burn.burn_rate),
                },
                "annotations": {
                    "summary": (
                        f"Tier {tier} burns its {objective.slo} error budget "
                        f"{_number(burn.burn_rate)}x too fast"
                    ),
                    "description": (
                        f"{{{{ $value | humanizePercentage }}}} of the requests of tier {tier} "
                        f"(namespace {namespace}) {objective.failing} over the last "
                        f"{burn.long_window}, and more than {limit} over the last "
                        f"{burn.short_window}; "
                        f"at this rate the 30-day error budget of {_number(budget * 100)}% "
                        f"lasts {_days(burn.burn_rate)}."
                    ),
                },
            }
        )
    return rules


def _days(burn_rate: Decimal) -> str:
    return f"{_number((Decimal(30) / burn_rate).quantize(Decimal('0.1')))} days"


def _rules(namespace: str, objectives: TierObjectives) -> list[Manifest]:
    tier, slo = objectives.owner.name, objectives.slo
    rules: list[Manifest] = []
    if slo.availability_percent is not None:
        rules += _error_records(namespace, tier)
        rules += _alerts(
            namespace,
            tier,
            _Objective(
                "TiergateAvailabilityBudgetBurn",
                ERRORS_RECORD,
                "availability",
                "failed with a 5xx",
                _budget(slo.availability_percent),
            ),
        )
    if slo.latency is not None:
        threshold = slo.latency.threshold_milliseconds
        rules += _slow_records(namespace, tier, threshold)
        rules += _alerts(
            namespace,
            tier,
            _Objective(
                "TiergateLatencyBudgetBurn",
                SLOW_RECORD,
                "latency",
                f"took over {threshold} ms",
                _budget(slo.latency.percentile),
            ),
        )
    return rules


def _rule(plan: GatewayPlan, settings: OperatorSettings, objectives: TierObjectives) -> Manifest:
    owner = objectives.owner
    name = slo_rule_name(owner.name)
    return {
        **PROMETHEUS_RULE.type_meta(),
        "metadata": {
            "name": name,
            "namespace": plan.namespace,
            "labels": {
                NAME_LABEL: "tiergate-slo",
                INSTANCE_LABEL: name,
                COMPONENT_LABEL: SLO_COMPONENT,
                PART_OF_LABEL: PART_OF,
                **MANAGED_BY,
                # The rule goes with its tier's gateway: written, retried and reported with it.
                settings.keys.gateway_label: plan.name,
                settings.keys.tier_label: owner.name,
            },
            "ownerReferences": [
                {
                    "apiVersion": owner.api_version,
                    "kind": owner.kind,
                    "name": owner.name,
                    "uid": owner.uid,
                    "controller": True,
                    "blockOwnerDeletion": True,
                }
            ],
        },
        "spec": {"groups": [{"name": name, "rules": _rules(plan.namespace, objectives)}]},
    }


def render_slo_rules(plan: GatewayPlan, settings: OperatorSettings) -> list[Manifest]:
    """One PrometheusRule per tier of the gateway that sets ``spec.slo``."""
    return [_rule(plan, settings, objectives) for objectives in plan.objectives]
