"""Render invariants beyond the golden files: no restart on config change, no secrets, settings."""

from __future__ import annotations

import subprocess
import sys
from typing import Any

import pytest

from tests.support.kube import EXAMPLES
from tests.support.manifests import store_of, translate_namespace
from tiergate_operator.models import SecretKeyRef
from tiergate_operator.render import gateway_container_args, render
from tiergate_operator.settings import OperatorSettings, SettingsError, load_operator_settings
from tiergate_operator.translate import GatewayPlan


def example_plans(**route_changes: Any) -> dict[str, GatewayPlan]:
    store = store_of(EXAMPLES)
    for target in store.namespace("demo").routes["deepseek-chat"]["spec"]["targets"]:
        target.update(route_changes)
    translation = translate_namespace(store)
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


def test_a_shared_pool_of_several_replicas_is_spread_and_has_a_disruption_budget() -> None:
    settings = OperatorSettings(shared_replicas=4, redis_url="redis://127.0.0.1:6379/0")
    plans = example_plans()
    manifests = by_kind(render(plans["tiergate-shared"], settings))
    assert sorted(manifests) == ["ConfigMap", "Deployment", "PodDisruptionBudget", "Service"]
    assert manifests["Deployment"]["spec"]["replicas"] == 4
    selector = manifests["Deployment"]["spec"]["selector"]
    assert manifests["PodDisruptionBudget"]["spec"] == {"maxUnavailable": 1, "selector": selector}
    pod = manifests["Deployment"]["spec"]["template"]["spec"]
    (anti_affinity,) = pod["affinity"]["podAntiAffinity"][
        "preferredDuringSchedulingIgnoredDuringExecution"
    ]
    assert anti_affinity["podAffinityTerm"]["labelSelector"] == selector
    nodes, zones = pod["topologySpreadConstraints"]
    for constraint, key in (
        (nodes, "kubernetes.io/hostname"),
        (zones, "topology.kubernetes.io/zone"),
    ):
        assert constraint == {
            "maxSkew": 1,
            "topologyKey": key,
            "whenUnsatisfiable": "ScheduleAnyway",  # one node or zone still runs every replica
            "labelSelector": selector,
        }
    # Spread as a Dedicated gateway is.
    dedicated = by_kind(render(plans["tiergate-enterprise-acme"], settings))["Deployment"]
    dedicated_pod = dedicated["spec"]["template"]["spec"]
    assert [c["topologyKey"] for c in dedicated_pod["topologySpreadConstraints"]] == [
        nodes["topologyKey"],
        zones["topologyKey"],
    ]
    assert "podAntiAffinity" in dedicated_pod["affinity"]
    for manifest in manifests.values():
        assert {"controller", "blockOwnerDeletion"}.isdisjoint(
            manifest["metadata"]["ownerReferences"][0]
        )


def test_a_shared_pool_of_one_replica_has_no_disruption_budget_nor_spreading() -> None:
    settings = OperatorSettings(shared_replicas=1)
    manifests = by_kind(render(example_plans()["tiergate-shared"], settings))
    assert sorted(manifests) == ["ConfigMap", "Deployment", "Service"]
    pod = manifests["Deployment"]["spec"]["template"]["spec"]
    assert {"affinity", "topologySpreadConstraints"}.isdisjoint(pod)


def test_gateway_container_args_point_at_the_configmap_and_redis() -> None:
    plan = example_plans()["tiergate-enterprise-acme"]
    _, env = gateway_container_args(plan, OperatorSettings(redis_url="redis://r:6379/0"))
    assert {e["name"]: e["value"] for e in env} == {
        "TIERGATE_GATEWAY_CONFIGMAP": "demo/tiergate-enterprise-acme",
        "TIERGATE_GATEWAY_HOST": "0.0.0.0",
        "TIERGATE_GATEWAY_PORT": "8080",
        "TIERGATE_GATEWAY_CREDENTIALS_DIR": "/var/run/tiergate/credentials",
        "TIERGATE_GATEWAY_REDIS_URL": "redis://r:6379/0",
        "TIERGATE_GATEWAY_DRAIN_DELAY_SECONDS": "5",
        "TIERGATE_GATEWAY_GRACE_SECONDS": "25",
        "TIERGATE_GATEWAY_LATENCY_BUCKETS": "0.5",  # enterprise-acme's p99 under 500 ms
    }


def test_the_redis_url_secret_is_referenced_never_copied() -> None:
    settings = load_operator_settings({"TIERGATE_REDIS_SECRET_NAME": "tiergate-redis"})
    assert settings.redis_secret == SecretKeyRef(name="tiergate-redis", key="redis-url")
    plan = example_plans()["tiergate-shared"]
    _, env = gateway_container_args(plan, settings)
    redis = next(e for e in env if e["name"] == "TIERGATE_GATEWAY_REDIS_URL")
    assert redis == {
        "name": "TIERGATE_GATEWAY_REDIS_URL",
        "valueFrom": {"secretKeyRef": {"name": "tiergate-redis", "key": "redis-url"}},
    }
    assert [e["name"] for e in env] == sorted(e["name"] for e in env)
    deployment = by_kind(render(plan, settings))["Deployment"]
    assert deployment["spec"]["template"]["spec"]["containers"][0]["env"] == env
    # The key is configurable; without Redis there is no variable at all.
    keyed = load_operator_settings(
        {"TIERGATE_REDIS_SECRET_NAME": "r", "TIERGATE_REDIS_SECRET_KEY": "url.txt"}
    )
    assert keyed.redis_secret == SecretKeyRef(name="r", key="url.txt")
    _, plain = gateway_container_args(plan, OperatorSettings())
    assert "TIERGATE_GATEWAY_REDIS_URL" not in {e["name"] for e in plain}


@pytest.mark.parametrize(
    "url",
    [
        "redis://:hunter2@redis:6379/0",
        "rediss://default:hunter2@redis:6380",
        "redis://redis:6379/0?password=hunter2",
        "redis://redis:6379/0?db=1&Password=hunter2",
    ],
)
def test_a_redis_url_with_a_password_is_refused_without_echoing_it(url: str) -> None:
    with pytest.raises(SettingsError, match="TIERGATE_REDIS_URL carries a password") as refused:
        load_operator_settings({"TIERGATE_REDIS_URL": url})
    assert "hunter2" not in str(refused.value)
    assert "TIERGATE_REDIS_SECRET_NAME" in str(refused.value)


@pytest.mark.parametrize(
    "url", ["redis://redis:6379/0", "rediss://redis.svc:6380", "redis://user@redis:6379"]
)
def test_a_redis_url_without_a_password_may_stay_plain(url: str) -> None:
    settings = load_operator_settings({"TIERGATE_REDIS_URL": url})
    _, env = gateway_container_args(example_plans()["tiergate-shared"], settings)
    assert {"name": "TIERGATE_GATEWAY_REDIS_URL", "value": url} in env


@pytest.mark.parametrize(
    ("env", "message"),
    [
        ({"TIERGATE_REDIS_URL": "redis://r:6379", "TIERGATE_REDIS_SECRET_NAME": "r"}, "not both"),
        ({"TIERGATE_REDIS_SECRET_KEY": "url"}, "TIERGATE_REDIS_SECRET_NAME is not"),
        ({"TIERGATE_REDIS_SECRET_NAME": "Not_A_Name"}, "not a valid Secret name"),
        (
            {"TIERGATE_REDIS_SECRET_NAME": "r", "TIERGATE_REDIS_SECRET_KEY": "a/b"},
            "not a valid Secret key",
        ),
    ],
)
def test_redis_settings_that_cannot_work_are_refused(env: dict[str, str], message: str) -> None:
    with pytest.raises(SettingsError, match=message):
        load_operator_settings(env)


def test_the_operator_refuses_to_start_with_a_password_in_its_settings() -> None:
    result = subprocess.run(
        [sys.executable, "-m", "tiergate_operator"],
        capture_output=True,
        text=True,
        timeout=60,
        env={
            "PATH": "/usr/bin:/bin",
            "TIERGATE_REDIS_URL": "redis://:hunter2@redis:6379/0",
            "KUBECONFIG": "/nonexistent",
        },
    )
    assert result.returncode != 0
    assert "refusing to start: TIERGATE_REDIS_URL carries a password" in result.stderr
    assert "hunter2" not in result.stdout + result.stderr
    assert "Traceback" not in result.stderr


def test_settings_from_the_environment() -> None:
    settings = load_operator_settings(
        {
            "TIERGATE_GATEWAY_IMAGE": "img:1",
            "TIERGATE_SHARED_REPLICAS": "5",
            "TIERGATE_SHARED_CPU_LIMIT": "2",
            "TIERGATE_GATEWAY_PULL_POLICY": "Always",
        }
    )
    assert (settings.gateway_image, settings.shared_replicas, settings.image_pull_policy) == (
        "img:1",
        5,
        "Always",
    )
    assert settings.shared_resources.limits is not None
    assert settings.shared_resources.limits.cpu == "2"
    assert load_operator_settings({}) == OperatorSettings()


@pytest.mark.parametrize(
    "env",
    [
        {"TIERGATE_SHARED_REPLICAS": "two"},
        {"TIERGATE_GATEWAY_PULL_POLICY": "Sometimes"},
        {"TIERGATE_SHARED_REPLICAS": "0"},
        {"TIERGATE_GATEWAY_EPHEMERAL_STORAGE_LIMIT": "lots"},
    ],
)
def test_bad_settings_are_refused(env: dict[str, str]) -> None:
    with pytest.raises(SettingsError):
        load_operator_settings(env)


def test_every_gateway_container_requests_and_limits_ephemeral_storage() -> None:
    """kube-score's container-ephemeral-storage-request-and-limit, for tier resources too."""
    plans = example_plans()
    for settings, expected in [
        (OperatorSettings(), ("64Mi", "256Mi")),
        (
            load_operator_settings(
                {
                    "TIERGATE_GATEWAY_EPHEMERAL_STORAGE_REQUEST": "100Mi",
                    "TIERGATE_GATEWAY_EPHEMERAL_STORAGE_LIMIT": "1Gi",
                }
            ),
            ("100Mi", "1Gi"),
        ),
    ]:
        for plan in plans.values():
            pod = by_kind(render(plan, settings))["Deployment"]["spec"]["template"]["spec"]
            for container in pod["containers"]:
                resources = container["resources"]
                assert (
                    resources["requests"]["ephemeral-storage"],
                    resources["limits"]["ephemeral-storage"],
                ) == expected
                assert resources["limits"]["memory"]  # cpu and memory are still there
