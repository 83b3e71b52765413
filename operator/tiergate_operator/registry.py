"""Every name tiergate uses in the Kubernetes API: kinds, labels and annotations (pure).

The kinds are fixed: the CRDs' group ``tiergate.dev`` and the Kubernetes APIs the
operator writes. The labels and annotations tiergate owns sit under a prefix, the
operator setting ``TIERGATE_PREFIX`` (default ``tiergate.dev``); ``PrefixedKeys`` names
them, so the operator that writes them, the operator that reads them back, the CLI
and the tests agree. The ``app.kubernetes.io`` labels follow Kubernetes' conventions
and never take the prefix.
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from dataclasses import dataclass

__all__ = [
    "ACCESS_COMPONENT",
    "ACCESS_KINDS",
    "API_KEY_TIER",
    "CHILD_KINDS",
    "COMPONENT_LABEL",
    "CONFIG_MAP",
    "CRD_API_VERSION",
    "CRD_GROUP",
    "CRD_KINDS",
    "CRD_VERSION",
    "CUSTOM_KINDS",
    "DEFAULT_PREFIX",
    "DEPLOYMENT",
    "EVENT",
    "GATEWAY_APP",
    "GATEWAY_COMPONENT",
    "GATEWAY_KINDS",
    "HORIZONTAL_POD_AUTOSCALER",
    "INSTANCE_LABEL",
    "KINDS",
    "MANAGED_BY",
    "MANAGED_BY_LABEL",
    "MODEL_ROUTE",
    "NAME_LABEL",
    "OPERATOR",
    "OPTIONAL_KINDS",
    "PART_OF",
    "PART_OF_LABEL",
    "POD_DISRUPTION_BUDGET",
    "PROMETHEUS_RULE",
    "PROMETHEUS_RULE_CRD",
    "ROLE",
    "ROLE_BINDING",
    "SECRET",
    "SERVICE",
    "SERVICE_ACCOUNT",
    "SPEND_REPORT",
    "Kind",
    "PrefixedKeys",
    "is_label_prefix",
    "label_selector",
    "resources",
]


@dataclass(frozen=True)
class Kind:
    """One resource kind, as the API and kubectl name it."""

    kind: str
    group: str  # "" for the core API
    version: str
    plural: str

    @property
    def api_version(self) -> str:
        return f"{self.group}/{self.version}" if self.group else self.version

    @property
    def resource(self) -> str:
        """The fully qualified name kubectl accepts: ``modelroutes.tiergate.dev``, ``configmaps``."""
        return f"{self.plural}.{self.group}" if self.group else self.plural

    def type_meta(self) -> dict[str, str]:
        """The ``apiVersion`` and ``kind`` that open a manifest of this kind."""
        return {"apiVersion": self.api_version, "kind": self.kind}

    def collection_path(self, namespace: str) -> str:
        root = f"apis/{self.group}" if self.group else "api"
        return f"{root}/{self.version}/namespaces/{namespace}/{self.plural}"


CRD_GROUP, CRD_VERSION = "tiergate.dev", "v1alpha1"
CRD_API_VERSION = f"{CRD_GROUP}/{CRD_VERSION}"
MODEL_ROUTE = Kind("ModelRoute", CRD_GROUP, CRD_VERSION, "modelroutes")
API_KEY_TIER = Kind("ApiKeyTier", CRD_GROUP, CRD_VERSION, "apikeytiers")
# Written by the gateways (one per process), folded and released by the operator.
SPEND_REPORT = Kind("SpendReport", CRD_GROUP, CRD_VERSION, "spendreports")
SECRET = Kind("Secret", "", "v1", "secrets")
EVENT = Kind("Event", "", "v1", "events")
CONFIG_MAP = Kind("ConfigMap", "", "v1", "configmaps")
SERVICE = Kind("Service", "", "v1", "services")
DEPLOYMENT = Kind("Deployment", "apps", "v1", "deployments")
POD_DISRUPTION_BUDGET = Kind("PodDisruptionBudget", "policy", "v1", "poddisruptionbudgets")
HORIZONTAL_POD_AUTOSCALER = Kind(
    "HorizontalPodAutoscaler", "autoscaling", "v2", "horizontalpodautoscalers"
)
SERVICE_ACCOUNT = Kind("ServiceAccount", "", "v1", "serviceaccounts")
ROLE = Kind("Role", "rbac.authorization.k8s.io", "v1", "roles")
ROLE_BINDING = Kind("RoleBinding", "rbac.authorization.k8s.io", "v1", "rolebindings")
# The Prometheus Operator's kind: served only where its CRD is installed.
PROMETHEUS_RULE = Kind("PrometheusRule", "monitoring.coreos.com", "v1", "prometheusrules")
PROMETHEUS_RULE_CRD = PROMETHEUS_RULE.resource

CUSTOM_KINDS = (MODEL_ROUTE, API_KEY_TIER)
# Every CRD tiergate installs (crds/<plural>.yaml).
CRD_KINDS = (*CUSTOM_KINDS, SPEND_REPORT)
# What the operator creates: per gateway, and once per namespace for the gateways' API access.
GATEWAY_KINDS = (CONFIG_MAP, DEPLOYMENT, SERVICE, POD_DISRUPTION_BUDGET, HORIZONTAL_POD_AUTOSCALER)
ACCESS_KINDS = (SERVICE_ACCOUNT, ROLE, ROLE_BINDING)
CHILD_KINDS = GATEWAY_KINDS + ACCESS_KINDS
# Children of kinds another project defines: written and watched only while their CRD exists.
OPTIONAL_KINDS = (PROMETHEUS_RULE,)
KINDS: Mapping[str, Kind] = {
    k.kind: k for k in (*CRD_KINDS, *CHILD_KINDS, *OPTIONAL_KINDS, SECRET, EVENT)
}

NAME_LABEL = "app.kubernetes.io/name"
INSTANCE_LABEL = "app.kubernetes.io/instance"
COMPONENT_LABEL = "app.kubernetes.io/component"
PART_OF_LABEL = "app.kubernetes.io/part-of"
MANAGED_BY_LABEL = "app.kubernetes.io/managed-by"
# The operator's name: the managed-by value of its children and its server-side apply field manager.
OPERATOR = "tiergate-operator"
GATEWAY_APP = "tiergate-gateway"
PART_OF = "tiergate"
GATEWAY_COMPONENT, ACCESS_COMPONENT = "gateway", "gateway-access"
MANAGED_BY: Mapping[str, str] = {MANAGED_BY_LABEL: OPERATOR}

DEFAULT_PREFIX = "tiergate.dev"
# A label or annotation key's prefix must be a DNS subdomain.
_DNS_SUBDOMAIN = re.compile(r"^[a-z0-9]([-a-z0-9]*[a-z0-9])?(\.[a-z0-9]([-a-z0-9]*[a-z0-9])?)*$")


def is_label_prefix(prefix: str) -> bool:
    return len(prefix) <= 253 and bool(_DNS_SUBDOMAIN.match(prefix))


@dataclass(frozen=True)
class PrefixedKeys:
    """The label and annotation keys tiergate owns, under ``prefix``."""

    prefix: str = DEFAULT_PREFIX

    def __post_init__(self) -> None:
        if not is_label_prefix(self.prefix):
            raise ValueError(f"{self.prefix!r} is not a DNS subdomain, so no label prefix")

    @property
    def gateway_label(self) -> str:
        """On every child of a gateway: the gateway's name (its pods' selector too)."""
        return f"{self.prefix}/gateway"

    @property
    def isolation_label(self) -> str:
        return f"{self.prefix}/isolation"

    @property
    def config_generation_annotation(self) -> str:
        """On a gateway's ConfigMap: the generation of the config it holds."""
        return f"{self.prefix}/config-generation"

    @property
    def config_version_annotation(self) -> str:
        return f"{self.prefix}/config-version"

    @property
    def tier_label(self) -> str:
        """On a key Secret ``tiergate keys new`` makes: the tier it is for (informational)."""
        return f"{self.prefix}/tier"

    @property
    def team_label(self) -> str:
        """On a key Secret ``tiergate keys new`` makes: who holds the key (informational)."""
        return f"{self.prefix}/team"


def label_selector(labels: Mapping[str, str]) -> str:
    """``key=value,...``, as kubectl's ``-l`` takes it."""
    return ",".join(f"{key}={value}" for key, value in labels.items())


def resources(*kinds: Kind) -> str:
    """``kubectl get``'s comma-separated resource list for ``kinds``."""
    return ",".join(kind.resource for kind in kinds)
