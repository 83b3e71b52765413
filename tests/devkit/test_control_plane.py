"""Smoke tests proving the local control plane is real: each would fail on a fake API."""

from __future__ import annotations

import json
import subprocess
from pathlib import Path

import pytest

from tests.support.kube import eventually
from tiergate_devkit.cluster import ControlPlane

pytestmark = pytest.mark.cluster

TINY_CHART = Path(__file__).parents[1] / "data" / "tiny-chart"


def get_json(plane: ControlPlane, *args: str) -> dict:  # type: ignore[type-arg]
    return json.loads(plane.kubectl("get", *args, "-o", "json").stdout)  # type: ignore[no-any-return]


def test_api_server_reports_its_pinned_version(control_plane: ControlPlane) -> None:
    version = json.loads(control_plane.kubectl("version", "-o", "json").stdout)
    assert version["serverVersion"]["gitVersion"] == "v1.37.2"


def test_deployment_becomes_available_on_the_kwok_node(
    control_plane: ControlPlane, namespace: str
) -> None:
    control_plane.kubectl(
        "-n",
        namespace,
        "create",
        "deployment",
        "web",
        "--image=registry.invalid/web:1",
        "--replicas=2",
    )
    control_plane.kubectl(
        "-n", namespace, "wait", "deployment/web", "--for=condition=Available", "--timeout=90s"
    )
    pods = get_json(control_plane, "-n", namespace, "pods", "-l", "app=web")["items"]
    assert len(pods) == 2
    assert {pod["spec"]["nodeName"] for pod in pods} == {"kwok-node-0"}
    assert {pod["status"]["phase"] for pod in pods} == {"Running"}


def test_garbage_collector_removes_owned_objects(
    control_plane: ControlPlane, namespace: str
) -> None:
    control_plane.kubectl("-n", namespace, "create", "configmap", "owner")
    owner_uid = get_json(control_plane, "-n", namespace, "configmap", "owner")["metadata"]["uid"]
    child = {
        "apiVersion": "v1",
        "kind": "ConfigMap",
        "metadata": {
            "name": "child",
            "namespace": namespace,
            "ownerReferences": [
                {"apiVersion": "v1", "kind": "ConfigMap", "name": "owner", "uid": owner_uid}
            ],
        },
    }
    control_plane.kubectl("apply", "-f", "-", input=json.dumps(child))
    control_plane.kubectl("-n", namespace, "delete", "configmap", "owner")

    def child_is_gone() -> bool:
        """the owned ConfigMap is garbage-collected"""
        found = control_plane.kubectl("-n", namespace, "get", "configmap", "child", check=False)
        return found.returncode != 0 and "NotFound" in found.stderr

    eventually(child_is_gone)


def test_rbac_denies_the_operator_user_until_a_role_binding_grants_it(
    control_plane: ControlPlane, namespace: str
) -> None:
    as_operator = {"kubeconfig": control_plane.operator_kubeconfig, "check": False}
    denied = control_plane.kubectl("-n", namespace, "get", "configmaps", **as_operator)  # type: ignore[arg-type]
    assert denied.returncode != 0
    assert "Forbidden" in denied.stderr
    assert 'User "operator"' in denied.stderr

    control_plane.kubectl(
        "-n", namespace, "create", "role", "cm-reader", "--verb=get,list", "--resource=configmaps"
    )
    control_plane.kubectl(
        "-n", namespace, "create", "rolebinding", "cm-reader", "--role=cm-reader", "--user=operator"
    )

    def operator_may_list() -> bool:
        """the operator user may list configmaps"""
        allowed = control_plane.kubectl("-n", namespace, "get", "configmaps", **as_operator)  # type: ignore[arg-type]
        return allowed.returncode == 0

    eventually(operator_may_list, timeout=20)


CEL_CRD = {
    "apiVersion": "apiextensions.k8s.io/v1",
    "kind": "CustomResourceDefinition",
    "metadata": {"name": "widgets.smoke.tiergate.dev"},
    "spec": {
        "group": "smoke.tiergate.dev",
        "scope": "Namespaced",
        "names": {"plural": "widgets", "singular": "widget", "kind": "Widget"},
        "versions": [
            {
                "name": "v1",
                "served": True,
                "storage": True,
                "schema": {
                    "openAPIV3Schema": {
                        "type": "object",
                        "properties": {
                            "spec": {
                                "type": "object",
                                "properties": {
                                    "min": {"type": "integer"},
                                    "max": {"type": "integer"},
                                },
                                "x-kubernetes-validations": [
                                    {
                                        "rule": "self.min <= self.max",
                                        "message": "min must not exceed max",
                                    }
                                ],
                            }
                        },
                    }
                },
            }
        ],
    },
}


def test_crd_cel_rule_rejects_a_bad_object_with_its_message(
    control_plane: ControlPlane, namespace: str
) -> None:
    control_plane.kubectl("apply", "--server-side", "-f", "-", input=json.dumps(CEL_CRD))
    control_plane.kubectl(
        "wait", "--for=condition=Established", "crd/widgets.smoke.tiergate.dev", "--timeout=30s"
    )

    def widget(name: str, low: int, high: int) -> str:
        return json.dumps(
            {
                "apiVersion": "smoke.tiergate.dev/v1",
                "kind": "Widget",
                "metadata": {"name": name, "namespace": namespace},
                "spec": {"min": low, "max": high},
            }
        )

    rejected = control_plane.kubectl("create", "-f", "-", input=widget("bad", 5, 1), check=False)
    assert rejected.returncode != 0
    assert "min must not exceed max" in rejected.stderr
    control_plane.kubectl("create", "-f", "-", input=widget("good", 1, 5))


def test_helm_installs_and_uninstalls_a_chart(control_plane: ControlPlane, namespace: str) -> None:
    assert "v3.22.0" in control_plane.helm("version", "--short").stdout
    control_plane.helm(
        "install",
        "smoke",
        str(TINY_CHART),
        "-n",
        namespace,
        "--set",
        "greeting=hi",
        "--wait",
        "--timeout",
        "60s",
    )
    installed = get_json(control_plane, "-n", namespace, "configmap", "smoke-tiny")
    assert installed["data"] == {"greeting": "hi"}

    control_plane.helm("uninstall", "smoke", "-n", namespace, "--wait")
    with pytest.raises(subprocess.CalledProcessError):
        control_plane.kubectl("-n", namespace, "get", "configmap", "smoke-tiny")
