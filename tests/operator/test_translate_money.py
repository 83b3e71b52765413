"""Translation of the money fields: credits (the sum of the grants), per-key metrics, and each
key's name (``<Secret>/<data key>``, never its value) beside its digest."""

from __future__ import annotations

import json
from decimal import Decimal
from typing import Any

from tests.support.manifests import store_of, translate_namespace
from tiergate_contract import Credits, KeyName, hash_client_key

Body = dict[str, Any]
ROUTE = {
    "kind": "ModelRoute",
    "metadata": {"name": "chat"},
    "spec": {"model": "chat", "targets": [{"name": "a", "baseURL": "http://127.0.0.1:9902/v1"}]},
}


def tier(name: str, keys: tuple[str, ...] = (), **spec: Any) -> Body:
    return {
        "kind": "ApiKeyTier",
        "metadata": {"name": name},
        "spec": {
            "isolation": "Shared",
            "keys": [{"secretRef": {"name": secret}} for secret in keys or (f"{name}-keys",)],
            **spec,
        },
    }


def secret(name: str, **values: str) -> Body:
    return {"kind": "Secret", "metadata": {"name": name}, "stringData": values}


def _shared_tier(*objects: Body, name: str) -> Any:
    (plan,) = translate_namespace(store_of([ROUTE, *objects])).plans
    return next(t for t in plan.config.tiers if t.name == name)


def test_credits_are_the_sum_of_the_grants_with_the_warning_threshold() -> None:
    grants = [
        {"id": "welcome", "amountUSD": "100", "reason": "free credits"},
        {"id": "topup-1", "amountUSD": "12.50", "reason": "invoice 1"},
    ]
    entry = _shared_tier(
        tier("a", credits={"grants": grants, "warnBelowUSD": "5"}, perKeyMetrics=True),
        secret("a-keys", k="key-a"),
        name="a",
    )
    assert entry.credits == Credits(granted_usd=Decimal("112.50"), warn_below_usd=Decimal(5))
    assert entry.per_key_metrics is True


def test_credits_without_grants_are_none_to_spend() -> None:
    entry = _shared_tier(tier("a", credits={}), secret("a-keys", k="key-a"), name="a")
    assert entry.credits == Credits(granted_usd=Decimal(0))


def test_key_names_name_secret_and_data_key_never_the_value() -> None:
    entry = _shared_tier(
        tier("a", keys=("team-x", "team-y")),
        secret("team-x", alice="key-alice", shared="key-shared"),
        secret("team-y", bob="key-bob", also="key-shared"),
        name="a",
    )
    assert entry.key_names == tuple(
        sorted(
            (
                KeyName(sha256=hash_client_key("key-alice"), name="team-x/alice"),
                KeyName(sha256=hash_client_key("key-bob"), name="team-y/bob"),
                # A value held twice is named once, by the first name in order.
                KeyName(sha256=hash_client_key("key-shared"), name="team-x/shared"),
            ),
            key=lambda k: k.sha256,
        )
    )
    dumped = entry.model_dump_json()
    assert "key-alice" not in dumped and "key-shared" not in dumped


def test_a_tier_without_credits_or_per_key_metrics_leaves_them_out_of_the_config() -> None:
    (plan,) = translate_namespace(store_of([ROUTE, tier("a"), secret("a-keys", k="v")])).plans
    (raw,) = json.loads(plan.config.model_dump_json())["tiers"]
    assert "credits" not in raw and "per_key_metrics" not in raw
    assert raw["key_names"] == [{"name": "a-keys/k", "sha256": hash_client_key("v")}]
