"""The official openai SDK against a real gateway and real upstream servers on 127.0.0.1."""

from __future__ import annotations

import httpx
import openai
import pytest

from tests.support.gateway import ACME_KEY, STARTUP_KEY, config, envelope_of, route, target, tier


@pytest.fixture
def basic(upstreams, start_gateway):
    a, b, p = upstreams["a"], upstreams["b"], upstreams["p"]
    cfg = config(
        [
            route(
                "deepseek-chat",
                target("a", a.base_url, credential=("provider", "api-key")),
                target("p", p.base_url, premium=True),
            ),
            route("embed", target("b", b.base_url, upstream_model="text-embed")),
            route("secret-model", target("b", b.base_url)),
        ],
        [
            tier("startup", STARTUP_KEY, ["deepseek-chat", "embed"]),
            tier(
                "acme",
                ACME_KEY,
                ["deepseek-chat", "secret-model"],
                credential=("acme", "token"),
                prefix="Pro/",
            ),
        ],
    )
    return start_gateway(cfg)


def sdk(gateway, key=STARTUP_KEY, **kw):
    return openai.OpenAI(base_url=gateway.url + "/v1", api_key=key, max_retries=0, **kw)


def test_chat_sync_rewrites_model_and_sends_target_credential(basic, upstreams):
    reply = sdk(basic).chat.completions.create(
        model="deepseek-chat", messages=[{"role": "user", "content": "hi"}]
    )
    assert reply.choices[0].message.content == "hello from a"
    assert reply.usage is not None
    assert reply.usage.total_tokens == 15
    got = upstreams["a"].received[-1]
    assert got.path == "/v1/chat/completions"
    assert got.body["model"] == "a-model"
    assert got.body["messages"] == [{"role": "user", "content": "hi"}]
    assert got.headers["Authorization"] == "Bearer target-secret-1"


def test_tier_prefix_and_credential_override(basic, upstreams):
    reply = sdk(basic, ACME_KEY).chat.completions.create(
        model="deepseek-chat", messages=[{"role": "user", "content": "x"}]
    )
    assert reply.choices[0].message.content == "hello from a"
    got = upstreams["a"].received[-1]
    assert got.body["model"] == "Pro/a-model"
    assert got.headers["Authorization"] == "Bearer acme-tier-secret"


async def test_chat_async(basic, upstreams):
    client = openai.AsyncOpenAI(base_url=basic.url + "/v1", api_key=STARTUP_KEY, max_retries=0)
    replies = [
        await client.chat.completions.create(
            model="deepseek-chat", messages=[{"role": "user", "content": str(i)}]
        )
        for i in range(3)
    ]
    assert [r.choices[0].message.content for r in replies] == ["hello from a"] * 3
    assert [r.body["messages"][0]["content"] for r in upstreams["a"].received] == ["0", "1", "2"]
    await client.close()


def test_streaming_sync_passes_chunks_and_asks_for_usage(basic, upstreams):
    stream = sdk(basic).chat.completions.create(
        model="deepseek-chat", messages=[{"role": "user", "content": "hi"}], stream=True
    )
    chunks = list(stream)
    text = "".join(c.choices[0].delta.content or "" for c in chunks if c.choices)
    assert text == "a: part0 part1 part2"
    # Usage is asked of the upstream for billing; the client, which did not ask, gets no
    # usage-only chunk.
    assert all(chunk.choices for chunk in chunks)
    assert upstreams["a"].received[-1].body["stream_options"] == {"include_usage": True}


async def test_streaming_async(basic):
    client = openai.AsyncOpenAI(base_url=basic.url + "/v1", api_key=STARTUP_KEY, max_retries=0)
    stream = await client.chat.completions.create(
        model="deepseek-chat", messages=[{"role": "user", "content": "hi"}], stream=True
    )
    text = "".join([c.choices[0].delta.content or "" async for c in stream if c.choices])
    assert text == "a: part0 part1 part2"
    await client.close()


def test_completions_and_embeddings(basic, upstreams):
    client = sdk(basic)
    completion = client.completions.create(model="deepseek-chat", prompt="say hi")
    assert completion.choices[0].text == "hello from a"
    assert upstreams["a"].received[-1].path == "/v1/completions"
    embedding = client.embeddings.create(model="embed", input="some text")
    assert embedding.data[0].embedding == [0.25, -0.5, 1.0]
    got = upstreams["b"].received[-1]
    assert (got.path, got.body["model"]) == ("/v1/embeddings", "text-embed")


def test_models_lists_only_the_tier_models(basic):
    assert sorted(m.id for m in sdk(basic).models.list()) == ["deepseek-chat", "embed"]
    assert sorted(m.id for m in sdk(basic, ACME_KEY).models.list()) == [
        "deepseek-chat",
        "secret-model",
    ]


def test_premium_header_and_default_class(basic, upstreams):
    client = sdk(basic, default_headers={"x-tiergate-class": "premium"})
    reply = client.chat.completions.create(
        model="deepseek-chat", messages=[{"role": "user", "content": "hi"}]
    )
    assert reply.choices[0].message.content == "hello from p"
    # A route without Premium targets serves Premium requests from its Standard ones.
    emb = client.embeddings.create(model="embed", input="x")
    assert emb.data[0].embedding == [0.25, -0.5, 1.0]
    assert len(upstreams["b"].received) == 1


def test_auth_errors_use_openai_envelope(basic):
    with pytest.raises(openai.AuthenticationError) as excinfo:
        sdk(basic, "sk-wrong").chat.completions.create(model="deepseek-chat", messages=[])
    assert excinfo.value.code == "invalid_api_key"
    missing = httpx.post(basic.url + "/v1/chat/completions", json={"model": "deepseek-chat"})
    assert missing.status_code == 401
    assert envelope_of(missing)["code"] == "invalid_api_key"
    assert "sk-" not in missing.text


def test_forbidden_and_unknown_models(basic):
    with pytest.raises(openai.PermissionDeniedError) as forbidden:
        sdk(basic).chat.completions.create(
            model="secret-model", messages=[{"role": "user", "content": "x"}]
        )
    assert forbidden.value.code == "model_not_allowed"
    with pytest.raises(openai.NotFoundError) as unknown:
        sdk(basic).chat.completions.create(
            model="nope", messages=[{"role": "user", "content": "x"}]
        )
    assert unknown.value.code == "model_not_found"
    assert unknown.value.body["param"] == "model"


def test_bad_requests_are_400_with_envelope(basic):
    headers = {"authorization": f"Bearer {STARTUP_KEY}"}
    cases = [
        b"{not json",
        b"[1,2]",
        b'{"model": 5}',
        b'{"model":"deepseek-chat","stream":"yes"}',
        b'{"model":"deepseek-chat","max_tokens":-1}',
        b'{"model":"deepseek-chat","max_tokens":true}',
        b'{"model":"deepseek-chat","max_tokens":2.5}',
        b'{"model":"deepseek-chat","max_completion_tokens":"9"}',
        b'{"model":"deepseek-chat","max_completion_tokens":null,"max_tokens":-3}',
    ]
    for body in cases:
        resp = httpx.post(
            basic.url + "/v1/chat/completions",
            content=body,
            headers={**headers, "content-type": "application/json"},
        )
        assert resp.status_code == 400, body
        assert envelope_of(resp)["type"] == "invalid_request_error"
    bad_class = httpx.post(
        basic.url + "/v1/chat/completions",
        json={"model": "deepseek-chat"},
        headers={**headers, "x-tiergate-class": "gold"},
    )
    assert bad_class.status_code == 400
    assert envelope_of(bad_class)["param"] == "x-tiergate-class"
    assert httpx.get(basic.url + "/v1/nothing").status_code == 404
    assert httpx.get(basic.url + "/v1/chat/completions", headers=headers).status_code == 405


def test_health_ready_metrics(basic):
    assert httpx.get(basic.url + "/healthz").status_code == 200
    ready = httpx.get(basic.url + "/readyz")
    assert ready.status_code == 200
    sdk(basic).chat.completions.create(
        model="deepseek-chat", messages=[{"role": "user", "content": "hi"}]
    )
    text = httpx.get(basic.url + "/metrics").text
    assert (
        'tiergate_gateway_requests_total{endpoint="chat",route="deepseek-chat",status="200",tier="startup"} 1.0'
        in text
    )
    assert (
        'tiergate_gateway_upstream_attempts_total{outcome="ok",route="deepseek-chat",target="a"} 1.0'
        in text
    )
    assert (
        'tiergate_gateway_tokens_total{kind="completion",route="deepseek-chat",target="a",tier="startup"} 5.0'
        in text
    )
    # 10 prompt tokens at 1 USD/M + 5 completion tokens at 2 USD/M
    assert (
        'tiergate_gateway_cost_usd_total{route="deepseek-chat",target="a",tier="startup"} 2e-05'
        in text
    )
    assert (
        f'tiergate_gateway_config_generation_info{{generation="{ready.json()["generation"]}"}} 1.0'
        in text
    )
