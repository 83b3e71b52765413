"""The only module that imports kopf: settings, watch handlers, and the reconciler's lifetime.

Handlers do no work of their own. Each watch event updates the ``Store`` and, when
something that matters changed, marks the namespace dirty; one reconciler task
rebuilds every gateway of a dirty namespace from all its inputs (level-based).
"""

from __future__ import annotations

import asyncio
import json
import logging
from typing import Any

import kopf

from tiergate_operator.kube import CRD_GROUP, CRD_VERSION, KubeApi, load_client_configuration
from tiergate_operator.reconcile import Reconciler
from tiergate_operator.settings import load_operator_settings
from tiergate_operator.store import Store

__all__: list[str] = []

MANAGED_BY = {"app.kubernetes.io/managed-by": "tiergate-operator"}
_CHILD_RESOURCES = (
    ("", "v1", "configmaps", "ConfigMap"),
    ("", "v1", "services", "Service"),
    ("apps", "v1", "deployments", "Deployment"),
    ("policy", "v1", "poddisruptionbudgets", "PodDisruptionBudget"),
    ("autoscaling", "v2", "horizontalpodautoscalers", "HorizontalPodAutoscaler"),
    ("", "v1", "serviceaccounts", "ServiceAccount"),
    ("rbac.authorization.k8s.io", "v1", "roles", "Role"),
    ("rbac.authorization.k8s.io", "v1", "rolebindings", "RoleBinding"),
)



@kopf.on.startup()
async def start_reconciler(
    settings: kopf.OperatorSettings, memo: Any, logger: logging.Logger | logging.LoggerAdapter[Any],
    **_: Any
) -> None:
    settings.posting.level = logging.WARNING
    settings.watching.server_timeout = 300
    settings.watching.client_timeout = 330
    settings.persistence.finalizer = "tiergate.dev/unused"  # no handler here takes a finalizer
    operator_settings = load_operator_settings()
    kube = KubeApi(load_client_configuration())
    memo.store = Store()
    memo.reconciler = Reconciler(memo.store, kube, operator_settings)
    memo.task = asyncio.create_task(memo.reconciler.run(), name="tiergate-reconciler")
    logger.info("tiergate reconciler started (gateway image %s)", operator_settings.gateway_image)


@kopf.on.cleanup()
async def stop_reconciler(
    memo: Any, logger: logging.Logger | logging.LoggerAdapter[Any], **_: Any
) -> None:
    memo.task.cancel()
    await asyncio.gather(memo.task, return_exceptions=True)
    reconciler: Reconciler = memo.reconciler
    writes = dict(sorted(reconciler.kube.writes.items()))
    logger.info("tiergate reconciler stopped after %d passes; API writes by verb: %s",
                reconciler.passes, json.dumps(writes))
    await reconciler.close()


@kopf.on.event(CRD_GROUP, CRD_VERSION, "modelroutes")
def route_event(event: kopf.RawEvent, namespace: str | None, name: str, memo: Any, **_: Any) -> None:
    assert namespace, "ModelRoutes are namespaced"
    store: Store = memo.store
    changed = (store.remove_route(namespace, name) if event["type"] == "DELETED"
               else store.put_route(_with_kind(event, "ModelRoute")))
    memo.reconciler.observe(namespace, changed)


@kopf.on.event(CRD_GROUP, CRD_VERSION, "apikeytiers")
def tier_event(event: kopf.RawEvent, namespace: str | None, name: str, memo: Any, **_: Any) -> None:
    assert namespace, "ApiKeyTiers are namespaced"
    store: Store = memo.store
    changed = (store.remove_tier(namespace, name) if event["type"] == "DELETED"
               else store.put_tier(_with_kind(event, "ApiKeyTier")))
    memo.reconciler.observe(namespace, changed)


@kopf.on.event("", "v1", "secrets")
def secret_event(event: kopf.RawEvent, namespace: str | None, name: str, memo: Any, **_: Any) -> None:
    assert namespace, "Secrets are namespaced"
    store: Store = memo.store
    data: dict[str, str] | None = event["object"].get("data")  # type: ignore[assignment]
    changed = (store.remove_secret(namespace, name) if event["type"] == "DELETED"
               else store.put_secret(namespace, name, data))
    # Only namespaces that hold tiergate objects care about their Secrets.
    if changed and namespace in store.namespaces and not store.namespace(namespace).is_empty():
        memo.reconciler.observe(namespace, True)


def _with_kind(event: kopf.RawEvent, kind: str) -> dict[str, Any]:
    """The event's object; objects of an initial listing may lack their ``kind``."""
    body = dict(event["object"])
    body["kind"] = kind
    return body


def _watch_children(group: str, version: str, plural: str, kind: str) -> None:
    @kopf.on.event(group, version, plural, labels=MANAGED_BY)
    def child_event(
        event: kopf.RawEvent, namespace: str | None, name: str, memo: Any, **_: Any
    ) -> None:
        assert namespace, "gateway children are namespaced"
        store: Store = memo.store
        if event["type"] == "DELETED":
            store.remove_child(namespace, kind, name)
        else:
            store.put_child(_with_kind(event, kind))
        # A child's change (deletion, drift, status) is checked against what it should be.
        memo.reconciler.observe(namespace, True)


for _group, _version, _plural, _kind in _CHILD_RESOURCES:
    _watch_children(_group, _version, _plural, _kind)
