"""The durable spend of each tier, from the SpendReports and ApiKeyTiers the API holds (pure).

``DurableSpend`` keeps the latest reports (by object name) and tier ledgers
(``status.ledger``) that the watches deliver, and computes per tier, with
``tier_totals``, the floors admission counts against (see ``docs/ledger.md``):

- ``exclude_own`` (no Redis): the spend of everyone but this process (its current report
  left out and ``own_base``, what its earlier reports hold, taken off), plus the
  reservations other live processes last reported. This process adds its own exact spend.
- otherwise (Redis): the whole durable spend, this process's reports included; Redis counts
  exactly and uses ``max(its count, floor)``.

Reservations of a report are counted only while its process looks alive: not final, not
terminating and written within ``fresh_seconds``.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from typing import Any

import pydantic

from tiergate_contract.ledger import SpendReportSpec, TierLedger, tier_totals

__all__ = ["DurableSpend", "Floors"]

_log = logging.getLogger("tiergate_gateway.ledger")


@dataclass(frozen=True, slots=True)
class _Report:
    spec: SpendReportSpec
    terminating: bool


@dataclass(frozen=True, slots=True)
class Floors:
    """A tier's floors in nano-USD: the month's spend and the lifetime spend."""

    month: int = 0
    lifetime: int = 0


_NONE = Floors()


class DurableSpend:
    """See the module docstring. ``refresh`` recomputes; the watch calls it after changes."""

    def __init__(
        self,
        month: Callable[[], str],
        *,
        exclude_own: bool,
        own_report: Callable[[], str | None] = lambda: None,
        own_base: Callable[[str, str], tuple[int, int]] = lambda tier, month: (0, 0),
        fresh_seconds: float = 90.0,
        clock: Callable[[], float] = time.time,
    ) -> None:
        self._month = month
        self._exclude_own = exclude_own
        self._own_report = own_report
        self._own_base = own_base
        self._fresh_seconds = fresh_seconds
        self._clock = clock
        self._reports: dict[str, _Report] = {}
        self._ledgers: dict[str, TierLedger] = {}
        self._floors: dict[str, Floors] = {}
        self.month = ""  # the month ``floors`` were computed for
        self.refreshes = 0

    # -- what admission reads (a dict lookup) -----------------------------
    def floors(self, tier: str, month: str) -> Floors:
        if month != self.month:
            self.refresh()  # a new month began since the last refresh
        return self._floors.get(tier, _NONE)

    # -- what the watches deliver -----------------------------------------
    def reports_listed(self, items: Iterable[dict[str, Any]]) -> None:
        self._reports = {}
        for item in items:
            self._put_report(item)
        self.refresh()

    def report_changed(self, kind: str, obj: dict[str, Any]) -> None:
        name = (obj.get("metadata") or {}).get("name")
        if not name:
            return
        if kind == "DELETED":
            self._reports.pop(name, None)
        else:
            self._put_report(obj)
        self.refresh()

    def tiers_listed(self, items: Iterable[dict[str, Any]]) -> None:
        self._ledgers = {}
        for item in items:
            self._put_ledger(item)
        self.refresh()

    def tier_changed(self, kind: str, obj: dict[str, Any]) -> None:
        name = (obj.get("metadata") or {}).get("name")
        if not name:
            return
        if kind == "DELETED":
            self._ledgers.pop(name, None)
        else:
            self._put_ledger(obj)
        self.refresh()

    def _put_report(self, obj: dict[str, Any]) -> None:
        metadata = obj.get("metadata") or {}
        try:
            spec = SpendReportSpec.model_validate(obj.get("spec") or {})
        except pydantic.ValidationError as exc:
            _log.error("SpendReport %s is not valid, left out: %s", metadata.get("name"), exc)
            self._reports.pop(metadata.get("name", ""), None)
            return
        self._reports[metadata["name"]] = _Report(spec, bool(metadata.get("deletionTimestamp")))

    def _put_ledger(self, obj: dict[str, Any]) -> None:
        name = obj["metadata"]["name"]
        raw = (obj.get("status") or {}).get("ledger")
        if raw is None:
            self._ledgers.pop(name, None)
            return
        try:
            self._ledgers[name] = TierLedger.model_validate(raw)
        except pydantic.ValidationError as exc:
            _log.error("the ledger of ApiKeyTier %s is not valid, left out: %s", name, exc)
            self._ledgers.pop(name, None)

    # -- computing ----------------------------------------------------------
    def refresh(self) -> None:
        month = self._month()
        own = self._own_report() if self._exclude_own else None
        reports = [(name, report.spec) for name, report in self._reports.items()]
        tiers = set(self._ledgers) | {t.tier for _, spec in reports for t in spec.tiers}
        floors: dict[str, Floors] = {}
        for tier in tiers:
            ledger = self._ledgers.get(tier) or TierLedger()
            totals = tier_totals(tier, month, ledger, reports, exclude=own)
            if not self._exclude_own:
                floors[tier] = Floors(totals.month_nano, totals.lifetime_nano)
                continue
            base_month, base_lifetime = self._own_base(tier, month)
            held = self._reserved_by_others(tier, ledger, own)
            floors[tier] = Floors(
                max(0, totals.month_nano - base_month) + held,
                max(0, totals.lifetime_nano - base_lifetime) + held,
            )
        self._floors, self.month = floors, month
        self.refreshes += 1

    def _reserved_by_others(self, tier: str, ledger: TierLedger, own: str | None) -> int:
        folded = set(ledger.folded)
        oldest = self._clock() - self._fresh_seconds
        held = 0
        for name, report in self._reports.items():
            spec = report.spec
            if name == own or name in folded or report.terminating or spec.final:
                continue
            if spec.reported_at.timestamp() < oldest:
                continue  # a process that stopped reporting holds nothing any more
            entry = spec.tier(tier)
            if entry is not None:
                held += entry.reserved_nano
        return held
