"""Money across the turn of a month, end to end: the real control plane, the operator and two
gateway processes (with and without a real redis-server) whose calendars are moved by the
test clocks (``TIERGATE_TEST_CLOCK_OFFSET_SECONDS``, ``TIERGATE_GATEWAY_TEST_CLOCK_OFFSET_SECONDS``:
for tests only, the same offset for all) so that 2027-01 turns into 2027-02 a minute after the
test starts:

- January: one replica spends the month's budget (4 calls) and is refused; the other is
  refused too, from the first one's report (or Redis); status.spend shows January, and the
  soft threshold's event fires once;
- the turn: status.spend shows 2027-02 from 0 (the operator's own timer: no report changed),
  the lifetime spend and the credits left unchanged;
- February: the budget admits again from 0 while the credits keep counting (3 calls, then
  ``credits_exhausted``); the first replica's report holds both months, each with its own
  counters; the soft threshold's event fires again, once;
- the gateways stop (final reports): the operator folds them; the ledger holds both months
  and the lifetime spend of all seven calls.
"""

from __future__ import annotations

import time
from collections.abc import Iterator
from datetime import UTC, datetime
from decimal import Decimal
from pathlib import Path
from typing import Any

import pytest

from tests.operator.test_money_in_cluster import (
    KEY,
    _call,
    _reported_calls,
    _reports,
    _setup,
    _spend,
    _spend_until_refused,
)
from tests.support.gateway import GatewayProcess
from tests.support.kube import apply_crds, events, eventually, get
from tests.support.operator_process import running_operator
from tests.support.redis_servers import start_redis
from tests.support.upstream import MockUpstream
from tiergate_devkit.cluster import ControlPlane

pytestmark = pytest.mark.cluster

# From January 31st: the day the operator's loop used to fail computing next month's start.
TURN = datetime(2027, 2, 1, tzinfo=UTC)
TURN_AFTER_SECONDS = 60.0  # from the test's start: time for the operator, setup and January
# Each call settles to $0.015 and reserves $0.023 (test_money_in_cluster.py): a monthly
# budget of $0.07 serves 4 calls (0.045 + 0.023 <= 0.07), its soft threshold at 50% is
# $0.035; credits of $0.12 serve 7 calls in all (0.09 + 0.023 <= 0.12).
BUDGET = {"monthlyUSD": "0.07", "softThresholdPercent": 50}
CREDITS = {"grants": [{"id": "welcome", "amountUSD": "0.12", "reason": "trial"}]}
BUDGET_REFUSED = "budget_exceeded (x-should-retry: false)"
CREDITS_REFUSED = "credits_exhausted (x-should-retry: false)"
USD = Decimal(1_000_000_000)


@pytest.fixture
def upstream() -> Iterator[MockUpstream]:
    server = MockUpstream("a", prompt_tokens=10, completion_tokens=5).start()
    yield server
    server.stop()


def _calendar(offset: float) -> datetime:
    return datetime.fromtimestamp(time.time() + offset, UTC)


def _months_of(plane: ControlPlane, namespace: str, pod: str) -> list[tuple[str, int]]:
    [report] = [r for r in _reports(plane, namespace) if r["spec"]["pod"] == pod]
    return [(m["month"], m["calls"]) for m in report["spec"]["tiers"][0]["months"]]


def _soft_events(plane: ControlPlane, namespace: str) -> int:
    return len(events(plane, namespace, "web", "BudgetSoftThreshold"))


@pytest.mark.parametrize("with_redis", [False, True], ids=["local", "redis"])
def test_the_month_turns_for_budgets_status_and_ledger_while_credits_keep_counting(
    control_plane: ControlPlane,
    namespace: str,
    upstream: MockUpstream,
    tmp_path: Path,
    with_redis: bool,
) -> None:
    plane = control_plane
    apply_crds(plane)
    offset = TURN.timestamp() - (time.time() + TURN_AFTER_SECONDS)
    log = tmp_path / "operator.log"
    operator_env = {"TIERGATE_TEST_CLOCK_OFFSET_SECONDS": repr(offset)}
    gateway_env = {"TIERGATE_GATEWAY_TEST_CLOCK_OFFSET_SECONDS": repr(offset)}
    redis = start_redis(tmp_path / "redis") if with_redis else None
    extra = ("--redis-url", f"redis://127.0.0.1:{redis.port}/0") if redis else ()
    gateways: list[GatewayProcess] = []
    try:
        with running_operator(plane, log, extra_env=operator_env):
            _setup(plane, namespace, upstream, budget=BUDGET, credits=CREDITS)
            for pod in ("gw-first", "gw-second"):
                gateways.append(
                    GatewayProcess(
                        "--configmap", f"{namespace}/tiergate-shared",
                        "--kubeconfig", str(plane.kubeconfig),
                        "--spend-report-seconds", "1",
                        *extra,
                        env=gateway_env | {"POD_NAME": pod},
                    ).start(30)
                )  # fmt: skip
            first, second = gateways

            # January.
            assert _spend_until_refused(first) == (4, BUDGET_REFUSED)
            eventually(lambda: _reported_calls(plane, namespace) == 4, timeout=20, what="4")
            assert _call(second) == BUDGET_REFUSED  # the other replica's spend counts
            january = eventually(
                lambda: (s := _spend(plane, namespace)).get("monthCalls") == 4 and s,
                timeout=30,
                what="January's 4 calls in status.spend",
            )
            assert (january["month"], january["monthUSD"]) == ("2027-01", "0.06")
            eventually(lambda: _soft_events(plane, namespace) == 1, timeout=20, what="event")
            assert _calendar(offset) < TURN, "too slow: January ended before the test did"

            # The turn, with nothing written meanwhile (the reports heartbeat every 60 s).
            time.sleep(max(0.0, TURN.timestamp() - _calendar(offset).timestamp()) + 0.5)
            february = eventually(
                lambda: (s := _spend(plane, namespace)).get("month") == "2027-02" and s,
                timeout=8,  # the loop wakes 1 s past the month's end, by itself
                what="status.spend in February",
            )
            assert (february["monthUSD"], february["monthCalls"]) == ("0", 0)
            assert (february["lifetimeUSD"], february["creditsRemainingUSD"]) == ("0.06", "0.06")
            assert _soft_events(plane, namespace) == 1  # the turn itself posts nothing

            # February: the budget admits again; the credits do not start again.
            assert _call(first) == "ok"
            # The first replica's one report holds both months, each with its own counters.
            eventually(
                lambda: (
                    _months_of(plane, namespace, "gw-first") == [("2027-01", 4), ("2027-02", 1)]
                ),
                timeout=20,
                what="January and February in one report",
            )
            # (Without Redis the other replica learns it from that report.)
            assert _spend_until_refused(second) == (2, CREDITS_REFUSED)
            february = eventually(
                lambda: (s := _spend(plane, namespace)).get("monthCalls") == 3 and s,
                timeout=30,
                what="February's 3 calls in status.spend",
            )
            assert (february["month"], february["monthUSD"]) == ("2027-02", "0.045")
            assert (february["lifetimeUSD"], february["creditsRemainingUSD"]) == ("0.105", "0.015")
            eventually(lambda: _soft_events(plane, namespace) == 2, timeout=20, what="2 events")

            # The gateways stop: their final reports are folded; the ledger keeps both months.
            for gateway in gateways:
                output = gateway.stop()
                assert KEY not in output
            gateways.clear()
            eventually(lambda: not _reports(plane, namespace), timeout=30, what="all folded")
            ledger: dict[str, Any] = get(plane, namespace, "apikeytier", "web")["status"]["ledger"]
            assert [(m["month"], m["calls"]) for m in ledger["months"]] == [
                ("2027-01", 4),
                ("2027-02", 3),
            ]
            assert Decimal(ledger["lifetimeNano"]) / USD == Decimal("0.105")
            assert ledger["lifetimeCalls"] == 7
            after = _spend(plane, namespace)
            assert (after["monthUSD"], after["lifetimeUSD"]) == ("0.045", "0.105")
    finally:
        for gateway in gateways:
            gateway.stop()
        if redis is not None:
            redis.stop()
    assert "Traceback" not in log.read_text(), "the operator logged a traceback"
