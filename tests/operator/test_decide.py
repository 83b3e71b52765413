"""decide(): the examples as watched state -> what to apply, delete and report (pure)."""

from __future__ import annotations

import base64
import copy
from datetime import UTC, datetime
from typing import Any

import yaml

from tests.support.kube import EXAMPLES
from tiergate_operator.reconcile import decide
from tiergate_operator.settings import OperatorSettings
from tiergate_operator.store import Store

NOW = datetime(2026, 11, 28, 12, 0, tzinfo=UTC)
NS = "demo"


def example_store() -> Store:
    store = Store()
    for path in sorted(EXAMPLES.glob("*.yaml")):
        for doc in yaml.safe_load_all(path.read_text()):
            if not doc or doc["kind"] == "Kustomization":
                continue
            doc["metadata"] |= {"namespace": NS, "uid": f"uid-{doc['metadata']['name']}", "generation": 1}
            if doc["kind"] == "Secret":
                data = {k: base64.b64encode(v.encode()).decode() for k, v in doc["stringData"].items()}
                store.put_secret(NS, doc["metadata"]["name"], data)
            elif doc["kind"] == "ModelRoute":
                store.put_route(doc)
            else:
                store.put_tier(doc)
    return store


def settle(store: Store, applied: list[dict[str, Any]]) -> None:
    """Pretend the API server stored what was applied, and kwok made every replica ready."""
    for manifest in applied:
        live = copy.deepcopy(manifest)
        live["metadata"] |= {"uid": "x", "resourceVersion": "1", "generation": 1}
        if live["kind"] == "Deployment":
            replicas = live["spec"].get("replicas", 1)
            live["status"] = {"observedGeneration": 1, "replicas": replicas,
                              "readyReplicas": replicas, "updatedReplicas": replicas}
        store.put_child(live)


def test_examples_render_every_gateway_object() -> None:
    decision = decide(NS, example_store().namespace(NS), OperatorSettings(), NOW)
    applied = sorted(f"{m['kind']}/{m['metadata']['name']}" for m in decision.apply)
    assert applied == [
        "ConfigMap/tiergate-enterprise-acme", "ConfigMap/tiergate-shared",
        "Deployment/tiergate-enterprise-acme", "Deployment/tiergate-shared",
        "PodDisruptionBudget/tiergate-enterprise-acme",
        "Role/tiergate-gateway", "RoleBinding/tiergate-gateway",
        "Service/tiergate-enterprise-acme", "Service/tiergate-shared",
        "ServiceAccount/tiergate-gateway",
    ]
    assert decision.delete == ()
    ready = {change.ref.name: next(c for c in change.status["conditions"] if c["type"] == "Ready")
             for change in decision.statuses}
    # Statuses are written after the configs land, so the route is served by then; the
    # tiers wait for their new gateways' replicas.
    assert {name: c["status"] for name, c in ready.items()} == {
        "deepseek-chat": "True", "enterprise-acme": "False", "startup": "False"}


def test_once_applied_the_same_inputs_decide_nothing() -> None:
    store = example_store()
    first = decide(NS, store.namespace(NS), OperatorSettings(), NOW)
    settle(store, list(first.apply))
    for change in first.statuses:
        bucket = store.namespace(NS).routes if change.ref.kind == "ModelRoute" else store.namespace(NS).tiers
        bucket[change.ref.name]["status"] = change.status
    second = decide(NS, store.namespace(NS), OperatorSettings(), NOW)
    assert second.apply == () and second.delete == ()
    # The tiers are Ready once their replicas are; the route's status needs no rewrite.
    readiness = {c.ref.name: next(x for x in c.status["conditions"] if x["type"] == "Ready")["status"]
                 for c in second.statuses}
    assert readiness == {"enterprise-acme": "True", "startup": "True"}
    for change in second.statuses:
        bucket = store.namespace(NS).routes if change.ref.kind == "ModelRoute" else store.namespace(NS).tiers
        bucket[change.ref.name]["status"] = change.status
    assert decide(NS, store.namespace(NS), OperatorSettings(), NOW).is_noop


def test_removing_the_dedicated_tier_deletes_only_its_gateway() -> None:
    store = example_store()
    settle(store, list(decide(NS, store.namespace(NS), OperatorSettings(), NOW).apply))
    store.remove_tier(NS, "enterprise-acme")
    decision = decide(NS, store.namespace(NS), OperatorSettings(), NOW)
    assert sorted(f"{r.kind}/{r.name}" for r in decision.delete) == [
        "ConfigMap/tiergate-enterprise-acme", "Deployment/tiergate-enterprise-acme",
        "PodDisruptionBudget/tiergate-enterprise-acme", "Service/tiergate-enterprise-acme",
    ]


def test_a_tier_with_a_missing_secret_keeps_its_gateway() -> None:
    store = example_store()
    settle(store, list(decide(NS, store.namespace(NS), OperatorSettings(), NOW).apply))
    store.remove_secret(NS, "enterprise-acme-keys")
    decision = decide(NS, store.namespace(NS), OperatorSettings(), NOW)
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
    assert conditions == {"Accepted": "True", "Ready": "False", "Reconciling": "True", "Stalled": "False"}
