"""The gateway's side of the ledger across the turn of months, its heartbeat and its report
rotation (``docs/ledger.md``), without the control plane:

- a real gateway (file config, with and without a real redis-server) whose calendar is moved
  by the test clock (``TIERGATE_GATEWAY_TEST_CLOCK_OFFSET_SECONDS``): a budget spent in one
  month admits again from 0 the moment the next begins, while prepaid credits keep counting;
- the durable floors follow the month;
- the SpendReport writer against a scripted API server: the heartbeat with no news moves
  ``reportedAt`` only and follows its setting; a report holds at most twelve months, and a
  thirteenth closes it (``final``) and starts a new one, every nano-USD in exactly one.
"""

from __future__ import annotations

import asyncio
import secrets
import time
from collections.abc import Callable
from datetime import UTC, datetime
from decimal import Decimal
from typing import Any

import httpx
import pytest

from tests.gateway.test_report_writer import api, reporter  # noqa: F401 (api: a fixture)
from tests.support.gateway import STARTUP_KEY, GatewayThread, config, route, target, tier
from tiergate_contract import Credits
from tiergate_contract.ledger import MAX_REPORT_MONTHS
from tiergate_gateway.__main__ import parse_args
from tiergate_gateway.durable import DurableSpend, Floors
from tiergate_gateway.settings import Settings
from tiergate_gateway.spend import SpendRecorder

AUTH = {"authorization": f"Bearer {STARTUP_KEY}"}
BODY = {"model": "m", "messages": [{"role": "user", "content": "hi"}], "max_tokens": 10}
TURN = datetime(2027, 1, 1, tzinfo=UTC)


def code_of(reply: httpx.Response) -> str:
    return "ok" if reply.status_code == 200 else str(reply.json()["error"]["code"])


def spend_until_refused(gw: GatewayThread, limit: int = 50) -> tuple[int, str]:
    for served in range(limit):
        reply = httpx.post(gw.url + "/v1/chat/completions", json=BODY, headers=AUTH, timeout=10)
        if code_of(reply) != "ok":
            return served, code_of(reply)
    raise AssertionError(f"still served after {limit} calls")


def wait_for(moment: datetime, offset: float) -> None:
    """Sleep until the gateway's calendar (the system clock + ``offset``) reaches ``moment``."""
    time.sleep(max(0.0, moment.timestamp() - (time.time() + offset)) + 0.05)


@pytest.mark.parametrize(
    "with_redis", [False, pytest.param(True, marks=pytest.mark.redis)], ids=["local", "redis"]
)
def test_a_month_s_budget_starts_again_at_the_turn_and_credits_keep_counting(
    with_redis: bool,
    request: pytest.FixtureRequest,
    monkeypatch: pytest.MonkeyPatch,
    upstreams: Any,
    start_gateway: Callable[..., GatewayThread],
) -> None:
    # Each call settles to 20,000 nano-USD (10 + 5 tokens at 1 and 2 USD per million) and
    # reserves about 38,000; a budget of 0.0001 USD serves 4 calls a month, and credits of
    # 0.00015 USD last 4 calls in December and 2 more in January.
    name = f"roll-{secrets.token_hex(3)}"  # Redis is shared by the session: a tier of its own
    t = tier(name, STARTUP_KEY, ["m"], budget=("0.0001", "0.0001")).model_copy(
        update={"credits": Credits(granted_usd=Decimal("0.00015"))}
    )
    cfg = config([route("m", target("a", upstreams["a"].base_url))], [t])
    # The gateway's calendar reaches the turn 4 s after it starts.
    offset = TURN.timestamp() - (time.time() + 4.0)
    monkeypatch.setenv("TIERGATE_GATEWAY_TEST_CLOCK_OFFSET_SECONDS", str(offset))
    overrides = {"redis_url": request.getfixturevalue("redis_url")} if with_redis else {}
    gw = start_gateway(cfg, **overrides)
    assert time.time() + offset < TURN.timestamp(), "the gateway started too slowly"
    assert spend_until_refused(gw) == (4, "budget_exceeded")
    assert code_of(httpx.post(gw.url + "/v1/chat/completions", json=BODY, headers=AUTH)) == (
        "budget_exceeded"
    )
    wait_for(TURN, offset)
    # January: the budget starts from 0, the credits do not (80,000 of 150,000 are gone).
    assert spend_until_refused(gw) == (2, "credits_exhausted")
    assert len(upstreams["a"].received) == 6


def test_the_durable_floors_follow_the_month() -> None:
    month = ["2026-12"]
    floors = DurableSpend(lambda: month[0], exclude_own=False, clock=lambda: TURN.timestamp())
    moment = TURN.isoformat()
    floors.reports_listed(
        [
            {
                "metadata": {"name": "r"},
                "spec": {
                    "gateway": "g",
                    "pod": "p",
                    "startedAt": moment,
                    "reportedAt": moment,
                    "tiers": [
                        {
                            "tier": "t",
                            "months": [
                                {"month": "2026-12", "spentNano": 700, "calls": 7},
                                {"month": "2027-01", "spentNano": 30, "calls": 3},
                            ],
                        }
                    ],
                },
            }
        ]
    )
    assert floors.floors("t", "2026-12") == Floors(month=700, lifetime=730)
    month[0] = "2027-01"  # the turn: the next admission's month differs, floors recomputed
    assert floors.floors("t", "2027-01") == Floors(month=30, lifetime=730)
    assert floors.month == "2027-01"


def test_the_heartbeat_is_a_setting_of_at_most_sixty_seconds() -> None:
    assert Settings().spend_heartbeat_seconds == 60.0
    settings, _ = parse_args(["--config-file", "c.json", "--spend-heartbeat-seconds", "1.5"])
    assert settings.spend_heartbeat_seconds == 1.5
    for wrong in (0.0, 61.0):
        with pytest.raises(ValueError, match="spend_heartbeat_seconds"):
            Settings(spend_heartbeat_seconds=wrong)


async def test_a_heartbeat_with_no_news_moves_only_reported_at(api: Any) -> None:  # noqa: F811
    store, url = api
    now = [1_796_000_000.0]
    recorder = SpendRecorder(clock=lambda: now[0])
    writer = reporter(url, recorder, interval=0.02, heartbeat=30.0, clock=lambda: now[0])
    await writer.start()
    recorder.settle("t", "2026-12", "k/a", 0, 42, served=True)
    await asyncio.sleep(0.15)
    assert len(store.writes) == 2  # created, then the news
    now[0] += 29.9
    await asyncio.sleep(0.15)
    assert len(store.writes) == 2  # no news, and the heartbeat is not due
    now[0] += 0.1
    await asyncio.sleep(0.15)
    assert len(store.writes) == 3  # the heartbeat, once
    (_, news), (_, beat) = store.writes[1:]
    assert beat["spec"]["reportedAt"] == datetime.fromtimestamp(now[0], UTC).isoformat().replace(
        "+00:00", "Z"
    )
    assert {**beat["spec"], "reportedAt": None} == {**news["spec"], "reportedAt": None}
    await writer.stop()


async def test_a_thirteenth_month_closes_the_report_and_starts_a_new_one(
    api: Any,  # noqa: F811
) -> None:
    store, url = api
    # Last-use moments with more digits than a written report keeps (as time.time() has).
    recorder = SpendRecorder(clock=lambda: 1_796_000_000.1234567)
    writer = reporter(url, recorder, interval=60)
    await writer.start()
    year = [f"2026-{number:02d}" for number in range(1, 13)]
    for number, month in enumerate(year, start=1):
        recorder.settle("t", month, "k/a", 0, number, served=True)
    await writer.write()
    first = writer.name
    assert first is not None
    written = store.objects[first]["spec"]["tiers"][0]["months"]
    assert len(written) == MAX_REPORT_MONTHS == 12
    # News in a month the report holds, and a thirteenth month.
    recorder.settle("t", "2026-12", "k/a", 0, 100, served=True)
    recorder.settle("t", "2027-01", "k/a", 0, 13, served=True)
    await writer.write()
    assert writer.name != first and writer.reports_started == 1
    closed = store.objects[first]["spec"]
    assert closed["final"] is True and closed["tiers"][0]["months"] == written
    fresh = store.objects[writer.name]["spec"]
    assert fresh["final"] is False
    assert [(m["month"], m["spentNano"]) for m in fresh["tiers"][0]["months"]] == [
        ("2026-12", 100),
        ("2027-01", 13),
    ]
    # Later news goes on in the new report, which is not closed again.
    second = writer.name
    recorder.settle("t", "2027-01", "k/a", 0, 7, served=True)
    await writer.write()
    assert writer.name == second and writer.reports_started == 1
    await writer.stop()
    reports = [store.objects[first]["spec"], store.objects[second]["spec"]]
    assert store.objects[second]["spec"]["final"] is True
    total = sum(m["spentNano"] for spec in reports for m in spec["tiers"][0]["months"])
    assert total == sum(range(1, 13)) + 100 + 13 + 7  # every nano-USD in exactly one report
