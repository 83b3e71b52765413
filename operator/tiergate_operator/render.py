"""Pure rendering: a ``GatewayPlan`` + ``OperatorSettings`` -> the gateway's manifests.

ConfigMap (the config), Deployment, Service, a PodDisruptionBudget and pods spread over
nodes and zones for Dedicated gateways and a shared pool of more than one replica, and
an HPA when a Dedicated tier sets autoscaling. The pod template depends
on the settings and the Secrets mounted, never on the config itself, so a config
change reaches running pods through the ConfigMap without a restart.
"""

from __future__ import annotations

import hashlib
from typing import Any

from tiergate_contract import configmap_payload
from tiergate_operator.models import Autoscaling, Resources
from tiergate_operator.names import CREDENTIALS_DIR
from tiergate_operator.plans import GatewayPlan
from tiergate_operator.registry import (
    COMPONENT_LABEL,
    CONFIG_MAP,
    DEPLOYMENT,
    GATEWAY_APP,
    GATEWAY_COMPONENT,
    HORIZONTAL_POD_AUTOSCALER,
    INSTANCE_LABEL,
    MANAGED_BY,
    NAME_LABEL,
    PART_OF,
    PART_OF_LABEL,
    POD_DISRUPTION_BUDGET,
    SERVICE,
)
from tiergate_operator.settings import OperatorSettings
from tiergate_operator.slo import latency_buckets

__all__ = [
    "CONFIGMAP_LIMIT_BYTES",
    "HTTP_PORT",
    "Manifest",
    "configmap_bytes",
    "gateway_container_args",
    "render",
    "selector_labels",
]

Manifest = dict[str, Any]
HTTP_PORT = 8080
REDIS_URL_ENV = "TIERGATE_GATEWAY_REDIS_URL"
# Time the kubelet gives past the gateway's drain delay and grace (its own shutdown).
TERMINATION_MARGIN_SECONDS = 5
# The API server refuses a ConfigMap whose data and binaryData (decoded) hold more than
# 1 MiB in total (corev1's MaxSecretSize, which ConfigMaps share).
CONFIGMAP_LIMIT_BYTES = 1024 * 1024


def configmap_bytes(configmap: Manifest) -> int:
    """What the API server counts against ``CONFIGMAP_LIMIT_BYTES``: values of ``data`` (UTF-8)
    plus values of ``binaryData`` (decoded)."""
    data = sum(len(str(value).encode()) for value in (configmap.get("data") or {}).values())
    # Decoded length from the (unwrapped, padded) base64 text, without decoding a megabyte.
    encoded = [str(value) for value in (configmap.get("binaryData") or {}).values()]
    binary = sum(len(text) // 4 * 3 - text[-2:].count("=") for text in encoded)
    return data + binary


def selector_labels(plan: GatewayPlan, settings: OperatorSettings) -> dict[str, str]:
    return {NAME_LABEL: GATEWAY_APP, settings.keys.gateway_label: plan.name}


def _label_selector(plan: GatewayPlan, settings: OperatorSettings) -> Manifest:
    """A new dict on each call: no two places of a manifest share an object."""
    return {"matchLabels": selector_labels(plan, settings)}


def _labels(plan: GatewayPlan, settings: OperatorSettings) -> dict[str, str]:
    return {
        **selector_labels(plan, settings),
        INSTANCE_LABEL: plan.name,
        COMPONENT_LABEL: GATEWAY_COMPONENT,
        PART_OF_LABEL: PART_OF,
        **MANAGED_BY,
        settings.keys.isolation_label: plan.isolation,
    }


def _metadata(plan: GatewayPlan, settings: OperatorSettings, **extra: Any) -> Manifest:
    owners = [
        {
            "apiVersion": o.api_version,
            "kind": o.kind,
            "name": o.name,
            "uid": o.uid,
            **({"controller": True, "blockOwnerDeletion": True} if o.controller else {}),
        }
        for o in plan.owners
    ]
    return {
        "name": plan.name,
        "namespace": plan.namespace,
        "labels": _labels(plan, settings),
        "ownerReferences": owners,
        **extra,
    }


def gateway_container_args(
    plan: GatewayPlan, settings: OperatorSettings
) -> tuple[list[str], list[Manifest]]:
    """The gateway CLI's arguments and environment: the one place that knows its flags."""
    env = {
        "TIERGATE_GATEWAY_CONFIGMAP": f"{plan.namespace}/{plan.name}",
        "TIERGATE_GATEWAY_HOST": "0.0.0.0",
        "TIERGATE_GATEWAY_PORT": str(HTTP_PORT),
        "TIERGATE_GATEWAY_CREDENTIALS_DIR": CREDENTIALS_DIR,
        "TIERGATE_GATEWAY_DRAIN_DELAY_SECONDS": str(settings.gateway_drain_delay_seconds),
        "TIERGATE_GATEWAY_GRACE_SECONDS": str(settings.gateway_grace_seconds),
    }
    env.update(settings.gateway_tuning)
    if buckets := latency_buckets(plan):
        # The SLO rules read the latency histogram's bucket at each threshold.
        env["TIERGATE_GATEWAY_LATENCY_BUCKETS"] = ",".join(buckets)
    values: dict[str, Manifest] = {name: {"value": value} for name, value in env.items()}
    if settings.redis_secret is not None:
        # A Redis URL may carry a password: the pod reads it from the user's Secret, so it
        # never appears in the Deployment (nor in anything the operator writes or logs).
        values[REDIS_URL_ENV] = {
            "valueFrom": {
                "secretKeyRef": {
                    "name": settings.redis_secret.name,
                    "key": settings.redis_secret.key,
                }
            }
        }
    elif settings.redis_url:
        values[REDIS_URL_ENV] = {
            "value": settings.redis_url
        }  # refused by the settings if it has a password
    return [], [{"name": name, **value} for name, value in sorted(values.items())]


def _credential_volume(secret: str) -> str:
    return f"credentials-{hashlib.sha256(secret.encode()).hexdigest()[:12]}"


def _resources(plan: GatewayPlan, settings: OperatorSettings) -> Manifest:
    chosen: Resources = plan.resources or (
        settings.shared_resources if plan.isolation == "Shared" else settings.dedicated_resources
    )
    resources: Manifest = chosen.model_dump(mode="json", exclude_none=True)
    # Every gateway container, whatever resources a tier asks for (its spec has no field for
    # it): the /tmp emptyDir (64Mi at most) and the logs, so kube-score and evictions agree.
    for kind, quantity in (
        ("requests", settings.ephemeral_storage_request),
        ("limits", settings.ephemeral_storage_limit),
    ):
        resources[kind] = resources.get(kind, {}) | {"ephemeral-storage": quantity}
    return resources


def _probe(path: str, period: int, failures: int) -> Manifest:
    return {
        "httpGet": {"path": path, "port": "http"},
        "periodSeconds": period,
        "timeoutSeconds": 2,
        "failureThreshold": failures,
    }


def _container(plan: GatewayPlan, settings: OperatorSettings) -> Manifest:
    args, env = gateway_container_args(plan, settings)
    mounts = [{"name": "tmp", "mountPath": "/tmp"}] + [
        {
            "name": _credential_volume(secret),
            "mountPath": f"{CREDENTIALS_DIR}/{secret}",
            "readOnly": True,
        }
        for secret in plan.credential_secrets
    ]
    return {
        "name": "gateway",
        "image": settings.gateway_image,
        "imagePullPolicy": settings.image_pull_policy,
        **({"args": args} if args else {}),
        "env": env,
        "ports": [{"name": "http", "containerPort": HTTP_PORT, "protocol": "TCP"}],
        "livenessProbe": _probe("/healthz", period=10, failures=3),
        "readinessProbe": _probe("/readyz", period=5, failures=2),
        "resources": _resources(plan, settings),
        "securityContext": {
            "allowPrivilegeEscalation": False,
            "readOnlyRootFilesystem": True,
            "runAsNonRoot": True,
            "capabilities": {"drop": ["ALL"]},
        },
        "volumeMounts": mounts,
    }


def _replicated(plan: GatewayPlan, settings: OperatorSettings) -> bool:
    """Whether the gateway gets a PodDisruptionBudget and spread pods: a Dedicated gateway
    always (replicas or an HPA scale it), the shared pool when it has more than one replica."""
    return plan.isolation == "Dedicated" or settings.shared_replicas > 1


def _spread(plan: GatewayPlan, settings: OperatorSettings) -> Manifest:
    """Replicas on different nodes and zones where the cluster has them; preferences only, so
    a one-node or one-zone cluster still runs every replica."""
    return {
        "affinity": {
            "podAntiAffinity": {
                "preferredDuringSchedulingIgnoredDuringExecution": [
                    {
                        "weight": 100,
                        "podAffinityTerm": {
                            "topologyKey": "kubernetes.io/hostname",
                            "labelSelector": _label_selector(plan, settings),
                        },
                    }
                ]
            }
        },
        "topologySpreadConstraints": [
            {
                "maxSkew": 1,
                "topologyKey": topology_key,
                "whenUnsatisfiable": "ScheduleAnyway",
                "labelSelector": _label_selector(plan, settings),
            }
            for topology_key in ("kubernetes.io/hostname", "topology.kubernetes.io/zone")
        ],
    }


def _pod_template(plan: GatewayPlan, settings: OperatorSettings) -> Manifest:
    volumes = [{"name": "tmp", "emptyDir": {"sizeLimit": "64Mi"}}] + [
        {"name": _credential_volume(secret), "secret": {"secretName": secret, "defaultMode": 0o440}}
        for secret in plan.credential_secrets
    ]
    spec: Manifest = {
        "serviceAccountName": settings.gateway_service_account,
        "enableServiceLinks": False,
        "terminationGracePeriodSeconds": settings.gateway_drain_delay_seconds
        + settings.gateway_grace_seconds
        + TERMINATION_MARGIN_SECONDS,
        "securityContext": {
            "runAsNonRoot": True,
            "runAsUser": 65532,
            "runAsGroup": 65532,
            "fsGroup": 65532,
            "seccompProfile": {"type": "RuntimeDefault"},
        },
        "containers": [_container(plan, settings)],
        "volumes": volumes,
    }
    if _replicated(plan, settings):
        spec |= _spread(plan, settings)
    return {"metadata": {"labels": _labels(plan, settings)}, "spec": spec}


def _config_map(plan: GatewayPlan, settings: OperatorSettings) -> Manifest:
    return {
        **CONFIG_MAP.type_meta(),
        "metadata": _metadata(
            plan,
            settings,
            annotations={
                settings.keys.config_generation_annotation: plan.config.generation,
                settings.keys.config_version_annotation: plan.config.version,
            },
        ),
        **configmap_payload(plan.config),
    }


def _deployment(plan: GatewayPlan, settings: OperatorSettings) -> Manifest:
    spec: Manifest = {
        "selector": _label_selector(plan, settings),
        "revisionHistoryLimit": 3,
        "strategy": {
            "type": "RollingUpdate",
            "rollingUpdate": {"maxUnavailable": 0, "maxSurge": 1},
        },
        "template": _pod_template(plan, settings),
    }
    if plan.autoscaling is None:
        spec = {
            "replicas": plan.replicas if plan.replicas is not None else settings.shared_replicas,
            **spec,
        }
    return {
        **DEPLOYMENT.type_meta(),
        "metadata": _metadata(plan, settings),
        "spec": spec,
    }


def _service(plan: GatewayPlan, settings: OperatorSettings) -> Manifest:
    return {
        **SERVICE.type_meta(),
        "metadata": _metadata(plan, settings),
        "spec": {
            "type": "ClusterIP",
            "selector": selector_labels(plan, settings),
            "ports": [{"name": "http", "port": 80, "targetPort": "http", "protocol": "TCP"}],
        },
    }


def _disruption_budget(plan: GatewayPlan, settings: OperatorSettings) -> Manifest:
    chosen = plan.pod_disruption_budget
    budget: Manifest = (
        chosen.model_dump(mode="json", exclude_none=True) if chosen else {"maxUnavailable": 1}
    )
    return {
        **POD_DISRUPTION_BUDGET.type_meta(),
        "metadata": _metadata(plan, settings),
        "spec": {**budget, "selector": _label_selector(plan, settings)},
    }


def _autoscaler(plan: GatewayPlan, settings: OperatorSettings, scaling: Autoscaling) -> Manifest:
    return {
        **HORIZONTAL_POD_AUTOSCALER.type_meta(),
        "metadata": _metadata(plan, settings),
        "spec": {
            "scaleTargetRef": {**DEPLOYMENT.type_meta(), "name": plan.name},
            "minReplicas": scaling.min_replicas,
            "maxReplicas": scaling.max_replicas,
            "metrics": [
                {
                    "type": "Resource",
                    "resource": {
                        "name": "cpu",
                        "target": {
                            "type": "Utilization",
                            "averageUtilization": scaling.target_cpu_utilization_percentage,
                        },
                    },
                }
            ],
        },
    }


def render(plan: GatewayPlan, settings: OperatorSettings) -> list[Manifest]:
    """The manifests of one gateway, config first; all named after the gateway."""
    manifests = [_config_map(plan, settings), _deployment(plan, settings), _service(plan, settings)]
    if _replicated(plan, settings):
        manifests.append(_disruption_budget(plan, settings))
    if plan.autoscaling is not None:
        manifests.append(_autoscaler(plan, settings, plan.autoscaling))
    return manifests
