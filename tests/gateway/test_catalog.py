"""Catalogs through a real gateway, real upstream servers and the openai SDK: exact names,
upstream renames and patterns pass through, narrowing, /v1/models, per-model prices."""

from __future__ import annotations

from decimal import Decimal

import httpx
import openai
import pytest

from tests.support.gateway import (
    ACME_KEY,
    STARTUP_KEY,
    catalog,
    config,
    envelope_of,
    route,
    target,
    tier,
    tier_catalog,
)
from tiergate_contract import RequestClass
from tiergate_gateway.config import compile_config


@pytest.fixture
def aggregator(upstreams, start_gateway):
    a, b = upstreams["a"], upstreams["b"]
    cfg = config(
        [route("deepseek-chat", target("c", upstreams["c"].base_url))],
        [
            tier("startup", STARTUP_KEY, ["deepseek-chat"]).model_copy(
                update={"catalogs": (tier_catalog("aggregator"),)}
            ),
            tier("acme", ACME_KEY, []).model_copy(
                update={"catalogs": (tier_catalog("aggregator", "cheap/m1", "deepseek-ai/*"),)}
            ),
        ],
        [
            catalog(
                "aggregator",
                [("a", a.base_url, 0), ("b", b.base_url, 1)],
                {
                    "cheap/m1": ("1", "2"),
                    "big/m2": ("10", "20", "vendor/m2-large"),
                    "deepseek-ai/DeepSeek-R1": ("4", "8"),
                },
                patterns={"deepseek-ai/": None, "Qwen/": ("3", "3")},
                default=("0.5", "0.5"),
                failures=2,
            )
        ],
    )
    return start_gateway(cfg)


def sdk(gateway, key=STARTUP_KEY):
    return openai.OpenAI(base_url=gateway.url + "/v1", api_key=key, max_retries=0)


def chat(gateway, model, key=STARTUP_KEY, stream=False):
    client = sdk(gateway, key)
    messages = [{"role": "user", "content": "hi"}]
    if stream:
        chunks = list(client.chat.completions.create(model=model, messages=messages, stream=True))
        return "".join(c.choices[0].delta.content or "" for c in chunks if c.choices)
    return client.chat.completions.create(model=model, messages=messages).choices[0].message.content


def cost_of(gateway, tier_name, target_name, route_name="aggregator") -> Decimal:
    wanted = (
        f'tiergate_gateway_cost_usd_total{{route="{route_name}",target="{target_name}",'
        f'tier="{tier_name}"}} '
    )
    for line in httpx.get(gateway.url + "/metrics").text.splitlines():
        if line.startswith(wanted):
            return round(Decimal(line.split()[-1]), 12)  # a float counter
    return Decimal(0)


def test_catalog_models_go_to_the_catalog_targets_under_their_upstream_names(aggregator, upstreams):
    assert chat(aggregator, "cheap/m1") == "hello from a"
    assert upstreams["a"].received[-1].body["model"] == "cheap/m1"
    assert chat(aggregator, "big/m2", stream=True) == "a: part0 part1 part2"
    assert upstreams["a"].received[-1].body["model"] == "vendor/m2-large"
    # Patterns pass the name through; an exact entry wins over a pattern it matches.
    assert chat(aggregator, "deepseek-ai/DeepSeek-V3", stream=True) == "a: part0 part1 part2"
    assert chat(aggregator, "Qwen/Qwen2.5-72B") == "hello from a"
    assert [r.body["model"] for r in upstreams["a"].received[-2:]] == [
        "deepseek-ai/DeepSeek-V3",
        "Qwen/Qwen2.5-72B",
    ]
    # A plain route of the same gateway is untouched.
    assert chat(aggregator, "deepseek-chat") == "hello from c"


def test_the_charged_cost_is_the_price_of_the_model_served(aggregator, upstreams):
    # Each upstream answer reports 10 prompt and 5 completion tokens.
    chat(aggregator, "cheap/m1")  # 10 x 1 + 5 x 2 = 20 per million
    assert cost_of(aggregator, "startup", "a") == Decimal("0.00002")
    chat(aggregator, "big/m2", stream=True)  # 10 x 10 + 5 x 20 = 200
    assert cost_of(aggregator, "startup", "a") == Decimal("0.00022")
    chat(aggregator, "deepseek-ai/DeepSeek-R1")  # exact entry: 10 x 4 + 5 x 8 = 80
    chat(aggregator, "deepseek-ai/anything")  # the pattern at the default 0.5: 7.5
    chat(aggregator, "Qwen/x")  # the pattern's own price 3: 45
    assert cost_of(aggregator, "startup", "a") == Decimal("0.0003525")


def test_one_set_of_breakers_fails_every_model_of_the_catalog_over(aggregator, upstreams):
    upstreams["a"].reset("status", status=500)  # (a 503 would also steer it last for a second)
    assert chat(aggregator, "cheap/m1") == "hello from b"
    assert chat(aggregator, "Qwen/x") == "hello from b"  # a second failure opens a's breaker
    assert chat(aggregator, "big/m2") == "hello from b"
    assert len(upstreams["a"].received) == 2  # the third model skipped the open breaker
    assert upstreams["b"].received[-1].body["model"] == "vendor/m2-large"
    metrics = httpx.get(aggregator.url + "/metrics").text
    assert 'tiergate_gateway_circuit_state{route="aggregator",target="a"} 1.0' in metrics


def test_outside_the_catalog_is_404_and_outside_the_narrowing_403(aggregator, upstreams):
    with pytest.raises(openai.NotFoundError) as missing:
        chat(aggregator, "unknown/model")
    assert envelope_of(missing.value.response)["code"] == "model_not_found"
    assert chat(aggregator, "cheap/m1", ACME_KEY) == "hello from a"
    assert chat(aggregator, "deepseek-ai/DeepSeek-V3", ACME_KEY) == "hello from a"
    for model in ("big/m2", "Qwen/x", "deepseek-chat"):
        with pytest.raises(openai.PermissionDeniedError) as forbidden:
            chat(aggregator, model, ACME_KEY)
        assert envelope_of(forbidden.value.response)["code"] == "model_not_allowed"
    # Nothing refused reached an upstream.
    assert [r.body["model"] for r in upstreams["a"].received] == [
        "cheap/m1",
        "deepseek-ai/DeepSeek-V3",
    ]
    assert upstreams["b"].received == upstreams["c"].received == []


def test_models_lists_exactly_what_each_key_may_use(aggregator):
    startup = [m.id for m in sdk(aggregator).models.list()]
    assert startup == ["big/m2", "cheap/m1", "deepseek-ai/DeepSeek-R1", "deepseek-chat"]
    acme = [m.id for m in sdk(aggregator, ACME_KEY).models.list()]
    assert acme == ["cheap/m1", "deepseek-ai/DeepSeek-R1"]


def test_lookup_takes_exact_names_first_then_the_longest_pattern() -> None:
    compiled = compile_config(
        config(
            [route("deepseek-ai/chat", target("c", "http://127.0.0.1:9/v1"))],
            [tier("t", STARTUP_KEY, [])],
            [
                catalog(
                    "agg",
                    [("a", "http://127.0.0.1:9/v1", 0)],
                    {"deepseek-ai/listed": ("1", "1")},
                    patterns={
                        "": ("5", "5"),
                        "deepseek-ai/": ("2", "2"),
                        "deepseek-ai/R": ("3", "3"),
                    },
                )
            ],
        )
    )

    def found(model: str) -> tuple[str | None, str | None, tuple[int, int]]:
        route_ = compiled.lookup(model)
        assert route_ is not None
        return route_.catalog, route_.upstream_model, route_.max_nano_prices[RequestClass.STANDARD]

    assert found("deepseek-ai/chat")[0] is None  # a route alias
    assert found("deepseek-ai/listed") == ("agg", "deepseek-ai/listed", (10**9, 10**9))
    assert found("deepseek-ai/R2") == ("agg", "deepseek-ai/R2", (3 * 10**9, 3 * 10**9))
    assert found("deepseek-ai/V4") == ("agg", "deepseek-ai/V4", (2 * 10**9, 2 * 10**9))
    assert found("anything") == ("agg", "anything", (5 * 10**9, 5 * 10**9))
    assert compiled.breaker_keys() == {("deepseek-ai/chat", "c"), ("agg", "a")}


def test_the_budget_reserves_at_the_price_of_the_model_asked_for(upstreams, start_gateway):
    gateway = start_gateway(
        config(
            [],
            [
                tier("t", STARTUP_KEY, [], budget=("0.5", "1")).model_copy(
                    update={"catalogs": (tier_catalog("agg"),)}
                )
            ],
            [
                catalog(
                    "agg",
                    [("a", upstreams["a"].base_url, 0)],
                    {"cheap": ("1", "1"), "dear": ("100000", "100000")},
                )
            ],
        )
    )
    client = sdk(gateway)
    ask = {"messages": [{"role": "user", "content": "hi"}], "max_tokens": 1}
    assert client.chat.completions.create(model="cheap", **ask).choices
    # ~15 estimated tokens at $0.1 each is over the $1 hard budget: refused before the call.
    with pytest.raises(openai.RateLimitError) as refused:
        client.chat.completions.create(model="dear", **ask)
    assert envelope_of(refused.value.response)["code"] == "budget_exceeded"
    assert [r.body["model"] for r in upstreams["a"].received] == ["cheap"]
