"""SpendReports as the operator sees them, and when one is due for folding (pure).

A report is tiergate's only when it carries the gateways' labels (``managed-by: tiergate``
and ``tiergate.dev/gateway``, fixed names the gateways write whatever the operator's label
prefix) and the ledger finalizer; anything else is never folded, deleted or patched. See
docs/ledger.md.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Any

from pydantic import ValidationError

from tiergate_contract.ledger import LEDGER_FINALIZER, SpendReportSpec
from tiergate_operator.registry import MANAGED_BY_LABEL

__all__ = [
    "REPORT_GATEWAY_LABEL",
    "REPORT_MANAGED_BY",
    "ReportProblem",
    "StoredReport",
    "fold_due",
    "next_fold_due",
    "parse_report",
]

# The managed-by value on every SpendReport a gateway writes (docs/ledger.md).
REPORT_MANAGED_BY = "tiergate"
REPORT_GATEWAY_LABEL = "tiergate.dev/gateway"

Body = Mapping[str, Any]


@dataclass(frozen=True)
class StoredReport:
    """One SpendReport of ours, as last read."""

    name: str
    namespace: str
    uid: str
    resource_version: str
    spec: SpendReportSpec
    terminating: bool  # deleted, held by the finalizer until its money is folded
    finalizers: tuple[str, ...]


@dataclass(frozen=True)
class ReportProblem:
    """A report with tiergate's labels whose spec does not parse: left alone, logged."""

    name: str
    namespace: str
    message: str


def parse_report(body: Body) -> StoredReport | ReportProblem | None:
    """``body`` as a report of ours; None when it is not tiergate's to touch."""
    metadata = body.get("metadata") or {}
    labels = metadata.get("labels") or {}
    finalizers = tuple(metadata.get("finalizers") or ())
    if (
        labels.get(MANAGED_BY_LABEL) != REPORT_MANAGED_BY
        or REPORT_GATEWAY_LABEL not in labels
        or LEDGER_FINALIZER not in finalizers
    ):
        return None
    name, namespace = str(metadata.get("name", "")), str(metadata.get("namespace", ""))
    try:
        spec = SpendReportSpec.model_validate(body.get("spec") or {})
    except ValidationError as error:
        first = error.errors()[0]
        where = ".".join(str(part) for part in first["loc"]) or "spec"
        return ReportProblem(name, namespace, f"spec.{where}: {first['msg']}")
    return StoredReport(
        name=name,
        namespace=namespace,
        uid=str(metadata.get("uid", "")),
        resource_version=str(metadata.get("resourceVersion", "")),
        spec=spec,
        terminating=bool(metadata.get("deletionTimestamp")),
        finalizers=finalizers,
    )


def fold_due(report: StoredReport, now: datetime, stale_seconds: float) -> bool:
    """Has the report's process ended: written on its way out, or silent for too long?"""
    return report.spec.final or now - report.spec.reported_at >= timedelta(seconds=stale_seconds)


def next_fold_due(
    reports: list[StoredReport], now: datetime, stale_seconds: float
) -> datetime | None:
    """When the first live report not yet due turns stale, or None."""
    moments = [
        r.spec.reported_at + timedelta(seconds=stale_seconds)
        for r in reports
        if not r.terminating and not fold_due(r, now, stale_seconds)
    ]
    return min(moments, default=None)
