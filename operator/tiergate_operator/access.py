"""The gateways' own API access in a namespace (pure): a ServiceAccount that may only
read the gateways' ConfigMaps, so a pod can watch its config and nothing else."""

from __future__ import annotations

from collections.abc import Iterable
from typing import Any

from tiergate_operator.plans import OwnerRef
from tiergate_operator.settings import OperatorSettings

__all__ = ["render_gateway_access"]

Manifest = dict[str, Any]


def render_gateway_access(
    namespace: str, gateways: Iterable[str], owners: Iterable[OwnerRef], settings: OperatorSettings
) -> list[Manifest]:
    """ServiceAccount, Role and RoleBinding shared by every gateway of ``namespace``.

    Owned (not as controller) by every tier of the namespace, so garbage collection
    removes them with the last tier.
    """
    gateways = sorted(set(gateways))
    if not gateways:
        return []
    name = settings.gateway_service_account
    metadata = {
        "name": name,
        "namespace": namespace,
        "labels": {
            "app.kubernetes.io/name": "tiergate-gateway",
            "app.kubernetes.io/component": "gateway-access",
            "app.kubernetes.io/part-of": "tiergate",
            "app.kubernetes.io/managed-by": "tiergate-operator",
        },
        "ownerReferences": [
            {"apiVersion": o.api_version, "kind": o.kind, "name": o.name, "uid": o.uid}
            for o in sorted(owners, key=lambda o: o.name)
        ],
    }
    return [
        {
            "apiVersion": "v1",
            "kind": "ServiceAccount",
            "metadata": metadata,
            "automountServiceAccountToken": True,
        },
        {
            "apiVersion": "rbac.authorization.k8s.io/v1",
            "kind": "Role",
            "metadata": metadata,
            "rules": [
                {
                    "apiGroups": [""],
                    "resources": ["configmaps"],
                    "resourceNames": gateways,
                    "verbs": ["get", "list", "watch"],
                }
            ],
        },
        {
            "apiVersion": "rbac.authorization.k8s.io/v1",
            "kind": "RoleBinding",
            "metadata": metadata,
            "roleRef": {"apiGroup": "rbac.authorization.k8s.io", "kind": "Role", "name": name},
            "subjects": [{"kind": "ServiceAccount", "name": name, "namespace": namespace}],
        },
    ]
