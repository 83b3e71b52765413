"""The operator, as a local process, reconciling on the real control plane."""

from __future__ import annotations

import base64
import json
import time
from pathlib import Path
from typing import Any

import pytest
from pydantic import ValidationError

from tests.support.kube import (
    CHILD_KINDS,
    CUSTOM_RESOURCES,
    EXAMPLE_OBJECTS,
    apply_examples,
    condition,
    eventually,
    get,
    get_or_none,
    resource_versions,
    wait_ready,
)
from tiergate_contract import (
    CONFIG_KEY,
    GatewayConfig,
    config_from_configmap,
    hash_client_key,
)
from tiergate_devkit.cluster import ControlPlane
from tiergate_operator.registry import API_KEY_TIER

pytestmark = pytest.mark.cluster

EXAMPLE_KEYS = (
    "tg-startup-fake-key-0001",
    "tg-acme-fake-key-search-0001",
    "fake-acme-pro-channel-key-not-real",
    "fake-upstream-key-primary-not-real",
)


def set_primary_weight(control_plane: ControlPlane, namespace: str, weight: int) -> None:
    """Edit the deepseek-chat route's first target weight (a change every gateway must pick up)."""
    patch = [{"op": "replace", "path": "/spec/targets/0/weight", "value": weight}]
    control_plane.kubectl(
        "-n",
        namespace,
        "patch",
        "modelroute",
        "deepseek-chat",
        "--type=json",
        "-p",
        json.dumps(patch),
    )


def gateway_config(plane: ControlPlane, namespace: str, gateway: str) -> GatewayConfig:
    configmap = get(plane, namespace, "configmap", gateway)
    return GatewayConfig.model_validate_json(config_from_configmap(configmap) or b"")


def restored_config(plane: ControlPlane, namespace: str, gateway: str) -> GatewayConfig | None:
    """The gateway's config once the operator has put a valid one back (None before that)."""
    try:
        return gateway_config(plane, namespace, gateway)
    except ValidationError:
        return None


def test_examples_become_ready_gateways(
    control_plane: ControlPlane, namespace: str, operator_log: Path
) -> None:
    apply_examples(control_plane, namespace)
    wait_ready(
        control_plane,
        namespace,
        *EXAMPLE_OBJECTS,
    )

    acme = get(control_plane, namespace, "apikeytier", "enterprise-acme")
    assert acme["status"]["gateway"] == "tiergate-enterprise-acme"
    assert acme["status"]["replicas"] == 3
    assert acme["status"]["readyReplicas"] == 3
    assert acme["status"]["observedGeneration"] == acme["metadata"]["generation"]
    route = get(control_plane, namespace, "modelroute", "deepseek-chat")
    assert route["status"]["gateways"] == ["tiergate-enterprise-acme", "tiergate-shared"]

    shared = gateway_config(control_plane, namespace, "tiergate-shared")
    assert [t.name for t in shared.tiers] == ["startup"]
    assert shared.tiers[0].key_sha256 == (hash_client_key("tg-startup-fake-key-0001"),)
    dedicated = gateway_config(control_plane, namespace, "tiergate-enterprise-acme")
    assert dedicated.tiers[0].upstream.model_prefix == "Pro/"
    for gateway in ("tiergate-shared", "tiergate-enterprise-acme"):
        assert get_or_none(control_plane, namespace, "service", gateway) is not None
        control_plane.kubectl(
            "-n",
            namespace,
            "wait",
            "--for=condition=Available",
            f"deployment/{gateway}",
            "--timeout=60s",
        )
    assert get_or_none(control_plane, namespace, "pdb", "tiergate-enterprise-acme") is not None

    # No key or credential in plain text anywhere the operator writes.
    written = control_plane.kubectl(
        "-n", namespace, "get", f"{CHILD_KINDS},{CUSTOM_RESOURCES},events", "-o", "json"
    ).stdout
    for secret in EXAMPLE_KEYS:
        assert secret not in written
    assert all(secret not in operator_log.read_text() for secret in EXAMPLE_KEYS)

    printed = control_plane.kubectl("-n", namespace, "get", "akt").stdout
    assert "tiergate-enterprise-acme" in printed
    assert "True" in printed


def test_route_edit_reaches_the_config_without_restarting_pods(
    control_plane: ControlPlane, namespace: str, operator_log: Path
) -> None:
    apply_examples(control_plane, namespace)
    wait_ready(control_plane, namespace, "apikeytier/startup")
    before = get(control_plane, namespace, "deployment", "tiergate-shared")
    set_primary_weight(control_plane, namespace, 10)

    def primary_weight() -> bool:
        config = gateway_config(control_plane, namespace, "tiergate-shared")
        return (
            config.routes[0]
            .targets[[t.name for t in config.routes[0].targets].index("primary")]
            .weight
            == 10
        )

    eventually(primary_weight, timeout=20, what="the new weight reaches the shared config")
    after = get(control_plane, namespace, "deployment", "tiergate-shared")
    assert after["metadata"]["generation"] == before["metadata"]["generation"]
    assert after["spec"]["template"] == before["spec"]["template"]


def test_deleting_tiers_removes_their_gateways(
    control_plane: ControlPlane, namespace: str, operator_log: Path
) -> None:
    apply_examples(control_plane, namespace)
    wait_ready(control_plane, namespace, "apikeytier/startup", "apikeytier/enterprise-acme")

    control_plane.kubectl("-n", namespace, "delete", "apikeytier", "enterprise-acme")
    eventually(
        lambda: (
            get_or_none(control_plane, namespace, "deployment", "tiergate-enterprise-acme") is None
        ),
        what="the dedicated gateway is removed",
    )
    assert get_or_none(control_plane, namespace, "deployment", "tiergate-shared") is not None

    control_plane.kubectl("-n", namespace, "delete", "apikeytier", "startup")
    eventually(
        lambda: (
            not resource_versions(control_plane, namespace, CHILD_KINDS).keys()
            - {"ConfigMap/kube-root-ca.crt"}
        ),
        what="the shared pool disappears with the last Shared tier",
    )
    # What the user owns stays.
    assert get_or_none(control_plane, namespace, "secret", "startup-keys") is not None
    assert get_or_none(control_plane, namespace, "modelroute", "deepseek-chat") is not None


def test_deleted_and_edited_children_are_restored(
    control_plane: ControlPlane, namespace: str, operator_log: Path
) -> None:
    apply_examples(control_plane, namespace)
    wait_ready(control_plane, namespace, "apikeytier/enterprise-acme")
    control_plane.kubectl("-n", namespace, "delete", "service", "tiergate-enterprise-acme")
    control_plane.kubectl(
        "-n", namespace, "scale", "deployment", "tiergate-enterprise-acme", "--replicas=1"
    )
    control_plane.kubectl(
        "-n",
        namespace,
        "patch",
        "configmap",
        "tiergate-enterprise-acme",
        "--type=merge",
        "-p",
        json.dumps({"data": {CONFIG_KEY: "{}"}}),
    )

    eventually(
        lambda: get_or_none(control_plane, namespace, "service", "tiergate-enterprise-acme"),
        what="the deleted Service comes back",
    )
    eventually(
        lambda: (
            get(control_plane, namespace, "deployment", "tiergate-enterprise-acme")["spec"][
                "replicas"
            ]
            == 3
        ),
        what="the replica count is restored",
    )
    eventually(
        lambda: (
            (config := restored_config(control_plane, namespace, "tiergate-enterprise-acme"))
            and config.tiers
        ),
        what="the config is restored",
    )


def test_key_rotation_reaches_the_config_without_a_restart(
    control_plane: ControlPlane, namespace: str, operator_log: Path
) -> None:
    apply_examples(control_plane, namespace)
    wait_ready(control_plane, namespace, "apikeytier/startup")
    before = get(control_plane, namespace, "deployment", "tiergate-shared")
    new_key = "tg-startup-fake-key-0002"
    control_plane.kubectl(
        "-n",
        namespace,
        "patch",
        "secret",
        "startup-keys",
        "--type=merge",
        "-p",
        json.dumps({"data": {"key-2": base64.b64encode(new_key.encode()).decode()}}),
    )

    def both_keys() -> bool:
        tier = gateway_config(control_plane, namespace, "tiergate-shared").tiers[0]
        return hash_client_key(new_key) in tier.key_sha256 and len(tier.key_sha256) == 2

    eventually(both_keys, timeout=20, what="the added key is accepted")
    assert (
        get(control_plane, namespace, "deployment", "tiergate-shared")["metadata"]["generation"]
        == before["metadata"]["generation"]
    )
    assert new_key not in json.dumps(get(control_plane, namespace, "configmap", "tiergate-shared"))


def test_a_missing_secret_marks_the_tier_not_ready_and_keeps_the_last_good_config(
    control_plane: ControlPlane, namespace: str, operator_log: Path
) -> None:
    apply_examples(control_plane, namespace)
    wait_ready(control_plane, namespace, "apikeytier/startup", "apikeytier/enterprise-acme")
    good_shared = gateway_config(control_plane, namespace, "tiergate-shared")

    patch = [{"op": "replace", "path": "/spec/keys/0/secretRef/name", "value": "no-such-secret"}]
    control_plane.kubectl(
        "-n", namespace, "patch", "apikeytier", "startup", "--type=json", "-p", json.dumps(patch)
    )

    def not_ready() -> dict[str, Any] | None:
        tier = get(control_plane, namespace, "apikeytier", "startup")
        ready = condition(tier, "Ready") if tier.get("status", {}).get("conditions") else None
        return (
            ready
            if ready
            and ready["status"] == "False"
            and ready["observedGeneration"] == tier["metadata"]["generation"]
            else None
        )

    ready = eventually(not_ready, timeout=20, what="startup becomes Ready=False")
    assert ready["reason"] == "MissingSecret"
    assert "no-such-secret" in ready["message"]
    control_plane.kubectl(
        "-n", namespace, "wait", "--for=condition=Stalled", "apikeytier/startup", "--timeout=10s"
    )
    assert gateway_config(control_plane, namespace, "tiergate-shared").tiers == good_shared.tiers
    events = control_plane.kubectl(
        "-n",
        namespace,
        "get",
        "events",
        "--field-selector",
        "involvedObject.name=startup",
        "-o",
        "json",
    ).stdout
    assert "MissingSecret" in events

    # The others keep working: a route edit still reaches the dedicated gateway.
    set_primary_weight(control_plane, namespace, 7)
    eventually(
        lambda: (
            7
            in [
                t.weight
                for t in gateway_config(control_plane, namespace, "tiergate-enterprise-acme")
                .routes[0]
                .targets
            ]
        ),
        timeout=20,
        what="the edit reaches the dedicated gateway",
    )

    control_plane.kubectl(
        "-n",
        namespace,
        "patch",
        "apikeytier",
        "startup",
        "--type=json",
        "-p",
        json.dumps(
            [{"op": "replace", "path": "/spec/keys/0/secretRef/name", "value": "startup-keys"}]
        ),
    )
    wait_ready(control_plane, namespace, "apikeytier/startup", timeout=30)


def test_operator_survives_an_invalid_config_in_its_own_configmap(
    control_plane: ControlPlane, namespace: str, operator_log: Path
) -> None:
    apply_examples(control_plane, namespace)
    wait_ready(control_plane, namespace, "apikeytier/startup")
    control_plane.kubectl(
        "-n",
        namespace,
        "patch",
        "configmap",
        "tiergate-shared",
        "--type=merge",
        "-p",
        json.dumps({"data": {CONFIG_KEY: "not json"}}),
    )

    def restored() -> bool:
        try:
            return bool(gateway_config(control_plane, namespace, "tiergate-shared").tiers)
        except ValidationError:
            return False

    eventually(restored, what="the operator rewrites a corrupted config")


@pytest.mark.parametrize(
    ("models", "reason"),
    [(["no-such-route"], "UnknownRoute"), ([], "EmptyAllowlist")],
    ids=["unknown-route", "empty-allowlist"],
)
def test_semantic_errors_in_a_new_tier_leave_the_others_serving(
    control_plane: ControlPlane, namespace: str, operator_log: Path, models: list[str], reason: str
) -> None:
    apply_examples(control_plane, namespace)
    wait_ready(control_plane, namespace, "apikeytier/startup")
    good_shared = gateway_config(control_plane, namespace, "tiergate-shared")
    broken = {
        **API_KEY_TIER.type_meta(),
        "metadata": {"name": "broken", "namespace": namespace},
        "spec": {
            "isolation": "Shared",
            "keys": [{"secretRef": {"name": "startup-keys-2"}}],
            "models": models,
        },
    }
    keys = {
        "apiVersion": "v1",
        "kind": "Secret",
        "metadata": {"name": "startup-keys-2", "namespace": namespace},
        "stringData": {"k": "tg-broken-fake-key"},
    }
    control_plane.kubectl(
        "apply",
        "-f",
        "-",
        input=json.dumps({"apiVersion": "v1", "kind": "List", "items": [keys, broken]}),
    )
    control_plane.kubectl(
        "-n", namespace, "wait", "--for=condition=Stalled", "apikeytier/broken", "--timeout=30s"
    )
    ready = condition(get(control_plane, namespace, "apikeytier", "broken"), "Ready")
    assert (ready["status"], ready["reason"]) == ("False", reason)
    # The shared pool still serves exactly what it served; the good tier stays Ready.
    assert gateway_config(control_plane, namespace, "tiergate-shared").tiers == good_shared.tiers
    assert (
        condition(get(control_plane, namespace, "apikeytier", "startup"), "Ready")["status"]
        == "True"
    )


def test_a_config_too_large_for_a_configmap_is_reported_once_and_recovers(
    control_plane: ControlPlane, namespace: str, operator_log: Path
) -> None:
    """Client-key digests barely compress: 4 Shared tiers of 9,000 keys put the shared gateway's
    config (each key's digest twice: in key_sha256 and key_names) at ~2.5 MB gzip-compressed,
    over the 1 MiB a ConfigMap may hold."""
    apply_examples(control_plane, namespace)
    wait_ready(control_plane, namespace, "apikeytier/startup", "apikeytier/enterprise-acme")

    big = [f"big-{t}" for t in range(4)]
    items: list[dict[str, Any]] = []
    for name in big:
        # `create`, not `apply`: a last-applied annotation of this size would be refused.
        items.append(
            {
                "apiVersion": "v1",
                "kind": "Secret",
                "metadata": {"name": name, "namespace": namespace},
                "stringData": {f"k{i:04d}": f"tg-{name}-fake-{i:04d}" for i in range(9000)},
            }
        )
        items.append(
            {
                **API_KEY_TIER.type_meta(),
                "metadata": {"name": name, "namespace": namespace},
                "spec": {"isolation": "Shared", "keys": [{"secretRef": {"name": name}}]},
            }
        )
    control_plane.kubectl(
        "create", "-f", "-", input=json.dumps({"apiVersion": "v1", "kind": "List", "items": items})
    )
    stalled = ["apikeytier/startup", *(f"apikeytier/{name}" for name in big)]
    control_plane.kubectl(
        "-n", namespace, "wait", "--for=condition=Stalled", *stalled, "--timeout=60s", timeout=70
    )
    for name in ("startup", *big):
        ready = condition(get(control_plane, namespace, "apikeytier", name), "Ready")
        assert (ready["status"], ready["reason"]) == ("False", "ConfigTooLarge"), name
        assert "tiergate-shared" in ready["message"] and "1,048,576 bytes" in ready["message"]
    route_ready = condition(get(control_plane, namespace, "modelroute", "deepseek-chat"), "Ready")
    assert route_ready["reason"] == "ConfigTooLarge"
    # The shared gateway keeps the last config that fitted (a pass may have caught the first
    # tiers before the others were created), and it stays untouched; the dedicated one is fine.
    kept = get(control_plane, namespace, "configmap", "tiergate-shared")
    last_good = GatewayConfig.model_validate_json(config_from_configmap(kept) or b"")
    assert "startup" in {t.name for t in last_good.tiers}
    assert not set(big) <= {t.name for t in last_good.tiers}
    acme = condition(get(control_plane, namespace, "apikeytier", "enterprise-acme"), "Ready")
    assert acme["status"] == "True"
    events = json.loads(
        control_plane.kubectl(
            "-n",
            namespace,
            "get",
            "events",
            "--field-selector",
            "reason=ConfigTooLarge",
            "-o",
            "json",
        ).stdout
    )
    assert {e["involvedObject"]["name"] for e in events["items"]} >= {
        "startup",
        "deepseek-chat",
        *big,
    }
    assert all(e["type"] == "Warning" for e in events["items"])
    # Reported, not retried: no failed pass for this namespace, and no further write.
    time.sleep(3)
    assert f"reconciling namespace {namespace} failed" not in operator_log.read_text()
    assert (
        get(control_plane, namespace, "configmap", "tiergate-shared")["metadata"]["resourceVersion"]
        == kept["metadata"]["resourceVersion"]
    )

    # Shrinking the input lets the config through again.
    control_plane.kubectl("-n", namespace, "delete", "apikeytier", "big-1", "big-2", "big-3")
    wait_ready(
        control_plane,
        namespace,
        "apikeytier/startup",
        "apikeytier/big-0",
        "modelroute/deepseek-chat",
        timeout=60,
    )
    config = gateway_config(control_plane, namespace, "tiergate-shared")
    assert [t.name for t in config.tiers] == ["big-0", "startup"]
    assert f"reconciling namespace {namespace} failed" not in operator_log.read_text()
