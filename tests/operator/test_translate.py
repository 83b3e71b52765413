"""Table tests of the pure translation: namespace objects -> gateway plans and problems."""

from __future__ import annotations

import random
from typing import Any

import pytest

from tests.support.kube import EXAMPLES
from tests.support.manifests import store_of, translate_namespace
from tiergate_contract import (
    MAX_KEYS_PER_TIER,
    GatewayConfig,
    canonical_json,
    hash_client_key,
)
from tiergate_operator.translate import Translation

Body = dict[str, Any]


def route(
    name: str, *, model: str | None = None, secret: str | None = None, key: str = "k"
) -> Body:
    target: Body = {
        "name": "a",
        "baseURL": "http://127.0.0.1:9901/v1",
        "upstreamModel": f"up-{name}",
    }
    if secret:
        target["credentialsSecretRef"] = {"name": secret, "key": key}
    return {
        "kind": "ModelRoute",
        "metadata": {"name": name},
        "spec": {"model": model or name, "targets": [target]},
    }


def tier(name: str, isolation: str = "Shared", keys: str | None = None, **spec: Any) -> Body:
    return {
        "kind": "ApiKeyTier",
        "metadata": {"name": name},
        "spec": {
            "isolation": isolation,
            "keys": [{"secretRef": {"name": keys or f"{name}-keys"}}],
            **spec,
        },
    }


def secret(name: str, **values: str) -> Body:
    return {"kind": "Secret", "metadata": {"name": name}, "stringData": values}


def run(*documents: Body, previous: dict[str, GatewayConfig] | None = None) -> Translation:
    return translate_namespace(store_of(documents), previous=previous)


def served(translation: Translation, gateway: str) -> dict[str, list[str]]:
    plan = translation.plan(gateway)
    assert plan is not None, f"no plan for {gateway}"
    return {t.name: list(t.models) for t in plan.config.tiers}


BASE = (route("chat"), route("code"), secret("a-keys", k="key-a"), secret("b-keys", k="key-b"))


def test_examples_give_a_shared_pool_and_a_dedicated_gateway() -> None:
    translation = translate_namespace(store_of(EXAMPLES))
    assert [p.name for p in translation.plans] == ["tiergate-enterprise-acme", "tiergate-shared"]
    acme, shared = translation.plans
    assert (acme.isolation, acme.replicas, acme.owners[0].controller) == ("Dedicated", 3, True)
    assert (shared.isolation, shared.replicas, shared.owners[0].controller) == (
        "Shared",
        None,
        False,
    )
    assert acme.credential_secrets == ("enterprise-acme-upstream", "upstream-credentials")
    assert translation.tier_gateways == {
        "enterprise-acme": "tiergate-enterprise-acme",
        "startup": "tiergate-shared",
    }
    assert translation.route_gateways == {
        "deepseek-chat": ("tiergate-enterprise-acme", "tiergate-shared")
    }
    assert (translation.route_problems, translation.tier_problems) == ({}, {})
    (budget_tier,) = shared.config.tiers
    assert budget_tier.budget is not None
    assert (str(budget_tier.budget.soft_usd), str(budget_tier.budget.hard_usd)) == ("80", "100")


def test_shared_tiers_share_one_pool_owned_by_each() -> None:
    translation = run(*BASE, tier("a"), tier("b", models=["code"]))
    assert [p.name for p in translation.plans] == ["tiergate-shared"]
    assert served(translation, "tiergate-shared") == {"a": ["chat", "code"], "b": ["code"]}
    assert [(o.name, o.controller) for o in translation.plans[0].owners] == [
        ("a", False),
        ("b", False),
    ]


def test_no_shared_tier_means_no_pool() -> None:
    translation = run(*BASE, tier("a", "Dedicated"))
    assert [p.name for p in translation.plans] == ["tiergate-a"]


def test_a_gateway_holds_only_the_routes_its_tiers_allow() -> None:
    translation = run(*BASE, tier("a", "Dedicated", models=["code"]), tier("b"))
    plan = translation.plan("tiergate-a")
    assert plan is not None
    assert [r.model for r in plan.config.routes] == ["code"]
    assert translation.route_gateways == {
        "chat": ("tiergate-shared",),
        "code": ("tiergate-a", "tiergate-shared"),
    }


def test_autoscaling_leaves_replicas_to_the_hpa() -> None:
    translation = run(
        *BASE,
        tier("a", "Dedicated", autoscaling={"minReplicas": 2, "maxReplicas": 5}),
        tier("b", "Dedicated", keys="a-keys-2"),
        secret("a-keys-2", k="key-c"),
    )
    scaled, fixed = translation.plans
    assert scaled.replicas is None
    assert scaled.autoscaling is not None
    assert scaled.autoscaling.max_replicas == 5
    assert fixed.replicas == 1


def test_route_alias_may_differ_from_its_name() -> None:
    translation = run(
        route("r1", model="deepseek-chat"), secret("a-keys", k="x"), tier("a", models=["r1"])
    )
    assert served(translation, "tiergate-shared") == {"a": ["deepseek-chat"]}


@pytest.mark.parametrize(
    ("documents", "kind", "name", "reason"),
    [
        ((tier("a", models=[]),), "tier", "a", "EmptyAllowlist"),
        ((tier("a", models=["nope"]),), "tier", "a", "UnknownRoute"),
        ((tier("a", keys="absent"),), "tier", "a", "MissingSecret"),
        ((tier("a", keys="empty"), secret("empty")), "tier", "a", "NoKeys"),
        ((tier("a", keys="blank"), secret("blank", k="")), "tier", "a", "InvalidKey"),
        ((tier("a", keys="nl"), secret("nl", k="key\n", g="tg-1")), "tier", "a", "InvalidKey"),
        (
            (tier("a", upstream={"credentialsSecretRef": {"name": "absent", "key": "k"}}),),
            "tier",
            "a",
            "MissingSecret",
        ),
        (
            (tier("a", upstream={"credentialsSecretRef": {"name": "a-keys", "key": "nope"}}),),
            "tier",
            "a",
            "MissingSecretKey",
        ),
        ((tier("a"), tier("b", keys="a-keys")), "tier", "b", "DuplicateKey"),
        ((tier("a"), tier("b", keys="a-keys")), "tier", "a", "DuplicateKey"),
        ((tier("a", isolation="Pooled"),), "tier", "a", "InvalidSpec"),
        ((tier("a"), route("x", secret="absent")), "route", "x", "MissingSecret"),
        ((tier("a"), route("x", secret="a-keys", key="nope")), "route", "x", "MissingSecretKey"),
        ((tier("a"), route("x", model="chat")), "route", "x", "DuplicateModel"),
        ((tier("a"), route("x", model="chat")), "route", "chat", "DuplicateModel"),
        (
            (tier("a"), {**route("x"), "spec": {"model": "x", "targets": []}}),
            "route",
            "x",
            "InvalidSpec",
        ),
    ],
)
def test_problems(documents: tuple[Body, ...], kind: str, name: str, reason: str) -> None:
    translation = run(*BASE, *documents)
    problems = translation.tier_problems if kind == "tier" else translation.route_problems
    assert problems[name].reason == reason
    others = {
        n: p.reason
        for n, p in {**translation.tier_problems, **translation.route_problems}.items()
        if n != name
    }
    assert set(others.values()) <= {reason}


def test_problem_messages_name_what_is_missing_but_never_a_key() -> None:
    translation = run(*BASE, tier("a"), tier("b", keys="a-keys"), route("x", secret="absent"))
    assert (
        translation.route_problems["x"].message
        == "Secret absent (credentials of target a) does not exist"
    )
    assert (
        translation.tier_problems["b"].message
        == "a client key of this tier is also a key of ApiKeyTier a"
    )
    assert "key-a" not in repr(translation)


def test_a_broken_tier_keeps_its_last_good_entry_and_breaks_nothing_else() -> None:
    good = run(*BASE, tier("a"), tier("b"))
    broken = run(*BASE, tier("a", keys="absent"), tier("b", models=["code"]), previous=good.configs)
    assert broken.tier_problems["a"].reason == "MissingSecret"
    assert served(broken, "tiergate-shared") == {"a": ["chat", "code"], "b": ["code"]}
    assert broken.tier_gateways == {"a": "tiergate-shared", "b": "tiergate-shared"}


def test_a_broken_tier_without_a_last_good_entry_is_left_out() -> None:
    translation = run(*BASE, tier("a", keys="absent"), tier("b"))
    assert served(translation, "tiergate-shared") == {"b": ["chat", "code"]}
    assert "a" not in translation.tier_gateways
    assert [o.name for o in translation.plans[0].owners] == ["a", "b"]


def test_a_broken_dedicated_tier_keeps_its_gateway_serving() -> None:
    good = run(*BASE, tier("a", "Dedicated", replicas=2))
    broken = run(*BASE, tier("a", "Dedicated", replicas=3, models=[]), previous=good.configs)
    (plan,) = broken.plans
    assert plan.config == good.configs["tiergate-a"]
    assert plan.replicas == 3


def test_a_broken_route_keeps_its_last_good_entry() -> None:
    good = run(*BASE, tier("a"))
    broken_route = route("chat", secret="absent")
    broken = run(broken_route, *BASE[1:], tier("a"), previous=good.configs)
    assert broken.route_problems["chat"].reason == "MissingSecret"
    assert served(broken, "tiergate-shared") == {"a": ["chat", "code"]}
    assert broken.configs["tiergate-shared"].routes == good.configs["tiergate-shared"].routes
    assert broken.route_gateways["chat"] == ("tiergate-shared",)


def test_a_broken_route_without_a_last_good_entry_is_left_out() -> None:
    translation = run(route("chat", secret="absent"), *BASE[1:], tier("a"))
    assert served(translation, "tiergate-shared") == {"a": ["code"]}
    assert "chat" not in translation.route_gateways


def test_a_carried_over_tier_loses_keys_a_valid_tier_now_holds() -> None:
    good = run(*BASE, tier("a"))
    moved = run(*BASE, tier("a", models=[]), tier("b", keys="a-keys"), previous=good.configs)
    assert moved.tier_problems["a"].reason == "EmptyAllowlist"
    assert served(moved, "tiergate-shared") == {"b": ["chat", "code"]}


def test_objects_being_deleted_are_ignored() -> None:
    deleting = tier("a", "Dedicated")
    deleting["metadata"]["deletionTimestamp"] = "2025-01-01T00:00:00Z"
    assert run(*BASE, deleting).plans == ()


def test_same_inputs_in_any_order_give_identical_bytes() -> None:
    documents = [*BASE, tier("a"), tier("b", "Dedicated", models=["code", "chat"]), route("zeta")]
    expected = {p.name: canonical_json(p.config) for p in run(*documents).plans}
    for seed in range(5):
        shuffled = documents[:]
        random.Random(seed).shuffle(shuffled)
        assert {p.name: canonical_json(p.config) for p in run(*shuffled).plans} == expected


def test_configs_hold_key_digests_only() -> None:
    translation = run(*BASE, tier("a"))
    config = canonical_json(translation.plans[0].config).decode()
    assert "key-a" not in config
    assert hash_client_key("key-a") in config


def test_a_tier_with_more_keys_than_a_config_holds_is_reported_not_crashed() -> None:
    limit = MAX_KEYS_PER_TIER
    many = secret("a-keys", **{f"k{i}": f"key-{i}" for i in range(limit + 1)})
    good = run(*BASE, tier("a"), tier("b"))
    broken = run(many, *BASE[:2], BASE[3], tier("a"), tier("b"), previous=good.configs)
    problem = broken.tier_problems["a"]
    assert problem.reason == "TooManyKeys"
    assert f"{limit + 1} client keys" in problem.message
    assert f"at most {limit}" in problem.message
    # The last good entry keeps serving; the other tier is untouched.
    assert served(broken, "tiergate-shared") == {"a": ["chat", "code"], "b": ["chat", "code"]}
    (kept,) = [t for t in broken.plan("tiergate-shared").config.tiers if t.name == "a"]  # type: ignore[union-attr]
    assert kept.key_sha256 == (hash_client_key("key-a"),)
    # At the limit it is served.
    at_limit = secret("a-keys", **{f"k{i}": f"key-{i}" for i in range(limit)})
    fine = run(at_limit, *BASE[:2], BASE[3], tier("a"), tier("b"))
    assert "a" not in fine.tier_problems
    (served_a,) = [t for t in fine.plan("tiergate-shared").config.tiers if t.name == "a"]  # type: ignore[union-attr]
    assert len(served_a.key_sha256) == limit


def test_a_spec_the_gateway_contract_refuses_is_a_tier_problem(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """Safety net: whatever the checks miss and the contract refuses never fails the pass."""
    import tiergate_operator.translate as module
    from tiergate_contract import Limits

    good = run(*BASE, tier("a"), tier("b"))
    original = module.contract_tier

    def refusing(name: str, *args: Any) -> Any:
        if name == "a":
            Limits.model_validate({"requests_per_minute": 0})  # raises ValidationError
        return original(name, *args)

    monkeypatch.setattr(module, "contract_tier", refusing)
    broken = run(*BASE, tier("a"), tier("b", models=["code"]), previous=good.configs)
    assert broken.tier_problems["a"].reason == "InvalidSpec"
    assert "requests_per_minute" in broken.tier_problems["a"].message
    assert served(broken, "tiergate-shared") == {"a": ["chat", "code"], "b": ["code"]}


# Key hygiene: a Secret value no client could send as its key (blank, whitespace, a trailing
# newline as `kubectl create secret --from-file` leaves it) is never a key.
NOT_KEYS = {
    "blank": ("", "is empty"),
    "spaces": ("   ", "is only whitespace"),
    "from-file": ("tg-from-file-0001\n", "ends with a newline"),
    "crlf": ("tg-from-windows-0001\r\n", "ends with a newline"),
    "padded": (" tg-padded-0001", "starts or ends with whitespace"),
}


def tier_keys(translation: Translation, name: str) -> tuple[str, ...] | None:
    plan = translation.plan("tiergate-shared")
    assert plan is not None
    return next((t.key_sha256 for t in plan.config.tiers if t.name == name), None)


@pytest.mark.parametrize("data_key", sorted(NOT_KEYS))
def test_a_tier_whose_only_key_is_no_key_is_not_served(data_key: str) -> None:
    value, why = NOT_KEYS[data_key]
    translation = run(*BASE, tier("a", keys="bad"), secret("bad", **{data_key: value}), tier("b"))
    problem = translation.tier_problems["a"]
    assert problem.reason == "InvalidKey"
    assert f"Secret bad data key {data_key} {why}" in problem.message
    assert problem.message.endswith("the tier has no usable client key")
    assert tier_keys(translation, "a") is None
    assert "a" not in translation.tier_gateways
    assert tier_keys(translation, "b") == (hash_client_key("key-b"),)
    assert "b" not in translation.tier_problems


def test_bad_values_are_left_out_and_the_good_keys_keep_working() -> None:
    bad = {key: value for key, (value, _) in NOT_KEYS.items()}
    translation = run(
        *BASE,
        tier("a", keys="mixed", models=["code"]),
        secret("mixed", good="tg-good-0001", **bad),
        tier("b"),
    )
    problem = translation.tier_problems["a"]
    assert problem.reason == "InvalidKey"
    for data_key, (_, why) in NOT_KEYS.items():
        assert f"Secret mixed data key {data_key} {why}" in problem.message
    assert "--from-literal" in problem.message  # the hint for the trailing newline
    assert problem.message.endswith("left out of the config; the tier's other key keeps working")
    # Served as specified, with its good key only; the other tier is untouched.
    assert served(translation, "tiergate-shared") == {"a": ["code"], "b": ["chat", "code"]}
    assert tier_keys(translation, "a") == (hash_client_key("tg-good-0001"),)
    assert translation.tier_gateways["a"] == "tiergate-shared"
    assert "b" not in translation.tier_problems
    # No value (nor a digest of a bad one) anywhere.
    text = repr(translation) + canonical_json(translation.configs["tiergate-shared"]).decode()
    for value, _ in NOT_KEYS.values():
        if value.strip():
            assert value.strip() not in text
            assert hash_client_key(value) not in text
    assert "tg-good-0001" not in text


def test_several_good_keys_are_counted_and_a_long_list_of_bad_ones_is_cut() -> None:
    values = {f"bad{i}": "" for i in range(8)} | {"k1": "tg-1", "k2": "tg-2"}
    translation = run(*BASE, tier("a", keys="many"), secret("many", **values))
    message = translation.tier_problems["a"].message
    assert message.count("is empty") == 5
    assert "and 3 more" in message
    assert message.endswith("the tier's 2 other keys keep working")
    assert "--from-literal" not in message
    assert len(tier_keys(translation, "a") or ()) == 2


def test_a_tier_whose_keys_all_turn_bad_keeps_its_last_good_entry() -> None:
    good = run(*BASE, tier("a"), tier("b"))
    broken = run(
        *BASE[:2], secret("a-keys", k="key-a\n"), BASE[3], tier("a"), tier("b"),
        previous=good.configs,
    )  # fmt: skip
    assert broken.tier_problems["a"].reason == "InvalidKey"
    assert tier_keys(broken, "a") == (hash_client_key("key-a"),)  # like any other problem


def test_a_key_shared_with_another_tier_outweighs_a_bad_value() -> None:
    translation = run(
        *BASE, tier("a", keys="mixed"), secret("mixed", k="key-b", blank=""), tier("b")
    )
    assert translation.tier_problems["a"].reason == "DuplicateKey"
    assert translation.tier_problems["b"].reason == "DuplicateKey"
    assert tier_keys(translation, "a") is None


def test_upstream_credentials_are_no_client_keys_and_get_no_key_check() -> None:
    credential = secret("upstream", token="sk-upstream-from-file\n")
    translation = run(
        *BASE,
        credential,
        tier("a", upstream={"credentialsSecretRef": {"name": "upstream", "key": "token"}}),
        route("x", secret="upstream", key="token"),
    )
    assert (translation.tier_problems, translation.route_problems) == ({}, {})
