"""The only module that imports kopf: settings, watch handlers, and the reconciler's lifetime.

Handlers do no work of their own. Each watch event updates the ``Store``, which
marks the namespace dirty when something that matters changed; one reconciler task
rebuilds every gateway of a dirty namespace from all its inputs (level-based).
"""

from __future__ import annotations

import asyncio
import json
import logging
import os
from collections.abc import Callable
from typing import Any

import kopf

from tiergate_operator.kube import KubeApi, load_client_configuration
from tiergate_operator.ledger_keeper import LedgerKeeper, month_clock_for_tests
from tiergate_operator.readiness import TIERGATE_CRDS, Readiness, is_established, serve_readiness
from tiergate_operator.reconcile import Reconciler
from tiergate_operator.registry import (
    API_KEY_TIER,
    CHILD_KINDS,
    MANAGED_BY,
    MANAGED_BY_LABEL,
    MODEL_ROUTE,
    OPTIONAL_KINDS,
    PROMETHEUS_RULE_CRD,
    SECRET,
    SPEND_REPORT,
    Kind,
)
from tiergate_operator.settings import SettingsError, load_operator_settings, readiness_endpoint
from tiergate_operator.spend_reports import REPORT_MANAGED_BY
from tiergate_operator.store import Store

__all__: list[str] = []


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
    configuration = load_client_configuration()
    memo.readiness = Readiness()
    peering = None if settings.peering.standalone else settings.peering.name
    try:
        operator_settings = load_operator_settings()
        try:
            month_clock = month_clock_for_tests(os.environ)
        except ValueError as error:
            raise SettingsError(str(error)) from None
        memo.readiness_server = await serve_readiness(
            memo.readiness, readiness_endpoint(), configuration, peering, settings.peering.priority
        )
    except SettingsError as error:  # a retry would not help: stop the operator
        raise kopf.PermanentError(f"refusing to start: {error}") from None
    kube = KubeApi(configuration)
    memo.store = Store()
    memo.reconciler = Reconciler(memo.store, kube, operator_settings)
    memo.ledger = LedgerKeeper(
        memo.store,
        kube,
        stale_seconds=operator_settings.ledger_stale_seconds,
        month_clock=month_clock,
    )
    memo.task = memo.readiness.loop = asyncio.create_task(
        memo.reconciler.run(), name="tiergate-reconciler"
    )
    memo.ledger_task = asyncio.create_task(memo.ledger.run(), name="tiergate-ledger")
    logger.info("tiergate reconciler started (gateway image %s)", operator_settings.gateway_image)


@kopf.on.cleanup()
async def stop_reconciler(
    memo: Any, logger: logging.Logger | logging.LoggerAdapter[Any], **_: Any
) -> None:
    if (readiness_server := getattr(memo, "readiness_server", None)) is not None:
        await readiness_server.stop()  # first: the port is free when the operator ends
    memo.task.cancel()
    memo.ledger_task.cancel()
    await asyncio.gather(memo.task, memo.ledger_task, return_exceptions=True)
    memo.ledger.close()
    reconciler: Reconciler = memo.reconciler
    writes = dict(sorted(reconciler.kube.writes.items()))
    logger.info(
        "tiergate reconciler stopped after %d passes; API writes by verb: %s",
        reconciler.passes,
        json.dumps(writes),
    )
    await reconciler.close()


@kopf.on.event(
    "apiextensions.k8s.io",
    "v1",
    "customresourcedefinitions",
    when=lambda name, **_: name in TIERGATE_CRDS,
    id="readiness",
)
def tiergate_crd_observed(
    event: kopf.RawEvent, name: str, body: kopf.Body, memo: Any, **_: Any
) -> None:
    """kopf calls no handler before every indexed kind is listed: the readiness signal."""
    memo.readiness.crd_observed(name, event["type"] != "DELETED" and is_established(body))


@kopf.index(
    "apiextensions.k8s.io",
    "v1",
    "customresourcedefinitions",
    when=lambda name, **_: name == PROMETHEUS_RULE_CRD,
    id="prometheusrule-crd",
)
def prometheus_rule_crd_stored(body: kopf.Body, memo: Any, **_: Any) -> None:
    """An index, not an event handler: known before the first reconcile, which would
    otherwise delete every SLO rule while it has not heard of the CRD yet."""
    memo.store.set_prometheus_rules(is_established(body))


@kopf.on.event(
    "apiextensions.k8s.io",
    "v1",
    "customresourcedefinitions",
    when=lambda name, **_: name == PROMETHEUS_RULE_CRD,
    id="prometheusrule-crd-events",
)
def prometheus_rule_crd_observed(event: kopf.RawEvent, memo: Any, **_: Any) -> None:
    if event["type"] == "DELETED":
        memo.store.set_prometheus_rules(False)
    memo.reconciler.wake()


Body = dict[str, Any]
Put = Callable[[Store, Body], object]
Remove = Callable[[Store, str, str], object]


def _watch(kind: Kind, put: Put, remove: Remove, labels: dict[str, str] | None = None) -> None:
    """Keep the store in step with one resource kind.

    kopf calls index functions for every object before any handler, and holds every
    handler until the initial listing of every indexed kind is complete; so the store
    is filled by an index function, and the reconciler, woken only by handlers, never
    sees a half-listed cluster (a partial view would remove routes from gateways).
    Deletions bypass index functions, so the handler applies them.
    """

    resource = (kind.group, kind.version, kind.plural)

    @kopf.index(*resource, labels=labels, id=f"{kind.plural}-store")
    def stored(body: kopf.Body, memo: Any, **_: Any) -> None:
        put(memo.store, dict(body) | {"kind": kind.kind})

    @kopf.on.event(*resource, labels=labels, id=f"{kind.plural}-events")
    def observed(
        event: kopf.RawEvent, namespace: str | None, name: str, memo: Any, **_: Any
    ) -> None:
        if event["type"] == "DELETED":
            assert namespace, f"{kind.plural} are namespaced"
            remove(memo.store, namespace, name)
        memo.reconciler.wake()


_watch(MODEL_ROUTE, Store.put_route, Store.remove_route)
_watch(API_KEY_TIER, Store.put_tier, Store.remove_tier)


@kopf.on.event(
    API_KEY_TIER.group, API_KEY_TIER.version, API_KEY_TIER.plural, id="apikeytiers-ledger"
)
async def tier_money_observed(namespace: str | None, memo: Any, **_: Any) -> None:
    """A tier's budget, grants or ledger changed: its status.spend is recomputed."""
    assert namespace, "apikeytiers are namespaced"
    memo.ledger.wake(namespace)


_REPORTS = (SPEND_REPORT.group, SPEND_REPORT.version, SPEND_REPORT.plural)
_REPORT_LABELS = {MANAGED_BY_LABEL: REPORT_MANAGED_BY}


@kopf.index(*_REPORTS, labels=_REPORT_LABELS, id="spendreports-ledger")
async def report_stored(body: kopf.Body, memo: Any, **_: Any) -> None:
    memo.ledger.put_report(dict(body))


@kopf.on.event(*_REPORTS, labels=_REPORT_LABELS, id="spendreports-ledger-events")
async def report_observed(
    event: kopf.RawEvent, namespace: str | None, name: str, memo: Any, **_: Any
) -> None:
    """Async, as the ledger's handlers all are: they run on the keeper's event loop (kopf
    runs sync handlers in threads)."""
    assert namespace, "spendreports are namespaced"
    if event["type"] == "DELETED":
        memo.ledger.remove_report(namespace, name)
    memo.ledger.wake(namespace)


_watch(
    SECRET,
    lambda store, body: store.put_secret(
        body["metadata"]["namespace"],
        body["metadata"]["name"],
        body.get("data"),
        body["metadata"].get("creationTimestamp"),
    ),
    Store.remove_secret,
)


def _child_remover(kind: str) -> Remove:
    return lambda store, namespace, name: store.remove_child(namespace, kind, name)


# kopf watches a kind of OPTIONAL_KINDS only while its CRD exists (it follows CRDs itself).
for _kind in (*CHILD_KINDS, *OPTIONAL_KINDS):
    _watch(_kind, Store.put_child, _child_remover(_kind.kind), labels=dict(MANAGED_BY))
