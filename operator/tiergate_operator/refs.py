"""Where each kind the operator writes lives in the API (pure)."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

__all__ = ["CRD_GROUP", "CRD_VERSION", "ObjectRef", "collection_path"]

CRD_GROUP, CRD_VERSION = "tiergate.dev", "v1alpha1"

_COLLECTIONS: dict[str, str] = {
    "ConfigMap": "api/v1/namespaces/{ns}/configmaps",
    "Service": "api/v1/namespaces/{ns}/services",
    "Secret": "api/v1/namespaces/{ns}/secrets",
    "Event": "api/v1/namespaces/{ns}/events",
    "ServiceAccount": "api/v1/namespaces/{ns}/serviceaccounts",
    "Role": "apis/rbac.authorization.k8s.io/v1/namespaces/{ns}/roles",
    "RoleBinding": "apis/rbac.authorization.k8s.io/v1/namespaces/{ns}/rolebindings",
    "Deployment": "apis/apps/v1/namespaces/{ns}/deployments",
    "PodDisruptionBudget": "apis/policy/v1/namespaces/{ns}/poddisruptionbudgets",
    "HorizontalPodAutoscaler": "apis/autoscaling/v2/namespaces/{ns}/horizontalpodautoscalers",
    "ModelRoute": f"apis/{CRD_GROUP}/{CRD_VERSION}/namespaces/{{ns}}/modelroutes",
    "ApiKeyTier": f"apis/{CRD_GROUP}/{CRD_VERSION}/namespaces/{{ns}}/apikeytiers",
}


def collection_path(kind: str, namespace: str) -> str:
    return _COLLECTIONS[kind].format(ns=namespace)


@dataclass(frozen=True, order=True)
class ObjectRef:
    kind: str
    namespace: str
    name: str

    def path(self) -> str:
        return f"{collection_path(self.kind, self.namespace)}/{self.name}"

    @classmethod
    def of(cls, manifest: dict[str, Any]) -> ObjectRef:
        metadata = manifest["metadata"]
        return cls(manifest["kind"], metadata["namespace"], metadata["name"])
