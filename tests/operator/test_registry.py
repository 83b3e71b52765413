"""The registry: kinds as the API names them, and the keys the prefix setting derives."""

from __future__ import annotations

import pytest

from tests.support.kube import EXAMPLES
from tests.support.manifests import store_of, translate_namespace
from tiergate_operator.refs import ObjectRef
from tiergate_operator.registry import (
    API_KEY_TIER,
    CHILD_KINDS,
    DEPLOYMENT,
    EVENT,
    MODEL_ROUTE,
    OPTIONAL_KINDS,
    PrefixedKeys,
    label_selector,
    resources,
)
from tiergate_operator.render import render
from tiergate_operator.settings import OperatorSettings, SettingsError, load_operator_settings
from tiergate_operator.slo import render_slo_rules


def test_kinds_name_their_api_paths_and_kubectl_resources() -> None:
    assert MODEL_ROUTE.api_version == "tiergate.dev/v1alpha1"
    assert (
        API_KEY_TIER.collection_path("ns") == "apis/tiergate.dev/v1alpha1/namespaces/ns/apikeytiers"
    )
    assert EVENT.collection_path("ns") == "api/v1/namespaces/ns/events"
    assert ObjectRef("Deployment", "ns", "gw").path() == "apis/apps/v1/namespaces/ns/deployments/gw"
    assert (
        resources(MODEL_ROUTE, DEPLOYMENT, EVENT)
        == "modelroutes.tiergate.dev,deployments.apps,events"
    )
    assert DEPLOYMENT.type_meta() == {"apiVersion": "apps/v1", "kind": "Deployment"}
    assert label_selector({"a/b": "c", "d": "e"}) == "a/b=c,d=e"


def test_every_rendered_kind_is_a_watched_child_kind() -> None:
    plans = translate_namespace(store_of(EXAMPLES)).plans
    rendered = {m["kind"] for plan in plans for m in render(plan, OperatorSettings())}
    assert rendered <= {kind.kind for kind in CHILD_KINDS}
    rules = {m["kind"] for plan in plans for m in render_slo_rules(plan, OperatorSettings())}
    assert rules == {kind.kind for kind in OPTIONAL_KINDS}  # watched while their CRD exists


def test_the_prefix_names_every_key_tiergate_owns() -> None:
    keys = PrefixedKeys("acme.example")
    assert (keys.gateway_label, keys.isolation_label) == (
        "acme.example/gateway",
        "acme.example/isolation",
    )
    assert keys.config_generation_annotation == "acme.example/config-generation"
    assert keys.config_version_annotation == "acme.example/config-version"
    assert PrefixedKeys().gateway_label == "tiergate.dev/gateway"


def test_rendered_children_carry_only_the_configured_prefix() -> None:
    settings = load_operator_settings({"TIERGATE_PREFIX": "acme.example"})
    for plan in translate_namespace(store_of(EXAMPLES)).plans:
        for manifest in render(plan, settings):
            metadata = manifest["metadata"]
            keys = {*(metadata.get("labels") or {}), *(metadata.get("annotations") or {})}
            assert {key.split("/")[0] for key in keys} <= {"acme.example", "app.kubernetes.io"}
            assert metadata["labels"][settings.keys.gateway_label] == plan.name


@pytest.mark.parametrize("prefix", ["Tiergate.dev", "-acme", "acme/example", "a" * 254])
def test_a_prefix_that_is_no_dns_subdomain_is_refused(prefix: str) -> None:
    with pytest.raises(SettingsError, match="TIERGATE_PREFIX"):
        load_operator_settings({"TIERGATE_PREFIX": prefix})
    with pytest.raises(ValueError, match="DNS subdomain"):
        PrefixedKeys(prefix)


def test_drain_settings_come_from_the_environment_and_bound_the_pod_termination() -> None:
    settings = load_operator_settings(
        {"TIERGATE_GATEWAY_DRAIN_DELAY_SECONDS": "8", "TIERGATE_GATEWAY_GRACE_SECONDS": "40"}
    )
    assert (settings.gateway_drain_delay_seconds, settings.gateway_grace_seconds) == (8, 40)
    plan = translate_namespace(store_of(EXAMPLES)).plans[0]
    deployment = next(m for m in render(plan, settings) if m["kind"] == "Deployment")
    assert deployment["spec"]["template"]["spec"]["terminationGracePeriodSeconds"] == 8 + 40 + 5


@pytest.mark.parametrize(
    ("env", "message"),
    [
        ({"TIERGATE_GATEWAY_DRAIN_DELAY_SECONDS": "soon"}, "is not a whole number"),
        ({"TIERGATE_GATEWAY_DRAIN_DELAY_SECONDS": "301"}, "is not between 0 and 300"),
        ({"TIERGATE_GATEWAY_GRACE_SECONDS": "0"}, "is not between 1 and 3600"),
    ],
)
def test_bad_drain_settings_are_refused_by_name(env: dict[str, str], message: str) -> None:
    with pytest.raises(SettingsError, match=message):
        load_operator_settings(env)
