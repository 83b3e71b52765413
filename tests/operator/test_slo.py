"""spec.slo -> PrometheusRule: the rendered rules pass the real ``promtool check rules``, and
``promtool test rules`` shows the burn-rate alerts fire where the SRE workbook says they
should and stay quiet where they should not. The gateway exposes the bucket they read."""

from __future__ import annotations

import subprocess
from decimal import Decimal
from pathlib import Path
from typing import Any

import pytest
import yaml

from tests.support.kube import EXAMPLES
from tests.support.manifests import store_of, translate_namespace
from tiergate_devkit.cluster import tools_bin_dir
from tiergate_gateway.__main__ import parse_args
from tiergate_gateway.metrics import Metrics
from tiergate_operator.render import gateway_container_args
from tiergate_operator.settings import OperatorSettings
from tiergate_operator.slo import bucket_label, latency_buckets, render_slo_rules

NS = "demo"
TIER = "enterprise-acme"  # crds/examples: 99.9% available, p99 under 500 ms
GOLDEN = Path(__file__).parents[1] / "data" / "render"


def example_rules() -> dict[str, Any]:
    plans = {p.name: p for p in translate_namespace(store_of(EXAMPLES, NS), NS).plans}
    (rule,) = render_slo_rules(plans[f"tiergate-{TIER}"], OperatorSettings())
    return rule


def test_a_tier_with_objectives_gets_one_rule_owned_by_it_and_a_tier_without_none() -> None:
    plans = {p.name: p for p in translate_namespace(store_of(EXAMPLES, NS), NS).plans}
    assert render_slo_rules(plans["tiergate-shared"], OperatorSettings()) == []
    rule = example_rules()
    assert rule["metadata"]["name"] == f"tiergate-slo-{TIER}"
    (owner,) = rule["metadata"]["ownerReferences"]
    assert (owner["kind"], owner["name"], owner["controller"]) == ("ApiKeyTier", TIER, True)
    alerts = [r for r in rule["spec"]["groups"][0]["rules"] if "alert" in r]
    windows = [(a["labels"]["long_window"], a["labels"]["short_window"]) for a in alerts]
    assert windows == [("1h", "5m"), ("6h", "30m"), ("1d", "2h"), ("3d", "6h")] * 2


def test_burn_rate_thresholds_are_the_budget_times_the_workbook_factors() -> None:
    alerts = [r for r in example_rules()["spec"]["groups"][0]["rules"] if "alert" in r]
    limits = {
        (a["labels"]["slo"], a["labels"]["long_window"]): a["expr"].split(" > ")[1].split()[0]
        for a in alerts
    }
    # availability 99.9% (budget 0.001), latency p99 (budget 0.01)
    assert limits == {
        ("availability", "1h"): "0.0144",
        ("availability", "6h"): "0.006",
        ("availability", "1d"): "0.003",
        ("availability", "3d"): "0.001",
        ("latency", "1h"): "0.144",
        ("latency", "6h"): "0.06",
        ("latency", "1d"): "0.03",
        ("latency", "3d"): "0.01",
    }


@pytest.mark.parametrize(
    ("milliseconds", "label"),
    [(500, "0.5"), (1000, "1.0"), (1200, "1.2"), (1, "0.001"), (600_000, "600.0"), (250, "0.25")],
)
def test_the_rules_read_the_le_label_the_gateway_writes(milliseconds: int, label: str) -> None:
    assert bucket_label(milliseconds) == label
    exposed = Metrics(extra_latency_buckets=[milliseconds / 1000])
    exposed.observe_latency(0.0001, "chat", "t")
    series = f'request_duration_seconds_bucket{{endpoint="chat",le="{label}",tier="t"}}'
    assert series in exposed.render().decode()


def test_the_gateway_deployment_gives_its_histogram_a_bucket_at_each_threshold() -> None:
    plans = {p.name: p for p in translate_namespace(store_of(EXAMPLES, NS), NS).plans}
    plan = plans[f"tiergate-{TIER}"]
    assert latency_buckets(plan) == ("0.5",)
    _, env = gateway_container_args(plan, OperatorSettings())
    variables = {e["name"]: e["value"] for e in env}
    with pytest.MonkeyPatch.context() as patch:
        for name, value in variables.items():
            patch.setenv(name, value)
        settings, _ = parse_args([])
    assert settings.latency_buckets == (0.5,)
    assert (settings.drain_delay_seconds, settings.grace_seconds) == (5.0, 25.0)


# --- the real promtool ----------------------------------------------------------------------


@pytest.fixture(scope="module")
def promtool() -> Path:
    binary = tools_bin_dir() / "promtool"
    if not binary.exists():
        pytest.fail(f"{binary} is missing: run `make tools` first")
    return binary


def _rule_file(rule: dict[str, Any], folder: Path) -> Path:
    path = folder / f"{rule['metadata']['name']}.yaml"
    path.write_text(yaml.safe_dump({"groups": rule["spec"]["groups"]}, sort_keys=False))
    return path


def _run(promtool: Path, *args: str, cwd: Path) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [str(promtool), *args], cwd=cwd, capture_output=True, text=True, timeout=120
    )


def test_promtool_checks_every_golden_rule(promtool: Path, tmp_path: Path) -> None:
    goldens = sorted(GOLDEN.glob("*/expected/prometheusrule-*.yaml"))
    assert len(goldens) == 3
    files = [str(_rule_file(yaml.safe_load(p.read_text()), tmp_path)) for p in goldens]
    result = _run(promtool, "check", "rules", *files, cwd=tmp_path)
    assert result.returncode == 0, result.stdout + result.stderr
    assert result.stdout.count("SUCCESS") == 3


def test_promtool_rejects_a_broken_rule(promtool: Path, tmp_path: Path) -> None:
    """The check above can fail: a rule with a PromQL error does not pass."""
    rule = example_rules()
    rule["spec"]["groups"][0]["rules"][0]["expr"] += " +"
    result = _run(promtool, "check", "rules", str(_rule_file(rule, tmp_path)), cwd=tmp_path)
    assert result.returncode != 0


def _requests(namespace: str, tier: str, status: str, values: str) -> dict[str, str]:
    labels = f'endpoint="chat",namespace="{namespace}",route="deepseek-chat",status="{status}"'
    return {
        "series": f'tiergate_gateway_requests_total{{{labels},tier="{tier}"}}',
        "values": values,
    }


def _latency(le: str, values: str) -> dict[str, str]:
    labels = f'endpoint="chat",namespace="{NS}",tier="{TIER}"'
    if le == "count":
        return {
            "series": f"tiergate_gateway_request_duration_seconds_count{{{labels}}}",
            "values": values,
        }
    return {
        "series": f'tiergate_gateway_request_duration_seconds_bucket{{{labels},le="{le}"}}',
        "values": values,
    }


_WINDOWS = {"1h": ("5m", "14.4", "critical"), "6h": ("30m", "6", "critical")}
_WINDOWS |= {"1d": ("2h", "3", "warning"), "3d": ("6h", "1", "warning")}


def _alert(slo: str, long: str, value: str, limit: str) -> dict[str, Any]:
    """What the tier's alert must say, spelled out independently of the renderer."""
    short, burn, severity = _WINDOWS[long]
    budget = {"availability": "0.1%", "latency": "1%"}[slo]
    failing = {"availability": "failed with a 5xx", "latency": "took over 500 ms"}[slo]
    lasts = {"14.4": "2.1", "6": "5", "3": "10", "1": "30"}[burn]
    return {
        "exp_labels": {
            "namespace": NS,
            "tier": TIER,
            "severity": severity,
            "slo": slo,
            "long_window": long,
            "short_window": short,
            "burn_rate": burn,
        },
        "exp_annotations": {
            "summary": f"Tier {TIER} burns its {slo} error budget {burn}x too fast",
            "description": (
                f"{value} of the requests of tier {TIER} (namespace {NS}) {failing} over the "
                f"last {long}, and more than {limit} over the last {short}; at this rate the "
                f"30-day error budget of {budget} lasts {lasts} days."
            ),
        },
    }


AVAILABILITY_LIMITS = {"1h": "0.0144", "6h": "0.006", "1d": "0.003", "3d": "0.001"}
LATENCY_LIMITS = {"1h": "0.144", "6h": "0.06", "1d": "0.03", "3d": "0.01"}


def _availability(long: str, value: str) -> dict[str, Any]:
    return _alert("availability", long, value, AVAILABILITY_LIMITS[long])


def _steady(per_minute: int, minutes: int) -> str:
    return f"0+{per_minute}x{minutes}"


UNIT_TESTS: list[dict[str, Any]] = [
    {
        "name": "a 10% failure rate for an hour pages on both fast windows and opens tickets",
        "interval": "1m",
        "input_series": [
            _requests(NS, TIER, "200", _steady(90, 70)),
            _requests(NS, TIER, "503", _steady(10, 70)),
        ],
        "alert_rule_test": [
            {
                "eval_time": "65m",
                "alertname": "TiergateAvailabilityBudgetBurn",
                "exp_alerts": [_availability(w, "10%") for w in ("1h", "6h", "1d", "3d")],
            },
            {"eval_time": "65m", "alertname": "TiergateLatencyBudgetBurn", "exp_alerts": []},
        ],
    },
    {
        "name": "a 5-minute burst 45 minutes ago no longer pages but still opens tickets",
        "interval": "1m",
        "input_series": [
            _requests(NS, TIER, "200", _steady(100, 120)),
            # 20 errors a minute from minute 60 to 65, none before or after.
            _requests(NS, TIER, "503", "0x60 20+20x4 100x55"),
        ],
        "alert_rule_test": [
            {
                # During the burst every pair fires (1h: 100 errors of 6,100 requests; the
                # longer windows hold all 65 minutes so far: 100 of 6,600).
                "eval_time": "65m",
                "alertname": "TiergateAvailabilityBudgetBurn",
                "exp_alerts": [
                    _availability("1h", "1.639%"),
                    _availability("6h", "1.515%"),
                    _availability("1d", "1.515%"),
                    _availability("3d", "1.515%"),
                ],
            },
            {
                # 45 minutes later the 5m and 30m windows are clean: no page; the 2h and
                # 6h windows still hold the burst: tickets.
                "eval_time": "110m",
                "alertname": "TiergateAvailabilityBudgetBurn",
                "exp_alerts": [_availability("1d", "0.9009%"), _availability("3d", "0.9009%")],
            },
        ],
    },
    {
        "name": "failures within the budget, another namespace's and no traffic never alert",
        "interval": "1m",
        "input_series": [
            _requests(NS, TIER, "200", _steady(1999, 360)),
            _requests(NS, TIER, "500", _steady(1, 360)),  # 0.05%: half the budget
            # The same tier name in another namespace, failing half its requests.
            _requests("other", TIER, "200", _steady(50, 360)),
            _requests("other", TIER, "502", _steady(50, 360)),
            # A tier of the namespace with no rules of its own.
            _requests(NS, "startup", "503", _steady(50, 360)),
        ],
        "alert_rule_test": [
            {"eval_time": "6h", "alertname": "TiergateAvailabilityBudgetBurn", "exp_alerts": []},
            {"eval_time": "6h", "alertname": "TiergateLatencyBudgetBurn", "exp_alerts": []},
        ],
    },
    {
        "name": "30% of requests over 500 ms for an hour burns the latency budget",
        "interval": "1m",
        "input_series": [
            _latency("0.25", _steady(50, 70)),
            _latency("0.5", _steady(70, 70)),
            _latency("+Inf", _steady(100, 70)),
            _latency("count", _steady(100, 70)),
        ],
        "alert_rule_test": [
            {
                "eval_time": "65m",
                "alertname": "TiergateLatencyBudgetBurn",
                "exp_alerts": [
                    _alert("latency", w, "30%", LATENCY_LIMITS[w]) for w in ("1h", "6h", "1d", "3d")
                ],
            }
        ],
    },
    {
        "name": "99.5% of requests within 500 ms meets a p99 objective",
        "interval": "1m",
        "input_series": [
            _latency("0.5", _steady(995, 70)),
            _latency("count", _steady(1000, 70)),
        ],
        "alert_rule_test": [
            {"eval_time": "65m", "alertname": "TiergateLatencyBudgetBurn", "exp_alerts": []}
        ],
    },
]


def test_promtool_unit_tests_of_the_burn_rate_alerts(promtool: Path, tmp_path: Path) -> None:
    rules = _rule_file(example_rules(), tmp_path)
    tests = tmp_path / "tests.yaml"
    tests.write_text(
        yaml.safe_dump(
            {"rule_files": [rules.name], "evaluation_interval": "1m", "tests": UNIT_TESTS},
            sort_keys=False,
        )
    )
    result = _run(promtool, "test", "rules", tests.name, cwd=tmp_path)
    assert result.returncode == 0, result.stdout + result.stderr


def test_promtool_unit_tests_can_fail(promtool: Path, tmp_path: Path) -> None:
    """The unit tests above would notice an alert that does not fire: expecting a page
    where the budget is not burnt fails."""
    rules = _rule_file(example_rules(), tmp_path)
    wrong = {**UNIT_TESTS[2], "name": "expects a page that must not come"}
    wrong["alert_rule_test"] = [
        {
            "eval_time": "6h",
            "alertname": "TiergateAvailabilityBudgetBurn",
            "exp_alerts": [_availability("1h", "0.05%")],
        }
    ]
    tests = tmp_path / "tests.yaml"
    tests.write_text(yaml.safe_dump({"rule_files": [rules.name], "tests": [wrong]}))
    result = _run(promtool, "test", "rules", tests.name, cwd=tmp_path)
    assert result.returncode != 0
    assert "expects a page that must not come" in result.stdout + result.stderr


def test_budgets_are_exact_decimals() -> None:
    """No float residue in the thresholds: 14.4 x (1 - 0.999) is 0.0144, not 0.014400000000000001."""
    alerts = [r for r in example_rules()["spec"]["groups"][0]["rules"] if "alert" in r]
    for alert in alerts:
        limit = alert["expr"].split(" > ")[1].split()[0]
        assert Decimal(limit) == Decimal(limit).normalize()
        assert len(limit) <= 6
