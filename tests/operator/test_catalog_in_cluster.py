"""One key, every model, end to end: a catalog ModelRoute and two tiers on the real control
plane, the real operator, a real gateway process reading its ConfigMap through the API, real
upstream servers and the openai SDK."""

from __future__ import annotations

import json
import time
from collections.abc import Iterator
from decimal import Decimal
from pathlib import Path

import httpx
import openai
import pytest

from tests.support.gateway import GatewayProcess
from tests.support.upstream import MockUpstream
from tiergate_devkit.cluster import ControlPlane

pytestmark = pytest.mark.cluster

LAB_KEY, INTERNS_KEY = "tg-lab-key-0001", "tg-interns-key-0001"
MESSAGES = [{"role": "user", "content": "hi"}]


@pytest.fixture
def upstream() -> Iterator[MockUpstream]:
    server = MockUpstream("agg").start()
    yield server
    server.stop()


def manifests(upstream: MockUpstream) -> list[dict[str, object]]:
    def price(inp: str, out: str) -> dict[str, str]:
        return {"inputPerMillion": inp, "outputPerMillion": out}

    def keys(name: str, value: str) -> dict[str, object]:
        return {
            "apiVersion": "v1",
            "kind": "Secret",
            "metadata": {"name": name},
            "stringData": {"k": value},
        }

    def tier(name: str, **spec: object) -> dict[str, object]:
        return {
            "apiVersion": "tiergate.dev/v1alpha1",
            "kind": "ApiKeyTier",
            "metadata": {"name": name},
            "spec": {"isolation": "Shared", "keys": [{"secretRef": {"name": f"{name}-keys"}}]}
            | spec,
        }

    return [
        {
            "apiVersion": "v1",
            "kind": "Secret",
            "metadata": {"name": "agg-credentials"},
            "stringData": {"api-key": "agg-secret"},
        },
        {
            "apiVersion": "tiergate.dev/v1alpha1",
            "kind": "ModelRoute",
            "metadata": {"name": "aggregator"},
            "spec": {
                "catalog": {
                    "models": [
                        {"model": "cheap/m1", "pricing": price("1", "2")},
                        {
                            "model": "big/m2",
                            "upstreamModel": "vendor/m2-large",
                            "pricing": price("10", "20"),
                        },
                        {"model": "Qwen/Qwen2.5-7B"},
                    ],
                    "patterns": [{"pattern": "Qwen/*"}],
                    "defaultPricing": price("3", "3"),
                },
                "targets": [
                    {
                        "name": "agg",
                        "baseURL": upstream.base_url,
                        "credentialsSecretRef": {"name": "agg-credentials", "key": "api-key"},
                    }
                ],
            },
        },
        keys("lab-keys", LAB_KEY),
        keys("interns-keys", INTERNS_KEY),
        tier("lab"),
        tier("interns", catalogs=[{"route": "aggregator", "models": ["Qwen/*"]}]),
    ]


def _cost(gateway: GatewayProcess, tier: str) -> Decimal:
    wanted = f'tiergate_gateway_cost_usd_total{{route="aggregator",target="agg",tier="{tier}"}} '
    for line in httpx.get(gateway.url + "/metrics").text.splitlines():
        if line.startswith(wanted):
            return round(Decimal(line.split()[-1]), 12)
    return Decimal(0)


def test_one_key_reaches_every_catalog_model_through_the_operator_and_a_gateway(
    control_plane: ControlPlane,
    namespace: str,
    operator_log: Path,
    upstream: MockUpstream,
    tmp_path: Path,
) -> None:
    documents = "\n---\n".join(json.dumps(d) for d in manifests(upstream))
    control_plane.kubectl("-n", namespace, "apply", "-f", "-", input=documents)
    control_plane.kubectl(
        "-n", namespace, "wait", "--for=condition=Ready", "modelroutes,apikeytiers", "--all",
        "--timeout=90s", timeout=100,
    )  # fmt: skip
    columns = control_plane.kubectl("-n", namespace, "get", "mr", "aggregator").stdout
    assert "3 models, 1 pattern" in columns

    credentials = tmp_path / "credentials"
    (credentials / "agg-credentials").mkdir(parents=True)
    (credentials / "agg-credentials" / "api-key").write_text("agg-secret")
    gateway = GatewayProcess(
        "--configmap", f"{namespace}/tiergate-shared",
        "--kubeconfig", str(control_plane.kubeconfig),
        "--credentials-dir", str(credentials),
    ).start()  # fmt: skip
    try:
        lab = openai.OpenAI(base_url=gateway.url + "/v1", api_key=LAB_KEY, max_retries=0)
        interns = openai.OpenAI(base_url=gateway.url + "/v1", api_key=INTERNS_KEY, max_retries=0)
        deadline = time.monotonic() + 10
        while gateway_models(lab) is None:  # the gateway serves once it has read its ConfigMap
            assert time.monotonic() < deadline, "the gateway never served its config"
            time.sleep(0.1)

        # Several models with one key, plain and streamed, each under its upstream name.
        answer = lab.chat.completions.create(model="cheap/m1", messages=MESSAGES)
        assert answer.choices[0].message.content == "hello from agg"
        streamed = lab.chat.completions.create(model="big/m2", messages=MESSAGES, stream=True)
        text = "".join(c.choices[0].delta.content or "" for c in streamed if c.choices)
        assert text == "agg: part0 part1 part2"
        lab.chat.completions.create(model="Qwen/Qwen3-235B", messages=MESSAGES)  # a pattern
        assert [r.body["model"] for r in upstream.received] == [
            "cheap/m1",
            "vendor/m2-large",
            "Qwen/Qwen3-235B",
        ]
        assert {r.headers["Authorization"] for r in upstream.received} == {"Bearer agg-secret"}

        # Per-model prices: 10 prompt + 5 completion tokens each, at 1/2, 10/20 and 3/3.
        assert _cost(gateway, "lab") == Decimal("0.000265")

        # The narrowed tier: its models only; outside the catalog 404, outside its allowlist 403.
        streamed = interns.chat.completions.create(
            model="Qwen/Qwen2.5-7B", messages=MESSAGES, stream=True
        )
        assert "".join(c.choices[0].delta.content or "" for c in streamed if c.choices)
        with pytest.raises(openai.PermissionDeniedError):
            interns.chat.completions.create(model="cheap/m1", messages=MESSAGES)
        with pytest.raises(openai.NotFoundError):
            lab.chat.completions.create(model="nobody/model", messages=MESSAGES)
        assert len(upstream.received) == 4

        assert gateway_models(lab) == ["Qwen/Qwen2.5-7B", "big/m2", "cheap/m1"]
        assert gateway_models(interns) == ["Qwen/Qwen2.5-7B"]
    finally:
        log = gateway.stop()
    assert "agg-secret" not in log and LAB_KEY not in log


def gateway_models(client: openai.OpenAI) -> list[str] | None:
    try:
        return [model.id for model in client.models.list()]
    except (openai.APIConnectionError, openai.APIStatusError):
        return None
