"""The spend ledger on the real control plane, with hand-written SpendReports standing in for
gateways: status.spend within 30 s of a report, printer columns, folding of final and stale
reports, events once per threshold crossing, the per-key list bounded, and reports the
operator must leave alone (not ours) or release without folding (their tier is gone)."""

from __future__ import annotations

import json
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from tests.operator.spend_support import (
    USD,
    create_report,
    create_tier,
    report_body,
    spend_of,
    stamp,
    wait_for,
)
from tests.support.kube import apply_crds, events, get, get_or_none
from tests.support.operator_process import running_operator
from tiergate_devkit.cluster import ControlPlane

pytestmark = pytest.mark.cluster
STALE_SECONDS = 8
# The operator refuses a stale time not above 2 x heartbeat + report interval (2 x 3 + 1 = 7).
TIMING = {"TIERGATE_GATEWAY_TUNING": '{"spendHeartbeatSeconds": 3, "spendReportSeconds": 1}'}


@pytest.fixture(scope="module")
def operator_log(
    control_plane: ControlPlane, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[Path]:
    apply_crds(control_plane)
    log = tmp_path_factory.mktemp("operator") / "operator.log"
    env = {"TIERGATE_LEDGER_STALE_SECONDS": str(STALE_SECONDS)} | TIMING
    with running_operator(control_plane, log, extra_env=env):
        yield log
    assert "Traceback" not in log.read_text(), "the operator logged a traceback"


def _patch_spec(plane: ControlPlane, namespace: str, name: str, body: dict[str, Any]) -> None:
    """Write the report as its gateway would: now (a report not written for 8 s is folded)."""
    body["spec"]["reportedAt"] = stamp()
    plane.kubectl(
        "-n", namespace, "patch", "spendreport", name, "--type", "merge",
        "-p", json.dumps({"spec": body["spec"]}),
    )  # fmt: skip


def test_status_spend_follows_the_reports_within_30_seconds(
    control_plane: ControlPlane, namespace: str, operator_log: Path
) -> None:
    credits = {"grants": [{"id": "welcome", "amountUSD": "100", "reason": "free"}]}
    create_tier(control_plane, namespace, "startup", budget={"monthlyUSD": "50"}, credits=credits)
    wait_for(lambda: spend_of(control_plane, namespace, "startup"), what="a first status.spend")
    assert spend_of(control_plane, namespace, "startup")["monthUSD"] == "0"

    figures = []
    first = report_body("gw-a-0001", {"startup": 5 * USD})
    create_report(control_plane, namespace, first)
    figures.append(
        wait_for(
            lambda: spend_of(control_plane, namespace, "startup").get("monthUSD") == "5",
            timeout=30,
            what="status.spend after a report was created",
        )
    )
    create_report(control_plane, namespace, report_body("gw-b-0001", {"startup": 2 * USD}))
    updated = report_body("gw-a-0001", {"startup": 7_250_000_000})
    _patch_spec(control_plane, namespace, "gw-a-0001", updated)
    figures.append(
        wait_for(
            lambda: spend_of(control_plane, namespace, "startup").get("monthUSD") == "9.25",
            timeout=30,
            what="status.spend after a second report and an update",
        )
    )
    for cents in range(1, 11):  # ten more writes, as a gateway with news makes them
        updated["spec"]["tiers"][0]["months"][0]["spentNano"] = 7_250_000_000 + cents * USD // 100
        _patch_spec(control_plane, namespace, "gw-a-0001", updated)
        want = f"{9.25 + cents / 100:.2f}".rstrip("0").rstrip(".")
        figures.append(
            wait_for(
                lambda want=want: (
                    spend_of(control_plane, namespace, "startup").get("monthUSD") == want
                ),
                timeout=30,
                what=f"status.spend {want}",
            )
        )
    ordered = sorted(figures)
    print(
        f"\nseconds from a SpendReport write to status.spend over {len(figures)} writes: "
        f"p50 {ordered[len(ordered) // 2]:.1f}, max {ordered[-1]:.1f}"
    )
    updated["spec"]["tiers"][0]["months"][0]["spentNano"] = 7_250_000_000
    _patch_spec(control_plane, namespace, "gw-a-0001", updated)
    wait_for(lambda: spend_of(control_plane, namespace, "startup").get("monthUSD") == "9.25")
    spend = spend_of(control_plane, namespace, "startup")
    assert spend["lifetimeUSD"] == "9.25" and spend["budgetUSD"] == "50"
    assert (spend["creditsGrantedUSD"], spend["creditsUsedUSD"]) == ("100", "9.25")
    assert spend["creditsRemainingUSD"] == "90.75"

    table = control_plane.kubectl("-n", namespace, "get", "akt", "startup").stdout.splitlines()
    header, row = table[0].split(), table[1].split()
    columns = dict(zip(header, row, strict=False))
    assert (columns["SPEND"], columns["BUDGET"], columns["CREDITS"]) == ("9.25", "50", "90.75")


def test_final_and_stale_reports_are_folded_and_released(
    control_plane: ControlPlane, namespace: str, operator_log: Path
) -> None:
    create_tier(control_plane, namespace, "acme")
    create_report(control_plane, namespace, report_body("gw-live-0001", {"acme": 1 * USD}))
    create_report(
        control_plane, namespace, report_body("gw-final-0001", {"acme": 2 * USD}, final=True)
    )
    wait_for(
        lambda: get_or_none(control_plane, namespace, "spendreport", "gw-final-0001") is None,
        timeout=30,
        what="the final report folded and released",
    )
    ledger = get(control_plane, namespace, "apikeytier", "acme")["status"]["ledger"]
    assert ledger["folded"] == ["gw-final-0001"]
    assert (ledger["lifetimeNano"], ledger["lifetimeCalls"]) == (2 * USD, 200)
    # Folded money is counted once: the live report and the ledger.
    wait_for(lambda: spend_of(control_plane, namespace, "acme").get("lifetimeUSD") == "3")

    # The live report stops being written: after the stale threshold it is folded too.
    seen_alive = get_or_none(control_plane, namespace, "spendreport", "gw-live-0001")
    assert seen_alive is not None and not seen_alive["metadata"].get("deletionTimestamp")
    took = wait_for(
        lambda: get_or_none(control_plane, namespace, "spendreport", "gw-live-0001") is None,
        timeout=STALE_SECONDS + 30,
        what="the stale report folded and released",
    )
    print(f"\nstale report folded {took:.1f} s after the check (threshold {STALE_SECONDS} s)")
    ledger = get(control_plane, namespace, "apikeytier", "acme")["status"]["ledger"]
    assert ledger["folded"] == ["gw-final-0001", "gw-live-0001"]
    assert ledger["lifetimeNano"] == 3 * USD
    assert ledger["months"][0]["spentNano"] == 3 * USD
    assert spend_of(control_plane, namespace, "acme")["lifetimeUSD"] == "3"


def test_a_heartbeating_report_is_not_folded(
    control_plane: ControlPlane, namespace: str, operator_log: Path
) -> None:
    create_tier(control_plane, namespace, "busy")
    body = report_body("gw-busy-0001", {"busy": USD})
    create_report(control_plane, namespace, body)
    for _ in range(4):  # written every 4 s for 16 s: twice the 8 s threshold
        time.sleep(STALE_SECONDS / 2)
        body["spec"]["reportedAt"] = stamp()
        _patch_spec(control_plane, namespace, "gw-busy-0001", body)
    alive = get_or_none(control_plane, namespace, "spendreport", "gw-busy-0001")
    assert alive is not None and not alive["metadata"].get("deletionTimestamp")


def test_events_fire_once_per_threshold_crossing(
    control_plane: ControlPlane, namespace: str, operator_log: Path
) -> None:
    credits = {"grants": [{"id": "w", "amountUSD": "20", "reason": "r"}], "warnBelowUSD": "5"}
    create_tier(
        control_plane, namespace, "small",
        budget={"monthlyUSD": "10", "softThresholdPercent": 80}, credits=credits,
    )  # fmt: skip
    wait_for(lambda: spend_of(control_plane, namespace, "small"), what="a first status.spend")
    body = report_body("gw-small-0001", {"small": 0})
    create_report(control_plane, namespace, body)
    steps = [
        (8_500_000_000, "BudgetSoftThreshold"),
        (9_000_000_000, None),
        (10 * USD, "BudgetExhausted"),
        (15_500_000_000, "CreditsLow"),
        (16 * USD, None),
        (20 * USD, "CreditsExhausted"),
    ]
    for nano, _ in steps:
        body["spec"]["tiers"][0]["months"][0]["spentNano"] = nano
        body["spec"]["reportedAt"] = stamp()
        _patch_spec(control_plane, namespace, "gw-small-0001", body)
        want = f"{nano / USD:g}"
        wait_for(
            lambda want=want: spend_of(control_plane, namespace, "small").get("monthUSD") == want,
            timeout=30,
            what=f"month spend {want}",
        )
    reasons = ("BudgetSoftThreshold", "BudgetExhausted", "CreditsLow", "CreditsExhausted")
    for reason in reasons:
        wait_for(lambda r=reason: events(control_plane, namespace, "small", r), what=reason)
    # A report rewritten with the same money changes nothing: no second event.
    _patch_spec(control_plane, namespace, "gw-small-0001", body)
    time.sleep(5)
    counts = {r: len(events(control_plane, namespace, "small", r)) for r in reasons}
    assert counts == dict.fromkeys(reasons, 1)
    exhausted = events(control_plane, namespace, "small", "CreditsExhausted")[0]
    assert exhausted["type"] == "Warning"
    assert "the prepaid credits are used up ($20 spent of $20 granted)" in exhausted["message"]
    assert spend_of(control_plane, namespace, "small")["creditsRemainingUSD"] == "0"


def test_the_per_key_list_is_the_top_twenty_and_the_rest_summed(
    control_plane: ControlPlane, namespace: str, operator_log: Path
) -> None:
    create_tier(control_plane, namespace, "teams")
    keys = [
        {"key": f"team-keys/k{i:02d}", "spentNano": (i + 1) * USD, "calls": i + 1,
         "lastUsedAt": stamp()}
        for i in range(25)
    ]  # fmt: skip
    body = report_body("gw-teams-0001", {"teams": 325 * USD}, keys={"teams": keys})
    create_report(control_plane, namespace, body)
    wait_for(lambda: spend_of(control_plane, namespace, "teams").get("monthUSD") == "325")
    spend = spend_of(control_plane, namespace, "teams")
    assert len(spend["keys"]) == 20
    assert spend["keys"][0] == {
        "key": "team-keys/k24",
        "monthUSD": "25",
        "calls": 25,
        "lastUsedAt": keys[24]["lastUsedAt"],
    }
    assert spend["otherKeys"] == {"count": 5, "monthUSD": "15", "calls": 15}


def test_reports_not_ours_are_left_alone_and_a_gone_tier_releases_its_reports(
    control_plane: ControlPlane, namespace: str, operator_log: Path
) -> None:
    create_tier(control_plane, namespace, "here")
    foreign = report_body(
        "someone-elses", {"here": USD}, final=True, labels={"app": "someone-else"}
    )
    create_report(control_plane, namespace, foreign)
    no_finalizer = report_body("no-finalizer", {"here": USD}, final=True, finalizers=[])
    create_report(control_plane, namespace, no_finalizer)
    ghost = report_body("gw-ghost-0001", {"ghost": USD, "here": USD}, final=True)
    create_report(control_plane, namespace, ghost)
    wait_for(
        lambda: get_or_none(control_plane, namespace, "spendreport", "gw-ghost-0001") is None,
        timeout=30,
        what="a report naming a tier that does not exist released",
    )
    ledger = get(control_plane, namespace, "apikeytier", "here")["status"]["ledger"]
    assert ledger["folded"] == ["gw-ghost-0001"] and ledger["lifetimeNano"] == USD
    assert "names ApiKeyTier ghost, which does not exist" in operator_log.read_text()
    # Not ours: never deleted, never folded, finalizers untouched.
    for name in ("someone-elses", "no-finalizer"):
        kept = get(control_plane, namespace, "spendreport", name)
        assert not kept["metadata"].get("deletionTimestamp"), name
    assert get(control_plane, namespace, "spendreport", "someone-elses")["metadata"][
        "finalizers"
    ] == ["tiergate.dev/ledger"]
    control_plane.kubectl(
        "-n", namespace, "patch", "spendreport", "someone-elses", "--type", "merge",
        "-p", '{"metadata":{"finalizers":null}}',
    )  # fmt: skip


def test_a_stale_time_within_two_heartbeats_refuses_to_start(
    control_plane: ControlPlane, tmp_path: Path
) -> None:
    """With the gateways' default timing (heartbeat 60 s, report 5 s) a live, quiet gateway's
    report can be 125 s old: the operator exits with the rule, not a traceback."""
    log = tmp_path / "operator.log"
    env = {"TIERGATE_LEDGER_STALE_SECONDS": str(STALE_SECONDS)}
    with running_operator(control_plane, log, extra_env=env) as process:
        assert process.wait(timeout=60) != 0
    text = log.read_text()
    assert (
        "refusing to start: TIERGATE_LEDGER_STALE_SECONDS=8 (chart ledger.staleSeconds) must be"
        " greater than 2 x gateway.tuning.spendHeartbeatSeconds (60, the gateway default)"
        " + gateway.tuning.spendReportSeconds (5, the gateway default) = 125"
    ) in text
    assert "Traceback" not in text
