"""Routing objectives per tier: Weighted, CostFirst, LatencyFirst; steering away from
exhausted targets; hedging. Pure ordering first, then real gateways and loopback upstreams."""

from __future__ import annotations

import random
import re
import time
from collections import Counter

import httpx
import openai
import orjson
import psutil
import pytest

from tests.support.gateway import STARTUP_KEY, config, route, target, tier
from tiergate_contract import (
    CircuitBreaker,
    Hedge,
    Limits,
    RoutingStrategy,
    TierRouting,
)
from tiergate_gateway.exhaustion import exhausted_for
from tiergate_gateway.routing import Breaker, plan

MESSAGES = [{"role": "user", "content": "hi"}]
POLICY = CircuitBreaker()


def _targets(*specs: tuple[str, int]):
    return [target(name, f"http://{name}.example/v1", weight=weight) for name, weight in specs]


# --- pure ordering ---------------------------------------------------------------------------


def test_cost_first_takes_the_cheapest_and_weights_break_ties() -> None:
    group = _targets(("dear", 100), ("cheap", 10), ("also-cheap", 30))
    breakers = {t.name: Breaker(POLICY) for t in group}
    prices = {"dear": 300, "cheap": 100, "also-cheap": 100}
    rng = random.Random(1)
    firsts = Counter(
        plan([group], breakers, 0.0, rng, RoutingStrategy.COST_FIRST, prices)[0].name
        for _ in range(4000)
    )
    assert set(firsts) == {"cheap", "also-cheap"}
    assert firsts["also-cheap"] / 4000 == pytest.approx(0.75, abs=0.03)
    order = plan([group], breakers, 0.0, rng, RoutingStrategy.COST_FIRST, prices)
    assert order[-1].name == "dear"


def test_latency_first_prefers_the_fast_and_unmeasured_and_penalises_load() -> None:
    group = _targets(("slow", 100), ("fast", 100), ("new", 100))
    breakers = {t.name: Breaker(POLICY) for t in group}
    breakers["slow"].observe_latency(0.9, 0.0)
    breakers["fast"].observe_latency(0.2, 0.0)
    order = [
        t.name
        for t in plan([group], breakers, 0.0, random.Random(0), RoutingStrategy.LATENCY_FIRST)
    ]
    assert order == ["new", "fast", "slow"]  # unmeasured first, to learn it
    breakers["new"].observe_latency(0.5, 0.0)
    breakers["fast"].outstanding = 256  # 0.2 s x (1 + 256 / 64) calls in flight: 1.0 > 0.9
    order = [
        t.name
        for t in plan([group], breakers, 0.0, random.Random(0), RoutingStrategy.LATENCY_FIRST)
    ]
    assert order == ["new", "slow", "fast"]


def test_a_few_calls_in_flight_do_not_make_a_fast_target_look_slow() -> None:
    group = _targets(("steady", 100), ("spiky", 100))
    breakers = {t.name: Breaker(POLICY) for t in group}
    breakers["steady"].observe_latency(0.4, 0.0)
    breakers["spiky"].observe_latency(0.6, 0.0)
    breakers["steady"].outstanding = 12  # 40 calls/s at 0.3 s: still the faster one
    order = plan([group], breakers, 0.0, random.Random(0), RoutingStrategy.LATENCY_FIRST)
    assert [t.name for t in order] == ["steady", "spiky"]
    breakers["steady"].outstanding = 40  # 0.4 x (1 + 40 / 64) = 0.65: now the slower one
    order = plan([group], breakers, 0.0, random.Random(0), RoutingStrategy.LATENCY_FIRST)
    assert [t.name for t in order] == ["spiky", "steady"]


def test_peak_ewma_takes_a_slow_sample_at_once_and_forgets_it_slowly() -> None:
    breaker = Breaker(POLICY)
    breaker.observe_latency(0.2, 0.0)
    breaker.observe_latency(2.0, 1.0)
    assert breaker.latency == 2.0
    breaker.observe_latency(0.2, 2.0)  # one second later: mostly still the peak
    assert 1.7 < breaker.latency < 2.0
    breaker.observe_latency(0.2, 60.0)  # much later: back near the samples
    assert breaker.latency < 0.22


@pytest.mark.parametrize("strategy", list(RoutingStrategy))
def test_every_strategy_sends_an_exhausted_target_last(strategy: RoutingStrategy) -> None:
    first = _targets(("a", 100), ("b", 1))
    second = _targets(("c", 100))
    breakers = {t.name: Breaker(POLICY) for t in [*first, *second]}
    breakers["a"].exhausted_until = 10.0
    prices = {"a": 1, "b": 2, "c": 3}
    order = [
        t.name for t in plan([first, second], breakers, 5.0, random.Random(0), strategy, prices)
    ]
    assert order == ["b", "c", "a"]
    order = [
        t.name for t in plan([first, second], breakers, 11.0, random.Random(0), strategy, prices)
    ]
    assert order[-1] == "c" and set(order[:2]) == {"a", "b"}


@pytest.mark.parametrize(
    ("status", "headers", "seconds"),
    [
        (200, {"x-ratelimit-remaining-requests": "5"}, 0.0),
        (200, {"x-ratelimit-remaining-requests": "0", "x-ratelimit-reset-requests": "2s"}, 2.0),
        (200, {"x-ratelimit-remaining-tokens": "0", "x-ratelimit-reset-tokens": "120ms"}, 0.12),
        (200, {"x-ratelimit-remaining-tokens": "0", "x-ratelimit-reset-tokens": "1m30s"}, 60.0),
        (200, {"x-ratelimit-remaining-tokens": "0"}, 1.0),
        (429, {"retry-after": "3"}, 3.0),
        (429, {}, 1.0),
        (503, {"retry-after": "junk"}, 1.0),
        (500, {"retry-after": "3"}, 0.0),
    ],
)
def test_exhaustion_is_read_from_the_rate_limit_headers(status, headers, seconds) -> None:
    assert exhausted_for(status, headers) == pytest.approx(seconds)


# --- real gateways ---------------------------------------------------------------------------


def _sdk(gateway) -> openai.OpenAI:
    return openai.OpenAI(base_url=gateway.url + "/v1", api_key=STARTUP_KEY, max_retries=0)


def _served_by(client: openai.OpenAI, calls: int) -> Counter[str]:
    return Counter(
        (
            client.chat.completions.create(model="m", messages=MESSAGES).choices[0].message.content
            or ""
        ).removeprefix("hello from ")
        for _ in range(calls)
    )


def _gateway(upstreams, start_gateway, routing: TierRouting, *, budget=None, **route_options):
    cfg = config(
        [
            route(
                "m",
                target("a", upstreams["a"].base_url, price=("2", "8")),
                target("b", upstreams["b"].base_url, price=("0.5", "1")),
                **route_options,
            )
        ],
        [tier("t", STARTUP_KEY, ["m"], limits=Limits(), routing=routing, budget=budget)],
    )
    return start_gateway(cfg)


def test_cost_first_serves_from_the_cheapest_while_it_is_healthy(upstreams, start_gateway):
    gateway = _gateway(upstreams, start_gateway, TierRouting(strategy=RoutingStrategy.COST_FIRST))
    client = _sdk(gateway)
    assert _served_by(client, 30) == {"b": 30}
    upstreams["b"].reset("status", status=503)
    assert _served_by(client, 3) == {"a": 3}  # the cheapest fails: the next one serves


def test_weighted_stays_the_default_split(upstreams, start_gateway):
    gateway = _gateway(upstreams, start_gateway, TierRouting())
    served = _served_by(_sdk(gateway), 60)
    assert served["a"] > 10 and served["b"] > 10  # 50/50 by weight


def test_latency_first_learns_the_fast_target(upstreams, start_gateway):
    upstreams["a"].reset("slow", delay=0.15)
    gateway = _gateway(
        upstreams, start_gateway, TierRouting(strategy=RoutingStrategy.LATENCY_FIRST)
    )
    served = _served_by(_sdk(gateway), 30)
    assert served["b"] >= 27, served  # a is asked to learn it, then rarely


def test_a_target_that_says_it_is_exhausted_is_left_alone_until_its_reset(upstreams, start_gateway):
    upstreams["b"].reset(
        "ok",
        headers={"x-ratelimit-remaining-requests": "0", "x-ratelimit-reset-requests": "1s"},
    )
    gateway = _gateway(upstreams, start_gateway, TierRouting(strategy=RoutingStrategy.COST_FIRST))
    client = _sdk(gateway)
    assert _served_by(client, 1) == {"b": 1}  # its answer says: no more requests for 1 s
    assert _served_by(client, 5) == {"a": 5}  # no 429 was needed to learn it
    time.sleep(1.1)
    upstreams["b"].reset("ok", headers={})
    assert _served_by(client, 2) == {"b": 2}


def test_a_hedge_answers_from_the_next_target_and_the_loser_is_cancelled(upstreams, start_gateway):
    upstreams["a"].reset("slow", delay=3)
    routing = TierRouting(strategy=RoutingStrategy.COST_FIRST, hedge=Hedge(after_ms=100))
    # CostFirst on prices that put a first: a is asked first, b after 100 ms.
    cfg = config(
        [
            route(
                "m",
                target("a", upstreams["a"].base_url, price=("0.1", "0.1")),
                target("b", upstreams["b"].base_url, price=("1", "1")),
            )
        ],
        [tier("t", STARTUP_KEY, ["m"], limits=Limits(), routing=routing, budget=("5", "10"))],
    )
    gateway = start_gateway(cfg)
    started = time.monotonic()
    reply = _sdk(gateway).chat.completions.create(model="m", messages=MESSAGES)
    assert reply.choices[0].message.content == "hello from b"
    assert time.monotonic() - started < 1.5
    text = httpx.get(gateway.url + "/metrics").text
    assert re.search(r'tiergate_gateway_hedges_total\{route="m",tier="t"\} 1\.0', text)
    assert re.search(r'tiergate_gateway_hedge_wins_total\{route="m",tier="t"\} 1\.0', text)
    # The loser was sent, then cancelled; it is charged the prompt it read.
    assert len(upstreams["a"].received) == 1
    costs = dict(
        re.findall(
            r'tiergate_gateway_cost_usd_total\{route="m",target="(\w)",tier="t"\} (\S+)', text
        )
    )
    assert float(costs["b"]) == pytest.approx((10 * 1 + 5 * 1) / 1e6)  # its reported usage
    assert 0 < float(costs["a"]) < 100 * 0.1 / 1e6  # the loser: its prompt estimate at its price


def _open_connections_to(port: int) -> int:
    """This process's established TCP connections to 127.0.0.1:``port`` (the in-process
    gateway's, to an upstream of this process)."""
    return sum(
        1
        for conn in psutil.Process().net_connections(kind="tcp")
        if conn.raddr and conn.raddr.port == port and conn.status == psutil.CONN_ESTABLISHED
    )


def test_a_streamed_hedge_that_loses_is_cut_and_charged_the_body_it_was_sent(
    upstreams, start_gateway
):
    # a answers its head at once and its first event only after 3 s: b's hedge wins.
    upstreams["a"].reset("late_first_event", delay=3)
    routing = TierRouting(strategy=RoutingStrategy.COST_FIRST, hedge=Hedge(after_ms=100))
    cfg = config(
        [
            route(
                "m",
                target("a", upstreams["a"].base_url, price=("0.1", "0.1")),
                target("b", upstreams["b"].base_url, price=("1", "1")),
            )
        ],
        [tier("t", STARTUP_KEY, ["m"], limits=Limits(), routing=routing, budget=("5", "10"))],
    )
    gateway = start_gateway(cfg)
    started = time.monotonic()
    stream = _sdk(gateway).chat.completions.create(model="m", messages=MESSAGES, stream=True)
    text = "".join(chunk.choices[0].delta.content or "" for chunk in stream if chunk.choices)
    assert text.startswith("b:")
    # The loser's upstream connection is closed when it loses, not left streaming unread
    # until its first event (3 s).
    deadline = time.monotonic() + 1.5
    while _open_connections_to(upstreams["a"].port) and time.monotonic() < deadline:
        time.sleep(0.02)
    assert _open_connections_to(upstreams["a"].port) == 0
    assert time.monotonic() - started < 2.5
    # It is charged the prompt of the body it was sent (bytes / 4, as the client's is
    # estimated), which is longer than the client's (stream_options, the target's model).
    sent = orjson.dumps(upstreams["a"].received[-1].body)
    metrics = httpx.get(gateway.url + "/metrics").text
    tokens = dict(
        re.findall(
            r'tiergate_gateway_tokens_total\{kind="(\w+)",route="m",target="a",tier="t"\} (\S+)',
            metrics,
        )
    )
    assert float(tokens["prompt"]) == len(sent) // 4
    assert float(tokens.get("completion", 0)) == 0  # no data event had come


def test_latency_first_learns_from_a_hedge_that_lost_how_slow_its_target_is(
    upstreams, start_gateway
):
    # a never answers before b's hedge does. Cut before its first token, a would have taken
    # at least as long as it waited: routing learns that, instead of keeping a unmeasured
    # (and so tried first) for ever, which hedged every call.
    upstreams["a"].reset("late_first_event", delay=3)
    routing = TierRouting(strategy=RoutingStrategy.LATENCY_FIRST, hedge=Hedge(after_ms=100))
    gateway = _gateway(upstreams, start_gateway, routing)
    client = _sdk(gateway)
    for _ in range(6):
        stream = client.chat.completions.create(model="m", messages=MESSAGES, stream=True)
        text = "".join(chunk.choices[0].delta.content or "" for chunk in stream if chunk.choices)
        assert text.startswith("b:")
    metrics = httpx.get(gateway.url + "/metrics").text
    hedges = re.search(r'tiergate_gateway_hedges_total\{route="m",tier="t"\} (\S+)', metrics)
    assert hedges is not None and float(hedges.group(1)) == 1  # only while a was unmeasured
