"""spec.slo on the real control plane: the operator writes a tier's PrometheusRule only while
the Prometheus Operator's CRD is served (it may come and go while the operator runs), keeps
it in step with the tier, and never adopts or deletes a PrometheusRule it did not create."""

from __future__ import annotations

import json
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from tests.support.kube import (
    EXAMPLE_OBJECTS,
    EXAMPLES,
    apply_examples,
    condition,
    create,
    eventually,
    get,
    get_or_none,
    wait_ready,
)
from tests.support.manifests import store_of, translate_namespace
from tiergate_devkit.cluster import ControlPlane
from tiergate_operator.registry import PROMETHEUS_RULE, PROMETHEUS_RULE_CRD
from tiergate_operator.settings import OperatorSettings
from tiergate_operator.slo import render_slo_rules, slo_rule_name

pytestmark = pytest.mark.cluster

CRD = Path(__file__).parents[1] / "data" / "prometheus-operator" / "prometheusrules-crd.yaml"
TIER = "enterprise-acme"
RULE = slo_rule_name(TIER)
RULES = PROMETHEUS_RULE.resource


def _create_crd(plane: ControlPlane) -> None:
    plane.kubectl("apply", "-f", str(CRD))
    plane.kubectl("wait", "--for=condition=Established", f"crd/{PROMETHEUS_RULE_CRD}")


def _delete_crd(plane: ControlPlane) -> None:
    plane.kubectl("delete", "--ignore-not-found", "--timeout=60s", "-f", str(CRD), timeout=90)


@pytest.fixture
def rule_crd(control_plane: ControlPlane, operator_log: Path) -> Iterator[None]:
    _create_crd(control_plane)
    yield
    _delete_crd(control_plane)


def _rule(plane: ControlPlane, namespace: str) -> dict[str, Any] | None:
    return get_or_none(plane, namespace, RULES, RULE)


def _expected_groups(namespace: str) -> Any:
    plans = translate_namespace(store_of(EXAMPLES, namespace), namespace).plans
    plan = next(p for p in plans if p.name == f"tiergate-{TIER}")
    (rule,) = render_slo_rules(plan, OperatorSettings())
    return rule["spec"]["groups"]


def _patch_tier(plane: ControlPlane, namespace: str, patch: list[dict[str, Any]]) -> None:
    plane.kubectl(
        "-n", namespace, "patch", "apikeytier", TIER, "--type=json", "-p", json.dumps(patch)
    )


def test_rules_come_and_go_with_the_crd_and_the_tier_spec(
    control_plane: ControlPlane, operator_log: Path, namespace: str
) -> None:
    _delete_crd(control_plane)
    apply_examples(control_plane, namespace)
    # No CRD: nothing to write, and the operator is not held up by the kind it cannot watch.
    wait_ready(control_plane, namespace, *EXAMPLE_OBJECTS)
    missing = control_plane.kubectl("-n", namespace, "get", RULES, check=False)
    assert missing.returncode != 0

    _create_crd(control_plane)
    rule = eventually(lambda: _rule(control_plane, namespace), what="the tier's PrometheusRule")
    assert rule["spec"]["groups"] == _expected_groups(namespace)
    (owner,) = rule["metadata"]["ownerReferences"]
    tier = get(control_plane, namespace, "apikeytier", TIER)
    assert (owner["kind"], owner["uid"]) == ("ApiKeyTier", tier["metadata"]["uid"])
    assert _rule(control_plane, namespace) is not None
    # The shared tier sets no objectives: no rule.
    assert get_or_none(control_plane, namespace, RULES, slo_rule_name("startup")) is None

    # A new threshold reaches the rule (and the gateway's histogram buckets).
    _patch_tier(
        control_plane,
        namespace,
        [{"op": "replace", "path": "/spec/slo/latency/thresholdMilliseconds", "value": 750}],
    )

    def reads_new_bucket() -> bool:
        groups = (_rule(control_plane, namespace) or {}).get("spec", {}).get("groups", [])
        return any('le="0.75"' in str(r["expr"]) for g in groups for r in g["rules"])

    eventually(reads_new_bucket, what="the new threshold in the rule")
    deployment = get(control_plane, namespace, "deployment", f"tiergate-{TIER}")
    env = {
        e["name"]: e.get("value")
        for e in deployment["spec"]["template"]["spec"]["containers"][0]["env"]
    }
    assert env["TIERGATE_GATEWAY_LATENCY_BUCKETS"] == "0.75"

    # Objectives removed: the rule goes.
    _patch_tier(control_plane, namespace, [{"op": "remove", "path": "/spec/slo"}])
    eventually(lambda: _rule(control_plane, namespace) is None, what="the rule deleted")

    # The CRD goes too: the operator carries on serving tier changes.
    _delete_crd(control_plane)
    _patch_tier(
        control_plane,
        namespace,
        [{"op": "replace", "path": "/spec/limits/requestsPerMinute", "value": 3001}],
    )
    generation = get(control_plane, namespace, "apikeytier", TIER)["metadata"]["generation"]
    eventually(
        lambda: (
            condition(get(control_plane, namespace, "apikeytier", TIER), "Ready").get(
                "observedGeneration"
            )
            == generation
        ),
        what="the tier reconciled after the CRD went away",
    )


def test_a_prometheus_rule_of_someone_else_is_never_adopted_nor_deleted(
    control_plane: ControlPlane, rule_crd: None, namespace: str
) -> None:
    theirs = {
        **PROMETHEUS_RULE.type_meta(),
        "metadata": {"name": RULE, "namespace": namespace, "labels": {"owner": "the-user"}},
        "spec": {"groups": [{"name": "mine", "rules": [{"record": "x", "expr": "vector(1)"}]}]},
    }
    create(control_plane, theirs)
    before = get(control_plane, namespace, RULES, RULE)
    apply_examples(control_plane, namespace)

    def conflict_reported() -> bool:
        tier = get(control_plane, namespace, "apikeytier", TIER)
        ready = next(
            (c for c in (tier.get("status") or {}).get("conditions") or [] if c["type"] == "Ready"),
            None,
        )
        return (
            ready is not None
            and ready["reason"] == "GatewayNameConflict"
            and RULE in ready["message"]
        )

    eventually(conflict_reported, what="the tier reports the name held by someone else")
    # Only the rule is held back: the tier's gateway is written and serves as usual.
    eventually(
        lambda: get_or_none(control_plane, namespace, "deployment", f"tiergate-{TIER}"),
        what="the tier's gateway written all the same",
    )
    wait_ready(control_plane, namespace, "apikeytier/startup", "modelroute/deepseek-chat")
    assert get(control_plane, namespace, RULES, RULE) == before

    control_plane.kubectl("-n", namespace, "delete", "apikeytier", TIER, "--wait=true")
    eventually(
        lambda: get_or_none(control_plane, namespace, "deployment", f"tiergate-{TIER}") is None,
        what="the tier's gateway removed",
    )
    assert get(control_plane, namespace, RULES, RULE) == before
