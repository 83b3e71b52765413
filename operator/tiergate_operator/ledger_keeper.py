"""The spend ledger's I/O: fold the SpendReports of ended gateway processes into their tiers'
``status.ledger``, and keep each tier's ``status.spend`` current (docs/ledger.md).

The watch handlers feed ``put_report``/``remove_report`` and call ``wake`` for a namespace
whose reports or tiers changed; one task works each woken namespace after a short debounce,
so a burst of report writes costs one pass. A pass:

1. folds every report that is due: ``final``, or not written for ``stale_seconds``. The
   report is deleted with its uid and resourceVersion as preconditions (a gateway that wrote
   in between is alive: 409, skipped); its finalizer keeps it, frozen, while its money is
   folded into each tier it names (``fold``, idempotent, one status write per tier with the
   tier's resourceVersion, retried on 409); then the finalizer is removed. A report found
   terminating (the operator stopped half-way) gets the same last two steps: that is the
   repair at start.
2. recomputes ``status.spend`` of every tier of the namespace with ``tier_totals`` and
   writes it only when a figure changed, posting a Warning event per threshold crossed.

Only reports with the gateways' labels and the ledger finalizer are ever touched.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import Callable, Mapping
from datetime import UTC, datetime
from typing import Any

from tiergate_contract.ledger import LEDGER_FINALIZER, clock_ahead_for_tests, fold
from tiergate_operator.key_lifecycle import tier_spec
from tiergate_operator.kube import Conflict, KubeApi, KubeError, NotFound
from tiergate_operator.refs import ObjectRef
from tiergate_operator.registry import API_KEY_TIER, SPEND_REPORT
from tiergate_operator.spend_reports import (
    ReportProblem,
    StoredReport,
    fold_due,
    next_fold_due,
    parse_report,
)
from tiergate_operator.spend_status import (
    LedgerUnreadable,
    format_time,
    month_of,
    spend_changed,
    spend_status,
    spend_warnings,
    tier_ledger,
)
from tiergate_operator.store import Store

__all__ = ["LedgerKeeper", "month_clock_for_tests", "seconds_to_month_end"]

logger = logging.getLogger("tiergate.ledger")

Body = dict[str, Any]
_ATTEMPTS = 8  # optimistic-concurrency retries of one write before the pass is retried


class LedgerKeeper:
    def __init__(
        self,
        store: Store,
        kube: KubeApi,
        stale_seconds: float = 600,
        debounce_seconds: float = 2.0,
        retry_seconds: float = 5.0,
        clock: Callable[[], datetime] = lambda: datetime.now(UTC),
        month_clock: Callable[[], datetime] | None = None,
    ) -> None:
        self.store, self.kube, self.clock = store, kube, clock
        # What month it is (status.spend's month, when every tier's month starts again):
        # ``clock`` unless a test moves the calendar alone (reports' ages stay real).
        self.month_clock = month_clock or clock
        self.stale_seconds, self.debounce_seconds = stale_seconds, debounce_seconds
        self.retry_seconds = retry_seconds
        self.reports: dict[str, dict[str, Body]] = {}
        self._dirty: set[str] = set()
        self._wake = asyncio.Event()
        self._debounce: dict[str, asyncio.TimerHandle] = {}
        self._stale_timers: dict[str, asyncio.TimerHandle] = {}
        self._month = ""
        self._problems_logged: set[tuple[str, str, str]] = set()
        # Reports released but whose DELETED event has not come yet, per namespace.
        self._released: dict[str, set[str]] = {}
        # For tests and benchmarks: reports folded, spend statuses written, events posted.
        self.folded = self.spend_writes = self.events = 0

    # --- fed by the watch handlers -------------------------------------------------------
    def put_report(self, body: Body) -> None:
        metadata = body["metadata"]
        if metadata["name"] in self._released.get(metadata["namespace"], ()):
            return  # an event older than our release; its DELETED event is on the way
        bucket = self.reports.setdefault(metadata["namespace"], {})
        stored = bucket.get(metadata["name"])
        if stored is not None and _older(body, stored):
            return
        bucket[metadata["name"]] = body

    def remove_report(self, namespace: str, name: str) -> None:
        """The report's DELETED event."""
        self.reports.get(namespace, {}).pop(name, None)
        self._released.get(namespace, set()).discard(name)

    def wake(self, namespace: str) -> None:
        """Work ``namespace`` after the debounce (one pass for a burst of events)."""
        if namespace in self._debounce:
            return
        self._debounce[namespace] = asyncio.get_running_loop().call_later(
            self.debounce_seconds, self._due, namespace
        )

    def _due(self, namespace: str) -> None:
        self._debounce.pop(namespace, None)
        self._dirty.add(namespace)
        self._wake.set()

    def close(self) -> None:
        for timer in (*self._debounce.values(), *self._stale_timers.values()):
            timer.cancel()

    # --- the loop ------------------------------------------------------------------------
    async def run(self) -> None:
        # The month now, so that a turn before the first wake is noticed too.
        self._month = month_of(self.month_clock())
        while True:
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self._wake.wait(), timeout=self._seconds_to_month_end())
            self._wake.clear()
            month = month_of(self.month_clock())
            if month != self._month:
                # A new month: every tier's month spend starts again.
                self._dirty |= {ns for ns, s in self.store.namespaces.items() if s.tiers}
                self._month = month
            taken, self._dirty = sorted(self._dirty), set()
            for namespace in taken:
                await self._pass_safely(namespace)

    def _seconds_to_month_end(self) -> float:
        return seconds_to_month_end(self.month_clock())

    async def _pass_safely(self, namespace: str) -> None:
        try:
            await self.work(namespace)
        except (KubeError, LedgerUnreadable, OSError) as error:
            logger.error(
                "namespace %s: the spend ledger pass failed (%s); retrying in %.0f s",
                namespace,
                error,
                self.retry_seconds,
            )
            asyncio.get_running_loop().call_later(self.retry_seconds, self._due, namespace)

    async def work(self, namespace: str) -> None:
        """One pass over ``namespace``: fold what is due, then write the spend that changed."""
        now = self.clock()
        reports = self._reports(namespace)
        for report in reports:
            if report.terminating:
                await self._fold_and_release(report)
            elif fold_due(report, now, self.stale_seconds):
                await self._retire(report)
        await self._write_spend(namespace, self._reports(namespace), now)
        self._watch_staleness(namespace, self._reports(namespace), now)

    def _reports(self, namespace: str) -> list[StoredReport]:
        found: list[StoredReport] = []
        for body in self.reports.get(namespace, {}).values():
            parsed = parse_report(body)
            if isinstance(parsed, ReportProblem):
                seen = (parsed.namespace, parsed.name, parsed.message)
                if seen not in self._problems_logged:
                    self._problems_logged.add(seen)
                    logger.error(
                        "SpendReport %s/%s is not folded: %s",
                        parsed.namespace,
                        parsed.name,
                        parsed.message,
                    )
            elif parsed is not None:
                found.append(parsed)
        return sorted(found, key=lambda r: r.name)

    def _watch_staleness(self, namespace: str, reports: list[StoredReport], now: datetime) -> None:
        if timer := self._stale_timers.pop(namespace, None):
            timer.cancel()
        due = next_fold_due(reports, now, self.stale_seconds)
        if due is not None:
            delay = min(max(0.0, (due - now).total_seconds()), 86_400.0)
            self._stale_timers[namespace] = asyncio.get_running_loop().call_later(
                delay, self._due, namespace
            )

    # --- folding -------------------------------------------------------------------------
    async def _retire(self, report: StoredReport) -> None:
        """Step 1: delete the report as it was read; 409 means its process is alive."""
        ref = ObjectRef(SPEND_REPORT.kind, report.namespace, report.name)
        deleted = await self.kube.delete_unchanged(ref, report.uid, report.resource_version)
        if deleted is None:
            logger.info(
                "SpendReport %s/%s changed or went since it was read (its gateway is alive, "
                "or it was folded already): not folded now",
                report.namespace,
                report.name,
            )
            return
        frozen = parse_report(deleted)
        await self._fold_and_release(frozen if isinstance(frozen, StoredReport) else report)

    async def _fold_and_release(self, report: StoredReport) -> None:
        """Steps 2 and 3: fold into each tier the report names, then remove the finalizer."""
        for tier in sorted({entry.tier for entry in report.spec.tiers}):
            await self._fold_into(report, tier)
        await self._release(report)
        self.reports.get(report.namespace, {}).pop(report.name, None)
        self._released.setdefault(report.namespace, set()).add(report.name)
        self.folded += 1

    async def _fold_into(self, report: StoredReport, tier: str) -> None:
        ref = ObjectRef(API_KEY_TIER.kind, report.namespace, tier)
        for _ in range(_ATTEMPTS):
            body = await self.kube.get(ref)
            if body is None:
                logger.warning(
                    "SpendReport %s/%s names ApiKeyTier %s, which does not exist: "
                    "released without folding its money for that tier",
                    report.namespace,
                    report.name,
                    tier,
                )
                return
            ledger = tier_ledger(body)
            if report.name in ledger.folded:
                return
            folded = fold(ledger, tier, report.name, report.spec)
            ledger_json = folded.model_dump(mode="json", by_alias=True, exclude_none=True)
            patch = {"status": {"ledger": ledger_json}}
            try:
                written = await self.kube.merge_patch(
                    ref, patch, body["metadata"]["resourceVersion"], subresource="status"
                )
            except Conflict:
                continue  # the tier changed since it was read: read it again
            self.store.record_own_write(written | {"kind": API_KEY_TIER.kind})
            logger.info(
                "folded SpendReport %s/%s into ApiKeyTier %s", report.namespace, report.name, tier
            )
            return
        raise Conflict(409, "Conflict", f"ApiKeyTier {tier} kept changing while folding")

    async def _release(self, report: StoredReport) -> None:
        ref = ObjectRef(SPEND_REPORT.kind, report.namespace, report.name)
        current: StoredReport = report
        for _ in range(_ATTEMPTS):
            rest = [f for f in current.finalizers if f != LEDGER_FINALIZER]
            try:
                await self.kube.merge_patch(
                    ref, {"metadata": {"finalizers": rest or None}}, current.resource_version
                )
                return
            except NotFound:
                return
            except Conflict:
                body = await self.kube.get(ref)
                parsed = parse_report(body) if body is not None else None
                if not isinstance(parsed, StoredReport):
                    return  # gone, or no longer ours to touch
                current = parsed
        raise Conflict(409, "Conflict", f"SpendReport {report.name} kept changing while released")

    # --- status.spend --------------------------------------------------------------------
    async def _write_spend(
        self, namespace: str, reports: list[StoredReport], now: datetime
    ) -> None:
        live = [(r.name, r.spec) for r in reports]
        month_now = self.month_clock()
        state = self.store.namespace(namespace)
        for name, body in sorted(state.tiers.items()):
            spec = tier_spec(body)
            if spec is None:
                continue
            try:
                ledger = tier_ledger(body)
            except LedgerUnreadable as error:
                logger.error("%s; its status.spend is not updated", error)
                continue
            desired = spend_status(name, spec, ledger, live, month_now)
            current = (body.get("status") or {}).get("spend")
            if not spend_changed(current, desired):
                continue
            warnings = spend_warnings(name, spec, current, desired)
            ref = ObjectRef(API_KEY_TIER.kind, namespace, name)
            patch = {"status": {"spend": {**desired, "updatedAt": format_time(now)}}}
            try:
                written = await self.kube.merge_patch(ref, patch, subresource="status")
            except NotFound:
                continue  # deleted meanwhile
            self.spend_writes += 1
            self.store.record_own_write(written | {"kind": API_KEY_TIER.kind})
            for warning in warnings:
                try:
                    await self.kube.event(
                        body,
                        type_="Warning",
                        reason=warning.reason,
                        message=warning.message,
                        now=now,
                    )
                    self.events += 1
                except KubeError as error:
                    logger.warning(
                        "posting a %s event about %s failed: %s", warning.reason, ref, error
                    )


TEST_CLOCK_VARIABLE = "TIERGATE_TEST_CLOCK_OFFSET_SECONDS"


def month_clock_for_tests(env: Mapping[str, str]) -> Callable[[], datetime] | None:
    """For tests only: ``TIERGATE_TEST_CLOCK_OFFSET_SECONDS`` set, the ledger's calendar
    (status.spend's month, the month's turn) runs that many seconds ahead of the system
    clock, so a month's turn can be tested without waiting for one. Not a chart value."""
    return clock_ahead_for_tests(env, TEST_CLOCK_VARIABLE)


def seconds_to_month_end(now: datetime) -> float:
    """How long the ledger loop may sleep: until just past the month's end, at most an hour."""
    first = now.replace(day=1, hour=0, minute=0, second=0, microsecond=0)
    following = (
        first.replace(year=now.year + 1, month=1)
        if now.month == 12
        else first.replace(month=now.month + 1)
    )
    return max(1.0, min(3600.0, (following - now).total_seconds() + 1))


def _older(body: Body, stored: Body) -> bool:
    new = str(body.get("metadata", {}).get("resourceVersion", ""))
    old = str(stored.get("metadata", {}).get("resourceVersion", ""))
    return new.isdigit() and old.isdigit() and int(new) < int(old)
