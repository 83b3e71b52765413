"""decide(): the examples as watched state -> what to apply, delete and report (pure)."""

from __future__ import annotations

import base64
import copy
import re
from typing import Any

import pytest

from tests.support.kube import EXAMPLES
from tests.support.manifests import NOW, store_of
from tiergate_contract import hash_client_key
from tiergate_operator import render
from tiergate_operator.models import SecretKeyRef
from tiergate_operator.reconcile import Decision, StatusChange, decide
from tiergate_operator.registry import API_KEY_TIER
from tiergate_operator.settings import OperatorSettings
from tiergate_operator.store import Store

NS = "demo"


def example_store() -> Store:
    return store_of(EXAMPLES, NS)


def settle(store: Store, applied: list[dict[str, Any]]) -> None:
    """Pretend the API server stored what was applied, and kwok made every replica ready."""
    for manifest in applied:
        live = copy.deepcopy(manifest)
        live["metadata"] |= {"uid": "x", "resourceVersion": "1", "generation": 1}
        if live["kind"] == "Deployment":
            replicas = live["spec"].get("replicas", 1)
            live["status"] = {
                "observedGeneration": 1,
                "replicas": replicas,
                "readyReplicas": replicas,
                "updatedReplicas": replicas,
            }
        store.put_child(live)


def test_examples_render_every_gateway_object() -> None:
    decision = decide(NS, example_store().namespace(NS), OperatorSettings(), NOW)
    applied = sorted(f"{m['kind']}/{m['metadata']['name']}" for m in decision.apply)
    assert applied == [
        "ConfigMap/tiergate-enterprise-acme",
        "ConfigMap/tiergate-shared",
        "Deployment/tiergate-enterprise-acme",
        "Deployment/tiergate-shared",
        "PodDisruptionBudget/tiergate-enterprise-acme",
        "PodDisruptionBudget/tiergate-shared",
        "Role/tiergate-gateway",
        "RoleBinding/tiergate-gateway",
        "Service/tiergate-enterprise-acme",
        "Service/tiergate-shared",
        "ServiceAccount/tiergate-gateway",
    ]
    assert decision.delete == ()
    ready = {
        change.ref.name: next(c for c in change.status["conditions"] if c["type"] == "Ready")
        for change in decision.statuses
    }
    # Statuses are written after the configs land, so the route is served by then; the
    # tiers wait for their new gateways' replicas.
    assert {name: c["status"] for name, c in ready.items()} == {
        "deepseek-chat": "True",
        "enterprise-acme": "False",
        "startup": "False",
    }


@pytest.mark.parametrize("settings", [OperatorSettings(), OperatorSettings(prefix="acme.example")])
def test_once_applied_the_same_inputs_decide_nothing(settings: OperatorSettings) -> None:
    """Also under another label prefix: the operator reads back the keys it wrote."""
    store = example_store()
    first = decide(NS, store.namespace(NS), settings, NOW)
    settle(store, list(first.apply))
    for change in first.statuses:
        bucket = (
            store.namespace(NS).routes
            if change.ref.kind == "ModelRoute"
            else store.namespace(NS).tiers
        )
        bucket[change.ref.name]["status"] = change.status
    second = decide(NS, store.namespace(NS), settings, NOW)
    assert second.apply == () and second.delete == ()
    # The tiers are Ready once their replicas are; the route's status needs no rewrite.
    readiness = {
        c.ref.name: next(x for x in c.status["conditions"] if x["type"] == "Ready")["status"]
        for c in second.statuses
    }
    assert readiness == {"enterprise-acme": "True", "startup": "True"}
    for change in second.statuses:
        bucket = (
            store.namespace(NS).routes
            if change.ref.kind == "ModelRoute"
            else store.namespace(NS).tiers
        )
        bucket[change.ref.name]["status"] = change.status
    assert decide(NS, store.namespace(NS), settings, NOW).is_noop


def test_removing_the_dedicated_tier_deletes_only_its_gateway() -> None:
    store = example_store()
    settle(store, list(decide(NS, store.namespace(NS), OperatorSettings(), NOW).apply))
    store.remove_tier(NS, "enterprise-acme")
    decision = decide(NS, store.namespace(NS), OperatorSettings(), NOW)
    assert sorted(f"{d.ref.kind}/{d.ref.name}" for d in decision.delete) == [
        "ConfigMap/tiergate-enterprise-acme",
        "Deployment/tiergate-enterprise-acme",
        "PodDisruptionBudget/tiergate-enterprise-acme",
        "Service/tiergate-enterprise-acme",
    ]


@pytest.mark.parametrize("settings", [OperatorSettings(), OperatorSettings(prefix="acme.example")])
def test_a_tier_with_a_missing_secret_keeps_its_gateway(settings: OperatorSettings) -> None:
    store = example_store()
    settle(store, list(decide(NS, store.namespace(NS), settings, NOW).apply))
    store.remove_secret(NS, "enterprise-acme-keys")
    decision = decide(NS, store.namespace(NS), settings, NOW)
    assert decision.delete == ()
    assert decision.apply == ()  # the last good config already holds the tier
    acme = next(c for c in decision.statuses if c.ref.name == "enterprise-acme")
    assert acme.warning is not None and acme.warning[0] == "MissingSecret"
    kstatus = {c["type"]: (c["status"], c["reason"]) for c in acme.status["conditions"]}
    assert kstatus["Stalled"] == ("True", "MissingSecret")
    assert kstatus["Reconciling"][0] == "False"


def test_kstatus_conditions_follow_progress() -> None:
    store = example_store()
    first = decide(NS, store.namespace(NS), OperatorSettings(), NOW)
    tier = next(c for c in first.statuses if c.ref.name == "enterprise-acme")
    conditions = {c["type"]: c["status"] for c in tier.status["conditions"]}
    # A new gateway has no ready replica yet: work is under way, nothing is wrong.
    assert conditions == {
        "Accepted": "True",
        "Ready": "False",
        "Reconciling": "True",
        "Stalled": "False",
    }


def _conditions(change: StatusChange) -> dict[str, tuple[str, str, str]]:
    return {
        c["type"]: (c["status"], c["reason"], c["message"]) for c in change.status["conditions"]
    }


def _write_statuses(store: Store, decision: Decision) -> None:
    for change in decision.statuses:
        bucket = (
            store.namespace(NS).routes
            if change.ref.kind == "ModelRoute"
            else store.namespace(NS).tiers
        )
        bucket[change.ref.name]["status"] = change.status


def _add_big_shared_tiers(store: Store, count: int, keys: int = 9000) -> None:
    """Shared tiers with many client keys: their digests barely compress (~38 bytes each)."""
    state = store.namespace(NS)
    for t in range(count):
        name = f"big-{t}"
        state.secrets[name] = {f"k{i:05d}": hash_client_key(f"{name}-{i}") for i in range(keys)}
        state.tiers[name] = {
            **API_KEY_TIER.type_meta(),
            "metadata": {"name": name, "namespace": NS, "uid": f"uid-{name}", "generation": 1},
            "spec": {"isolation": "Shared", "keys": [{"secretRef": {"name": name}}]},
        }


def test_a_config_too_large_for_a_configmap_is_reported_not_applied_and_recovers() -> None:
    store = example_store()
    first = decide(NS, store.namespace(NS), OperatorSettings(), NOW)
    settle(store, list(first.apply))
    _write_statuses(store, first)
    # 36,000 keys: digest and name each (key_names repeats the digest), about 2.5 MB gzipped.
    _add_big_shared_tiers(store, 4)

    decision = decide(NS, store.namespace(NS), OperatorSettings(), NOW)
    # Nothing of the shared gateway is applied (its live objects keep serving), nothing deleted.
    assert not [m for m in decision.apply if m["metadata"]["name"] == "tiergate-shared"]
    assert decision.delete == ()
    changes = {c.ref.name: c for c in decision.statuses}
    affected = {"startup", "big-0", "big-1", "big-2", "big-3", "deepseek-chat"}
    assert affected <= changes.keys()
    for name in affected:
        conditions = _conditions(changes[name])
        status, reason, message = conditions["Ready"]
        assert (status, reason) == ("False", "ConfigTooLarge"), name
        assert "tiergate-shared" in message and "1,048,576 bytes" in message
        size = int(re.search(r"take ([\d,]+) bytes", message).group(1).replace(",", ""))  # type: ignore[union-attr]
        assert size > render.CONFIGMAP_LIMIT_BYTES
        assert conditions["Stalled"][:2] == (
            "True",
            "ConfigTooLarge",
        )  # not retried: needs a change
        assert changes[name].warning is not None and changes[name].warning[0] == "ConfigTooLarge"
    # The dedicated gateway is not affected.
    assert (
        "enterprise-acme" not in changes
        or _conditions(changes["enterprise-acme"])["Ready"][0] == "True"
    )

    # Once those writes landed, deciding again changes nothing and posts no second event.
    settle(store, list(decision.apply))
    _write_statuses(store, decision)
    assert decide(NS, store.namespace(NS), OperatorSettings(), NOW).is_noop

    # Shrinking the input lets the config through again and clears the condition.
    for name in ("big-1", "big-2", "big-3"):
        store.remove_tier(NS, name)
    recovered = decide(NS, store.namespace(NS), OperatorSettings(), NOW)
    configmap = next(m for m in recovered.apply if m["kind"] == "ConfigMap")
    assert configmap["metadata"]["name"] == "tiergate-shared"
    assert render.configmap_bytes(configmap) <= render.CONFIGMAP_LIMIT_BYTES
    reasons = {c.ref.name: _conditions(c)["Ready"][1] for c in recovered.statuses}
    assert reasons["big-0"] != "ConfigTooLarge" and reasons["deepseek-chat"] == "Served"
    assert all(c.warning is None for c in recovered.statuses)


def test_a_new_gateway_too_large_for_a_configmap_creates_nothing() -> None:
    store = example_store()
    _add_big_shared_tiers(store, 4)
    decision = decide(NS, store.namespace(NS), OperatorSettings(), NOW)
    assert not [m for m in decision.apply if m["metadata"]["name"] == "tiergate-shared"]
    assert "ConfigMap/tiergate-enterprise-acme" in {
        f"{m['kind']}/{m['metadata']['name']}" for m in decision.apply
    }
    startup = next(c for c in decision.statuses if c.ref.name == "startup")
    assert _conditions(startup)["Ready"][:2] == ("False", "ConfigTooLarge")


REDIS = OperatorSettings(redis_secret=SecretKeyRef(name="tiergate-redis", key="redis-url"))


def test_a_missing_redis_secret_is_reported_on_every_tier_and_route_of_the_namespace() -> None:
    store = example_store()
    decision = decide(NS, store.namespace(NS), REDIS, NOW)
    # The gateways are still rendered (their pods wait for the Secret); the URL is a reference.
    deployments = [m for m in decision.apply if m["kind"] == "Deployment"]
    assert len(deployments) == 2
    for deployment in deployments:
        env = deployment["spec"]["template"]["spec"]["containers"][0]["env"]
        assert {
            "name": "TIERGATE_GATEWAY_REDIS_URL",
            "valueFrom": {"secretKeyRef": {"name": "tiergate-redis", "key": "redis-url"}},
        } in env
    changes = {c.ref.name: c for c in decision.statuses}
    assert changes.keys() == {"deepseek-chat", "startup", "enterprise-acme"}
    for change in changes.values():
        status, reason, message = _conditions(change)["Ready"]
        assert (status, reason) == ("False", "MissingSecret")
        assert "Secret tiergate-redis" in message and "Redis URL" in message
        assert change.warning is not None and change.warning[0] == "MissingSecret"

    # A Secret without the key is named as such; with the key, nothing is wrong.
    store.put_secret(NS, "tiergate-redis", {"other": base64.b64encode(b"x").decode()})
    reasons = {
        c.ref.name: _conditions(c)["Ready"][1]
        for c in decide(NS, store.namespace(NS), REDIS, NOW).statuses
    }
    assert set(reasons.values()) == {"MissingSecretKey"}
    store.put_secret(
        NS, "tiergate-redis", {"redis-url": base64.b64encode(b"redis://:pw@r:6379").decode()}
    )
    fixed = decide(NS, store.namespace(NS), REDIS, NOW)
    assert all(_conditions(c)["Accepted"][0] == "True" for c in fixed.statuses)
    assert "pw@" not in repr(fixed)


# --- SLO rules: only while the cluster serves PrometheusRules ------------------------------


def test_a_tier_with_objectives_gets_its_rule_only_where_the_kind_is_served() -> None:
    state = example_store().namespace(NS)
    without = decide(NS, state, OperatorSettings(), NOW)
    assert "PrometheusRule" not in {m["kind"] for m in without.apply}
    served = decide(NS, state, OperatorSettings(), NOW, prometheus_rules=True)
    rules = [m["metadata"]["name"] for m in served.apply if m["kind"] == "PrometheusRule"]
    assert rules == ["tiergate-slo-enterprise-acme"]


def test_an_applied_rule_is_not_written_again_and_goes_when_the_objectives_go() -> None:
    store = example_store()
    settle(
        store,
        list(decide(NS, store.namespace(NS), OperatorSettings(), NOW, prometheus_rules=True).apply),
    )
    again = decide(NS, store.namespace(NS), OperatorSettings(), NOW, prometheus_rules=True)
    assert again.apply == () and again.delete == ()
    del store.namespace(NS).tiers["enterprise-acme"]["spec"]["slo"]
    removed = decide(NS, store.namespace(NS), OperatorSettings(), NOW, prometheus_rules=True)
    assert [f"{d.ref.kind}/{d.ref.name}" for d in removed.delete] == [
        "PrometheusRule/tiergate-slo-enterprise-acme"
    ]


def test_when_the_crd_goes_the_store_forgets_its_rules_and_rebuilds_the_namespaces() -> None:
    store = example_store()
    assert store.set_prometheus_rules(True)
    assert not store.set_prometheus_rules(True)  # no change, nothing to do
    settle(
        store,
        list(decide(NS, store.namespace(NS), OperatorSettings(), NOW, prometheus_rules=True).apply),
    )
    store.take_dirty()
    assert store.set_prometheus_rules(False)
    assert store.take_dirty() == [NS]
    assert "PrometheusRule" not in {kind for kind, _ in store.namespace(NS).children}
    # Nothing left to delete: the API server removed the rules with their CRD.
    assert decide(NS, store.namespace(NS), OperatorSettings(), NOW).delete == ()


def test_a_rule_name_held_by_someone_else_holds_back_only_the_rule() -> None:
    store = example_store()
    store.put_child(
        {
            "apiVersion": "monitoring.coreos.com/v1",
            "kind": "PrometheusRule",
            "metadata": {"name": "tiergate-slo-enterprise-acme", "namespace": NS, "uid": "u"},
            "spec": {"groups": []},
        }
    )
    decision = decide(NS, store.namespace(NS), OperatorSettings(), NOW, prometheus_rules=True)
    written = {f"{m['kind']}/{m['metadata']['name']}" for m in decision.apply}
    assert "Deployment/tiergate-enterprise-acme" in written
    assert not any(name.startswith("PrometheusRule/") for name in written)
    assert decision.delete == ()
    tier = next(c for c in decision.statuses if c.ref.name == "enterprise-acme")
    ready = next(c for c in tier.status["conditions"] if c["type"] == "Ready")
    assert ready["reason"] == "GatewayNameConflict"
    assert "the tier's SLO alerts are not written" in ready["message"]
