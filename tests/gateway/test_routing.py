"""Routing (routing.py): the plan and the breakers, pure; then split, failover, breakers and timeouts through real servers."""

from __future__ import annotations

import random
from collections import Counter

import httpx
import openai
import pytest

from tests.support.gateway import STARTUP_KEY, config, route, target, tier
from tiergate_contract import (
    CircuitBreaker,
)
from tiergate_gateway.routing import Breaker, BreakerBoard, BreakerState, plan, priority_groups

MSG = [{"role": "user", "content": "hi"}]


def sdk(gateway):
    return openai.OpenAI(base_url=gateway.url + "/v1", api_key=STARTUP_KEY, max_retries=0)


def test_weighted_split(upstreams, start_gateway):
    a, b = upstreams["a"], upstreams["b"]
    gw = start_gateway(
        config(
            [route("m", target("a", a.base_url, weight=80), target("b", b.base_url, weight=20))],
            [tier("t", STARTUP_KEY, ["m"])],
        )
    )
    with httpx.Client(
        base_url=gw.url, headers={"authorization": f"Bearer {STARTUP_KEY}"}
    ) as client:
        for _ in range(400):
            assert (
                client.post(
                    "/v1/chat/completions", json={"model": "m", "messages": MSG}
                ).status_code
                == 200
            )
    # Binomial(400, 0.8): mean 320, sd 8; +-5 sd.
    assert 280 <= len(a.received) <= 360
    assert len(a.received) + len(b.received) == 400


@pytest.mark.parametrize("status", [500, 429, 503])
def test_failover_on_retryable_status(upstreams, start_gateway, status):
    a, b, c = upstreams["a"], upstreams["b"], upstreams["c"]
    a.reset("status", status=status)
    gw = start_gateway(
        config(
            [
                route(
                    "m",
                    target("a", a.base_url),
                    target("b", b.base_url, priority=1),
                    target("c", c.base_url, priority=2),
                )
            ],
            [tier("t", STARTUP_KEY, ["m"])],
        )
    )
    reply = sdk(gw).chat.completions.create(model="m", messages=MSG)
    assert reply.choices[0].message.content == "hello from b"
    assert (len(a.received), len(b.received), len(c.received)) == (1, 1, 0)


def test_no_failover_on_other_4xx(upstreams, start_gateway):
    a, b = upstreams["a"], upstreams["b"]
    a.reset("status", status=400)
    gw = start_gateway(
        config(
            [route("m", target("a", a.base_url), target("b", b.base_url, priority=1))],
            [tier("t", STARTUP_KEY, ["m"])],
        )
    )
    with pytest.raises(openai.BadRequestError) as excinfo:
        sdk(gw).chat.completions.create(model="m", messages=MSG)
    assert "a says 400" in str(excinfo.value)
    assert len(b.received) == 0


def test_all_targets_failing_returns_last_upstream_error_and_bounded_attempts(
    upstreams, start_gateway
):
    for name in "abc":
        upstreams[name].reset("status", status=503)
    gw = start_gateway(
        config(
            [
                route(
                    "m",
                    *(target(n, upstreams[n].base_url, priority=i) for i, n in enumerate("abc")),
                    max_attempts=2,
                )
            ],
            [tier("t", STARTUP_KEY, ["m"])],
        )
    )
    resp = httpx.post(
        gw.url + "/v1/chat/completions",
        json={"model": "m", "messages": MSG},
        headers={"authorization": f"Bearer {STARTUP_KEY}"},
    )
    assert resp.status_code == 503
    assert [len(upstreams[n].received) for n in "abc"] == [1, 1, 0]


def test_connect_error_and_timeout_fail_over(upstreams, start_gateway):
    from tests.support.gateway import free_port

    a, b = upstreams["a"], upstreams["b"]
    a.reset("slow", delay=2.0)
    dead = f"http://127.0.0.1:{free_port()}/v1"
    gw = start_gateway(
        config(
            [
                route("dead", target("x", dead), target("b", b.base_url, priority=1)),
                route(
                    "slow",
                    target("a", a.base_url),
                    target("b", b.base_url, priority=1),
                    first_byte=0.3,
                ),
            ],
            [tier("t", STARTUP_KEY, ["dead", "slow"])],
        )
    )
    assert (
        sdk(gw).chat.completions.create(model="dead", messages=MSG).choices[0].message.content
        == "hello from b"
    )
    assert (
        sdk(gw).chat.completions.create(model="slow", messages=MSG).choices[0].message.content
        == "hello from b"
    )
    metrics = httpx.get(gw.url + "/metrics").text
    assert (
        'tiergate_gateway_upstream_attempts_total{outcome="connect_error",route="dead",target="x"} 1.0'
        in metrics
    )
    assert (
        'tiergate_gateway_upstream_attempts_total{outcome="timeout",route="slow",target="a"} 1.0'
        in metrics
    )
    assert 'tiergate_gateway_failovers_total{from_target="a",route="slow"} 1.0' in metrics


def test_only_dead_target_is_gateway_502(start_gateway):
    from tests.support.gateway import free_port

    gw = start_gateway(
        config(
            [route("m", target("x", f"http://127.0.0.1:{free_port()}/v1"))],
            [tier("t", STARTUP_KEY, ["m"])],
        )
    )
    with pytest.raises(openai.InternalServerError) as excinfo:
        sdk(gw).chat.completions.create(model="m", messages=MSG)
    assert excinfo.value.status_code == 502
    assert excinfo.value.body["type"] == "upstream_error"


def test_circuit_opens_after_consecutive_failures(upstreams, start_gateway):
    a, b = upstreams["a"], upstreams["b"]
    a.reset("status", status=500)
    gw = start_gateway(
        config(
            [
                route(
                    "m",
                    target("a", a.base_url),
                    target("b", b.base_url, priority=1),
                    failures=2,
                    cooldown=600,
                )
            ],
            [tier("t", STARTUP_KEY, ["m"])],
        )
    )
    client = sdk(gw)
    for _ in range(5):
        assert (
            client.chat.completions.create(model="m", messages=MSG).choices[0].message.content
            == "hello from b"
        )
    assert len(a.received) == 2  # open after two failures: a is not tried again during the cooldown
    assert len(b.received) == 5
    metrics = httpx.get(gw.url + "/metrics").text
    assert 'tiergate_gateway_circuit_state{route="m",target="a"} 1.0' in metrics


def test_missing_credential_fails_that_target_only(upstreams, start_gateway):
    a, b = upstreams["a"], upstreams["b"]
    gw = start_gateway(
        config(
            [
                route(
                    "m",
                    target("a", a.base_url, credential=("nosuch", "key")),
                    target("b", b.base_url, priority=1),
                ),
                route("only", target("a", a.base_url, credential=("nosuch", "key"))),
            ],
            [tier("t", STARTUP_KEY, ["m", "only"])],
        )
    )
    assert (
        sdk(gw).chat.completions.create(model="m", messages=MSG).choices[0].message.content
        == "hello from b"
    )
    with pytest.raises(openai.InternalServerError) as excinfo:
        sdk(gw).chat.completions.create(model="only", messages=MSG)
    assert excinfo.value.status_code == 502
    assert excinfo.value.code == "upstream_credential_missing"
    assert len(a.received) == 0


def test_credential_file_change_is_picked_up(upstreams, start_gateway, credentials_dir):
    a = upstreams["a"]
    gw = start_gateway(
        config(
            [route("m", target("a", a.base_url, credential=("provider", "api-key")))],
            [tier("t", STARTUP_KEY, ["m"])],
        )
    )
    sdk(gw).chat.completions.create(model="m", messages=MSG)
    assert a.received[-1].headers["Authorization"] == "Bearer target-secret-1"
    path = credentials_dir / "provider" / "api-key"
    path.with_suffix(".new").write_text("rotated-secret")
    path.with_suffix(".new").replace(path)
    import time

    deadline = time.monotonic() + 5
    while a.received[-1].headers["Authorization"] != "Bearer rotated-secret":
        assert time.monotonic() < deadline, "rotated credential never used"
        sdk(gw).chat.completions.create(model="m", messages=MSG)
        time.sleep(0.1)


# -- the plan and the breakers, pure ---------------------------------------------------


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
