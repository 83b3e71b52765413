"""Translation of catalog routes: once per gateway, allowed like routes, narrowed per tier,
conflicts and broken catalogs reported while the last good entry keeps serving."""

from __future__ import annotations

from decimal import Decimal
from typing import Any

from tests.support.manifests import store_of, translate_namespace
from tiergate_contract import GatewayConfig, TierCatalog, canonical_json, configmap_payload
from tiergate_operator.translate import Translation

Body = dict[str, Any]
PRICE = {"inputPerMillion": "0.5", "outputPerMillion": "1"}


def catalog_route(name: str, *models: str, patterns: tuple[str, ...] = (), **extra: Any) -> Body:
    return {
        "kind": "ModelRoute",
        "metadata": {"name": name},
        "spec": {
            "catalog": {
                **({"models": [{"model": m} for m in models]} if models else {}),
                **({"patterns": [{"pattern": p} for p in patterns]} if patterns else {}),
                "defaultPricing": PRICE,
                **extra,
            },
            "targets": [
                {
                    "name": "aggregator",
                    "baseURL": "http://127.0.0.1:9901/v1",
                    "credentialsSecretRef": {"name": "upstream", "key": "api-key"},
                }
            ],
        },
    }


def plain_route(name: str, model: str | None = None) -> Body:
    target = {"name": "a", "baseURL": "http://127.0.0.1:9902/v1", "upstreamModel": "up"}
    return {
        "kind": "ModelRoute",
        "metadata": {"name": name},
        "spec": {"model": model or name, "targets": [target]},
    }


def tier(name: str, **spec: Any) -> Body:
    return {
        "kind": "ApiKeyTier",
        "metadata": {"name": name},
        "spec": {"isolation": "Shared", "keys": [{"secretRef": {"name": f"{name}-keys"}}], **spec},
    }


SECRETS = [
    {"kind": "Secret", "metadata": {"name": n}, "stringData": {"k": f"value-of-{n}"}}
    for n in ("a-keys", "b-keys", "c-keys")
] + [{"kind": "Secret", "metadata": {"name": "upstream"}, "stringData": {"api-key": "x"}}]


def run(*documents: Body, previous: dict[str, GatewayConfig] | None = None) -> Translation:
    return translate_namespace(store_of([*documents, *SECRETS]), previous=previous)


def shared(translation: Translation) -> GatewayConfig:
    plan = translation.plan("tiergate-shared")
    assert plan is not None
    return plan.config


def test_a_catalog_is_emitted_once_and_tiers_name_it() -> None:
    translation = run(
        catalog_route("aggregator", "deepseek-ai/DeepSeek-V3", "Qwen/Qwen2.5-7B"),
        plain_route("chat"),
        tier("a"),
        tier("b", models=["aggregator"], catalogs=[{"route": "aggregator", "models": ["Qwen/*"]}]),
        tier("c", models=["chat"]),
    )
    config = shared(translation)
    assert [c.name for c in config.catalogs] == ["aggregator"]
    (catalog,) = config.catalogs
    assert [m.model for m in catalog.models] == ["Qwen/Qwen2.5-7B", "deepseek-ai/DeepSeek-V3"]
    assert catalog.default_pricing.input_per_million == Decimal("0.5")
    tiers = {t.name: (t.models, t.catalogs) for t in config.tiers}
    assert tiers == {
        "a": (("chat",), (TierCatalog(name="aggregator"),)),
        "b": ((), (TierCatalog(name="aggregator", only=("Qwen/*",)),)),
        "c": (("chat",), ()),
    }
    assert translation.route_gateways == {
        "aggregator": ("tiergate-shared",),
        "chat": ("tiergate-shared",),
    }
    plan = translation.plan("tiergate-shared")
    assert plan is not None and plan.credential_secrets == ("upstream",)
    assert (translation.route_problems, translation.tier_problems) == ({}, {})


def test_a_gateway_without_catalogs_keeps_its_bytes() -> None:
    config = shared(run(plain_route("chat"), tier("a")))
    assert b"catalogs" not in canonical_json(config)


def test_patterns_become_prefixes_and_prices_stay_as_written() -> None:
    route = catalog_route("aggregator", patterns=("deepseek-ai/*", "*"))
    route["spec"]["catalog"]["patterns"][0]["pricing"] = {
        "inputPerMillion": "2",
        "outputPerMillion": "3",
    }
    (catalog,) = shared(run(route, tier("a"))).catalogs
    assert [(p.prefix, p.pricing) for p in catalog.patterns] == [
        ("", None),
        ("deepseek-ai/", catalog.patterns[1].pricing),
    ]
    assert catalog.price_of(catalog.patterns[0]).input_per_million == Decimal("0.5")
    assert catalog.price_of(catalog.patterns[1]).input_per_million == Decimal("2")


def test_narrowing_a_route_that_is_no_catalog_or_does_not_exist_is_a_tier_problem() -> None:
    translation = run(
        catalog_route("aggregator", "m"),
        plain_route("chat"),
        tier("a", catalogs=[{"route": "chat", "models": ["x"]}]),
        tier("b", catalogs=[{"route": "missing", "models": ["x"]}]),
    )
    assert translation.tier_problems["a"].reason == "NotACatalog"
    assert "chat" in translation.tier_problems["a"].message
    assert translation.tier_problems["b"].reason == "UnknownRoute"
    assert "missing" in translation.tier_problems["b"].message


def test_a_model_claimed_twice_is_a_duplicate_on_both_routes() -> None:
    translation = run(
        catalog_route("one", "deepseek-ai/DeepSeek-V3"),
        catalog_route("two", "deepseek-ai/DeepSeek-V3"),
        catalog_route("three", patterns=("Qwen/*",)),
        catalog_route("four", patterns=("Qwen/*",)),
        plain_route("five", model="five-alias"),
        plain_route("six", model="three"),  # an alias equal to a catalog's name
        tier("a"),
    )
    reasons = {name: p.reason for name, p in translation.route_problems.items()}
    assert reasons == dict.fromkeys(["one", "two", "three", "four", "six"], "DuplicateModel")
    assert [r.model for r in shared(translation).routes] == ["five-alias"]
    assert shared(translation).catalogs == ()


def test_a_broken_catalog_keeps_its_last_good_entry() -> None:
    good = run(catalog_route("aggregator", "m1"), tier("a"))
    broken_body = catalog_route("aggregator", "m1")
    broken_body["spec"]["targets"][0]["credentialsSecretRef"]["name"] = "gone"
    broken = run(broken_body, tier("a"), previous=good.configs)
    assert broken.route_problems["aggregator"].reason == "MissingSecret"
    assert shared(broken).catalogs == shared(good).catalogs
    assert shared(broken).tiers == shared(good).tiers
    # Without a last good entry, nothing of it is served, and the tier still is.
    fresh = run(broken_body, tier("a"))
    assert shared(fresh).catalogs == ()
    assert [t.name for t in shared(fresh).tiers] == ["a"]


def _config_bytes(models: int, tiers: int) -> tuple[int, int]:
    """(JSON bytes, bytes stored in the ConfigMap) of a shared gateway: one catalog, N tiers."""
    documents = [
        catalog_route("aggregator", *(f"vendor-{i % 40}/model-{i}" for i in range(models)))
    ]
    for i in range(tiers):
        documents.append(
            {
                "kind": "ApiKeyTier",
                "metadata": {"name": f"tier-{i}"},
                "spec": {"isolation": "Shared", "keys": [{"secretRef": {"name": f"keys-{i}"}}]},
            }
        )
        documents.append(
            {"kind": "Secret", "metadata": {"name": f"keys-{i}"}, "stringData": {"k": f"key-{i}"}}
        )
    config = shared(run(*documents))
    payload = configmap_payload(config)
    stored = payload.get("binaryData") or payload["data"]
    return len(canonical_json(config)), sum(len(v) for v in stored.values())


def test_the_config_grows_with_the_catalog_once_not_per_tier() -> None:
    one_tier, _ = _config_bytes(184, 1)
    raw, stored = _config_bytes(184, 90)
    # A tier costs its name, key digest (and its key's name) and the catalog's name, not the
    # catalog's 184 models.
    assert (raw - one_tier) / 89 < 500
    assert stored <= 0.10 * 1024 * 1024  # the issue's goal: 10% of a ConfigMap's 1 MiB
