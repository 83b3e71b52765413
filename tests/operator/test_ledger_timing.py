"""The stale threshold against the gateways' report timing: the operator refuses at start a
``TIERGATE_LEDGER_STALE_SECONDS`` that is not greater than 2 x heartbeat + report interval
(the gateway's defaults when the tuning leaves them unset), naming the settings and values."""

from __future__ import annotations

import json
from decimal import Decimal

import pytest

from tiergate_contract.ledger import (
    DEFAULT_SPEND_HEARTBEAT_SECONDS,
    DEFAULT_SPEND_REPORT_SECONDS,
    quiet_report_max_age,
)
from tiergate_gateway.settings import Settings
from tiergate_operator.settings import OperatorSettings, SettingsError, load_operator_settings


def test_the_rule_is_twice_the_heartbeat_plus_the_report_interval() -> None:
    assert quiet_report_max_age(Decimal(5), Decimal(60)) == 125
    assert quiet_report_max_age(Decimal("0.5"), Decimal(10)) == Decimal("20.5")
    # In decimal, as helm's addf and mulf compute: in binary floats 2 x 0.35 + 0.3 is not 1.
    assert quiet_report_max_age(Decimal("0.3"), Decimal("0.35")) == 1


def test_the_contract_defaults_are_the_gateways() -> None:
    """The operator (and the chart) judge an unset tuning key by these: they must be what the
    gateway uses (its flags default to its ``Settings``' fields)."""
    assert Settings().spend_report_seconds == DEFAULT_SPEND_REPORT_SECONDS
    assert Settings().spend_heartbeat_seconds == DEFAULT_SPEND_HEARTBEAT_SECONDS


def _env(stale: int, tuning: dict[str, object] | None = None) -> dict[str, str]:
    env = {"TIERGATE_LEDGER_STALE_SECONDS": str(stale)}
    if tuning is not None:
        env["TIERGATE_GATEWAY_TUNING"] = json.dumps(tuning)
    return env


@pytest.mark.parametrize(
    ("stale", "tuning", "message"),
    [
        (
            125,
            None,
            "TIERGATE_LEDGER_STALE_SECONDS=125 (chart ledger.staleSeconds) must be greater than"
            " 2 x gateway.tuning.spendHeartbeatSeconds (60, the gateway default)"
            " + gateway.tuning.spendReportSeconds (5, the gateway default) = 125:"
            " a quiet gateway writes its SpendReport only every heartbeat, so the operator"
            " would fold the reports of live gateways (docs/ledger.md)",
        ),
        (
            8,
            {"spendHeartbeatSeconds": 3.5},
            "TIERGATE_LEDGER_STALE_SECONDS=8 (chart ledger.staleSeconds) must be greater than"
            " 2 x gateway.tuning.spendHeartbeatSeconds (3.5)"
            " + gateway.tuning.spendReportSeconds (5, the gateway default) = 12:",
        ),
        (
            150,
            {"spendReportSeconds": 30},
            "= 150:",
        ),
        (
            1,
            {"spendHeartbeatSeconds": "0.35", "spendReportSeconds": 0.3},
            "spendHeartbeatSeconds (0.35) + gateway.tuning.spendReportSeconds (0.3) = 1:",
        ),
    ],
)
def test_a_stale_time_within_two_heartbeats_is_refused(
    stale: int, tuning: dict[str, object] | None, message: str
) -> None:
    with pytest.raises(SettingsError) as caught:
        load_operator_settings(_env(stale, tuning))
    assert message in str(caught.value)


@pytest.mark.parametrize(
    ("stale", "tuning"),
    [
        (126, None),
        (600, None),  # the defaults
        (13, {"spendHeartbeatSeconds": 3.5}),
        (13, {"spendHeartbeatSeconds": 3.7}),  # 12.4
        (151, {"spendReportSeconds": 30}),
        (2, {"spendHeartbeatSeconds": "0.35", "spendReportSeconds": 0.3}),
        (8, {"spendHeartbeatSeconds": 3, "spendReportSeconds": 1}),  # the in-cluster tests'
    ],
)
def test_a_stale_time_above_two_heartbeats_is_accepted(
    stale: int, tuning: dict[str, object] | None
) -> None:
    assert load_operator_settings(_env(stale, tuning)).ledger_stale_seconds == stale


def test_settings_built_in_code_are_checked_too() -> None:
    assert OperatorSettings().ledger_stale_seconds == 600
    with pytest.raises(SettingsError, match=r"TIERGATE_LEDGER_STALE_SECONDS=60 .* = 125:"):
        OperatorSettings(ledger_stale_seconds=60)
    tuned = (("TIERGATE_GATEWAY_SPEND_HEARTBEAT_SECONDS", "20.0"),)
    assert OperatorSettings(ledger_stale_seconds=46, gateway_tuning=tuned)
    with pytest.raises(SettingsError, match=r"spendHeartbeatSeconds \(20\) .* = 45:"):
        OperatorSettings(ledger_stale_seconds=45, gateway_tuning=tuned)
