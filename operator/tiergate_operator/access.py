"""The gateways' own API access in a namespace (pure): a ServiceAccount that may read the
gateways' ConfigMaps (a pod watches its config), write the namespace's SpendReports (each
process reports its spend) and read its ApiKeyTiers (the folded ledger, its baseline); nothing
else. See docs/ledger.md."""

from __future__ import annotations

from collections.abc import Iterable
from typing import Any

from tiergate_operator.plans import OwnerRef
from tiergate_operator.registry import (
    ACCESS_COMPONENT,
    API_KEY_TIER,
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
    SPEND_REPORT,
)
from tiergate_operator.settings import OperatorSettings

__all__ = ["GATEWAY_SPEND_REPORT_VERBS", "render_gateway_access"]

# A gateway creates its process's report and updates it (never deletes: only the operator folds).
GATEWAY_SPEND_REPORT_VERBS = ("create", "get", "list", "watch", "update", "patch")

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
                },
                {
                    "apiGroups": [SPEND_REPORT.group],
                    "resources": [SPEND_REPORT.plural],
                    "verbs": list(GATEWAY_SPEND_REPORT_VERBS),
                },
                {
                    "apiGroups": [API_KEY_TIER.group],
                    "resources": [API_KEY_TIER.plural],
                    "verbs": ["get", "list", "watch"],
                },
            ],
        },
        {
            **ROLE_BINDING.type_meta(),
            "metadata": metadata,
            "roleRef": {"apiGroup": ROLE.group, "kind": ROLE.kind, "name": name},
            "subjects": [{"kind": SERVICE_ACCOUNT.kind, "name": name, "namespace": namespace}],
        },
    ]
