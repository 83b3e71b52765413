"""The gateways' own API access in a namespace (pure): a ServiceAccount that may only
read the gateways' ConfigMaps, so a pod can watch its config and nothing else."""

from __future__ import annotations

from collections.abc import Iterable
from typing import Any

from tiergate_operator.plans import OwnerRef
from tiergate_operator.registry import (
    ACCESS_COMPONENT,
    COMPONENT_LABEL,
    CONFIG_MAP,
    GATEWAY_APP,
    MANAGED_BY,
    NAME_LABEL,
    PART_OF,
    PART_OF_LABEL,
    ROLE,
    ROLE_BINDING,
    SERVICE_ACCOUNT,
)
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
            NAME_LABEL: GATEWAY_APP,
            COMPONENT_LABEL: ACCESS_COMPONENT,
            PART_OF_LABEL: PART_OF,
            **MANAGED_BY,
        },
        "ownerReferences": [
            {"apiVersion": o.api_version, "kind": o.kind, "name": o.name, "uid": o.uid}
            for o in sorted(owners, key=lambda o: o.name)
        ],
    }
    return [
        {
            **SERVICE_ACCOUNT.type_meta(),
            "metadata": metadata,
            "automountServiceAccountToken": True,
        },
        {
            **ROLE.type_meta(),
            "metadata": metadata,
            "rules": [
                {
                    "apiGroups": [CONFIG_MAP.group],
                    "resources": [CONFIG_MAP.plural],
                    "resourceNames": gateways,
                    "verbs": ["get", "list", "watch"],
                }
            ],
        },
        {
            **ROLE_BINDING.type_meta(),
            "metadata": metadata,
            "roleRef": {"apiGroup": ROLE.group, "kind": ROLE.kind, "name": name},
            "subjects": [{"kind": SERVICE_ACCOUNT.kind, "name": name, "namespace": namespace}],
        },
    ]
