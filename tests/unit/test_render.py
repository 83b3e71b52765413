"""Render invariants beyond the golden files: no restart on config change, no secrets, settings."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest
from namespace_inputs import load

from tiergate_operator.render import gateway_container_args, render
from tiergate_operator.settings import OperatorSettings, SettingsError, load_operator_settings
from tiergate_operator.translate import GatewayPlan, translate

EXAMPLES = Path(__file__).parents[2] / "crds" / "examples"


def example_plans(**route_changes: Any) -> dict[str, GatewayPlan]:
    inputs = load(EXAMPLES)
    for target in inputs.routes[0]["spec"]["targets"]:
        target.update(route_changes)
    translation = translate("demo", inputs.routes, inputs.tiers, inputs.secrets, {})
    return {plan.name: plan for plan in translation.plans}


def by_kind(manifests: list[dict[str, Any]]) -> dict[str, dict[str, Any]]:
    return {m["kind"]: m for m in manifests}


def test_a_config_change_leaves_the_pod_template_alone() -> None:
    settings = OperatorSettings()
    before, after = example_plans()["tiergate-shared"], example_plans(weight=7)["tiergate-shared"]
    assert before.config != after.config
    old, new = by_kind(render(before, settings)), by_kind(render(after, settings))
    assert old["ConfigMap"]["data"] != new["ConfigMap"]["data"]
    assert old["Deployment"] == new["Deployment"]


def test_no_secret_value_is_rendered() -> None:
    text = repr([render(plan, OperatorSettings()) for plan in example_plans().values()])
    assert "fake" not in text


def test_the_shared_pool_uses_the_settings_and_no_disruption_budget() -> None:
    settings = OperatorSettings(shared_replicas=4, redis_url="redis://127.0.0.1:6379/0")
    manifests = by_kind(render(example_plans()["tiergate-shared"], settings))
    assert sorted(manifests) == ["ConfigMap", "Deployment", "Service"]
    assert manifests["Deployment"]["spec"]["replicas"] == 4
    assert "affinity" not in manifests["Deployment"]["spec"]["template"]["spec"]
    assert {"controller", "blockOwnerDeletion"}.isdisjoint(manifests["Service"]["metadata"]["ownerReferences"][0])


def test_gateway_container_args_point_at_the_configmap_and_redis() -> None:
    plan = example_plans()["tiergate-enterprise-acme"]
    _, env = gateway_container_args(plan, OperatorSettings(redis_url="redis://r:6379/0"))
    assert {e["name"]: e["value"] for e in env} == {
        "TIERGATE_GATEWAY_CONFIGMAP": "demo/tiergate-enterprise-acme",
        "TIERGATE_GATEWAY_HOST": "0.0.0.0",
        "TIERGATE_GATEWAY_PORT": "8080",
        "TIERGATE_GATEWAY_CREDENTIALS_DIR": "/var/run/tiergate/credentials",
        "TIERGATE_GATEWAY_REDIS_URL": "redis://r:6379/0",
    }


def test_settings_from_the_environment() -> None:
    settings = load_operator_settings({
        "TIERGATE_GATEWAY_IMAGE": "img:1", "TIERGATE_SHARED_REPLICAS": "5",
        "TIERGATE_SHARED_CPU_LIMIT": "2", "TIERGATE_GATEWAY_PULL_POLICY": "Always",
    })
    assert (settings.gateway_image, settings.shared_replicas, settings.image_pull_policy) == ("img:1", 5, "Always")
    assert settings.shared_resources.limits is not None
    assert settings.shared_resources.limits.cpu == "2"
    assert load_operator_settings({}) == OperatorSettings()


@pytest.mark.parametrize("env", [{"TIERGATE_SHARED_REPLICAS": "two"}, {"TIERGATE_GATEWAY_PULL_POLICY": "Sometimes"},
                                 {"TIERGATE_SHARED_REPLICAS": "0"}])
def test_bad_settings_are_refused(env: dict[str, str]) -> None:
    with pytest.raises(SettingsError):
        load_operator_settings(env)
