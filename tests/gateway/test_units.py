"""Pure parts: target choice, circuit breaker, limiter and budget math, config validation."""

from __future__ import annotations

import json
import random
from collections import Counter
from datetime import UTC, datetime, timedelta, timezone
from decimal import Decimal

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

import tiergate_contract as contract
from tests.support.gateway import ACME_KEY, STARTUP_KEY, config, route, target, tier
from tiergate_contract import (
    Budget,
    CircuitBreaker,
    Limits,
    Pricing,
    RequestClass,
    canonical_json,
)
from tiergate_gateway.budget import BudgetMonth, LocalLedger, month_of, nano_cost, to_nano
from tiergate_gateway.config import ConfigRejected, compile_config, parse_config
from tiergate_gateway.credentials import CredentialStore
from tiergate_gateway.errors import GatewayError
from tiergate_gateway.limits import LocalLimiter
from tiergate_gateway.routing import Breaker, BreakerBoard, BreakerState, plan, priority_groups


def breakers_for(*targets, failures=3, cooldown=10.0):
    return {
        t.name: Breaker(CircuitBreaker(consecutive_failures=failures, cooldown_seconds=cooldown))
        for t in targets
    }


def test_plan_orders_priorities_and_weights():
    a, b, c = (
        target("a", "http://x/v1", weight=3),
        target("b", "http://x/v1", weight=1),
        target("c", "http://x/v1", priority=1),
    )
    drained = target("d", "http://x/v1", weight=0)
    groups = priority_groups([c, a, drained, b])
    assert groups == ((a, b), (c,))
    rng = random.Random(7)
    firsts = Counter()
    for _ in range(4000):
        order = plan(groups, breakers_for(a, b, c, drained), 0.0, rng)
        assert order[-1] is c
        assert drained not in order
        firsts[order[0].name] += 1
    assert 2850 <= firsts["a"] <= 3150  # 3:1 -> 75% of 4000, +-5 sd


def test_plan_orders_whole_groups_by_weight_without_replacement():
    a, b, c = (target(n, "http://x/v1", weight=w) for n, w in (("a", 5), ("b", 3), ("c", 2)))
    groups = priority_groups([a, b, c])
    rng = random.Random(11)
    orders = Counter(
        "".join(t.name for t in plan(groups, breakers_for(a, b, c), 0.0, rng)) for _ in range(10000)
    )
    assert set(orders) <= {"abc", "acb", "bac", "bca", "cab", "cba"}
    # P(abc) = 5/10 * 3/5 = 0.30, P(cba) = 2/10 * 3/8 = 0.075; +-5 sd
    assert 2770 <= orders["abc"] <= 3230
    assert 620 <= orders["cba"] <= 880


def test_breaker_board_for_route_is_cached_until_a_config_swap():
    a, b = target("a", "http://x/v1"), target("b", "http://x/v1")
    policy = CircuitBreaker(consecutive_failures=2, cooldown_seconds=5)
    board = BreakerBoard()
    first = board.for_route("m", [a, b], policy)
    assert first["a"] is board.get("m", "a", policy)
    assert board.for_route("m", [a, b], policy) is first
    first["a"].failure(0.0)
    board.retain({("m", "a")})  # b has gone from the config
    second = board.for_route("m", [a], policy)
    assert second is not first
    assert second["a"] is first["a"]
    assert second["a"].failures == 1  # state survives the swap
    assert [key for key, _ in board.items()] == [("m", "a")]


def test_plan_skips_open_breakers_until_cooldown():
    a, b = target("a", "http://x/v1"), target("b", "http://x/v1", priority=1)
    board = breakers_for(a, b, failures=2, cooldown=10)
    board["a"].failure(100.0)
    assert [t.name for t in plan(priority_groups([a, b]), board, 100.0, random.Random(1))] == [
        "a",
        "b",
    ]
    board["a"].failure(101.0)
    assert board["a"].state is BreakerState.OPEN
    assert [t.name for t in plan(priority_groups([a, b]), board, 105.0, random.Random(1))] == ["b"]
    assert [t.name for t in plan(priority_groups([a, b]), board, 111.0, random.Random(1))] == [
        "a",
        "b",
    ]


def test_breaker_half_open_allows_one_probe():
    breaker = Breaker(CircuitBreaker(consecutive_failures=1, cooldown_seconds=5))
    breaker.failure(0.0)
    assert not breaker.acquire(4.9)
    assert breaker.acquire(5.0)
    assert breaker.state is BreakerState.HALF_OPEN
    assert not breaker.acquire(5.1)  # one probe at a time
    breaker.failure(6.0)  # the probe failed: open again, new cooldown
    assert breaker.state is BreakerState.OPEN
    assert not breaker.acquire(10.0)
    assert breaker.acquire(11.0)
    assert breaker.success()  # recovered: the state changed
    assert breaker.state is BreakerState.CLOSED
    assert breaker.failures == 0
    assert not breaker.success()  # already closed


def test_token_bucket_math():
    now = [0.0]
    limiter = LocalLimiter(clock=lambda: now[0])
    limits = Limits(tokens_per_minute=60)
    assert limiter.acquire_now("t", limits, 60).allowed
    now[0] = 2.0
    refused = limiter.acquire_now("t", limits, 10)  # refilled 2 tokens at 1/s
    assert (refused.allowed, refused.limit) == (False, "tokens")
    assert refused.retry_after == pytest.approx(8.0)
    now[0] = 10.0
    assert limiter.acquire_now("t", limits, 10).allowed
    now[0] = 1000.0
    never = limiter.acquire_now("t", limits, 61)  # more than the bucket holds: never fits
    assert (never.allowed, never.retry_after) == (False, 60.0)


def test_local_limiter_requests_tokens_concurrency():
    now = [0.0]
    limiter = LocalLimiter(clock=lambda: now[0])
    limits = Limits(requests_per_minute=2, tokens_per_minute=100, concurrent_requests=3)
    first = limiter.acquire_now("t", limits, 40)
    assert first.allowed
    assert dict(first.headers) == {
        "x-ratelimit-limit-requests": "2",
        "x-ratelimit-remaining-requests": "1",
        "x-ratelimit-reset-requests": "30.000s",
        "x-ratelimit-limit-tokens": "100",
        "x-ratelimit-remaining-tokens": "60",
        "x-ratelimit-reset-tokens": "24.000s",
    }
    assert limiter.acquire_now("t", limits, 40).allowed
    third = limiter.acquire_now("t", limits, 1)
    assert (third.allowed, third.limit) == (False, "requests")
    assert third.retry_after == pytest.approx(30.0)
    now[0] = 30.0
    fourth = limiter.acquire_now("t", limits, 80)  # tokens: 20 left + 50 refilled = 70 < 80
    assert (fourth.allowed, fourth.limit) == (False, "tokens")
    assert limiter.acquire_now("other", limits, 1).allowed  # tiers are independent


async def test_local_limiter_concurrency_and_settle():
    limiter = LocalLimiter(clock=lambda: 0.0)
    limits = Limits(concurrent_requests=1, tokens_per_minute=100)
    assert limiter.acquire_now("t", limits, 90).allowed
    assert limiter.acquire_now("t", limits, 1).limit == "concurrency"
    await limiter.finish("t", limits, 90, 10)  # the slot and 80 tokens given back
    assert limiter.acquire_now("t", limits, 85).allowed
    await limiter.release("t", limits)  # a call refused later (e.g. by its budget)
    assert limiter.acquire_now("t", limits, 5).allowed


def test_budget_math():
    pricing = Pricing(input_per_million=Decimal("0.27"), output_per_million=Decimal("1.10"))
    prices = to_nano(pricing.input_per_million), to_nano(pricing.output_per_million)
    assert nano_cost(*prices, 1_000_000, 500_000) == to_nano(Decimal("0.82"))
    assert to_nano(Decimal("0.0000000011")) == 2  # rounds up: never under-reserve
    # The integer hot path agrees with the Decimal definition (rounded up to a nano-USD).
    for prompt, completion in ((1_000_000, 500_000), (7, 3), (0, 0), (123_457, 1)):
        exact = (
            pricing.input_per_million * prompt + pricing.output_per_million * completion
        ) / Decimal(1_000_000)
        assert nano_cost(*prices, prompt, completion) == to_nano(exact)
    assert (
        month_of(datetime(2025, 1, 31, 23, 30, tzinfo=timezone(timedelta(hours=-2)))) == "2025-02"
    )
    with pytest.raises(ValueError, match="aware"):
        month_of(datetime(2025, 1, 1))


def test_budget_month_follows_the_injected_clock_or_the_utc_calendar():
    clock = [datetime(2025, 1, 31, 23, 59, tzinfo=UTC)]
    month = BudgetMonth(lambda: clock[0])
    assert month() == "2025-01"
    clock[0] += timedelta(minutes=2)
    assert month() == "2025-02"
    assert BudgetMonth()() == datetime.now(UTC).strftime("%Y-%m")


async def test_local_ledger_reserve_settle_and_months():
    ledger = LocalLedger()
    budget = Budget(soft_usd=Decimal("1"), hard_usd=Decimal("2"))
    first = await ledger.reserve("t", budget, "2025-01", to_nano(Decimal("1.5")))
    assert (first.allowed, first.warn) == (True, True)
    assert not (await ledger.reserve("t", budget, "2025-01", to_nano(Decimal("0.6")))).allowed
    await ledger.settle("t", "2025-01", to_nano(Decimal("1.5")), to_nano(Decimal("0.4")))
    second = await ledger.reserve("t", budget, "2025-01", to_nano(Decimal("0.6")))
    assert (second.allowed, second.warn) == (True, False)
    assert (await ledger.reserve("t", budget, "2025-02", to_nano(Decimal("2")))).allowed


def _valid():
    return config(
        [
            route(
                "m",
                target("a", "http://127.0.0.1:1/v1"),
                target("p", "http://127.0.0.1:2/v1", premium=True),
            )
        ],
        [tier("t", STARTUP_KEY, ["m"]), tier("u", ACME_KEY, [])],
    )


def test_parse_config_round_trip_and_compile():
    cfg = _valid()
    assert parse_config(canonical_json(cfg)) == cfg
    compiled = compile_config(cfg)
    assert [t.name for t in compiled.routes["m"].candidates[RequestClass.PREMIUM]] == ["p"]
    assert [t.name for t in compiled.routes["m"].candidates[RequestClass.STANDARD]] == ["a"]
    assert compiled.allowed == {"t": frozenset({"m"}), "u": frozenset()}


@pytest.mark.parametrize(
    ("mutate", "message"),
    [
        (
            lambda raw: raw.replace(b"gateway-config/v1", b"gateway-config/v2"),
            "unknown config version",
        ),
        (lambda raw: raw[:-5], "not valid JSON"),
        (lambda raw: b"[]", "not a JSON object"),
        (lambda raw: raw.replace(b'"weight":100', b'"weight":-1', 1), "routes.0.targets.0.weight"),
        (lambda raw: raw.replace(b'"models":["m"]', b'"models":["zzz"]'), "unknown models"),
        (
            lambda raw: raw.replace(b"http://127.0.0.1:1/v1", b"ftp://x"),
            r"route .m. target .a.: base_url .ftp://x. is not an http\(s\) URL",
        ),
    ],
)
def test_parse_config_rejections_name_the_problem(mutate, message):
    with pytest.raises(ConfigRejected, match=message):
        compile_config(parse_config(mutate(canonical_json(_valid()))))


def test_parse_config_accepts_gzip_and_the_configmap_payload():
    import gzip

    from tiergate_contract import config_from_configmap, configmap_payload

    cfg = _valid()
    assert parse_config(gzip.compress(canonical_json(cfg))) == cfg
    packed = config_from_configmap(configmap_payload(cfg))
    assert packed is not None
    assert parse_config(packed) == cfg
    with pytest.raises(ConfigRejected, match="not valid gzip"):
        parse_config(b"\x1f\x8b" + b"garbage")


def test_credentials_store(tmp_path):
    store = CredentialStore(tmp_path, recheck_seconds=0)
    (tmp_path / "s").mkdir()
    (tmp_path / "s" / "k").write_text("value\n")
    ref = contract.CredentialRef(secret="s", key="k")
    assert store.get(ref) == "value"
    (tmp_path / "s" / "k").write_text("new-value-longer")
    assert store.get(ref) == "new-value-longer"
    assert store.get(contract.CredentialRef(secret="..", key="k")) is None
    assert store.get(contract.CredentialRef(secret="s", key="missing")) is None
    (tmp_path / "s" / "k").write_text("two\nlines")
    assert store.get(ref) is None  # never sent as a header


def test_error_envelope():
    error = GatewayError(
        403, "nope", type_="permission_error", code="model_not_allowed", param="model"
    )
    assert (
        error.body()
        == b'{"error":{"message":"nope","type":"permission_error","param":"model","code":"model_not_allowed"}}'
    )


def test_public_exports():
    import tiergate_gateway.__main__ as cli
    import tiergate_gateway.app as app

    assert set(contract.__all__) >= {
        "GatewayConfig",
        "Route",
        "Target",
        "Tier",
        "Limits",
        "Budget",
        "TierUpstream",
        "CredentialRef",
        "Pricing",
        "Failover",
        "CircuitBreaker",
        "Timeouts",
        "RequestClass",
        "seal",
        "canonical_json",
        "hash_client_key",
        "CONFIG_VERSION",
        "CONFIG_KEY",
    }
    for module in (contract, cli, app):
        for name in module.__all__:
            assert hasattr(module, name), name
    assert cli.__all__ == ["main", "parse_args", "run", "serve"]


def test_now_is_utc_aware():
    assert datetime.now(UTC).tzinfo is UTC


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


@settings(max_examples=200, deadline=None)
@given(
    st.recursive(
        st.none() | st.booleans() | st.integers() | st.text(max_size=10),
        lambda inner: (
            st.lists(inner, max_size=3) | st.dictionaries(st.text(max_size=8), inner, max_size=3)
        ),
        max_leaves=10,
    ),
    st.sampled_from(["version", "generation", "routes", "tiers", "gateway", "namespace"]),
)
def test_config_parser_only_ever_rejects(value, field):
    """Any JSON in any field: either a valid config or ConfigRejected, never another exception."""
    raw = _valid().model_dump(mode="json")
    raw[field] = value
    message = "accepted"
    try:
        compile_config(parse_config(json.dumps(raw).encode()))
    except ConfigRejected as exc:
        message = str(exc)
    assert message


@pytest.mark.parametrize("bad", ["A" * 64, "a" * 63, "a" * 65, "g" * 64, ""])
def test_tier_digests_must_be_lowercase_hex_sha256(bad: str) -> None:
    with pytest.raises(ValueError, match="not a hex SHA-256 digest"):
        contract.Tier(name="t", key_sha256=("ab" * 32, bad), models=())
    assert contract.Tier(name="t", key_sha256=("0123456789abcdef" * 4,), models=()).key_sha256
