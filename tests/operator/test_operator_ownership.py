"""Ownership and local failures, on the real control plane (issue 11, deliverables 1 and 2).

The operator writes only what it created: a user's object holding a gateway's name (of any
kind the operator writes) is left byte-identical, reported on the tiers that need it, and
survives their deletion. A write the API server refuses marks only that gateway's routes and
tiers; every other status is still written, and kstatus never reads a broken object as Current.
"""

from __future__ import annotations

import json
import re
import time
import uuid
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest

from tests.support.kube import (
    EXAMPLE_OBJECTS,
    apply_examples,
    condition,
    create,
    events,
    eventually,
    get,
    get_or_none,
    kstatus,
    wait_ready,
)
from tiergate_contract import GatewayConfig, config_from_configmap
from tiergate_devkit.cluster import ControlPlane
from tiergate_operator.names import SHARED_GATEWAY, dedicated_gateway
from tiergate_operator.registry import (
    API_KEY_TIER,
    CHILD_KINDS,
    CONFIG_MAP,
    MANAGED_BY,
    MODEL_ROUTE,
    SECRET,
)

pytestmark = pytest.mark.cluster

Body = dict[str, Any]
TIER, SHARED_TIER, ROUTE = "acme", "small", "chat"
GATEWAY = dedicated_gateway(TIER)
ACCESS = "tiergate-gateway"  # the gateways' ServiceAccount, Role and RoleBinding
USER_SELECTOR = {"app": "user-app"}


# --- the user's objects, one per kind the operator writes ---------------------------------


def _user_object(kind: str, name: str, spec: Body, labels: dict[str, str] | None = None) -> Body:
    api_version = {
        "Deployment": "apps/v1",
        "PodDisruptionBudget": "policy/v1",
        "HorizontalPodAutoscaler": "autoscaling/v2",
        "Role": "rbac.authorization.k8s.io/v1",
        "RoleBinding": "rbac.authorization.k8s.io/v1",
    }.get(kind, "v1")
    metadata: Body = {"name": name, "labels": {"owner": "the-user", **(labels or {})}}
    return {"apiVersion": api_version, "kind": kind, "metadata": metadata, **spec}


USER_OBJECTS: dict[str, Body] = {
    "ConfigMap": _user_object("ConfigMap", GATEWAY, {"data": {"settings": "the user's"}}),
    # Carrying tiergate's labels (copied from a rendered manifest), but no ownerReference:
    # the operator's watches see this one, and must still leave it alone.
    "ConfigMap-with-our-labels": _user_object(
        "ConfigMap", GATEWAY, {"data": {"settings": "the user's"}}, labels=dict(MANAGED_BY)
    ),
    "Deployment": _user_object(
        "Deployment",
        GATEWAY,
        {
            "spec": {
                "replicas": 1,
                "selector": {"matchLabels": USER_SELECTOR},
                "template": {
                    "metadata": {"labels": USER_SELECTOR},
                    "spec": {"containers": [{"name": "app", "image": "example.com/app:1"}]},
                },
            }
        },
    ),
    "Service": _user_object(
        "Service", GATEWAY, {"spec": {"selector": USER_SELECTOR, "ports": [{"port": 8000}]}}
    ),
    "PodDisruptionBudget": _user_object(
        "PodDisruptionBudget",
        GATEWAY,
        {"spec": {"maxUnavailable": 1, "selector": {"matchLabels": USER_SELECTOR}}},
    ),
    "HorizontalPodAutoscaler": _user_object(
        "HorizontalPodAutoscaler",
        GATEWAY,
        {
            "spec": {
                "scaleTargetRef": {"apiVersion": "apps/v1", "kind": "Deployment", "name": "app"},
                "minReplicas": 1,
                "maxReplicas": 4,
            }
        },
    ),
    "ServiceAccount": _user_object("ServiceAccount", ACCESS, {}),
    "Role": _user_object(
        "Role", ACCESS, {"rules": [{"apiGroups": [""], "resources": ["pods"], "verbs": ["get"]}]}
    ),
    "RoleBinding": _user_object(
        "RoleBinding",
        ACCESS,
        {
            "roleRef": {
                "apiGroup": "rbac.authorization.k8s.io",
                "kind": "Role",
                "name": "user-role",
            },
            "subjects": [{"kind": "ServiceAccount", "name": "default"}],
        },
    ),
}


def _inputs(namespace: str, *, dedicated_models: list[str] | None = None) -> list[Body]:
    """A route, a Dedicated tier with autoscaling (so every kind is wanted) and a Shared tier."""
    route = {
        **MODEL_ROUTE.type_meta(),
        "metadata": {"name": ROUTE, "namespace": namespace},
        "spec": {
            "model": ROUTE,
            "targets": [{"name": "a", "baseURL": "http://127.0.0.1:9901/v1", "upstreamModel": "m"}],
        },
    }
    secrets = [
        {
            **SECRET.type_meta(),
            "metadata": {"name": f"{tier}-keys", "namespace": namespace},
            "stringData": {"k": f"tg-{tier}-fake-key-{uuid.uuid4().hex[:8]}"},
        }
        for tier in (TIER, SHARED_TIER)
    ]
    dedicated = {
        **API_KEY_TIER.type_meta(),
        "metadata": {"name": TIER, "namespace": namespace},
        "spec": {
            "isolation": "Dedicated",
            "keys": [{"secretRef": {"name": f"{TIER}-keys"}}],
            "autoscaling": {"minReplicas": 1, "maxReplicas": 2},
            **({"models": dedicated_models} if dedicated_models is not None else {}),
        },
    }
    shared = {
        **API_KEY_TIER.type_meta(),
        "metadata": {"name": SHARED_TIER, "namespace": namespace},
        "spec": {"isolation": "Shared", "keys": [{"secretRef": {"name": f"{SHARED_TIER}-keys"}}]},
    }
    return [route, *secrets, dedicated, shared]


def _ready(plane: ControlPlane, namespace: str, kind: str, name: str) -> Body | None:
    """The Ready condition, once the status describes the current generation."""
    body = get(plane, namespace, kind, name)
    status = body.get("status") or {}
    if status.get("observedGeneration") != body["metadata"]["generation"]:
        return None
    if not status.get("conditions"):
        return None
    return condition(body, "Ready")


def _wait_reason(
    plane: ControlPlane, namespace: str, kind: str, name: str, reason: str, timeout: float = 30
) -> Body:
    def reported() -> Body | None:
        ready = _ready(plane, namespace, kind, name)
        return ready if ready and ready["reason"] == reason else None

    return eventually(reported, timeout=timeout, what=f"{kind} {name} reports {reason}")


def _objects_named(plane: ControlPlane, namespace: str, name: str) -> dict[str, Body]:
    """Every object of a kind the operator writes that is named ``name``, by kind."""
    found = {}
    for kind in CHILD_KINDS:
        body = get_or_none(plane, namespace, kind.resource, name)
        if body is not None:
            found[kind.kind] = body
    return found


def _owned_canary(plane: ControlPlane, namespace: str, tier: Body) -> None:
    """A ConfigMap owned by ``tier``: once it is gone, garbage collection has acted on the tier."""
    owner = {
        "apiVersion": tier["apiVersion"],
        "kind": tier["kind"],
        "name": tier["metadata"]["name"],
        "uid": tier["metadata"]["uid"],
    }
    create(
        plane,
        {
            **CONFIG_MAP.type_meta(),
            "metadata": {"name": "gc-canary", "namespace": namespace, "ownerReferences": [owner]},
        },
    )


@pytest.mark.parametrize("case", sorted(USER_OBJECTS))
def test_a_name_held_by_the_user_is_never_adopted_nor_collected(
    control_plane: ControlPlane, namespace: str, operator_log: Path, case: str
) -> None:
    user_object = USER_OBJECTS[case]
    kind, name = user_object["kind"], user_object["metadata"]["name"]
    create(control_plane, _with_namespace(user_object, namespace))
    before = _settled(control_plane, namespace, kind, name)
    create(control_plane, *(_with_namespace(m, namespace) for m in _inputs(namespace)))
    _owned_canary(control_plane, namespace, get(control_plane, namespace, "apikeytier", TIER))

    access_conflict = name == ACCESS
    # Reported on the tier(s) that need the name, naming the object; a Warning event each.
    needing = [TIER, SHARED_TIER] if access_conflict else [TIER]
    for tier in needing:
        ready = _wait_reason(control_plane, namespace, "apikeytier", tier, "GatewayNameConflict")
        assert ready["status"] == "False"
        assert f"{kind} {name}" in ready["message"], ready["message"]
        assert kstatus(get(control_plane, namespace, "apikeytier", tier)) != "Current"
        warnings = events(control_plane, namespace, tier, "GatewayNameConflict")
        assert warnings and all(e["type"] == "Warning" for e in warnings)
    route_ready = _wait_reason(control_plane, namespace, "modelroute", ROUTE, "GatewayNameConflict")
    assert route_ready["status"] == "False"
    assert kstatus(get(control_plane, namespace, "modelroute", ROUTE)) != "Current"
    _assert_every_status_written(control_plane, namespace)

    if not access_conflict:
        # Every other gateway of the namespace is reconciled as usual.
        wait_ready(control_plane, namespace, f"apikeytier/{SHARED_TIER}", timeout=60)
        assert get_or_none(control_plane, namespace, "deployment", SHARED_GATEWAY)

    # Nothing of that gateway was written next to the user's object; the object is untouched.
    time.sleep(2)  # passes keep running: give a faulty operator the chance to write
    held = _objects_named(control_plane, namespace, name)
    assert held.keys() == {kind}, f"written next to the user's {kind}: {sorted(held)}"
    if access_conflict:
        assert _objects_named(control_plane, namespace, GATEWAY) == {}
        assert _objects_named(control_plane, namespace, SHARED_GATEWAY) == {}
    assert get(control_plane, namespace, kind, name) == before

    # Deleting the tier garbage-collects what it owns, never the user's object.
    control_plane.kubectl("-n", namespace, "delete", "apikeytier", TIER, SHARED_TIER)
    eventually(
        lambda: get_or_none(control_plane, namespace, "configmap", "gc-canary") is None,
        what="garbage collection of the tiers' objects",
    )
    eventually(
        lambda: not _objects_named(control_plane, namespace, SHARED_GATEWAY),
        what="the shared pool is collected",
    )
    assert get(control_plane, namespace, kind, name) == before


def _assert_every_status_written(plane: ControlPlane, namespace: str) -> None:
    """Every route and tier of the namespace has conditions for its current generation
    (kstatus reads an object without status as Current)."""
    listed = json.loads(plane.kubectl("-n", namespace, "get", "mr,akt", "-o", "json").stdout)
    for item in listed["items"]:
        status = item.get("status") or {}
        assert status.get("conditions"), item["metadata"]["name"]
        assert status.get("observedGeneration") == item["metadata"]["generation"]


def _settled(plane: ControlPlane, namespace: str, kind: str, name: str) -> Body:
    """The user's object once its own controllers are done with it (a Deployment's status
    moves until its replicas are available, an HPA's until its controller first looked at
    it): from then on, any change is the operator's."""
    if kind == "HorizontalPodAutoscaler":
        eventually(
            lambda: "desiredReplicas" in (get(plane, namespace, kind, name).get("status") or {}),
            timeout=60,
            what="the HPA controller has looked at the user's HPA",
        )
        time.sleep(1)
    if kind == "Deployment":

        def available() -> bool:
            status = get(plane, namespace, kind, name).get("status") or {}
            return status.get("availableReplicas") == 1 and status.get("replicas") == 1

        eventually(available, timeout=60, what="the user's Deployment is available")
        time.sleep(1)
    return get(plane, namespace, kind, name)


def _with_namespace(manifest: Body, namespace: str) -> Body:
    return {**manifest, "metadata": {**manifest["metadata"], "namespace": namespace}}


def test_a_user_object_replacing_a_deleted_child_is_not_adopted(
    control_plane: ControlPlane, namespace: str, operator_log: Path
) -> None:
    """The user deletes the gateway's Service and creates their own under the same name."""
    create(control_plane, *(_with_namespace(m, namespace) for m in _inputs(namespace)))
    wait_ready(control_plane, namespace, f"apikeytier/{TIER}", timeout=60)
    # Delete and create at once (the operator would otherwise restore its own in between).
    control_plane.kubectl(
        "replace",
        "--force",
        "-f",
        "-",
        input=json.dumps(_with_namespace(USER_OBJECTS["Service"], namespace)),
    )
    before = get(control_plane, namespace, "service", GATEWAY)
    ready = _wait_reason(control_plane, namespace, "apikeytier", TIER, "GatewayNameConflict")
    assert f"Service {GATEWAY}" in ready["message"]
    time.sleep(2)
    assert get(control_plane, namespace, "service", GATEWAY) == before
    assert condition(get(control_plane, namespace, "apikeytier", SHARED_TIER), "Ready")[
        "status"
    ] == ("True")

    # Once the user's Service is gone, the next attempt restores the gateway's own.
    control_plane.kubectl("-n", namespace, "delete", "service", GATEWAY)
    wait_ready(control_plane, namespace, f"apikeytier/{TIER}", timeout=90)
    service = get(control_plane, namespace, "service", GATEWAY)
    assert service["spec"]["selector"] != USER_SELECTOR


# --- a write the API server refuses stays local ---------------------------------------------


def _refuse_deployments_of(plane: ControlPlane, gateway: str, message: str) -> Callable[[], None]:
    """A ValidatingAdmissionPolicy (what Kyverno or Gatekeeper would do) refusing the
    gateway's Deployment; returns what removes it."""
    name = f"refuse-{uuid.uuid4().hex[:8]}"
    policy = {
        "apiVersion": "admissionregistration.k8s.io/v1",
        "kind": "ValidatingAdmissionPolicy",
        "metadata": {"name": name},
        "spec": {
            "failurePolicy": "Fail",
            "matchConstraints": {
                "resourceRules": [
                    {
                        "apiGroups": ["apps"],
                        "apiVersions": ["v1"],
                        "operations": ["CREATE", "UPDATE"],
                        "resources": ["deployments"],
                    }
                ]
            },
            "validations": [
                {
                    "expression": f"object.metadata.name != '{gateway}'",
                    "message": message,
                    "reason": "Invalid",
                }
            ],
        },
    }
    binding = {
        "apiVersion": "admissionregistration.k8s.io/v1",
        "kind": "ValidatingAdmissionPolicyBinding",
        "metadata": {"name": name},
        "spec": {"policyName": name, "validationActions": ["Deny"]},
    }
    plane.kubectl(
        "apply",
        "-f",
        "-",
        input=json.dumps({"apiVersion": "v1", "kind": "List", "items": [policy, binding]}),
    )
    # The policy takes effect once the API server's informers have it: probe with a dry run.
    probe = {**USER_OBJECTS["Deployment"], "metadata": {"name": gateway, "namespace": "default"}}

    def refusing() -> bool:
        result = plane.kubectl(
            "create", "--dry-run=server", "-f", "-", input=json.dumps(probe), check=False
        )
        return result.returncode != 0 and message in result.stderr

    eventually(refusing, timeout=30, what="the admission policy is in force")

    def remove() -> None:
        plane.kubectl(
            "delete",
            "validatingadmissionpolicybinding,validatingadmissionpolicy",
            name,
            check=False,
        )

    return remove


def _gateway_config(plane: ControlPlane, namespace: str, gateway: str) -> GatewayConfig:
    configmap = get(plane, namespace, "configmap", gateway)
    return GatewayConfig.model_validate_json(config_from_configmap(configmap) or b"")


def _attempt(message: str) -> int:
    found = re.search(r"attempt (\d+)", message)
    assert found, message
    return int(found.group(1))


def test_a_refused_write_marks_only_its_gateway_and_every_status_is_written(
    control_plane: ControlPlane, namespace: str, operator_log: Path
) -> None:
    apply_examples(control_plane, namespace)
    wait_ready(control_plane, namespace, "apikeytier/startup", "apikeytier/enterprise-acme")
    broken_gateway = dedicated_gateway("broken")
    refusal = "deployments named like this are not allowed here (policy test-42)"
    remove_policy = _refuse_deployments_of(control_plane, broken_gateway, refusal)
    try:
        route = {
            **MODEL_ROUTE.type_meta(),
            "metadata": {"name": "other", "namespace": namespace},
            "spec": {
                "model": "other",
                "targets": [
                    {"name": "a", "baseURL": "http://127.0.0.1:9901/v1", "upstreamModel": "m"}
                ],
            },
        }
        broken = {
            **API_KEY_TIER.type_meta(),
            "metadata": {"name": "broken", "namespace": namespace},
            "spec": {
                "isolation": "Dedicated",
                "keys": [{"secretRef": {"name": "startup-keys-2"}}],
                "models": ["other"],
            },
        }
        keys = {
            **SECRET.type_meta(),
            "metadata": {"name": "startup-keys-2", "namespace": namespace},
            "stringData": {"k": "tg-broken-fake-key-0001"},
        }
        create(control_plane, *(_with_namespace(m, namespace) for m in (route, keys, broken)))

        # The broken tier and its route: Ready=False with what failed, Stalled, a Warning event.
        ready = _wait_reason(control_plane, namespace, "apikeytier", "broken", "GatewayWriteFailed")
        assert ready["status"] == "False"
        assert f"Deployment {broken_gateway}" in ready["message"]
        assert refusal in ready["message"] and "Invalid" in ready["message"]
        assert "next attempt" in ready["message"]
        route_ready = _wait_reason(
            control_plane, namespace, "modelroute", "other", "GatewayWriteFailed"
        )
        assert route_ready["status"] == "False"
        for kind, name in (("apikeytier", "broken"), ("modelroute", "other")):
            body = get(control_plane, namespace, kind, name)
            assert kstatus(body) == "Failed", (name, body["status"])
            assert condition(body, "Stalled")["reason"] == "GatewayWriteFailed"

        # Retries back off, the condition counts them, and one event is posted, not one per try.
        first = _attempt(ready["message"])
        time.sleep(8)
        later = condition(get(control_plane, namespace, "apikeytier", "broken"), "Ready")
        assert first <= _attempt(later["message"]) <= first + 3, later["message"]
        warnings = events(control_plane, namespace, "broken", "GatewayWriteFailed")
        assert len(warnings) == 1 and warnings[0]["type"] == "Warning"
        assert "Traceback" not in operator_log.read_text()

        # The bystanders: statuses and configs stay current in the same namespace.
        control_plane.kubectl(
            "-n",
            namespace,
            "patch",
            "modelroute",
            "deepseek-chat",
            "--type=json",
            "-p",
            json.dumps([{"op": "replace", "path": "/spec/targets/0/weight", "value": 11}]),
        )

        def edited_everywhere() -> bool:
            return all(
                11
                in [
                    t.weight for t in _gateway_config(control_plane, namespace, g).routes[0].targets
                ]
                for g in (SHARED_GATEWAY, "tiergate-enterprise-acme")
            )

        eventually(edited_everywhere, timeout=20, what="the edit reaches both healthy gateways")
        wait_ready(
            control_plane,
            namespace,
            *EXAMPLE_OBJECTS,
            timeout=30,
        )
        for kind, name in (
            ("modelroute", "deepseek-chat"),
            ("apikeytier", "startup"),
            ("apikeytier", "enterprise-acme"),
        ):
            body = get(control_plane, namespace, kind, name)
            assert body["status"]["observedGeneration"] == body["metadata"]["generation"]
            assert kstatus(body) == "Current"
        _assert_every_status_written(control_plane, namespace)
    finally:
        remove_policy()

    # Without the policy, the next attempt goes through.
    wait_ready(control_plane, namespace, "apikeytier/broken", "modelroute/other", timeout=120)
