"""The only module that imports kopf: settings, watch handlers, and the reconciler's lifetime.

Handlers do no work of their own. Each watch event updates the ``Store``, which
marks the namespace dirty when something that matters changed; one reconciler task
rebuilds every gateway of a dirty namespace from all its inputs (level-based).
"""

from __future__ import annotations

import asyncio
import json
import logging
from collections.abc import Callable
from typing import Any

import kopf

from tiergate_operator.kube import KubeApi, load_client_configuration
from tiergate_operator.reconcile import Reconciler
from tiergate_operator.refs import CRD_GROUP, CRD_VERSION
from tiergate_operator.settings import SettingsError, load_operator_settings
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
    settings: kopf.OperatorSettings,
    memo: Any,
    logger: logging.Logger | logging.LoggerAdapter[Any],
    **_: Any,
) -> None:
    settings.posting.level = logging.WARNING
    settings.watching.server_timeout = 300
    settings.watching.client_timeout = 330
    try:
        operator_settings = load_operator_settings()
    except SettingsError as error:  # a retry would not help: stop the operator
        raise kopf.PermanentError(f"refusing to start: {error}") from None
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
    logger.info(
        "tiergate reconciler stopped after %d passes; API writes by verb: %s",
        reconciler.passes,
        json.dumps(writes),
    )
    await reconciler.close()


Body = dict[str, Any]
Put = Callable[[Store, Body], object]
Remove = Callable[[Store, str, str], object]


def _watch(
    group: str,
    version: str,
    plural: str,
    kind: str,
    put: Put,
    remove: Remove,
    labels: dict[str, str] | None = None,
) -> None:
    """Keep the store in step with one resource kind.

    kopf calls index functions for every object before any handler, and holds every
    handler until the initial listing of every indexed kind is complete; so the store
    is filled by an index function, and the reconciler, woken only by handlers, never
    sees a half-listed cluster (a partial view would remove routes from gateways).
    Deletions bypass index functions, so the handler applies them.
    """

    @kopf.index(group, version, plural, labels=labels, id=f"{plural}-store")
    def stored(body: kopf.Body, memo: Any, **_: Any) -> None:
        put(memo.store, dict(body) | {"kind": kind})

    @kopf.on.event(group, version, plural, labels=labels, id=f"{plural}-events")
    def observed(
        event: kopf.RawEvent, namespace: str | None, name: str, memo: Any, **_: Any
    ) -> None:
        if event["type"] == "DELETED":
            assert namespace, f"{plural} are namespaced"
            remove(memo.store, namespace, name)
        memo.reconciler.wake()


_watch(CRD_GROUP, CRD_VERSION, "modelroutes", "ModelRoute", Store.put_route, Store.remove_route)
_watch(CRD_GROUP, CRD_VERSION, "apikeytiers", "ApiKeyTier", Store.put_tier, Store.remove_tier)
_watch(
    "",
    "v1",
    "secrets",
    "Secret",
    lambda store, body: store.put_secret(
        body["metadata"]["namespace"], body["metadata"]["name"], body.get("data")
    ),
    Store.remove_secret,
)


def _child_remover(kind: str) -> Remove:
    return lambda store, namespace, name: store.remove_child(namespace, kind, name)


for _group, _version, _plural, _kind in _CHILD_RESOURCES:
    _watch(
        _group, _version, _plural, _kind, Store.put_child, _child_remover(_kind), labels=MANAGED_BY
    )
